"""Every request the bot answers, one SQLite row each (aiosqlite, WAL, versioned schema).

The schema version lives in PRAGMA user_version; MIGRATIONS[n] takes a database from
version n to n + 1, inside one transaction, so an upgrade is all or nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from charlm.errors import CharLMError

from bot.sqlite import open_database

MIGRATIONS: list[str] = [
    # 1: one row per request.
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,          -- unix seconds, UTC
        guild_id INTEGER,                  -- NULL in direct messages
        channel_id INTEGER,
        user_id INTEGER NOT NULL,
        command TEXT NOT NULL,
        prompt TEXT NOT NULL,              -- the text as typed
        window TEXT NOT NULL,              -- what the model read, padding included
        output TEXT NOT NULL,
        model TEXT NOT NULL,
        model_version TEXT NOT NULL,
        sampling TEXT NOT NULL,            -- JSON: temperature, length, ...
        latency_ms INTEGER NOT NULL,       -- interaction to final reply
        outcome TEXT NOT NULL,             -- ok, busy, timeout, error
        error TEXT NOT NULL DEFAULT ''
    );
    """,
    # 2: /history, /forget and the retention purge filter by user, guild and age;
    #    the time to acknowledgement is kept apart from the time to the final reply.
    """
    CREATE INDEX requests_user ON requests (user_id, created_at);
    CREATE INDEX requests_guild ON requests (guild_id, created_at);
    CREATE INDEX requests_created ON requests (created_at);
    ALTER TABLE requests ADD COLUMN ack_ms INTEGER;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
OUTCOMES = ("ok", "busy", "timeout", "error")


class HistoryError(CharLMError):
    """The history database cannot be used (unreadable, or from a newer bot)."""


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


def _row_to_request(row: aiosqlite.Row) -> Request:
    values = dict(row)
    values["sampling"] = json.loads(values["sampling"])
    return Request(**values)


class HistoryStore:
    """The requests table behind /history, /forget and the retention purge."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> "HistoryStore":
        """Open (creating folders and file as needed), switch to WAL and migrate."""
        path = Path(path)
        return cls(await open_database(path, MIGRATIONS, "history database", HistoryError), path)

    async def close(self) -> None:
        await self.db.close()

    async def journal_mode(self) -> str:
        async with self.db.execute("PRAGMA journal_mode") as cursor:
            (mode,) = await cursor.fetchone()
        return mode

    async def record(self, request: Request) -> int:
        """Insert one request; returns its row id."""
        values = [getattr(request, c) for c in COLUMNS]
        values[COLUMNS.index("sampling")] = json.dumps(request.sampling, sort_keys=True)
        placeholders = ", ".join("?" for _ in COLUMNS)
        cursor = await self.db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({placeholders})", values)
        request.id = cursor.lastrowid
        await cursor.close()
        return request.id

    async def _select(self, where: str, args: tuple[Any, ...], limit: int) -> list[Request]:
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?"
        async with self.db.execute(sql, (*args, limit)) as cursor:
            return [_row_to_request(row) for row in await cursor.fetchall()]

    async def recent_for_user(self, user_id: int, limit: int = 10) -> list[Request]:
        return await self._select("user_id = ?", (user_id,), limit)

    async def recent_for_guild(self, guild_id: int, limit: int = 10) -> list[Request]:
        return await self._select("guild_id = ?", (guild_id,), limit)

    async def guild_counts(self, guild_id: int, since: float = 0.0) -> Counts:
        async def grouped(column: str) -> dict[str, int]:
            sql = (f"SELECT {column}, COUNT(*) FROM requests WHERE guild_id = ? AND created_at >= ? "
                   f"GROUP BY {column} ORDER BY COUNT(*) DESC")
            async with self.db.execute(sql, (guild_id, since)) as cursor:
                return {key: n for key, n in await cursor.fetchall()}

        sql = "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM requests WHERE guild_id = ? AND created_at >= ?"
        async with self.db.execute(sql, (guild_id, since)) as cursor:
            total, users = await cursor.fetchone()
        return Counts(total, users, await grouped("outcome"), await grouped("model"))

    async def count(self, user_id: int | None = None) -> int:
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        async with self.db.execute(f"SELECT COUNT(*) FROM requests {where}", args) as cursor:
            (n,) = await cursor.fetchone()
        return n

    async def forget_user(self, user_id: int) -> int:
        """Delete every row of one user; returns how many went."""
        cursor = await self.db.execute("DELETE FROM requests WHERE user_id = ?", (user_id,))
        deleted = cursor.rowcount
        await cursor.close()
        return deleted

    async def guild_ids(self) -> set[int]:
        """Every server with rows (to notice servers that removed the bot while it was away)."""
        async with self.db.execute("SELECT DISTINCT guild_id FROM requests WHERE guild_id IS NOT NULL") as cursor:
            return {g for (g,) in await cursor.fetchall()}

    async def forget_guild(self, guild_id: int) -> int:
        """Delete every row of one server (the bot left it); returns how many went."""
        cursor = await self.db.execute("DELETE FROM requests WHERE guild_id = ?", (guild_id,))
        deleted = cursor.rowcount
        await cursor.close()
        return deleted

    async def purge_older_than(self, days: float, now: float | None = None) -> int:
        """Delete rows older than `days`; returns how many went."""
        cutoff = (time.time() if now is None else now) - days * 86400
        cursor = await self.db.execute("DELETE FROM requests WHERE created_at < ?", (cutoff,))
        deleted = cursor.rowcount
        await cursor.close()
        return deleted
