"""Every request the bot answers, one row each in the `requests` table of the bot's database
(bot.db.schema), so SQLite and PostgreSQL run the same queries.

Older bots kept these rows in their own SQLite file ([history] database); bot.db.legacy_history
copies that file in at the first start and leaves it untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.schema import requests

OUTCOMES = ("ok", "busy", "server_busy", "timeout", "error")
"""busy: the whole bot was; server_busy: the user's server had [limits] per_server_queue requests."""


@dataclass
class Request:
    """One request and what came of it."""

    user_id: int
    command: str
    prompt: str
    guild_id: int | None = None
    channel_id: int | None = None
    window: str = ""
    output: str = ""
    model: str = ""
    model_version: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    latency_ms: int = 0
    ack_ms: int | None = None
    outcome: str = "ok"
    error: str = ""
    created_at: float = field(default_factory=time.time)
    id: int | None = None


@dataclass(frozen=True)
class Counts:
    """What a server's admins see besides the rows themselves."""

    requests: int
    users: int
    by_outcome: dict[str, int]
    by_model: dict[str, int]


COLUMNS = ("created_at", "guild_id", "channel_id", "user_id", "command", "prompt", "window", "output", "model",
           "model_version", "sampling", "latency_ms", "ack_ms", "outcome", "error")


class HistoryStore:
    """The requests table behind /history, /forget and the retention purge.

    max_rows_per_user: rows kept per user ([history] max_rows_per_user); recording one more
    deletes that user's oldest beyond it in the same transaction. None: no per-user bound.
    """

    noun = "requests"
    """What purge_server counts (/purge-server's answer)."""

    def __init__(self, db: AsyncEngine, owned: bool = False, max_rows_per_user: int | None = None) -> None:
        self.db = db
        self.owned = owned  # opened by open(): close() disposes of the engine
        self.max_rows_per_user = max_rows_per_user

    @classmethod
    async def open(cls, url: str) -> "HistoryStore":
        """A store on its own engine (tests, tools); the bot shares its context's engine."""
        from bot.db.engine import open_database

        return cls(await open_database(url), owned=True)

    async def close(self) -> None:
        if self.owned:
            await self.db.dispose()

    async def record(self, request: Request) -> int:
        """Insert one request, dropping the user's oldest beyond max_rows_per_user; returns its row id."""
        async with self.db.begin() as conn:
            result = await conn.execute(sa.insert(requests).values({c: getattr(request, c) for c in COLUMNS}))
            if self.max_rows_per_user is not None:
                await conn.execute(self._beyond_bound(request.user_id, self.max_rows_per_user))
        request.id = result.inserted_primary_key[0]
        return request.id

    @staticmethod
    def _beyond_bound(user_id: int, keep: int) -> sa.Delete:
        """Delete a user's rows after their newest `keep`: one statement for SQLite and
        PostgreSQL (SQLAlchemy writes the OFFSET each way), walking the (user_id, created_at)
        index only as far as the bound."""
        newest_first = (sa.select(requests.c.id).where(requests.c.user_id == user_id)
                        .order_by(requests.c.created_at.desc(), requests.c.id.desc()).offset(keep))
        return sa.delete(requests).where(requests.c.id.in_(newest_first))

    async def _select(self, where: sa.ColumnElement[bool], limit: int) -> list[Request]:
        query = (sa.select(requests).where(where).order_by(requests.c.created_at.desc(), requests.c.id.desc())
                 .limit(limit))
        async with self.db.connect() as conn:
            return [Request(**row._mapping) for row in await conn.execute(query)]

    async def get(self, request_id: int) -> Request | None:
        """One row by id (a button names the reply it belongs to); None once it was deleted."""
        rows = await self._select(requests.c.id == request_id, 1)
        return rows[0] if rows else None

    async def recent_for_user(self, user_id: int, limit: int = 10) -> list[Request]:
        return await self._select(requests.c.user_id == user_id, limit)

    async def recent_for_guild(self, guild_id: int, limit: int = 10) -> list[Request]:
        return await self._select(requests.c.guild_id == guild_id, limit)

    async def guild_counts(self, guild_id: int, since: float = 0.0) -> Counts:
        where = sa.and_(requests.c.guild_id == guild_id, requests.c.created_at >= since)
        async with self.db.connect() as conn:
            async def grouped(column: sa.Column) -> dict[str, int]:
                n = sa.func.count().label("n")
                rows = await conn.execute(sa.select(column, n).where(where).group_by(column).order_by(n.desc()))
                return {key: count for key, count in rows}

            total, users = (await conn.execute(sa.select(sa.func.count(), sa.func.count(
                sa.distinct(requests.c.user_id))).where(where))).one()
            return Counts(total, users, await grouped(requests.c.outcome), await grouped(requests.c.model))

    async def count(self, user_id: int | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(requests)
        if user_id is not None:
            query = query.where(requests.c.user_id == user_id)
        async with self.db.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def _delete(self, where: sa.ColumnElement[bool]) -> int:
        async with self.db.begin() as conn:
            return (await conn.execute(sa.delete(requests).where(where))).rowcount

    async def forget_user(self, user_id: int) -> int:
        """Delete every row of one user; returns how many went."""
        return await self._delete(requests.c.user_id == user_id)

    async def guild_ids(self) -> set[int]:
        """Every server with rows (to notice servers that removed the bot while it was away)."""
        query = sa.select(requests.c.guild_id).where(requests.c.guild_id.is_not(None)).distinct()
        async with self.db.connect() as conn:
            return {g for (g,) in await conn.execute(query)}

    async def purge_server(self, guild_id: int) -> int:
        """Delete every row of one server (the bot left it); returns how many went."""
        return await self._delete(requests.c.guild_id == guild_id)

    async def purge_older_than(self, days: float, now: float | None = None) -> int:
        """Delete rows older than `days`; returns how many went."""
        cutoff = (time.time() if now is None else now) - days * 86400
        return await self._delete(requests.c.created_at < cutoff)
