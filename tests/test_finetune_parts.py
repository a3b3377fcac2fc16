"""The fine-tune feature's parts without Discord: settings, job store, registry, upload checks, plot."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.finetune.plot import loss_plot
from bot.finetune.registry import Registry, check_name
from bot.finetune.settings import finetune_config
from bot.finetune.store import SCHEMA_VERSION, Job, JobStore
from bot.finetune.uploads import check_corpus, safe_filename
from charlm.errors import CharLMError
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
    assert settings.default_epochs == 5 and settings.progress_interval == 5.0


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
    values = dict(user_id=1, base="alice", base_version="v0", target="alice", target_version="v1",
                  corpus_name="c.txt", corpus_sha256="ab" * 32, corpus_chars=5000, cleaning="5 chars in",
                  settings={"epochs": 2, "batch_size": 8, "learning_rate": 0.001, "patience": 3, "force": False})
    values.update(changes)
    return Job(**values)


def test_store_migrates_its_own_file_and_marks_running_jobs_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "data" / "finetune.sqlite3"

    async def first_run() -> tuple[int, int]:
        store = await JobStore.open(path)
        running = await store.add(job(pid=12345))
        done = await store.add(job(state="succeeded", heldout_bpc=1.5, base_heldout_bpc=1.7, served=True))
        await store.close()  # a bot that stopped with a job running
        return running, done

    async def next_start(running: int, done: int) -> tuple[list[Job], Job, Job]:
        store = await JobStore.open(path)
        marked = await store.mark_interrupted()
        result = await store.get(running), await store.get(done)
        await store.close()
        return marked, *result

    running, done = asyncio.run(first_run())
    marked, interrupted, succeeded = asyncio.run(next_start(running, done))
    assert [j.id for j in marked] == [running]
    assert interrupted.state == "interrupted" and interrupted.pid is None and "stopped" in interrupted.error
    assert succeeded.state == "succeeded" and succeeded.served and succeeded.settings["epochs"] == 2
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "finetune.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CharLMError, match="newer than this bot's"):
        asyncio.run(JobStore.open(path))


def fake_version(folder: Path, corpus: str, bpc: float) -> None:
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps({"corpus": {"name": corpus}, "heldout": {"bits_per_char": bpc}}))


def test_registry_versions_served_pointer_and_discard(tmp_path: Path) -> None:
    shipped = tmp_path / "weights" / "alice"
    fake_version(shipped, "alice.txt", 2.0)
    registry = Registry(tmp_path / "models", {"alice": shipped, "seuss": tmp_path / "weights" / "missing"})
    assert registry.names() == ["alice"]
    assert registry.model("alice").served.label == "v0"

    label, out = registry.next_version("alice")
    assert (label, out) == ("v1", tmp_path / "models" / "alice" / "v1")
    fake_version(out, "seuss.txt", 1.8)
    assert registry.next_version("alice")[0] == "v2"
    assert registry.model("alice").served.label == "v0"  # a new version is not served by itself
    registry.set_served("alice", "v1")
    model = registry.model("alice")
    assert model.served.label == "v1" and model.served.heldout_bpc == 1.8 and model.served.corpus == "seuss.txt"
    assert [v.label for v in model.versions] == ["v0", "v1"]

    half = tmp_path / "models" / "alice" / "v2"
    (half.parent / ".v2.abc.tmp").mkdir()
    half.mkdir()
    registry.discard(half)
    assert sorted(p.name for p in half.parent.iterdir()) == ["served.json", "v1"]

    with pytest.raises(CharLMError, match="no version 'v7'"):
        model.version("v7")
    with pytest.raises(CharLMError, match=r"no model called 'bob' \(models: alice\)"):
        registry.model("bob")
    with pytest.raises(CharLMError, match="not a usable model name"):
        check_name("Dr Seuss!")
    assert check_name(" Poems ") == "poems"


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
