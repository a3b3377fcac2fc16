"""Opening a versioned SQLite database: the one way both stores (history, fine-tune jobs) do it.

The schema version lives in PRAGMA user_version; migrations[n] takes a database from
version n to n + 1 inside one transaction, so a crash mid-upgrade leaves version n.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from charlm.errors import CharLMError


async def migrate(db: aiosqlite.Connection, migrations: list[str], what: str,
                  error: type[CharLMError]) -> int:
    """Bring the schema to len(migrations); returns the version the database had."""
    async with db.execute("PRAGMA user_version") as cursor:
        (version,) = await cursor.fetchone()
    if version > len(migrations):
        raise error(f"{what} has schema {version}, newer than this bot's {len(migrations)}")
    for number in range(version, len(migrations)):
        await db.executescript(f"BEGIN; {migrations[number]} PRAGMA user_version = {number + 1}; COMMIT;")
    return version


async def open_database(path: Path, migrations: list[str], what: str,
                        error: type[CharLMError]) -> aiosqlite.Connection:
    """Open (creating folders and file as needed), switch to WAL and migrate.

    Every failure is `error` with a one-line message naming `what` and the path.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, aiosqlite.Error) as exc:
        raise error(f"cannot open {what} {path}: {exc}") from None
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA busy_timeout = 5000")
        await migrate(db, migrations, what, error)
    except aiosqlite.Error as exc:
        await db.close()
        raise error(f"cannot use {what} {path}: {exc}") from None
    except BaseException:
        await db.close()
        raise
    return db
