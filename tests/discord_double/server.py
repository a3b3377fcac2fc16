"""DiscordDouble: the aiohttp server tying gateway, REST and test-facing helpers together."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import discord.gateway
import discord.http
import yarl
from aiohttp import web

from .gateway import Gateway, ResumeRecord
from .interactions import (
    APPLICATION_COMMAND, AUTOCOMPLETE, COMPONENT, MESSAGE_COMMAND, InteractionHandle, Notifier, build_options,
    dm_interaction_base, find_command, interaction_base, offered_in_dms,
)
from .messages import visible_content
from .models import GuildSpec, UserSpec, World, default_world
from .recording import RecordedRequest, StoredAttachment, StoredMessage, Violation
from .rest import RateLimitRule, RestApi, compile_route


@contextmanager
def patch_discord(rest_base: str, gateway_url: str) -> Iterator[None]:
    """Point discord.py at the double via its two class attributes, restoring them afterwards."""
    old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = rest_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class DiscordDouble:
    """A fake Discord (REST + gateway) on 127.0.0.1 for the real discord.py client."""

    def __init__(
        self,
        world: World | None = None,
        *,
        guilds: list[GuildSpec] | None = None,
        users: list[UserSpec] | None = None,
        heartbeat_interval_ms: int = 41250,
        ack_deadline: float = 3.0,
        shards: int | None = None,
    ) -> None:
        self.world = world or default_world()
        if guilds is not None:
            self.world.guilds = guilds
        if users is not None:
            self.world.users = users
        if shards is not None:
            self.world.shards = shards
        self.notifier = Notifier()
        self.gateway = Gateway(self.world, self.notifier, heartbeat_interval_ms)
        self.rest = RestApi(self.world, self.notifier, ack_deadline)
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------

    @property
    def rest_base(self) -> str:
        return self.base_url + "/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/"

    async def start(self, host: str = "127.0.0.1", port: int = 0, advertise_host: str | None = None) -> None:
        """Listen on host:port (0 = free port); URLs handed out use advertise_host (default: host)."""
        from .control import control_routes  # control needs DiscordDouble, import late

        app = web.Application(middlewares=[self.rest.middleware], client_max_size=64 * 1024 * 1024)
        app.add_routes([web.get("/", self.gateway.handle), web.get("/resume/", self.gateway.handle)])
        app.add_routes(control_routes(self))
        app.add_routes(self.rest.routes())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.base_url = f"http://{advertise_host or host}:{sock.getsockname()[1]}"
        self.rest.base_url, self.rest.gateway_url = self.base_url, self.gateway_url
        self.gateway.resume_url = self.gateway_url + "resume/"

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextmanager
    def patched(self) -> Iterator[None]:
        with patch_discord(self.rest_base, self.gateway_url):
            yield

    # ---- recorded state -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.rest.requests

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        return self.rest.unknown_requests

    @property
    def violations(self) -> list[Violation]:
        return self.rest.violations

    @property
    def handles(self) -> list[InteractionHandle]:
        return list(self.rest.handles.values())

    def calls(self, route: str | None = None) -> list[RecordedRequest]:
        """Recorded calls, optionally filtered by 'METHOD /path/{x}/pattern' (see rate_limit)."""
        if route is None:
            return list(self.requests)
        method, pattern = compile_route(route)
        return [r for r in self.requests if r.method == method and pattern.match(r.path)]

    def commands(self, guild_id: int | None = None) -> dict[str, dict[str, Any]]:
        """Synced commands by name: global ones, or those of one guild."""
        return self.rest.global_commands if guild_id is None else self.rest.guild_commands.get(guild_id, {})

    def assert_no_violations(self) -> None:
        assert not self.violations, "Discord rule violations: " + "; ".join(
            f"{v.kind} ({v.detail})" for v in self.violations
        )
        assert not self.unknown_requests, "unknown routes called: " + ", ".join(
            f"{r.method} {r.path}" for r in self.unknown_requests
        )

    # ---- test controls --------------------------------------------------------------------------------

    def rate_limit(self, route: str, count: int = 1, retry_after: float = 0.2, is_global: bool = False) -> RateLimitRule:
        """The next `count` calls matching e.g. 'PATCH /webhooks/{app}/{token}/messages/@original' get a 429."""
        return self.rest.add_rate_limit(route, count, retry_after, is_global)

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str = "text/plain; charset=utf-8",
        declared_size: int | None = None,
        channel_id: int | None = None,
    ) -> StoredAttachment:
        """Host a file at /attachments/...; pass the result as an attachment option value."""
        channel = channel_id or self.world.guilds[0].channels[0].id
        return self.rest.add_attachment(channel, filename, data, content_type, declared_size)

    def register_commands(self, commands: list[dict[str, Any]], guild_id: int | None = None) -> None:
        """Pretend commands were synced earlier (for bots that do not sync on every start)."""
        self.rest.store_commands(commands, guild_id)

    async def wait_ready(self, timeout: float = 10.0, shards: Iterable[int] | None = None) -> None:
        """Wait until a bot identified and got READY plus every GUILD_CREATE; with `shards`, until
        each of those shard ids has such a session (from one process or several)."""
        if shards is None:
            await self.notifier.wait_for(lambda: self.gateway.current is not None and self.gateway.current.ready,
                                         timeout)
            return
        wanted = list(shards)

        def all_ready() -> bool:
            sessions = [self.gateway.shard_session(shard_id) for shard_id in wanted]
            return all(s is not None and s.ready and s.conn is not None for s in sessions)

        await self.notifier.wait_for(all_ready, timeout)

    async def wait_commands(self, names: list[str], guild_id: int | None = None, timeout: float = 10.0) -> None:
        """Wait until the bot synced commands with these names (globally or in guild_id)."""
        await self.notifier.wait_for(lambda: all(n in self.commands(guild_id) for n in names), timeout)

    async def force_reconnect(self, how: str = "op7", timeout: float = 10.0, shard_id: int | None = None) -> ResumeRecord:
        """Disconnect the bot ('op7' RECONNECT or 'close' code 4000) and wait until it RESUMEd
        (shard_id: that shard's session; default the newest)."""
        return await self.gateway.force_reconnect(how, timeout, shard_id)

    async def drop_session(self, shard_id: int | None = None, timeout: float = 10.0) -> None:
        """The gateway connection goes down and stays down until restore_session()."""
        await self.gateway.drop(shard_id, timeout)

    async def restore_session(self, timeout: float = 10.0) -> ResumeRecord:
        """Discord is back: the held reconnection goes through and the session RESUMEs."""
        return await self.gateway.restore(timeout)

    # ---- servers joining and leaving -------------------------------------------------------------

    async def remove_guild(self, guild_id: int) -> GuildSpec:
        """The bot is kicked from (or leaves) a guild: GUILD_DELETE without `unavailable`."""
        guild = self.world.guild(guild_id)
        self.world.guilds.remove(guild)
        await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild.id)})
        return guild

    async def add_guild(self, guild: GuildSpec) -> None:
        """The bot is added to a guild: GUILD_CREATE with the whole guild."""
        self.world.guilds.append(guild)
        payload = guild.payload(self.world.users, self.world.bot)
        del payload["unavailable"]  # a join carries no `unavailable`; `false` means an outage ended
        await self.gateway.dispatch("GUILD_CREATE", payload)

    # ---- interactions -------------------------------------------------------------------------------

    def _lookup(self, name: str, guild_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        path = name.split()
        for commands, is_guild in ((self.commands(guild_id), True), (self.commands(), False)):
            if path[0] in commands:
                command, chain = find_command(commands, path)
                return command, chain, is_guild
        raise KeyError(f"/{path[0]} was never synced (global or guild {guild_id}); synced: "
                       f"{sorted(self.commands()) + sorted(self.commands(guild_id))}")

    async def _send(self, payload: dict[str, Any], target: StoredMessage | None = None) -> InteractionHandle:
        handle = InteractionHandle(payload, self.notifier, asyncio.get_running_loop().time(), target)
        self.rest.handles[handle.id] = handle
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return handle

    async def send_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: UserSpec | int | str | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
        focused: str | None = None,
        dm: bool = False,
    ) -> InteractionHandle:
        """Dispatch a slash command ('finetune start' for subcommands) and return its handle.

        Options map names to values; attachment options take double.add_attachment() results.
        With `focused` set this is an autocomplete interaction for that option instead.
        `dm=True` sends it from the user's DM with the bot; a command Discord would not offer
        there (guild-only, or a guild command) raises NotOffered, as the user could not type it.
        """
        kind = AUTOCOMPLETE if focused else APPLICATION_COMMAND
        if dm:
            path = name.split()
            if path[0] not in self.commands():
                raise NotOffered(f"/{path[0]} is not a global command, so Discord does not offer it in DMs")
            command, chain = find_command(self.commands(), path)
            if not offered_in_dms(command):
                raise NotOffered(f"/{path[0]} is guild-only, so Discord does not offer it in DMs")
            is_guild, where = False, None
            payload = dm_interaction_base(self.world, kind, self.world.user(user), locale)
        else:
            guild = self.world.guild(guild_id)
            command, chain, is_guild = self._lookup(name, guild.id)
            where = guild.id
            payload = interaction_base(self.world, kind, guild, channel_id, self.world.user(user), permissions,
                                       locale)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": build_options(command, chain, options or {}, resolved, where, focused),
        }
        if resolved:
            data["resolved"] = resolved
        if is_guild:
            data["guild_id"] = str(where)
        payload["data"] = data
        return await self._send(payload)

    async def send_autocomplete(
        self, name: str, options: dict[str, Any], focused: str, **kwargs: Any
    ) -> InteractionHandle:
        """Autocomplete for option `focused`; the bot's choices land in handle.choices."""
        return await self.send_command(name, options, focused=focused, **kwargs)

    async def send_message(
        self,
        content: str,
        *,
        user: UserSpec | int | str | None = None,
        guild_id: int | None = None,
        channel_id: int | None = None,
        mention_bot: bool = False,
        reply_to: StoredMessage | None = None,
        ping_reply: bool = True,
        dm: bool = False,
    ) -> StoredMessage:
        """A member posts a message: MESSAGE_CREATE as Discord sends it to the bot.

        `mention_bot` puts `<@bot>` in front of the content (unless it is there already) and the
        bot in `mentions`; `reply_to` makes it a reply (type 19, `message_reference`, and
        `referenced_message` with that message), which pings its author unless `ping_reply` is
        False. As on Discord, a session identified without the MESSAGE_CONTENT intent gets an
        empty `content` (and no embeds, attachments or components) unless the message mentions
        the bot, is in a DM with it, or is the bot's own (messages.visible_content)."""
        author = self.world.user(user)
        bot = self.world.bot
        if dm:
            where_guild, where_channel = None, int(self.world.dm_channel(author)["id"])
        else:
            guild = self.world.guild(guild_id)
            where_guild, where_channel = guild.id, guild.channel(channel_id).id
        if mention_bot and f"<@{bot.id}>" not in content:
            content = f"<@{bot.id}> {content}"
        mentioned = [bot] if mention_bot else []
        reference = None
        if reply_to is not None:
            reference = {"message_id": str(reply_to.id), "channel_id": str(reply_to.channel_id)}
            if reply_to.guild_id is not None:
                reference["guild_id"] = str(reply_to.guild_id)
            replied_author = self.world.user(int(reply_to.author["id"]))
            if ping_reply and replied_author not in mentioned:
                mentioned.append(replied_author)
        message = self.rest.user_message(author, where_guild, where_channel, content, reference,
                                         [u.payload() for u in mentioned])
        payload = message.payload()
        session = self.gateway.session_for(where_guild)
        intents = session.intents if session is not None else 0
        visible_content(payload, intents, bot.id)
        if where_guild is not None:
            member = author.member_payload()
            del member["user"]
            payload["member"] = member
            for mention, spec in zip(payload["mentions"], mentioned):
                extra = spec.member_payload()
                del extra["user"]
                payload["mentions"][payload["mentions"].index(mention)] = {**mention, "member": extra}
        if reply_to is not None:
            referenced = reply_to.payload()
            visible_content(referenced, intents, bot.id)
            payload["referenced_message"] = referenced
        await self.gateway.dispatch("MESSAGE_CREATE", payload, guild_id=where_guild)
        return message

    async def send_message_command(
        self,
        name: str,
        target: StoredMessage,
        *,
        user: UserSpec | int | str | None = None,
        permissions: int | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """A member runs a message command (right-click a message -> Apps -> `name`): an
        APPLICATION_COMMAND interaction whose data has type 3, `target_id` and the message in
        `resolved.messages`, with its content whatever the intents (Discord sends it here)."""
        if target.guild_id is None:
            if name not in self.commands() or not offered_in_dms(self.commands()[name]):
                raise NotOffered(f"{name!r} is not offered in DMs")
            command, is_guild = self.commands()[name], False
            payload = dm_interaction_base(self.world, APPLICATION_COMMAND, self.world.user(user), locale)
        else:
            guild = self.world.guild(target.guild_id)
            command, _, is_guild = self._lookup_exact(name, guild.id)
            payload = interaction_base(self.world, APPLICATION_COMMAND, guild, target.channel_id,
                                       self.world.user(user), permissions, locale)
        if command.get("type", 1) != MESSAGE_COMMAND:
            raise KeyError(f"{name!r} is not a message command (type {command.get('type', 1)})")
        message = target.payload()
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": MESSAGE_COMMAND,
                                "target_id": str(target.id), "resolved": {"messages": {str(target.id): message}}}
        if is_guild:
            data["guild_id"] = str(target.guild_id)
        payload["data"] = data
        return await self._send(payload)

    def _lookup_exact(self, name: str, guild_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        """A command by its whole name (message commands have spaces and capitals in theirs)."""
        for commands, is_guild in ((self.commands(guild_id), True), (self.commands(), False)):
            if name in commands:
                return commands[name], [], is_guild
        raise KeyError(f"{name!r} was never synced (global or guild {guild_id})")

    async def click(
        self,
        message: StoredMessage,
        custom_id: str,
        *,
        user: UserSpec | int | str | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
        permissions: int | None = None,
    ) -> InteractionHandle:
        """Click a button (or pick select `values`) on a message the bot sent."""
        if custom_id not in message.custom_ids():
            raise KeyError(f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids()}")
        if message.guild_id is None:  # a message in a DM with the bot
            payload = dm_interaction_base(self.world, COMPONENT, self.world.user(user), "en-US")
        else:
            guild = self.world.guild(message.guild_id)
            payload = interaction_base(
                self.world, COMPONENT, guild, message.channel_id, self.world.user(user), permissions, "en-US"
            )
        payload["data"] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            payload["data"]["values"] = values
        payload["message"] = message.payload()
        return await self._send(payload, target=message)


class NotOffered(LookupError):
    """Discord would not offer this command where the test tries to use it."""


@asynccontextmanager
async def running_double(**kwargs: Any) -> AsyncIterator[DiscordDouble]:
    """Start a DiscordDouble, patch discord.py at it, and undo both on exit (kwargs: see DiscordDouble)."""
    double = DiscordDouble(**kwargs)
    await double.start()
    try:
        with double.patched():
            yield double
    finally:
        await double.stop()
