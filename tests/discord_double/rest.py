"""REST API under /api/v10: login, command sync, interaction callbacks, webhooks, channel messages."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .interactions import ATTACHMENT_SIZE_LIMIT, InteractionHandle, Notifier
from .messages import DiscordError, check_sizes, revise, validate
from .models import UserSpec, World, snowflake
from .spec import checker
from .recording import LOADING, RecordedFile, RecordedRequest, StoredAttachment, StoredMessage, Violation

log = logging.getLogger("tests.discord_double")
API = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REC = web.RequestKey("rec", RecordedRequest)


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """discord.py only decodes JSON when Content-Type is exactly application/json (no charset)."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


def error_reply(error: DiscordError) -> web.Response:
    return json_reply(error.body(), status=error.status)


@dataclass
class RateLimitRule:
    """The next `remaining` calls matching method + path pattern get a 429 with retry_after seconds."""

    method: str
    pattern: re.Pattern[str]
    remaining: int
    retry_after: float
    is_global: bool
    hits: int = 0


def compile_route(route: str) -> tuple[str, re.Pattern[str]]:
    """'PATCH /webhooks/{app}/{token}/messages/@original' -> method + regex ({x}: one segment, *: anything)."""
    method, _, path = route.partition(" ")
    regex = "".join(
        "[^/]+" if tok.startswith("{") else ".*" if tok == "*" else re.escape(tok)
        for tok in re.split(r"(\{[^}]*\}|\*)", path)
    )
    return method.upper(), re.compile(regex + "$")


class RestApi:
    """All REST state: recorded calls, synced commands, interactions, messages, violations."""

    def __init__(self, world: World, notifier: Notifier, ack_deadline: float) -> None:
        self.world = world
        self.notifier = notifier
        self.ack_deadline = ack_deadline
        self.base_url = ""
        self.gateway_url = ""
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.global_commands: dict[str, dict[str, Any]] = {}
        self.guild_commands: dict[int, dict[str, dict[str, Any]]] = {}
        self.command_syncs = 0
        self.handles: dict[int, InteractionHandle] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.rate_limits: list[RateLimitRule] = []
        self._command_ids: dict[tuple[int | None, str], int] = {}

    # ---- plumbing -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        r = web.route
        return [
            web.get(API + "/users/@me", self.get_me),
            web.get(API + "/users/{user_id}", self.get_user),
            web.get(API + "/oauth2/applications/@me", self.get_application),
            web.get(API + "/gateway", self.get_gateway),
            web.get(API + "/gateway/bot", self.get_gateway_bot),
            r("*", API + "/applications/{app}/commands", self.commands),
            r("*", API + "/applications/{app}/guilds/{guild_id}/commands", self.commands),
            web.post(API + "/interactions/{interaction_id}/{token}/callback", self.callback),
            web.post(API + "/webhooks/{app}/{token}", self.followup),
            r("*", API + "/webhooks/{app}/{token}/messages/{message_id}", self.webhook_message),
            web.post(API + "/channels/{channel_id}/messages", self.channel_send),
            r("*", API + "/channels/{channel_id}/messages/{message_id}", self.channel_message),
            web.post(API + "/channels/{channel_id}/typing", self.typing),
            web.get(API + "/channels/{channel_id}", self.get_channel),
            web.get(API + "/guilds/{guild_id}/members/{user_id}", self.get_member),
            r("*", API + "/{tail:.*}", self.unknown),
            web.get("/attachments/{channel_id}/{attachment_id}/{filename}", self.download),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record every API call, apply test-requested 429s, turn DiscordError into Discord JSON."""
        if not request.path.startswith(API + "/"):
            return await handler(request)
        rec = await self._record(request)
        try:
            response = self._rate_limited(rec) or await handler(request)
        except DiscordError as error:
            response = error_reply(error)
        except Exception:
            log.exception("double failed handling %s %s", rec.method, rec.path)
            response = json_reply({"message": "500: Internal Server Error", "code": 0}, status=500)
        rec.status = response.status
        await self.notifier.bump()
        return response

    async def _record(self, request: web.Request) -> RecordedRequest:
        body: Any = None
        files: list[RecordedFile] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.filename is not None:
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    files.append(RecordedFile(part.name or "", part.filename, ctype, bytes(await part.read())))
                elif part.name == "payload_json":
                    body = json.loads(await part.text())
        elif request.can_read_body:
            text = await request.text()
            body = json.loads(text) if text and request.content_type == "application/json" else text or None
        rec = RecordedRequest(
            request.method, request.path[len(API):], dict(request.query), body, files, self._now()
        )
        self.requests.append(rec)
        request[REC] = rec
        spec = checker()
        if spec is not None and isinstance(body, (dict, list)):
            for error in spec.errors(rec.method, rec.path, body):
                self.violate("openapi", f"{rec.method} {rec.path}: {error}")
        return rec

    def _rate_limited(self, rec: RecordedRequest) -> web.Response | None:
        for rule in self.rate_limits:
            if rule.remaining > 0 and rule.method == rec.method and rule.pattern.match(rec.path):
                rule.remaining -= 1
                rule.hits += 1
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, round(rule.retry_after))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(rule.retry_after),
                    "X-RateLimit-Reset": str(time.time() + rule.retry_after),
                    "X-RateLimit-Bucket": "double-" + rule.pattern.pattern[:20],
                    "X-RateLimit-Scope": "global" if rule.is_global else "user",
                }
                if rule.is_global:
                    headers["X-RateLimit-Global"] = "true"
                body = {"message": "You are being rate limited.", "retry_after": rule.retry_after,
                        "global": rule.is_global, "code": 0}
                return json_reply(body, status=429, headers=headers)
        return None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def violate(self, kind: str, detail: str, handle: InteractionHandle | None = None) -> None:
        violation = Violation(kind, detail, handle.id if handle else None, self._now())
        self.violations.append(violation)
        if handle is not None:
            handle.violations.append(violation)

    def add_rate_limit(self, route: str, count: int, retry_after: float, is_global: bool) -> RateLimitRule:
        method, pattern = compile_route(route)
        rule = RateLimitRule(method, pattern, count, retry_after, is_global)
        self.rate_limits.append(rule)
        return rule

    def add_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str, declared_size: int | None
    ) -> StoredAttachment:
        attachment_id = snowflake()
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"
        size = len(data) if declared_size is None else declared_size
        attachment = StoredAttachment(attachment_id, filename, data, content_type, url, size)
        self.attachments[attachment_id] = attachment
        return attachment

    # ---- login & misc ----------------------------------------------------------------------------

    async def get_me(self, request: web.Request) -> web.Response:
        return json_reply(self.world.bot.payload())

    async def get_user(self, request: web.Request) -> web.Response:
        try:
            return json_reply(self.world.user(int(request.match_info["user_id"])).payload())
        except (KeyError, ValueError):
            raise DiscordError(404, 10013, "Unknown User") from None

    async def get_application(self, request: web.Request) -> web.Response:
        return json_reply(self.world.application_payload())

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_reply({"url": self.gateway_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        """The recommended shard count is the world's `shards` (Discord: one per ~1,000 guilds)."""
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_reply({"url": self.gateway_url, "shards": self.world.shards, "session_start_limit": limit})

    async def get_channel(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        for guild in self.world.guilds:
            for index, channel in enumerate(guild.channels):
                if channel.id == channel_id:
                    return json_reply(channel.payload(guild.id, index))
        raise DiscordError(404, 10003, "Unknown Channel")

    async def get_member(self, request: web.Request) -> web.Response:
        try:
            self.world.guild(int(request.match_info["guild_id"]))
            user = self.world.user(int(request.match_info["user_id"]))
        except KeyError:
            raise DiscordError(404, 10007, "Unknown Member") from None
        return json_reply(user.member_payload())

    async def typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def unknown(self, request: web.Request) -> web.Response:
        self.unknown_requests.append(request[REC])
        return json_reply({"message": "404: Not Found", "code": 0}, status=404)

    async def download(self, request: web.Request) -> web.Response:
        attachment = self.attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    # ---- application commands ------------------------------------------------------------------------

    async def commands(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        if request.method == "PUT":
            self.store_commands(request[REC].json or [], guild_id)
            self.command_syncs += 1
        elif request.method != "GET":
            return await self.unknown(request)
        store = self.global_commands if guild_id is None else self.guild_commands.get(guild_id, {})
        return json_reply(list(store.values()))

    def store_commands(self, commands: list[dict[str, Any]], guild_id: int | None) -> None:
        """Bulk overwrite like Discord: ids stay stable per (guild, name) across re-syncs."""
        stored: dict[str, dict[str, Any]] = {}
        for command in commands:
            key = (guild_id, command["name"])
            command_id = self._command_ids.setdefault(key, snowflake())
            stored[command["name"]] = {
                "type": 1, "description": "", "options": [], "default_member_permissions": None,
                "nsfw": False, **command,
                "id": str(command_id), "application_id": str(self.world.application_id), "version": str(command_id),
            }
            if guild_id is not None:
                stored[command["name"]]["guild_id"] = str(guild_id)
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored

    # ---- interactions ------------------------------------------------------------------------------

    def _store_file(self, channel_id: int) -> Callable[[RecordedFile], StoredAttachment]:
        def store(file: RecordedFile) -> StoredAttachment:
            return self.add_attachment(channel_id, file.filename, file.data, file.content_type, None)

        return store

    def _new_message(self, handle: InteractionHandle | None, channel_id: int, kind: str, data: dict[str, Any],
                     files: list[RecordedFile]) -> StoredMessage:
        guild_id = int(handle.payload["guild_id"]) if handle and "guild_id" in handle.payload else None
        message = StoredMessage(
            snowflake(), channel_id, guild_id, self.world.bot.payload(), self.world.application_id,
            handle.id if handle else None, kind,
        )
        message.revisions.append(revise(None, data, files, self._now(), self._store_file(channel_id)))
        self.messages[message.id] = message
        return message

    def _edit(self, message: StoredMessage, data: dict[str, Any], files: list[RecordedFile]) -> None:
        message.revisions.append(revise(message.current, data, files, self._now(), self._store_file(message.channel_id)))

    def _check_body(self, handle: InteractionHandle | None, rec: RecordedRequest, creating: bool,
                    prefix: str = "", data: dict[str, Any] | None = None) -> None:
        try:
            check_sizes(rec.files, ATTACHMENT_SIZE_LIMIT)
            validate(data if data is not None else rec.json or {}, rec.files, creating, prefix)
        except DiscordError as error:
            self.violate("invalid_body", f"{rec.method} {rec.path}: {error.code} {error.errors or error.message}", handle)
            raise

    async def callback(self, request: web.Request) -> web.Response:
        rec = request[REC]
        handle = self.handles.get(int(request.match_info["interaction_id"]))
        if handle is None or handle.token != request.match_info["token"]:
            raise DiscordError(404, 10062, "Unknown interaction")
        elapsed = rec.at - handle.sent_at
        if handle.acked:
            self.violate("double_ack", f"second callback type {rec.json.get('type')}", handle)
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if elapsed > self.ack_deadline:
            self.violate("late_ack", f"acknowledged after {elapsed:.2f}s (limit {self.ack_deadline}s)", handle)
            raise DiscordError(404, 10062, "Unknown interaction")
        kind = int(rec.json["type"])
        data = rec.json.get("data") or {}
        channel_id = int(handle.payload["channel_id"])
        if kind == 4:
            self._check_body(handle, rec, creating=True, prefix="data.", data=data)
            handle.original = self._new_message(handle, channel_id, "original", data, rec.files)
        elif kind == 5:
            flags = LOADING | (int(data.get("flags") or 0) & 64)
            handle.original = self._new_message(handle, channel_id, "original", {"flags": flags}, [])
        elif kind in (6, 7):
            if handle.original is None:
                raise DiscordError(400, 50035, "Invalid Form Body: only component interactions can update a message")
            if kind == 7:
                self._check_body(handle, rec, creating=False, prefix="data.", data=data)
                self._edit(handle.original, data, rec.files)
        elif kind == 8:
            handle.choices = data.get("choices", [])
        elif kind == 9:
            handle.modal = data
        else:
            raise DiscordError(400, 50035, f"Invalid Form Body: unsupported callback type {kind}")
        handle.ack_type, handle.acked_at = kind, rec.at
        if "with_response" not in rec.query:
            return web.Response(status=204)
        return json_reply(self._callback_body(handle, kind))

    def _callback_body(self, handle: InteractionHandle, kind: int) -> dict[str, Any]:
        interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5, 7) and handle.original is not None:
            interaction["response_message_id"] = str(handle.original.id)
            interaction["response_message_loading"] = kind == 5
            interaction["response_message_ephemeral"] = handle.original.ephemeral
            resource["message"] = handle.original.payload()
        return {"interaction": interaction, "resource": resource}

    def _handle_for_token(self, request: web.Request) -> InteractionHandle:
        token = request.match_info["token"]
        for handle in self.handles.values():
            if handle.token == token:
                if not handle.acked:
                    self.violate("not_acknowledged", f"{request.method} {request.path} before the callback", handle)
                    raise DiscordError(404, 10015, "Unknown Webhook")
                return handle
        raise DiscordError(404, 10015, "Unknown Webhook")

    async def followup(self, request: web.Request) -> web.Response:
        rec = request[REC]
        handle = self._handle_for_token(request)
        self._check_body(handle, rec, creating=True)
        data = dict(rec.json or {})
        data["flags"] = int(data.get("flags") or 0) & ~LOADING
        message = self._new_message(handle, int(handle.payload["channel_id"]), "followup", data, rec.files)
        handle.followups.append(message)
        if rec.query.get("wait", "").lower() in ("true", "1"):
            return json_reply(message.payload())
        return web.Response(status=204)

    async def webhook_message(self, request: web.Request) -> web.Response:
        rec = request[REC]
        handle = self._handle_for_token(request)
        message_id = request.match_info["message_id"]
        if message_id == "@original":
            message = handle.original
        else:
            message = next((m for m in handle.messages if str(m.id) == message_id), None)
        return await self._message_op(request, rec, message, handle)

    async def _message_op(self, request: web.Request, rec: RecordedRequest, message: StoredMessage | None,
                          handle: InteractionHandle | None) -> web.Response:
        if message is None or message.deleted:
            raise DiscordError(404, 10008, "Unknown Message")
        if request.method == "GET":
            return json_reply(message.payload())
        if request.method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if request.method == "PATCH":
            self._check_body(handle, rec, creating=False)
            self._edit(message, rec.json or {}, rec.files)
            return json_reply(message.payload())
        return await self.unknown(request)

    # ---- plain channel messages -----------------------------------------------------------------

    async def channel_send(self, request: web.Request) -> web.Response:
        rec = request[REC]
        self._check_body(None, rec, creating=True)
        data = dict(rec.json or {})
        data.pop("flags", None)
        channel_id = int(request.match_info["channel_id"])
        reference = self._reference(rec, channel_id, data.pop("message_reference", None))
        message = self._new_message(None, channel_id, "channel", data, rec.files)
        message.guild_id = self.world.guild_of_channel(channel_id)
        message.reference = reference
        return json_reply(message.payload())

    def user_message(self, author: UserSpec, guild_id: int | None, channel_id: int, content: str,
                     reference: dict[str, Any] | None, mentions: list[dict[str, Any]]) -> StoredMessage:
        """A message a member posted (double.send_message), kept so the bot may reply to it."""
        message = StoredMessage(snowflake(), channel_id, guild_id, author.payload(), self.world.application_id,
                                None, "user", reference=reference, mentions=mentions)
        message.revisions.append(revise(None, {"content": content}, [], self._now(), self._store_file(channel_id)))
        self.messages[message.id] = message
        return message

    def _reference(self, rec: RecordedRequest, channel_id: int,
                   reference: dict[str, Any] | None) -> dict[str, Any] | None:
        """A reply's message_reference: the message must exist (Discord's fail_if_not_exists default)."""
        if not reference:
            return None
        target = self.messages.get(int(reference.get("message_id") or 0))
        if target is None or target.deleted:
            if reference.get("fail_if_not_exists", True):
                self.violate("invalid_body", f"{rec.method} {rec.path}: reply to unknown message {reference}")
                raise DiscordError(400, 50035, "Invalid Form Body", {"message_reference": {"_errors": [
                    {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]}})
            return None
        found = {"message_id": str(target.id), "channel_id": str(target.channel_id)}
        if target.guild_id is not None:
            found["guild_id"] = str(target.guild_id)
        return found

    async def channel_message(self, request: web.Request) -> web.Response:
        message = self.messages.get(int(request.match_info["message_id"]))
        if message is not None and (message.ephemeral or str(message.channel_id) != request.match_info["channel_id"]):
            message = None
        return await self._message_op(request, request[REC], message, None)
