"""Interaction payloads sent to the bot and the handles tests use to watch the bot's answers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from .models import GuildSpec, UserSpec, World, snowflake
from .recording import StoredAttachment, StoredMessage, Violation

APPLICATION_COMMAND, COMPONENT, AUTOCOMPLETE = 2, 3, 4
SUBCOMMAND, SUBCOMMAND_GROUP, USER_OPTION, ATTACHMENT_OPTION = 1, 2, 6, 11
CHAT_INPUT, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3  # application command types (data.type)
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


class Notifier:
    """One change counter for the whole double, so waits wake up on any bot activity."""

    def __init__(self) -> None:
        self.version = 0
        self._cond = asyncio.Condition()

    async def bump(self) -> None:
        self.version += 1
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(predicate), timeout)


class InteractionHandle:
    """Everything the bot did in answer to one interaction, plus timings for latency reports."""

    def __init__(self, payload: dict[str, Any], notifier: Notifier, sent_at: float, target: StoredMessage | None):
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.sent_at = sent_at
        self.acked_at: float | None = None
        self.ack_type: int | None = None
        self.original: StoredMessage | None = target
        self.followups: list[StoredMessage] = []
        self.choices: list[dict[str, Any]] | None = None
        self.modal: dict[str, Any] | None = None
        self.violations: list[Violation] = []
        self._notifier = notifier

    @property
    def acked(self) -> bool:
        return self.ack_type is not None

    @property
    def messages(self) -> list[StoredMessage]:
        """Original response (if any) then follow-ups, in creation order."""
        return ([self.original] if self.original else []) + self.followups

    @property
    def contents(self) -> list[str]:
        """Contents the original response showed over time (every edit, no loading placeholder)."""
        return self.original.contents if self.original else []

    @property
    def ephemeral(self) -> bool:
        return bool(self.original and self.original.ephemeral)

    @property
    def last_update_at(self) -> float | None:
        times = [r.at for m in self.messages for r in m.revisions if r.at >= self.sent_at]
        return max(times, default=self.acked_at)

    @property
    def ack_latency(self) -> float | None:
        """Seconds from dispatch to the interaction callback."""
        return None if self.acked_at is None else self.acked_at - self.sent_at

    @property
    def final_latency(self) -> float | None:
        """Seconds from dispatch to the last create/edit the bot made for this interaction."""
        last = self.last_update_at
        return None if last is None else last - self.sent_at

    def responded(self) -> bool:
        """True once the user could see a real answer (not just 'thinking...')."""
        if self.ack_type in (8, 9):
            return True
        if self.followups:
            return True
        return self.original is not None and not self.original.loading and self.acked

    async def acknowledged(self, timeout: float = 5.0) -> int:
        """Wait for the callback and return its type (4, 5, 6, 7, 8 or 9)."""
        await self.wait_until(lambda h: h.acked, timeout)
        assert self.ack_type is not None
        return self.ack_type

    async def wait_until(self, predicate: Callable[[InteractionHandle], bool], timeout: float = 10.0) -> None:
        try:
            await self._notifier.wait_for(lambda: predicate(self), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"interaction not in expected state after {timeout}s: {self.describe()}") from None

    async def wait_final(
        self,
        predicate: Callable[[InteractionHandle], bool] | None = None,
        timeout: float = 30.0,
        settle: float = 0.3,
    ) -> StoredMessage | None:
        """Wait until predicate holds (default: responded()), then until `settle` s pass without changes.

        Returns the original response (or the first follow-up when there is no original).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.wait_until(predicate or InteractionHandle.responded, timeout)
        while (left := deadline - loop.time()) > 0:
            seen = self._notifier.version
            try:
                await self._notifier.wait_for(lambda: self._notifier.version != seen, min(settle, left))
            except asyncio.TimeoutError:
                break
        return self.messages[0] if self.messages else None

    def describe(self) -> str:
        parts = [f"id={self.id} type={self.type} ack_type={self.ack_type}"]
        for message in self.messages:
            parts.append(f"{message.kind}: flags={message.flags} contents={message.contents!r}")
        parts.extend(f"violation {v.kind}: {v.detail}" for v in self.violations)
        return "; ".join(parts)


def find_command(world_commands: dict[str, dict[str, Any]], path: list[str]) -> tuple[dict, list[dict]]:
    """Return (top-level command, chain of subcommand group/subcommand schemas) for 'finetune start'."""
    command = world_commands[path[0]]
    chain: list[dict] = []
    node = command
    for part in path[1:]:
        matches = [o for o in node.get("options", []) if o["name"] == part and o["type"] in (1, 2)]
        if not matches:
            raise KeyError(f"/{' '.join(path)}: no subcommand {part!r}")
        node = matches[0]
        chain.append(node)
    return command, chain


def build_options(
    schema: dict[str, Any],
    chain: list[dict],
    values: dict[str, Any],
    resolved: dict[str, dict[str, Any]],
    guild_id: int | None,
    focused: str | None = None,
) -> list[dict[str, Any]]:
    """Typed option list for the leaf command, wrapped in subcommand/group options."""
    leaf_schema = (chain[-1] if chain else schema).get("options", [])
    leaf: list[dict[str, Any]] = []
    for name, value in values.items():
        matches = [o for o in leaf_schema if o["name"] == name]
        if not matches:
            raise KeyError(f"command {schema['name']!r} has no option {name!r}")
        kind = matches[0]["type"]
        option: dict[str, Any] = {"name": name, "type": kind, "value": _option_value(kind, value, resolved, guild_id)}
        if name == focused:
            option["focused"] = True
            option["value"] = str(value)
        leaf.append(option)
    for node in reversed(chain):
        leaf = [{"name": node["name"], "type": node["type"], "options": leaf}]
    return leaf


def _option_value(kind: int, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None) -> Any:
    if kind == ATTACHMENT_OPTION:
        if not isinstance(value, StoredAttachment):
            raise TypeError("attachment options need a StoredAttachment from double.add_attachment()")
        resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
        return str(value.id)
    if kind == USER_OPTION and isinstance(value, UserSpec):
        resolved.setdefault("users", {})[str(value.id)] = value.payload()
        if guild_id is not None:
            member = value.member_payload(value.permissions)
            del member["user"]
            resolved.setdefault("members", {})[str(value.id)] = member
        return str(value.id)
    return value


def _every_interaction(world: World, kind: int, locale: str) -> dict[str, Any]:
    """The fields an interaction carries wherever it is used, in a server or a DM."""
    return {
        "id": str(snowflake()),
        "application_id": str(world.application_id),
        "type": kind,
        "token": "itok_" + secrets.token_urlsafe(24),
        "version": 1,
        "app_permissions": str(world.bot.permissions),
        "locale": locale,
        "entitlements": [],
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    }


def interaction_base(
    world: World,
    kind: int,
    guild: GuildSpec,
    channel_id: int | None,
    user: UserSpec,
    permissions: int | None,
    locale: str,
) -> dict[str, Any]:
    """Fields every guild interaction carries, as Discord sends them."""
    channel = guild.channel(channel_id)
    perms = user.permissions if permissions is None else permissions
    return {
        **_every_interaction(world, kind, locale),
        "guild_id": str(guild.id),
        "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
        "channel_id": str(channel.id),
        "channel": {**channel.payload(guild.id), "permissions": str(perms)},
        "member": world.user(user).member_payload(perms),
        "guild_locale": "en-US",
        "authorizing_integration_owners": {"0": str(guild.id)},
        "context": 0,
    }


def dm_interaction_base(world: World, kind: int, user: UserSpec, locale: str) -> dict[str, Any]:
    """Fields of an interaction in a DM with the bot: no guild, `user` instead of `member`,
    context 1 (BOT_DM), and "0" as the guild-install owner."""
    return {
        **_every_interaction(world, kind, locale),
        "channel": world.dm_channel(user),
        "channel_id": world.dm_channel(user)["id"],
        "user": user.payload(),
        "authorizing_integration_owners": {"0": "0"},
        "context": 1,
    }


def offered_in_dms(command: dict[str, Any]) -> bool:
    """Whether Discord shows a synced command in a DM with the bot (contexts / dm_permission)."""
    contexts = command.get("contexts")
    if contexts is not None:
        return 1 in contexts
    return command.get("dm_permission", True) is not False
