"""Scaled out, end to end: two `python -m bot` processes (shards 0 and 1 of 2) running from a
venv of requirements-serve.txt only, and two `python -m bot.trainer` workers (full install),
on one PostgreSQL and one shared data folder, against the double with a server on each
shard. Each server is answered by its shard's process and its history lands in PostgreSQL;
both servers fine-tune the same base at once, one job in each trainer, and both admins see
the success message with its loss plot (drawn by the trainer: the bots cannot import
matplotlib) while each server's /seuss names its own new version; killing a trainer
mid-job fails that job (missed heartbeats) and the other trainer takes the next one; a
cancel goes through the job's row; PostgreSQL restarted under the bots leaves them
answering, and their history reaches PostgreSQL again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg

from tests.discord_double import DiscordDouble, guild_id_on_shard, running_double, sharded_world
from tests.jobflow import serve_python
from tests.test_bot_sharding import over_shard
from tests.test_finetune import has, rhymes, said

ROOT = Path(__file__).resolve().parents[1]
GUILD_0, GUILD_1 = guild_id_on_shard(0, 2), guild_id_on_shard(1, 2)
CHANNEL = {GUILD_0: GUILD_0 + 1, GUILD_1: GUILD_1 + 1}
SETTINGS = {"min_chars": 5000, "default_epochs": 1, "max_epochs": 100, "batch_size": 16, "learning_rate": 0.003,
            "progress_interval": 0.5, "max_upload_mb": 0.1, "cancel_grace": 3, "worker_timeout": 5}


def write_config(folder: Path, model: Path, shard_ids: list[int], double: DiscordDouble) -> Path:
    """One process's config: its own file, the shared data folder, the database from the environment."""
    lines = ["[bot]", f'data_dir = "{folder.parent / "shared"}"',
             "[models]", f'alice = "{model}"', f'seuss = "{model}"',
             "[engine]", 'backend = "numpy"', "[limits]", "cooldown_uses = 0",
             "[discord]", "shard_count = 2", f"shard_ids = {shard_ids}",
             f'api_base = "{double.rest_base}"', f'gateway_url = "{double.gateway_url}"',
             "[finetune]"] + [f"{key} = {json.dumps(value)}" for key, value in SETTINGS.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


class Processes:
    """The bot and trainer processes of the test, each logging to its own file."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.env = os.environ | {"PYTHONPATH": str(ROOT), "CHARLM_DATABASE_URL": url}
        self.running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, module: str, config: Path, python: Path | None = None) -> None:
        """A bot (the token in its environment) or a trainer (none: it never talks to Discord)."""
        log = open(self.folder / f"{name}.log", "ab")
        env = self.env | {"DISCORD_TOKEN": "test-token"} if module == "bot" else self.env
        self.running[name] = await asyncio.create_subprocess_exec(
            str(python or sys.executable), "-m", module, "--config", str(config), cwd=config.parent, env=env,
            stdout=log, stderr=log)
        log.close()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text("utf-8", "replace")

    async def stop(self, name: str, signum: int = signal.SIGTERM) -> int:
        process = self.running.pop(name)
        process.send_signal(signum)
        return await asyncio.wait_for(process.wait(), 60)

    async def kill_all(self) -> None:
        for process in self.running.values():
            if process.returncode is None:
                process.kill()
                await process.wait()


async def answer(double: DiscordDouble, guild: int, command: str = "alice") -> tuple[str, int]:
    """The footer's `alice vN` of a reply in a server, and the shard that carried the request."""
    handle = await double.send_command(command, {"text": "the cat", "length": 20, "temperature": 0}, user="bob",
                                       guild_id=guild, channel_id=CHANNEL[guild])
    await handle.wait_final(lambda h: h.responded() and "is writing" not in h.original.content, timeout=60)
    return said(handle).rsplit("\n-# ", 1)[-1].split(" · ")[0], over_shard(double, handle)


async def start_job(double: DiscordDouble, guild: int, chars: int, base: str = "alice", **options):
    attachment = double.add_attachment("rhymes.txt", rhymes(chars), channel_id=CHANNEL[guild])
    handle = await double.send_command("finetune start", {"corpus": attachment, "base": base, **options},
                                       user="alice", guild_id=guild, channel_id=CHANNEL[guild])
    assert await handle.acknowledged() == 5
    return handle


async def rows(url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


async def until_row(url: str, query: str, timeout: float = 120) -> asyncpg.Record:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await rows(url, query)
        if found:
            return found[0]
        assert asyncio.get_running_loop().time() < deadline, f"no row for {query}"
        await asyncio.sleep(0.2)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else []


def test_two_serving_only_shards_and_two_trainers_on_one_postgresql(tmp_path: Path, tiny_model: Path,
                                                                    postgres_url: str, postgres) -> None:
    processes = Processes(tmp_path, postgres_url)
    models = tmp_path / "shared" / "models"
    serving_only = serve_python()
    figures: dict[str, float] = {}

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            configs = [write_config(tmp_path / f"bot{i}", tiny_model, [i], double) for i in (0, 1)]
            trainer_config = write_config(tmp_path / "trainer", tiny_model, [], double)
            try:
                started = time.monotonic()
                for i in (0, 1):
                    await processes.start(f"bot{i}", "bot", configs[i], serving_only)
                for name in ("trainer1", "trainer2"):
                    await processes.start(name, "bot.trainer", trainer_config)
                await double.wait_commands(["alice", "finetune", "models"], timeout=180)
                await double.wait_ready(timeout=180, shards=[0, 1])
                figures["bots ready (s)"] = time.monotonic() - started

                # each server is answered by its own shard's process; history is in PostgreSQL
                assert await answer(double, GUILD_0) == ("alice v0", 0)
                assert await answer(double, GUILD_1) == ("alice v0", 1)
                history = await rows(postgres_url, "SELECT guild_id FROM requests ORDER BY id")
                assert [r["guild_id"] for r in history] == [GUILD_0, GUILD_1]

                # two servers fine-tune the same base at once, one job in each trainer
                started = time.monotonic()
                jobs = [await start_job(double, guild, 9_000, base="seuss") for guild in (GUILD_0, GUILD_1)]
                finals = [await job.wait_final(has("now serving"), timeout=600) for job in jobs]
                figures["two jobs at once, start to both messages (s)"] = time.monotonic() - started
                done = await rows(postgres_url, "SELECT guild_id, state, worker, target_number FROM jobs ORDER BY id")
                assert [r["state"] for r in done] == ["succeeded", "succeeded"]
                pids = {processes.running[n].pid for n in ("trainer1", "trainer2")}
                assert {int(r["worker"].rsplit(":", 1)[1]) for r in done} == pids  # one job in each trainer
                assert sorted(r["target_number"] for r in done) == [1, 2]
                for final, row in zip(finals, done):
                    assert f"seuss v{row['target_number']}" in final.content, final.content
                    [plot] = final.attachments
                    assert plot.data.startswith(b"\x89PNG")
                    label = f"seuss v{row['target_number']}"
                    assert await answer(double, row["guild_id"], "seuss") == (label, 0 if row["guild_id"] == GUILD_0
                                                                              else 1)

                # a trainer dies mid-job: the job fails with the reason, serving is untouched
                doomed = await start_job(double, GUILD_1, 9_000, epochs=100)
                row = await until_row(postgres_url, "SELECT worker FROM jobs WHERE id = 3 AND progress::text "
                                                    "LIKE '%step%'")
                victim = next(n for n in ("trainer1", "trainer2")
                              if row["worker"].endswith(f":{processes.running[n].pid}"))
                survivor = "trainer2" if victim == "trainer1" else "trainer1"
                assert await processes.stop(victim, signal.SIGKILL) == -signal.SIGKILL
                killed = time.monotonic()
                await until_row(postgres_url, "SELECT id FROM jobs WHERE id = 3 AND state = 'failed'")
                figures["trainer killed -> its job failed (s)"] = time.monotonic() - killed
                failed = await doomed.wait_final(has("stopped answering"), timeout=60)
                assert "❌ failed: its training worker" in failed.content, failed.content
                await asyncio.sleep(1)  # a training child that outlived its trainer would write now
                assert not [p for p in files_under(models) if "/." in f"/{p}"]  # no staging folder left

                # the other trainer takes the next job
                following = await start_job(double, GUILD_1, 9_000)
                final = await following.wait_final(has("now serving"), timeout=300)
                row = (await rows(postgres_url, "SELECT worker, target_number FROM jobs WHERE id = 4"))[0]
                assert row["worker"].endswith(f":{processes.running[survivor].pid}")
                assert f"alice v{row['target_number']}" in final.content

                # a cancel from the bot reaches the job in the trainer through its row
                cancelled = await start_job(double, GUILD_0, 9_000, epochs=100)
                await until_row(postgres_url, "SELECT id FROM jobs WHERE id = 5 AND progress::text LIKE '%step%'")
                cancel = await double.send_command("finetune cancel", {}, user="alice", guild_id=GUILD_0,
                                                   channel_id=CHANNEL[GUILD_0])
                await cancel.wait_final(timeout=60)
                assert "cancelled" in said(cancel).lower(), said(cancel)
                assert (await rows(postgres_url, "SELECT state FROM jobs WHERE id = 5"))[0]["state"] == "cancelled"
                await cancelled.wait_final(has("cancelled"), timeout=30)

                # PostgreSQL restarts under the bots: they keep answering, history reaches it again
                before = len(await rows(postgres_url, "SELECT id FROM requests"))
                await asyncio.to_thread(postgres.halt)
                await asyncio.sleep(2)
                await asyncio.to_thread(postgres.resume)
                assert (await answer(double, GUILD_0))[1] == 0
                assert (await answer(double, GUILD_1))[1] == 1
                after = await rows(postgres_url, "SELECT guild_id FROM requests ORDER BY id")
                assert [r["guild_id"] for r in after[before:]] == [GUILD_0, GUILD_1]

                # stopping shard 1's process leaves shard 0's server answering
                assert await processes.stop("bot1") == 0
                assert (await answer(double, GUILD_0))[1] == 0
                assert await processes.stop("bot0") == 0
                assert await processes.stop(survivor) == 0
                double.assert_no_violations()
            finally:
                await processes.kill_all()

    try:
        asyncio.run(main())
    finally:
        print("figures:", json.dumps({k: round(v, 1) for k, v in figures.items()}))
        for name in ("bot0", "bot1", "trainer1", "trainer2"):
            if (tmp_path / f"{name}.log").is_file():
                print(f"---- {name}\n{processes.log(name)[-6000:]}")
    for name in ("bot0", "bot1"):
        assert "Traceback" not in processes.log(name), processes.log(name)
        assert "ModuleNotFoundError" not in processes.log(name)
    assert "not syncing commands: the process running shard 0 does" in processes.log("bot1")
