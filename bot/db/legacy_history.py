"""The first start after the history moved into the bot's database: copy the older bot's
history file ([history] database, PRAGMA user_version 1 or 2) in, once.

The file is read, never written, and stays where it is. All rows go in one transaction with
the marker that says it is done, so a crash midway imports everything again next time and a
row is never there twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.schema import meta, requests

log = logging.getLogger(__name__)
MARKER = "history_import"
BATCH = 1000
COLUMNS = ("created_at", "guild_id", "channel_id", "user_id", "command", "prompt", "window", "output", "model",
           "model_version", "sampling", "latency_ms", "ack_ms", "outcome", "error")


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every row of an older history file, oldest first (none if there is no such file)."""
    if not path.is_file():
        return []
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'requests'").fetchone():
            return []
        rows = []
        for row in db.execute("SELECT * FROM requests ORDER BY id"):
            values = {c: row[c] if c in row.keys() else None for c in COLUMNS}
            values["sampling"] = json.loads(values["sampling"] or "{}")
            values["error"] = values["error"] or ""
            rows.append(values)
        return rows
    finally:
        db.close()


async def import_history(db: AsyncEngine, path: Path) -> int | None:
    """Import once; the number of rows imported, or None if that was done before."""
    async with db.connect() as conn:
        if (await conn.execute(sa.select(meta.c.value).where(meta.c.key == MARKER))).first() is not None:
            return None
    rows = await asyncio.to_thread(read_history, path)
    try:
        await _insert(db, path, rows)
    except sa.exc.IntegrityError:  # another process starting at the same time did it
        return None
    if rows:
        log.info("imported %d history rows from the older history file %s (left in place)", len(rows), path)
    return len(rows)


async def _insert(db: AsyncEngine, path: Path, rows: list[dict[str, Any]]) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(meta).values(key=MARKER, value=json.dumps(
            {"at": time.time(), "from": str(path), "rows": len(rows)})))
        for start in range(0, len(rows), BATCH):
            await conn.execute(sa.insert(requests), rows[start:start + BATCH])
