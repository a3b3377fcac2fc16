"""The database URL, copying SQLite into PostgreSQL, --health on PostgreSQL, and the queue
claimed by two processes at once (SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.config import ConfigError, load_config
from bot.db.engine import open_database
from bot.finetune.registry import Registry
from bot.finetune.store import JobStore
from bot.health import check_database
from bot.history import HistoryStore
from bot.scope import Scope
from tests.test_finetune_parts import fake_version, job
from tests.test_history import request

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("url, driver", [
    ("postgresql://bot@db:5432/charbot", "postgresql+asyncpg://bot@db:5432/charbot"),
    ("postgres://bot:secret@db/charbot", "postgresql+asyncpg://bot:secret@db/charbot"),
    ("sqlite:////srv/x.sqlite3", "sqlite+aiosqlite:////srv/x.sqlite3"),
])
def test_urls_get_their_async_driver(tmp_path: Path, monkeypatch, url: str, driver: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n', "utf-8")
    monkeypatch.delenv("CHARLM_DATABASE_URL", raising=False)
    config = load_config(path)
    assert config.database_url == driver and config.postgres == driver.startswith("postgresql")


@pytest.mark.parametrize("url", ["mysql://bot@db/charbot", "postgresql://", "not a url"])
def test_a_bad_database_url_is_one_line(tmp_path: Path, monkeypatch, url: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "{url}"\n', "utf-8")
    with pytest.raises(ConfigError, match=r"^config.toml: \[database\] url must be empty, or a URL like") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    path.write_text("", "utf-8")
    monkeypatch.setenv("CHARLM_DATABASE_URL", "mysql://bot:secret@db/x")
    with pytest.raises(ConfigError, match="^CHARLM_DATABASE_URL must be empty, or a URL") as caught:
        load_config(path).database_url
    assert "secret" not in str(caught.value)


async def fill(url: str, models: Path) -> None:
    """A SQLite bot's database with a bit of everything."""
    db = await open_database(url)
    try:
        registry = Registry(db, models, {})
        card = fake_version(models / "10" / "alice" / "v1", "pirate.txt", 1.5)
        version = await registry.add(10, "alice", 1, models / "10" / "alice" / "v1", card, None)
        await registry.serve(Scope.server(10), version, 5)
        store = JobStore(db)
        await store.add(job(guild_id=10))
        await store.add(job(guild_id=20))
        history = HistoryStore(db)
        for user in (1, 2, 3):
            await history.record(request(user))
    finally:
        await db.dispose()


def test_copy_moves_every_row_into_postgresql_and_refuses_a_database_that_is_not_empty(
        tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'data' / 'charbot.sqlite3'}"
    asyncio.run(fill(sqlite_url, tmp_path / "models"))
    copied = run_module("-m", "bot.db", "copy", "--from", sqlite_url, "--to", postgres_url)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.endswith(": 0 departures, 2 jobs, 0 meta, 3 requests, 0 server_settings, 1 versions, 1 serving\n")

    async def check() -> None:
        db = await open_database(postgres_url)
        try:
            assert (await Registry(db, tmp_path / "models", {}).served(Scope.server(10), "alice")).label == "v1"
            store = JobStore(db)
            assert [j.guild_id for j in await store.in_state("queued")] == [10, 20]
            assert await store.add(job(guild_id=30)) == 3  # the id sequence moved past the copied ids
            assert [r.user_id for r in await HistoryStore(db).recent_for_user(2)] == [2]
            assert await HistoryStore(db).record(request(9)) == 4
        finally:
            await db.dispose()

    asyncio.run(check())
    again = run_module("-m", "bot.db", "copy", "--from", sqlite_url, "--to", postgres_url)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("error: the target postgresql+asyncpg://") and "is not empty (" in again.stderr
    assert again.stderr.count("\n") == 1
    bad = run_module("-m", "bot.db", "copy", "--from", "mysql://x/y", "--to", postgres_url)
    assert (bad.returncode, bad.stderr) == (1, "error: --from must be a sqlite:/// or postgresql:// URL\n")


def test_health_asks_postgresql(tmp_path: Path, postgres_url: str, monkeypatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text("", "utf-8")
    monkeypatch.setenv("CHARLM_DATABASE_URL", postgres_url)
    line, problem = check_database(load_config(path))
    assert problem is None and line == f"database postgresql {postgres_url.partition('://')[2]}: ok"
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setenv("CHARLM_DATABASE_URL", postgres_url.replace(f":{port}/", f":{port + 1}/"))
    line, problem = check_database(load_config(path))
    assert line.endswith(": unreachable") and problem.startswith("database postgresql://") and "\n" not in problem


def test_two_processes_claim_different_jobs_and_serving_changes_are_seen_at_once(
        tmp_path: Path, postgres_url: str) -> None:
    """Two engines stand for two processes on one PostgreSQL."""
    async def main() -> None:
        one, two = await open_database(postgres_url), await open_database(postgres_url)
        try:
            store_one, store_two = JobStore(one), JobStore(two)
            for guild in (10, 20, 30):
                await store_one.add(job(guild_id=guild))
            claimed = await asyncio.gather(store_one.claim("one:1"), store_two.claim("two:1"), store_two.claim("two:1"))
            assert sorted(j.guild_id for j in claimed) == [10, 20, 30]
            assert sorted(j.target_number for j in claimed) == [1, 2, 3]  # one base, three numbers
            assert await store_one.claim("one:1") is None

            models = tmp_path / "models"
            reg_one, reg_two = Registry(one, models, {}), Registry(two, models, {})
            card = fake_version(models / "10" / "alice" / "v1", "pirate.txt", 1.5)
            version = await reg_one.add(10, "alice", 1, models / "10" / "alice" / "v1", card, None)
            await reg_one.serve(Scope.ALL, version, 5)
            assert (await reg_two.served(Scope.server(20), "alice")).label == "v1"  # the other process's next request
            async with two.connect() as conn:
                assert (await conn.execute(sa.text("SELECT count(*) FROM serving"))).scalar() == 1
        finally:
            await one.dispose()
            await two.dispose()

    asyncio.run(main())
