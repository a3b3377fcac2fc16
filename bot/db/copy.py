"""Copying a whole database (e.g. a SQLite data folder's charbot.sqlite3) into another
(e.g. a fresh PostgreSQL), for moving one bot to several processes.

Both are brought to the same schema first; the target must hold no rows, so nothing is ever
merged or lost. Every table goes in one transaction on the target (all or nothing), ids
included, and PostgreSQL's id sequences are moved past the copied ids.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.engine import DatabaseError, open_database, shown
from bot.db.schema import metadata

BATCH = 1000


async def _counts(db: AsyncEngine) -> dict[str, int]:
    async with db.connect() as conn:
        return {t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar()
                for t in metadata.sorted_tables}


async def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every row of every table; returns the rows copied per table."""
    if source_url == target_url:
        raise DatabaseError("--from and --to are the same database")
    source = await open_database(source_url)
    try:
        target = await open_database(target_url)
        try:
            held = ", ".join(f"{n} {name}" for name, n in (await _counts(target)).items() if n)
            if held:
                raise DatabaseError(f"the target {shown(target_url)} is not empty ({held}); copy into a new database")
            return await _copy(source, target)
        finally:
            await target.dispose()
    finally:
        await source.dispose()


async def _copy(source: AsyncEngine, target: AsyncEngine) -> dict[str, int]:
    copied: dict[str, int] = {}
    async with source.connect() as reading, target.begin() as writing:
        for table in metadata.sorted_tables:  # parents before the rows that point at them
            key = list(table.primary_key.columns)
            rows = [dict(r._mapping) for r in await reading.execute(sa.select(table).order_by(*key))]
            for start in range(0, len(rows), BATCH):
                await writing.execute(sa.insert(table), rows[start:start + BATCH])
            copied[table.name] = len(rows)
            if writing.dialect.name == "postgresql" and "id" in table.c and rows:
                await writing.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                              f"(SELECT MAX(id) FROM {table.name}))"))
    return copied
