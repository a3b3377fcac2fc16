"""Every store that keeps data per server, so departures, retention and /purge-server reach
all of them from one place (bot.cog.servers), whichever extensions added them.

bot.context lists the stores every bot has (the model registry, the history, /settings);
the fine-tune extension adds its job store, a hook that stops a server's running job
before its data goes, and one that lets a returning server's queued job go ahead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

BeforePurge = Callable[[int], Awaitable[object]]
"""Run with a server's id before its stores are purged (e.g. stop its running job)."""
OnReturn = Callable[[int], object]
"""Run with a server's id when it adds the bot back before its data went."""


class ServerData(Protocol):
    """A store with rows per server."""

    noun: str
    """What purge_server counts, for /purge-server's answer ("requests")."""

    async def guild_ids(self) -> set[int]:
        """Every server it holds rows of."""

    async def purge_server(self, guild_id: int) -> int:
        """Delete everything it holds of one server; returns how many rows (or versions) went."""


@dataclass(frozen=True)
class Member:
    """One store and the hooks its extension added with it."""

    store: ServerData
    before_purge: BeforePurge | None = None
    on_return: OnReturn | None = None


class ServerStores:
    """The stores, in purge order, and the hooks that run before a purge."""

    def __init__(self, stores: list[ServerData]) -> None:
        self.members = [Member(store) for store in stores]

    @property
    def stores(self) -> list[ServerData]:
        return [m.store for m in self.members]

    def add(self, store: ServerData, before_purge: BeforePurge | None = None,
            on_return: OnReturn | None = None) -> None:
        """An extension's store (purged after those already listed) and its hooks."""
        self.members.append(Member(store, before_purge, on_return))

    def remove(self, store: ServerData) -> None:
        """The extension was unloaded: its store and hooks go with it (nothing if never added)."""
        self.members = [m for m in self.members if m.store is not store]

    def returned(self, guild_id: int) -> None:
        """A departed server added the bot back: its data stays."""
        for m in self.members:
            if m.on_return is not None:
                m.on_return(guild_id)

    async def guild_ids(self) -> set[int]:
        """Every server any store holds data of."""
        found: set[int] = set()
        for store in self.stores:
            found |= await store.guild_ids()
        return found

    async def purge(self, guild_id: int) -> list[tuple[str, int]]:
        """Delete everything of one server from every store: (noun, count) per store.

        The first failure is raised and the rest is left: the caller keeps the server's
        departure, so the next pass runs the whole purge again (each step is idempotent).
        """
        for m in self.members:
            if m.before_purge is not None:
                await m.before_purge(guild_id)
        counts = [(store.noun, await store.purge_server(guild_id)) for store in self.stores]
        log.info("purged guild %s: %s", guild_id, ", ".join(f"{n} {noun}" for noun, n in counts))
        return counts
