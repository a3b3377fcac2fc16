"""Servers the bot was removed from, and when: their data goes [history] retention_days later."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.schema import departures


class Departures:
    """The `departures` table."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def left(self, guild_id: int, at: float | None = None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(departures).where(departures.c.guild_id == guild_id))
            await conn.execute(sa.insert(departures).values(guild_id=guild_id, left_at=at or time.time()))

    async def returned(self, guild_id: int) -> bool:
        """The bot is in the server (again): nothing of it is purged. True if it had left."""
        async with self.db.begin() as conn:
            return (await conn.execute(sa.delete(departures).where(departures.c.guild_id == guild_id))).rowcount > 0

    async def all(self) -> dict[int, float]:
        async with self.db.connect() as conn:
            return {r.guild_id: r.left_at for r in await conn.execute(sa.select(departures))}

    async def due(self, days: float, now: float | None = None) -> list[int]:
        """Servers left more than `days` ago."""
        cutoff = (time.time() if now is None else now) - days * 86400
        async with self.db.connect() as conn:
            query = sa.select(departures.c.guild_id).where(departures.c.left_at < cutoff)
            return [r[0] for r in await conn.execute(query)]
