"""Per-server settings (/settings), one row per server in the `server_settings` table.

A server that never changed anything has no row and gets `ServerSettings()`: answers
everywhere, mentions on, the filter on, the config's defaults. Rows go when the server's
other data goes (bot.cog.servers). Direct messages have no settings: the defaults.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from charlm.errors import CharLMError

from bot.db.schema import server_settings

MAX_CHANNELS = 25
"""Channels a server may list (the rest of Discord's bounds are far above what a server needs)."""
MAX_WORDS = 50
"""Extra filter words per server; each is 2-32 letters, digits, `'` or `-`."""
WORD = re.compile(r"[\w'-]{2,32}")


@dataclass(frozen=True)
class ServerSettings:
    """What a server chose; every field has the meaning of its column in bot.db.schema."""

    channels: tuple[int, ...] = ()
    mentions: bool = True
    model: str = ""
    temperature: float | None = None
    length: int | None = None
    filter: bool = True
    words: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, channel_id: int | None) -> bool:
        """Whether the bot answers in this channel (or thread of it: pass the parent)."""
        return not self.channels or channel_id in self.channels


def parse_words(text: str) -> tuple[str, ...]:
    """`darn, heck` -> ('darn', 'heck'); a one-sentence refusal for anything else."""
    words = [w.strip().lower() for w in re.split(r"[,\s]+", text) if w.strip()]
    for word in words:
        if not WORD.fullmatch(word):
            raise CharLMError(f"{word[:40]!r} is not a word: use 2 to 32 letters, digits, ' or -.")
    unique = tuple(dict.fromkeys(words))
    if len(unique) > MAX_WORDS:
        raise CharLMError(f"A server may add at most {MAX_WORDS} words to the filter.")
    return unique


class SettingsStore:
    """Reads and writes `server_settings`; the same queries on SQLite and PostgreSQL."""

    noun = "server settings"
    """What purge_server counts (/purge-server's answer)."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def get(self, guild_id: int | None) -> ServerSettings:
        if guild_id is None:
            return ServerSettings()
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(server_settings).where(
                server_settings.c.guild_id == guild_id))).first()
        if row is None:
            return ServerSettings()
        return ServerSettings(channels=tuple(row.channels), mentions=row.mentions, model=row.model,
                              temperature=row.temperature, length=row.length, filter=row.filter,
                              words=tuple(row.words))

    async def put(self, guild_id: int, settings: ServerSettings, user_id: int | None = None) -> None:
        values = {**asdict(settings), "channels": list(settings.channels), "words": list(settings.words),
                  "updated_by": user_id, "updated_at": time.time()}
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(server_settings).where(server_settings.c.guild_id == guild_id))
            await conn.execute(sa.insert(server_settings).values(guild_id=guild_id, **values))

    async def guild_ids(self) -> set[int]:
        """Every server that changed a setting."""
        async with self.db.connect() as conn:
            return {g for (g,) in await conn.execute(sa.select(server_settings.c.guild_id))}

    async def purge_server(self, guild_id: int) -> int:
        """Delete a server's settings (its data is purged); returns 1 if it had any."""
        async with self.db.begin() as conn:
            return (await conn.execute(sa.delete(server_settings).where(
                server_settings.c.guild_id == guild_id))).rowcount
