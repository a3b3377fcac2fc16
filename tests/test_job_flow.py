"""The fine-tune job flow under faults, on SQLite and on a real PostgreSQL.

The trainer loop (bot.finetune.training) runs for real: real database, real folders, real
child processes speaking the training protocol. The child is tests.jobflow.copy_training,
which copies the base model instead of training it, so each job takes about a second; the
real training child is covered by tests/test_finetune.py and tests/test_scale.py. Faults
are real too: a load check that raises, a registry whose serve or prune raises, a plot that
raises, the database stopped (PostgreSQL) or locked (SQLite) during the final write, a
reaper running while a publish is slow, trainers killed with SIGKILL.

Each test asserts that the job ends in one clear state, that no version row lacks its
folder and no folder lacks its row once cleanup ran, and that the next job runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.db.engine import MigrationFailed, alembic_config, head, open_database
from bot.db.schema import serving, versions
from bot.finetune.cleanup import clean_leftovers, reap
from bot.finetune.process import TrainingProcess, child_environment
from bot.finetune.registry import Registry
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Job, JobStore
from bot.finetune.training import Trainer
from bot.finetune.uploads import check_corpus
from charlm.errors import CharLMError
from charlm.storage import VOCAB_FILE
from charlm.vocab import Vocabulary
from tests.conftest import make_text
from tests.jobflow import serve_python

ROOT = Path(__file__).resolve().parents[1]
UPLOAD = "rhymes.txt"


class World:
    """One database, its stores, the data folder, and trainers on them."""

    def __init__(self, db, tmp_path: Path, base: Path, registry_cls: type[Registry] = Registry, **settings) -> None:
        self.db = db
        self.base = base
        self.data = tmp_path / "data"
        self.settings = FinetuneConfig(models_dir=self.data / "models", worker_timeout=3.0, progress_interval=0.2,
                                       cancel_grace=2.0, **settings)
        self.store = JobStore(db)
        self.registry = registry_cls(db, self.settings.models_dir, {"alice": base})

    def trainer(self, name: str = "host:1", check=None, plot=None, **test) -> Trainer:
        async def start(spec: dict) -> TrainingProcess:
            spec["test"] = {"seconds": 0.3, **test}
            return await TrainingProcess.start(spec, "tests.jobflow.copy_training")

        async def loads(version) -> None:
            if check is not None:
                await check(version)

        return Trainer(self.store, self.registry, self.settings, name, loads,
                       plot=plot or (lambda history, title: b"\x89PNG plot"), poll=0.2, start_process=start)

    async def submit(self, guild: int, target: str = "alice", **settings) -> Job:
        job = Job(user_id=7, guild_id=guild, channel_id=guild + 1, base="alice", base_version="v0", target=target,
                  corpus_name=UPLOAD, corpus_sha256="0" * 64, corpus_chars=9000, cleaning="clean",
                  settings={"epochs": 1, "batch_size": 8, "learning_rate": 0.001, "patience": 3, "force": False,
                            **settings})
        await self.store.add(job)
        folder = self.settings.uploads_dir / str(job.id)
        folder.mkdir(parents=True)
        (folder / UPLOAD).write_text(make_text(9000))
        return job

    async def run(self, trainer: Trainer, job: Job, timeout: float = 60) -> Job:
        """Let `trainer` claim and finish jobs until `job` has ended; returns its row."""
        deadline = time.monotonic() + timeout
        found = job
        while True:
            assert time.monotonic() < deadline, f"job {job.id} still {found.state}"
            await asyncio.sleep(0.1)
            try:
                await trainer.fill()
                found = await self.store.get(job.id)
            except (sa.exc.DBAPIError, OSError):  # the database is away (the outage test)
                continue
            if found.final and job.id not in trainer.held:
                return found

    async def version_rows(self) -> list[tuple[int, str, int]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(sa.select(versions.c.guild_id, versions.c.name, versions.c.number)
                                      .order_by(versions.c.number))
            return [tuple(r) for r in rows]

    async def serving_rows(self) -> list[tuple[int, str, int | None]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(sa.select(serving.c.scope, serving.c.name, versions.c.number)
                                      .select_from(serving.outerjoin(versions, serving.c.version_id == versions.c.id)))
            return sorted(tuple(r) for r in rows)

    def folders(self) -> list[str]:
        """Every entry under models/<guild>/<name>/ (hidden ones included) and every upload."""
        root = self.settings.models_dir
        found = [str(p.relative_to(root)) for p in root.glob("*/*/*")] if root.is_dir() else []
        uploads = self.settings.uploads_dir
        found += [f"upload {p.name}" for p in uploads.iterdir()] if uploads.is_dir() else []
        return sorted(found)

    async def consistent(self) -> None:
        """No row without its folder, no folder without its row, nothing half-written, no upload
        of an ended job."""
        rows = await self.version_rows()
        expected = sorted(f"{g}/{name}/v{n}" for g, name, n in rows)
        active = {j.id for j in await self.store.in_state("queued", "training", "publishing")}
        assert self.folders() == expected + sorted(f"upload {i}" for i in active)
        for folder in expected:
            assert (self.settings.models_dir / folder / VOCAB_FILE).is_file()


@pytest.fixture
def world(store_url: str, tmp_path: Path, tiny_model: Path):
    """A World on each database (SQLite, then PostgreSQL)."""
    made: list[World] = []

    async def make(**settings) -> World:
        registry_cls = settings.pop("registry_cls", Registry)
        made.append(World(await open_database(store_url), tmp_path, tiny_model, registry_cls, **settings))
        return made[-1]

    yield make


def run(coro) -> None:
    asyncio.run(coro)


class FaultyRegistry(Registry):
    """A registry whose serve or prune raises when told to (the fault, injected)."""

    fail: set[str] = set()

    async def serve_in(self, conn, scope, version, user_id=None) -> None:
        if "serve" in self.fail:
            raise RuntimeError("serving failed")
        await super().serve_in(conn, scope, version, user_id)

    async def prune(self, guild_id, name, keep, protect=frozenset()):
        if "prune" in self.fail:
            raise RuntimeError("pruning failed")
        return await super().prune(guild_id, name, keep, protect)


def test_faults_inside_load_serve_plot_and_prune(world) -> None:
    async def main() -> None:
        w = await world(registry_cls=FaultyRegistry, keep_versions=1)
        try:
            async def broken(version) -> None:
                raise RuntimeError("the folder is damaged")

            # load: failed before the commit: no row, no folder, served model unchanged
            job = await w.run(w.trainer(check=broken), await w.submit(10))
            assert (job.state, job.error) == ("failed", "the new model could not be loaded (RuntimeError)")
            assert await w.version_rows() == [] and await w.serving_rows() == []
            await w.consistent()

            # serve: inside the commit's transaction: nothing of it stays
            FaultyRegistry.fail = {"serve"}
            job = await w.run(w.trainer(), await w.submit(10))
            assert (job.state, job.error) == ("failed", "publishing the new model failed (RuntimeError)")
            assert await w.version_rows() == [] and await w.serving_rows() == []
            await w.consistent()

            # plot: the job succeeds without its picture
            FaultyRegistry.fail = set()

            def no_plot(history, title) -> bytes:
                raise RuntimeError("no fonts")

            job = await w.run(w.trainer(plot=no_plot), await w.submit(10))
            assert (job.state, job.served, job.plot, job.target_version) == ("succeeded", True, None, "v3")
            assert await w.version_rows() == [(10, "alice", 3)] and await w.serving_rows() == [(10, "alice", 3)]
            await w.consistent()

            # prune: after the commit; its failure never fails the job (and deletes nothing)
            FaultyRegistry.fail = {"prune"}
            job = await w.run(w.trainer(heldout_bpc=2.5), await w.submit(10))  # worse: kept, not served
            assert (job.state, job.served, job.plot) == ("succeeded", False, b"\x89PNG plot")
            assert await w.version_rows() == [(10, "alice", 3), (10, "alice", 4)]
            await w.consistent()

            FaultyRegistry.fail = set()  # the next job is served, and prunes v3 and v4 (keep_versions = 1)
            job = await w.run(w.trainer(), await w.submit(10))
            assert job.state == "succeeded" and await w.version_rows() == [(10, "alice", 5)]
            assert await w.serving_rows() == [(10, "alice", 5)]
            await w.consistent()
        finally:
            FaultyRegistry.fail = set()
            await w.db.dispose()

    run(main())


def test_cancel_time_limit_and_a_late_writer(world) -> None:
    async def main() -> None:
        w = await world(max_minutes=0.05)  # 3 s
        try:
            job = await w.run(w.trainer(seconds=30), await w.submit(10))
            assert (job.state, job.error) == ("failed", "it ran past the [finetune] max_minutes limit of 0.05 minutes")
            await w.consistent()

            job = await w.run(w.trainer(stopped="time budget", heldout_bpc=2.5), await w.submit(10))
            assert job.state == "failed" and job.error.startswith(
                "the [finetune] max_minutes limit of 0.05 minutes stopped training before it beat its base")
            await w.consistent()

            trainer = w.trainer(seconds=20)
            queued = await w.submit(10)
            await trainer.fill()
            while (await w.store.get(queued.id)).progress == {}:
                await asyncio.sleep(0.1)
            assert await w.store.request_cancel(queued)
            job = await w.run(trainer, queued)
            assert job.state == "cancelled" and job.error == ""
            assert not await w.store.end(job, "host:1", "failed", "late")  # decided: a late writer changes nothing
            assert (await w.store.get(job.id)).state == "cancelled"
            await w.consistent()
        finally:
            await w.db.dispose()

    run(main())


def test_the_reaper_racing_a_slow_publish_and_two_trainers_on_one_base(world) -> None:
    async def main() -> None:
        w = await world()
        try:
            async def slow(version) -> None:  # longer than worker_timeout: heartbeats go on meanwhile
                await asyncio.sleep(w.settings.worker_timeout * 2)

            reaping = True

            async def reaper() -> list:
                reaped = []
                while reaping:
                    reaped += await reap(w.store, w.registry, w.settings)
                    await asyncio.sleep(0.2)
                return reaped

            racing = asyncio.create_task(reaper())
            job = await w.run(w.trainer(check=slow), await w.submit(10))
            reaping = False
            assert await racing == [] and job.state == "succeeded"
            await w.consistent()

            # two servers fine-tune the same base on two trainers at once: two numbers, two versions
            first, second = w.trainer("host:1"), w.trainer("host:2")
            jobs = [await w.submit(20), await w.submit(30)]
            await asyncio.gather(first.fill(), second.fill())
            assert len(first.held) == len(second.held) == 1
            done = await asyncio.gather(w.run(first, jobs[0]), w.run(second, jobs[1]))
            assert [j.state for j in done] == ["succeeded", "succeeded"]
            assert sorted(j.target_number for j in done) == [2, 3]
            assert await w.version_rows() == [(10, "alice", 1), *sorted(
                ((j.guild_id, "alice", j.target_number) for j in done), key=lambda r: r[2])]
            await w.consistent()
        finally:
            await w.db.dispose()

    run(main())


class DatabaseOutage:
    """Takes the database away for `seconds` from inside the publish (just before its
    commit): PostgreSQL is stopped and started again; a SQLite file is locked by another
    connection (the writes fail with 'database is locked' after busy_timeout)."""

    def __init__(self, url: str, postgres, seconds: float) -> None:
        self.url, self.postgres, self.seconds = url, postgres, seconds
        self.thread: threading.Thread | None = None

    async def __call__(self, version) -> None:
        if self.thread is not None:
            return
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.halt)
            self.thread = threading.Thread(target=self._restart)
        else:
            held = sqlite3.connect(self.url.partition(":///")[2], check_same_thread=False)
            held.execute("BEGIN EXCLUSIVE")
            self.thread = threading.Thread(target=self._unlock, args=(held,))
        self.thread.start()

    def _restart(self) -> None:
        time.sleep(self.seconds)
        self.postgres.resume()

    def _unlock(self, held: sqlite3.Connection) -> None:
        time.sleep(self.seconds)
        held.rollback()
        held.close()


def test_the_database_away_during_the_final_write(world, store_url: str, request) -> None:
    postgres = request.getfixturevalue("postgres") if store_url.startswith("postgresql") else None

    async def main() -> None:
        w = await world()
        try:
            outage = DatabaseOutage(store_url, postgres, seconds=7)
            trainer = w.trainer(check=outage)
            job = await w.run(trainer, await w.submit(10), timeout=120)
            await asyncio.to_thread(outage.thread.join)
            assert job.state == "succeeded" and not trainer.held  # the slot is free again
            assert await w.version_rows() == [(10, "alice", 1)] and await w.serving_rows() == [(10, "alice", 1)]
            await w.consistent()
            job = await w.run(trainer, await w.submit(10))  # the next job runs
            assert job.state == "succeeded" and job.target_number == 2
        finally:
            await w.db.dispose()

    run(main())


async def _wait_state(store: JobStore, job_id: int, states: tuple[str, ...], timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while (job := await store.get(job_id)).state not in states:
        assert time.monotonic() < deadline, f"job {job_id} is {job.state}"
        await asyncio.sleep(0.05)
    return job


@pytest.mark.parametrize("when", ["training", "publishing"])
def test_a_trainer_killed_mid_job(world, store_url: str, when: str, tmp_path: Path) -> None:
    """kill -9 while training or while publishing. PostgreSQL: the job fails once its heartbeat
    is older than worker_timeout (reaped here as any bot or trainer would) and another trainer
    takes the next job. SQLite (the bot is the trainer): the next start marks it interrupted.
    Both remove what it left; the figure printed is the time from the kill to the job's end."""
    sole = store_url.startswith("sqlite")

    async def main() -> None:
        w = await world()
        log = open(tmp_path / "trainer.log", "ab")
        options = {"worker_timeout": w.settings.worker_timeout, "train_seconds": 30 if when == "training" else 0.3,
                   "publish_seconds": 30, "sole": sole}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.jobflow.trainer_process", store_url, str(w.settings.models_dir), str(w.base),
            json.dumps(options), cwd=ROOT, stdout=log, stderr=log)
        try:
            job = await w.submit(10)
            seen = await _wait_state(w.store, job.id, (when,))
            if when == "training":
                while not seen.progress:
                    seen = await w.store.get(job.id)
                    await asyncio.sleep(0.05)
            else:
                final = w.registry.folder_for(10, "alice", seen.target_number)
                while not final.is_dir():  # renamed into place, not yet committed
                    await asyncio.sleep(0.05)
            process.kill()
            killed = time.monotonic()
            await process.wait()
            if sole:
                await w.trainer().start_up(sole=True)
                ended = await w.store.get(job.id)
                assert ended.state == "interrupted" and ended.error == "the bot stopped while this job was training"
            else:
                while not await reap(w.store, w.registry, w.settings):
                    await asyncio.sleep(0.1)
                ended = await w.store.get(job.id)
                assert ended.state == "failed" and "stopped answering" in ended.error
                print(f"\nkill -9 while {when} -> job failed after {time.monotonic() - killed:.1f} s "
                      f"(worker_timeout {w.settings.worker_timeout:g} s)")
            await clean_leftovers(w.store, w.registry, w.settings)
            assert await w.version_rows() == []
            await w.consistent()
            job = await w.run(w.trainer("host:2"), await w.submit(10))  # another trainer takes the next job
            assert job.state == "succeeded" and job.target_number == 2
            await w.consistent()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            log.close()
            await w.db.dispose()

    run(main())


def test_a_migration_failing_halfway_on_sqlite_leaves_the_previous_revision(tmp_path: Path) -> None:
    """0003 rebuilds the jobs table, then creates an index whose name a table already has:
    the whole migration is undone, the file stays at 0002 and opens again once fixed."""
    path = tmp_path / "charbot.sqlite3"
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        from alembic import command

        command.upgrade(alembic_config(conn), "0002")
        conn.exec_driver_sql(
            "INSERT INTO jobs (created_at, user_id, guild_id, base, base_version, target, target_version, corpus_name, "
            "corpus_sha256, corpus_chars, cleaning, settings, state, progress) VALUES (1, 7, 10, 'alice', 'v0', "
            "'alice', 'v3', 'r.txt', '0', 9000, 'clean', '{}', 'succeeded', '{}')")
        conn.exec_driver_sql("CREATE TABLE jobs_active_target_number (x INTEGER)")
    url = f"sqlite+aiosqlite:///{path}"
    with pytest.raises(MigrationFailed) as failed:
        run(open_database(url))
    message = str(failed.value)
    assert "\n" not in message and message.startswith("migrating the database sqlite+aiosqlite:///")
    assert f"from schema 0002 to {head()} failed and was undone, so it is still at 0002" in message
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
        columns = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
        assert "target_version" in columns and "target_number" not in columns  # the rebuild was undone
        db.execute("DROP TABLE jobs_active_target_number")
    db.close()

    async def reopen() -> None:
        engine = await open_database(url)
        [job] = await JobStore(engine).latest(10)
        assert (job.state, job.target_version) == ("succeeded", "v3")
        await engine.dispose()

    run(reopen())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
    db.close()


def test_the_upload_check_splits_and_cleans_as_the_training_does(tiny_model: Path) -> None:
    """English followed by a long section in another script: the whole text has plenty the
    model knows, its held-out 10% almost none. The check refuses it as training would."""
    vocab = Vocabulary.load(tiny_model / VOCAB_FILE)
    english = make_text(24_000)
    other = "ЖилибылидеддабабаКурочкаРяба" * 120  # nothing the model knows, not even a space
    with pytest.raises(CharLMError, match=r"too few characters the model knows in its last 10%"):
        check_corpus((english + other).encode(), "mixed.txt", vocab, 5000)
    checked = check_corpus(english.encode(), "plain.txt", vocab, 5000)
    assert checked.usable_chars > 20_000


def test_the_training_process_gets_no_secrets() -> None:
    parent = {"PATH": "/usr/bin", "HOME": "/home/bot", "LANG": "C.UTF-8", "DISCORD_TOKEN": "secret-token",
              "CHARLM_DATABASE_URL": "postgresql://charbot:pw@db/charbot", "POSTGRES_PASSWORD": "pw",
              "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0", "AWS_SECRET_ACCESS_KEY": "x"}
    env = child_environment(parent)
    assert set(env) == {"PATH", "HOME", "LANG", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONPATH"}


def test_a_serving_only_bot_shows_a_finished_job_with_its_plot_without_training_modules(
        tmp_path: Path, tiny_model: Path, postgres_url: str) -> None:
    """The bot on requirements-serve.txt follows a job another process trains: its message
    shows the outcome and the loss plot from the row, and the bot never imported
    TensorFlow, Keras or matplotlib."""
    from bot.finetune.plot import loss_plot
    from tests.discord_double import running_double

    python = serve_python()
    report = tmp_path / "modules.json"

    async def main() -> None:
        db = await open_database(postgres_url)
        store = JobStore(db)
        async with running_double() as double:
            config = tmp_path / "config.toml"
            config.write_text("\n".join([
                "[bot]", f'data_dir = "{tmp_path / "data"}"', "[models]", f'alice = "{tiny_model}"',
                f'seuss = "{tiny_model}"', "[engine]", 'backend = "numpy"',
                "[discord]", f'api_base = "{double.rest_base}"', f'gateway_url = "{double.gateway_url}"']) + "\n")
            job = Job(user_id=930000000000000001, guild_id=910000000000000001, channel_id=920000000000000001,
                      base="alice", base_version="v0", target="alice", corpus_name=UPLOAD, corpus_sha256="0" * 64,
                      corpus_chars=9000, cleaning="9,000 chars in, 9,000 kept",
                      settings={"epochs": 1, "batch_size": 8, "learning_rate": 0.001, "patience": 3, "force": False})
            await store.add(job)
            job = await store.claim("trainer-elsewhere:1")
            log = open(tmp_path / "bot.log", "ab")
            env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DISCORD_TOKEN": "test-token",
                   "CHARLM_DATABASE_URL": postgres_url}
            process = await asyncio.create_subprocess_exec(str(python), "-m", "tests.jobflow.serving_bot", str(config),
                                                           str(report), cwd=tmp_path, env=env, stdout=log, stderr=log)
            try:
                def messages() -> list:
                    return [m for m in double.rest.messages.values() if m.kind == "channel"]

                await double.notifier.wait_for(lambda: any("Fine-tune #1" in m.content for m in messages()), 120)
                assert await store.beat(job, "trainer-elsewhere:1", progress={
                    "epoch": 1, "epochs": 1, "step": 4, "steps": 4, "loss": 1.507, "val_loss": None,
                    "eta_seconds": 0.0}) is False
                await double.notifier.wait_for(lambda: any("step 4/4" in m.content for m in messages()), 30)
                png = loss_plot([{"epoch": 1, "loss": 1.5, "val_loss": 1.6}], "alice v1 from alice v0")
                assert await store.publishing(job, "trainer-elsewhere:1")
                async with db.begin() as conn:
                    await store.succeed(conn, job, "trainer-elsewhere:1", heldout_bpc=1.9, base_heldout_bpc=2.2,
                                        served=True, plot=png)
                assert await asyncio.wait_for(process.wait(), 120) == 0
                [message] = messages()
                assert "✅ now serving **alice v1** in this server" in message.content
                assert [a.data for a in message.attachments] == [png]
                double.assert_no_violations()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                log.close()
                await db.dispose()

    try:
        run(main())
    finally:
        print((tmp_path / "bot.log").read_text("utf-8", "replace")[-4000:])
    assert json.loads(report.read_text()) == {"heavy": []}


def test_uploads_a_bot_was_writing_when_it_died_go_at_its_next_start(tmp_path: Path) -> None:
    from bot.finetune.cleanup import INCOMING_MAX_AGE, clean_incoming

    settings = FinetuneConfig(models_dir=tmp_path / "data" / "models")
    old, fresh, queued = (settings.uploads_dir / name for name in (".incoming-old", ".incoming-new", "7"))
    for folder in (old, fresh, queued):
        folder.mkdir(parents=True)
        (folder / UPLOAD).write_text("text")
    then = time.time() - INCOMING_MAX_AGE - 60
    os.utime(old, (then, then))
    assert asyncio.run(clean_incoming(settings)) == 1
    assert sorted(p.name for p in settings.uploads_dir.iterdir()) == [".incoming-new", "7"]
