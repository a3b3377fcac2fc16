"""The history store on SQLite and on PostgreSQL: queries, retention, forget, reopening, and
the one-time import of an older bot's history file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from bot.db.engine import DatabaseError, open_database
from bot.db.legacy_history import import_history
from bot.history import HistoryStore, Request

DAY = 86400.0
OLD_SCHEMA = [  # what the older bot's history file had: PRAGMA user_version 1, then 2
    """CREATE TABLE requests (id INTEGER PRIMARY KEY, created_at REAL NOT NULL, guild_id INTEGER,
       channel_id INTEGER, user_id INTEGER NOT NULL, command TEXT NOT NULL, prompt TEXT NOT NULL,
       window TEXT NOT NULL, output TEXT NOT NULL, model TEXT NOT NULL, model_version TEXT NOT NULL,
       sampling TEXT NOT NULL, latency_ms INTEGER NOT NULL, outcome TEXT NOT NULL, error TEXT NOT NULL DEFAULT '');""",
    "ALTER TABLE requests ADD COLUMN ack_ms INTEGER;",
]


def request(user_id: int = 1, guild_id: int | None = 10, **fields) -> Request:
    values = dict(command="alice", prompt="Alice was", window="      alice was", output=" beginning",
                  model="alice", model_version="v1", sampling={"temperature": 0.8, "length": 10},
                  latency_ms=120, ack_ms=5)
    values.update(fields)
    return Request(user_id=user_id, guild_id=guild_id, channel_id=20, **values)


def with_store(url: str, body) -> object:
    async def main():
        store = await HistoryStore.open(url)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_rows_round_trip_and_queries_filter(store_url: str) -> None:
    async def body(store: HistoryStore):
        now = time.time()
        await store.record(request(1, created_at=now - 30, outcome="busy", error="the bot is busy"))
        await store.record(request(1, created_at=now - 20, model="seuss"))
        await store.record(request(2, created_at=now - 10))
        await store.record(request(3, guild_id=99, created_at=now))
        await store.record(request(3, guild_id=None, created_at=now))
        await store.record(request(2**62, created_at=now - 5))
        return (await store.recent_for_user(1), await store.recent_for_guild(10, limit=2),
                await store.guild_counts(10), await store.recent_for_user(2**62))

    mine, guild, counts, snowflake = with_store(store_url, body)
    assert [(r.user_id, r.model) for r in mine] == [(1, "seuss"), (1, "alice")]
    assert mine[1].outcome == "busy" and mine[1].error == "the bot is busy"
    assert mine[0].sampling == {"temperature": 0.8, "length": 10}
    assert mine[0].window == "      alice was" and mine[0].channel_id == 20 and mine[0].ack_ms == 5
    assert [r.user_id for r in guild] == [2**62, 2]
    assert counts.requests == 4 and counts.users == 3
    assert counts.by_outcome == {"ok": 3, "busy": 1}
    assert counts.by_model == {"alice": 3, "seuss": 1}
    assert snowflake[0].user_id == 2**62  # Discord ids need 64 bits


def test_retention_purge_deletes_only_old_rows(store_url: str) -> None:
    async def body(store: HistoryStore):
        now = time.time()
        for age_days in (0, 29.9, 30.1, 400):
            await store.record(request(prompt=f"{age_days} days", created_at=now - age_days * DAY))
        deleted = await store.purge_older_than(30, now=now)
        return deleted, [r.prompt for r in await store.recent_for_user(1)]

    deleted, left = with_store(store_url, body)
    assert deleted == 2
    assert left == ["0 days", "29.9 days"]


def test_forget_deletes_every_row_of_that_user_or_server_only(store_url: str) -> None:
    async def body(store: HistoryStore):
        for user in (1, 1, 2):
            await store.record(request(user))
        await store.record(request(1, guild_id=None))
        await store.record(request(5, guild_id=77))
        forgotten = await store.forget_user(1), await store.count(1), await store.count(2)
        return forgotten, await store.purge_server(77), await store.count()

    assert with_store(store_url, body) == ((3, 0, 1), 1, 1)


def test_rows_survive_reopening(store_url: str) -> None:
    async def write(store: HistoryStore) -> int:
        return await store.record(request(output=" kept"))

    async def read(store: HistoryStore) -> list[str]:
        return [r.output for r in await store.recent_for_user(1)]

    assert with_store(store_url, write) >= 1
    assert with_store(store_url, read) == [" kept"]


def old_history_file(path: Path, version: int) -> None:
    """A history file as the older bot left it, with two rows."""
    db = sqlite3.connect(path)
    for statement in OLD_SCHEMA[:version]:
        db.executescript(statement)
    ack = ", ack_ms" if version >= 2 else ""
    for prompt, guild in (("old one", 10), ("old two", None)):
        db.execute(f"INSERT INTO requests (created_at, guild_id, channel_id, user_id, command, prompt, window, "
                   f"output, model, model_version, sampling, latency_ms, outcome{ack}) VALUES (?, ?, 20, 1, "
                   f"'seuss', ?, 'w', 'out', 'seuss', 'v0', ?, 50, 'ok'{', 7' if ack else ''})",
                   (time.time() - 60, guild, prompt, json.dumps({"temperature": 0.5})))
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_history_file_is_imported_once_and_left_untouched(store_url: str, tmp_path: Path,
                                                                    version: int) -> None:
    legacy = tmp_path / "history.sqlite3"
    old_history_file(legacy, version)
    before = legacy.read_bytes()

    async def main():
        db = await open_database(store_url)
        try:
            first = await import_history(db, legacy)
            again = await import_history(db, legacy)  # the next start
            store = HistoryStore(db)
            await store.record(request(1, prompt="new"))
            return first, again, await store.recent_for_user(1)
        finally:
            await db.dispose()

    first, again, rows = asyncio.run(main())
    assert (first, again) == (2, None)
    assert [r.prompt for r in rows] == ["new", "old two", "old one"]
    assert rows[2].sampling == {"temperature": 0.5} and rows[2].guild_id == 10 and rows[1].guild_id is None
    assert rows[2].ack_ms == (7 if version == 2 else None)
    assert legacy.read_bytes() == before


def test_no_older_history_file_imports_nothing(store_url: str, tmp_path: Path) -> None:
    async def main():
        db = await open_database(store_url)
        try:
            return await import_history(db, tmp_path / "absent.sqlite3"), await HistoryStore(db).count()
        finally:
            await db.dispose()

    assert asyncio.run(main()) == (0, 0)


def test_an_unusable_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatabaseError, match="^cannot open the database") as caught:
        with_store(f"sqlite:///{tmp_path / 'file' / 'h.sqlite3'}", lambda store: asyncio.sleep(0))
    assert "\n" not in str(caught.value)


def test_each_user_keeps_at_most_max_rows_per_user_the_oldest_go(store_url: str) -> None:
    """[history] max_rows_per_user: the same DELETE on SQLite and PostgreSQL, run as each row is
    recorded; other users' rows are untouched."""
    async def body(store: HistoryStore):
        store.max_rows_per_user = 3
        now = time.time()
        for i in range(6):  # out of order on purpose: "oldest" is by created_at, not by id
            await store.record(request(1, created_at=now - (i * 5 % 6), prompt=f"p{i * 5 % 6}"))
        for i in range(2):
            await store.record(request(2, created_at=now - i, prompt=f"other {i}"))
        return await store.recent_for_user(1, 10), await store.count(2), await store.count()

    kept, others, total = with_store(store_url, body)
    assert [r.prompt for r in kept] == ["p0", "p1", "p2"]  # the three newest
    assert (others, total) == (2, 5)
