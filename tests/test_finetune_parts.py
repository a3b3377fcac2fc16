"""The fine-tune feature's parts without Discord: settings, job store, registry, upload checks, plot."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.finetune.plot import loss_plot
from bot.finetune.registry import Registry, Version, check_name
from bot.finetune.settings import finetune_config
from bot.db.departures import Departures
from bot.db.engine import DatabaseError, head, open_database
from bot.finetune.store import Busy, Job, JobStore
from bot.finetune.uploads import check_corpus, safe_filename
from bot.scope import Scope
from charlm.errors import CharLMError
from charlm.train_config import FINETUNE
from charlm.vocab import Vocabulary
from tests.conftest import make_text


def config_with(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[bot]\ndata_dir = "state"\n\n[finetune]\n{table}\n', "utf-8")
    return path


def test_settings_default_and_resolve_under_data_dir(tmp_path: Path) -> None:
    settings = finetune_config(load_config(config_with(tmp_path, "max_upload_mb = 2")))
    assert settings.max_upload_bytes == 2 * 1024 * 1024
    assert settings.models_dir == (tmp_path / "state" / "models").resolve()
    assert settings.database == (tmp_path / "state" / "finetune.sqlite3").resolve()
    assert settings.default_epochs == FINETUNE.epochs and settings.progress_interval == 5.0


@pytest.mark.parametrize("table, message", [
    ("epochs = 3", "config.toml: unknown key [finetune] epochs (known: max_upload_mb, "),
    ("min_chars = 10", "config.toml: [finetune] min_chars must be an integer between 1000 and 100000000, got 10"),
    ("nice = true", "config.toml: [finetune] nice must be an integer between 0 and 19, got true"),
    ("default_epochs = 9\nmax_epochs = 4", "config.toml: [finetune] default_epochs must be at most max_epochs (4), got 9"),
])
def test_settings_errors_are_one_line(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        finetune_config(load_config(config_with(tmp_path, table)))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def job(**changes: object) -> Job:
    values = dict(user_id=1, guild_id=10, base="alice", base_version="v0", target="alice",
                  corpus_name="c.txt", corpus_sha256="ab" * 32, corpus_chars=5000, cleaning="5 chars in",
                  settings={"epochs": 2, "batch_size": 8, "learning_rate": 0.001, "patience": 3, "force": False})
    values.update(changes)
    return Job(**values)


def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'charbot.sqlite3'}"


def test_the_queue_is_first_come_first_served_one_job_per_server_and_survives_a_restart(store_url: str) -> None:
    async def first_run() -> list[int]:
        db = await open_database(store_url)
        store = JobStore(db)
        ids = [await store.add(job(guild_id=g)) for g in (10, 20, 30)]
        with pytest.raises(Busy, match="already has a fine-tune job queued or running"):
            await store.add(job(guild_id=20))  # the database's unique index, even without the cog's check
        claimed = await store.claim("host:1")
        assert claimed.id == ids[0] and claimed.state == "training" and claimed.started_at
        assert claimed.target_number == 1 and claimed.target_version == "v1"
        assert [await store.position(j) for j in await store.in_state("queued")] == [1, 2]
        assert await store.cancel_queued(await store.get(ids[1]))
        assert not await store.cancel_queued(await store.get(ids[0]))  # training: not the queue's any more
        await Departures(db).left(30)
        assert await store.claim("host:1") is None  # the only queued job's server removed the bot
        await Departures(db).returned(30)
        await db.dispose()  # a bot that stopped with a job running and one queued
        return ids

    async def next_start(ids: list[int]) -> None:
        db = await open_database(store_url)
        store = JobStore(db)
        assert [j.id for j in await store.interrupt_stranded()] == [ids[0]]
        interrupted = await store.get(ids[0])
        assert interrupted.state == "interrupted" and interrupted.pid is None and "stopped" in interrupted.error
        again = await store.claim("host:1")
        assert again.id == ids[2] and again.target_number == 2  # numbers are never given twice
        assert [j.state for j in await store.latest(10, 5)] == ["interrupted"]
        assert await store.add(job(guild_id=10)) > ids[2]  # its server may queue again
        await db.dispose()

    asyncio.run(next_start(asyncio.run(first_run())))
    if store_url.startswith("postgresql"):
        return
    with sqlite3.connect(store_url.partition(":///")[2]) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_the_database_refuses_a_newer_schema(tmp_path: Path) -> None:
    asyncio.run(_dispose(db_url(tmp_path)))
    with sqlite3.connect(tmp_path / "data" / "charbot.sqlite3") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    with pytest.raises(DatabaseError, match="has schema 9999, newer than this bot's"):
        asyncio.run(_dispose(db_url(tmp_path)))


async def _dispose(url: str) -> None:
    await (await open_database(url)).dispose()


def fake_version(folder: Path, corpus: str, bpc: float) -> dict:
    folder.mkdir(parents=True)
    card = {"corpus": {"name": corpus}, "heldout": {"bits_per_char": bpc}}
    (folder / "card.json").write_text(json.dumps(card))
    return card


def test_registry_scopes_serving_pruning_and_discard(tmp_path: Path, store_url: str) -> None:
    shipped = tmp_path / "weights" / "alice"
    fake_version(shipped, "alice.txt", 2.0)

    async def main() -> None:
        db = await open_database(store_url)
        discarded: list[Version] = []  # what the bot unloads from the engine
        registry = Registry(db, tmp_path / "models", {"alice": shipped, "seuss": tmp_path / "weights" / "missing"},
                            on_discard=discarded.append)
        assert await registry.names(Scope.server(10)) == ["alice"]
        assert (await registry.served(Scope.server(10), "alice")).label == "v0"
        versions = []
        for number, guild in enumerate((10, 10, 20), 1):
            out = registry.folder_for(guild, "alice", number)
            assert out == tmp_path / "models" / str(guild) / "alice" / f"v{number}"
            versions.append(await registry.add(guild, "alice", number, out, fake_version(out, "s.txt", 1.5 + number)))
        assert [v.label for v in versions] == ["v1", "v2", "v3"]
        assert await registry.registered("alice", 3) and not await registry.registered("alice", 4)
        assert (await registry.served(Scope.server(10), "alice")).label == "v0"  # a new version is not served by itself
        await registry.serve(Scope.server(10), versions[0])
        assert (await registry.served(Scope.server(10), "alice")).label == "v1" and (await registry.served(Scope.server(20), "alice")).shipped
        model = await registry.model(Scope.server(20), "alice")
        assert [v.label for v in model.versions] == ["v0", "v3"]  # not server 10's
        await registry.serve(Scope.ALL, versions[2])  # the owners publish server 20's v3
        assert (await registry.served(Scope.server(30), "alice")).label == "v3" and (await registry.served(Scope.dm(40), "alice")).label == "v3"
        assert (await registry.served(Scope.server(10), "alice")).label == "v1"  # its own choice stays
        assert [v.label for v in (await registry.model(Scope.server(10), "alice")).versions] == ["v0", "v1", "v2", "v3"]
        assert [v.label for v in (await registry.model(Scope.ALL, "alice")).versions] == [
            "v0", "v1", "v2", "v3"]

        deleted = await registry.prune(10, "alice", keep=1)  # v1 is served: v2 goes
        assert [v.label for v in deleted] == ["v2"] and not versions[1].folder.exists()
        assert await registry.purge_server(20) == 0  # v3 is every server's default: kept, as the owners'
        assert (await registry.by_id(versions[2].id)).guild_id == 0
        assert await registry.purge_server(10) == 1 and [v.label for v in discarded] == ["v1"]
        assert not (tmp_path / "models" / "10").exists()

        half = registry.folder_for(20, "alice", 9)
        half.mkdir(parents=True)
        (half.parent / ".v9.abc.tmp").mkdir()
        registry.discard(half)
        assert sorted(p.name for p in half.parent.iterdir()) == ["v3"]

        with pytest.raises(CharLMError, match=r"alice has no version 'v7' here \(it has v0, v3\)"):
            (await registry.model(Scope.server(20), "alice")).version("v7")
        with pytest.raises(CharLMError, match="There is no model called 'bob' here"):
            await registry.model(Scope.server(20), "bob")
        await db.dispose()

    with pytest.raises(CharLMError, match="not a usable model name"):
        check_name("Dr Seuss!")
    assert check_name(" Poems ") == "poems"

    asyncio.run(main())


VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,!?'\n")


@pytest.mark.parametrize("data, message", [
    (b"", "c.txt is empty"),
    (b"  \n\n ", "c.txt is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "c.txt looks binary"),
    ("caf\u00e9 ".encode("latin-1") * 600, "c.txt is not UTF-8 text"),
    (b"too short. " * 50, "c.txt is too short: 549 characters after cleaning"),
    (b"just over charlm's floor. " * 60, "c.txt is too short: 1,561 usable characters after cleaning, at least "
                                         "5,000 needed"),
], ids=["empty", "blank", "binary", "latin-1", "under-charlm-floor", "under-min-chars"])
def test_bad_uploads_get_their_own_message(data: bytes, message: str) -> None:
    with pytest.raises(CharLMError) as error:
        check_corpus(data, "c.txt", VOCAB, 5_000)
    assert str(error.value).startswith(message)


def test_cleaning_report_counts_mapped_dropped_and_unknown_characters() -> None:
    text = make_text(6_000) + " \u201cquoted\u201d \u2014 \u00e9t\u00e9 \u200b"
    checked = check_corpus(text.encode(), "c.txt", VOCAB, 5_000)
    report = checked.report()
    assert "3 mapped ('“'x1, '”'x1, '—'x1)" in report and "1 dropped ('\\u200b'x1)" in report
    assert "5 unknown to the base model dropped ('\"'x2, 'é'x2, '-'x1)" in report
    assert checked.usable_chars < len(checked.corpus.text)
    assert safe_filename("../my story (v2).txt") == "my_story_v2_.txt"


def test_loss_plot_is_a_png(tmp_path: Path) -> None:
    history = [{"epoch": 1, "loss": 2.0, "val_loss": 2.1}, {"epoch": 2, "loss": 1.7, "val_loss": 1.9}]
    png = loss_plot(history, "alice v1 from alice v0")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000


def test_workers_heartbeat_cancel_through_the_row_and_silent_ones_are_failed(store_url: str) -> None:
    async def main() -> None:
        db = await open_database(store_url)
        try:
            store = JobStore(db)
            first, second = job(guild_id=10), job(guild_id=20)
            await store.add(first)
            await store.add(second)
            claimed = await store.claim("host:1")
            assert claimed.worker == "host:1" and claimed.heartbeat_at is not None
            assert await store.beat(claimed, "host:1") is False
            assert await store.beat(claimed, "host:2") is None  # not that worker's job
            assert await store.request_cancel(claimed)
            assert await store.beat(claimed, "host:1") is True
            assert not await store.request_cancel(second)  # queued: cancel_queued is for those
            other = await store.claim("host:2")
            assert await store.publishing(other, "host:2") and other.state == "publishing"
            assert not await store.request_cancel(other)  # publishing: too late for a cancel
            assert await store.stale(60) == []
            later = time.time() + 120
            stale = await store.stale(60, now=later)
            assert [j.id for j in stale] == [claimed.id, other.id]
            await store.beat(other, "host:2")  # it beat after the look: not failed
            assert await store.reap(stale[0], now=later)
            assert not await store.reap(stale[1], now=later)
            failed = await store.get(claimed.id)
            assert failed.state == "failed" and "host:1 stopped answering" in failed.error
            assert await store.beat(failed, "host:1") is None  # its worker learns it lost the job
            assert not await store.end(failed, "host:1", "cancelled")  # a late writer changes nothing
            assert (await store.get(claimed.id)).state == "failed"
            assert (await store.get(other.id)).state == "publishing"
        finally:
            await db.dispose()

    asyncio.run(main())
