"""The history store on a real SQLite file: migrations, WAL, queries, retention and forget."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bot.history import MIGRATIONS, SCHEMA_VERSION, HistoryError, HistoryStore, Request

DAY = 86400.0


def request(user_id: int = 1, guild_id: int | None = 10, **fields) -> Request:
    values = dict(command="alice", prompt="Alice was", window="      alice was", output=" beginning",
                  model="alice", model_version="v1", sampling={"temperature": 0.8, "length": 10},
                  latency_ms=120, ack_ms=5)
    values.update(fields)
    return Request(user_id=user_id, guild_id=guild_id, channel_id=20, **values)


def with_store(path: Path, body) -> object:
    async def main():
        store = await HistoryStore.open(path)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_new_database_is_current_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "history.sqlite3"

    async def body(store: HistoryStore) -> str:
        return await store.journal_mode()

    assert with_store(path, body) == "wal"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO requests (created_at, guild_id, channel_id, user_id, command, prompt, window, output, "
            "model, model_version, sampling, latency_ms, outcome) VALUES (?, 10, 20, 1, 'seuss', 'old', 'old', "
            "'row', 'seuss', 'v0', '{}', 50, 'ok')", (time.time(),))
    db.close()

    async def body(store: HistoryStore) -> list[Request]:
        await store.record(request())
        return await store.recent_for_user(1)

    rows = with_store(path, body)
    assert [r.prompt for r in rows] == ["Alice was", "old"]
    assert rows[1].ack_ms is None and rows[0].ack_ms == 5
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert {"requests_user", "requests_guild", "requests_created"} <= indexes


def test_a_database_from_a_newer_bot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match=f"schema {SCHEMA_VERSION + 1}, newer than this bot's {SCHEMA_VERSION}"):
        with_store(path, lambda store: asyncio.sleep(0))


def test_rows_round_trip_and_queries_filter(tmp_path: Path) -> None:
    async def body(store: HistoryStore):
        now = time.time()
        await store.record(request(1, created_at=now - 30, outcome="busy", error="the bot is busy"))
        await store.record(request(1, created_at=now - 20, model="seuss"))
        await store.record(request(2, created_at=now - 10))
        await store.record(request(3, guild_id=99, created_at=now))
        await store.record(request(3, guild_id=None, created_at=now))
        return (await store.recent_for_user(1), await store.recent_for_guild(10, limit=2),
                await store.guild_counts(10))

    mine, guild, counts = with_store(tmp_path / "h.sqlite3", body)
    assert [(r.user_id, r.model) for r in mine] == [(1, "seuss"), (1, "alice")]
    assert mine[1].outcome == "busy" and mine[1].error == "the bot is busy"
    assert mine[0].sampling == {"temperature": 0.8, "length": 10}
    assert mine[0].window == "      alice was" and mine[0].channel_id == 20
    assert [r.user_id for r in guild] == [2, 1]
    assert counts.requests == 3 and counts.users == 2
    assert counts.by_outcome == {"ok": 2, "busy": 1}
    assert counts.by_model == {"alice": 2, "seuss": 1}


def test_retention_purge_deletes_only_old_rows(tmp_path: Path) -> None:
    async def body(store: HistoryStore):
        now = time.time()
        for age_days in (0, 29.9, 30.1, 400):
            await store.record(request(prompt=f"{age_days} days", created_at=now - age_days * DAY))
        deleted = await store.purge_older_than(30, now=now)
        return deleted, [r.prompt for r in await store.recent_for_user(1)]

    deleted, left = with_store(tmp_path / "h.sqlite3", body)
    assert deleted == 2
    assert left == ["0 days", "29.9 days"]


def test_forget_deletes_every_row_of_that_user_only(tmp_path: Path) -> None:
    async def body(store: HistoryStore):
        for user in (1, 1, 2):
            await store.record(request(user))
        await store.record(request(1, guild_id=None))
        return await store.forget_user(1), await store.count(1), await store.count(2)

    assert with_store(tmp_path / "h.sqlite3", body) == (3, 0, 1)


def test_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"

    async def write(store: HistoryStore) -> int:
        return await store.record(request(output=" kept"))

    async def read(store: HistoryStore) -> list[str]:
        return [r.output for r in await store.recent_for_user(1)]

    assert with_store(path, write) == 1
    assert with_store(path, read) == [" kept"]


def test_an_unusable_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HistoryError, match="^cannot open history database"):
        with_store(tmp_path / "file" / "h.sqlite3", lambda store: asyncio.sleep(0))
