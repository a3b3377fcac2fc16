"""Scaled out, end to end: two `python -m bot` processes (shards 0 and 1 of 2) and one
`python -m bot.trainer` on one PostgreSQL and one shared data folder, against the double
with a server on each shard. Each server is answered by its shard's process and its history
lands in PostgreSQL; a fine-tune started in shard 1's server trains in the trainer and then
serves in that server only; killing the trainer mid-job fails the job (missed heartbeats)
and leaves serving and the model folders alone; a cancel goes through the job's row to
another trainer; stopping one bot process leaves the other's server answering."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import asyncpg

from tests.discord_double import DiscordDouble, guild_id_on_shard, running_double, sharded_world
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
        self.env = os.environ | {"DISCORD_TOKEN": "test-token", "PYTHONPATH": str(ROOT), "CHARLM_DATABASE_URL": url}
        self.running: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, module: str, config: Path) -> None:
        log = open(self.folder / f"{name}.log", "ab")
        self.running[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "--config", str(config), cwd=config.parent, env=self.env,
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


async def start_job(double: DiscordDouble, guild: int, chars: int, **options):
    attachment = double.add_attachment("rhymes.txt", rhymes(chars), channel_id=CHANNEL[guild])
    handle = await double.send_command("finetune start", {"corpus": attachment, "base": "alice", **options},
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


def test_two_shard_processes_and_a_trainer_on_one_postgresql(tmp_path: Path, tiny_model: Path,
                                                            postgres_url: str) -> None:
    processes = Processes(tmp_path, postgres_url)
    models = tmp_path / "shared" / "models"

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            configs = [write_config(tmp_path / f"bot{i}", tiny_model, [i], double) for i in (0, 1)]
            trainer_config = write_config(tmp_path / "trainer", tiny_model, [], double)
            try:
                for i in (0, 1):
                    await processes.start(f"bot{i}", "bot", configs[i])
                await processes.start("trainer", "bot.trainer", trainer_config)
                await double.wait_commands(["alice", "finetune", "models"], timeout=180)
                await double.wait_ready(timeout=180, shards=[0, 1])

                # each server is answered by its own shard's process; history is in PostgreSQL
                assert await answer(double, GUILD_0) == ("alice v0", 0)
                assert await answer(double, GUILD_1) == ("alice v0", 1)
                history = await rows(postgres_url, "SELECT guild_id FROM requests ORDER BY id")
                assert [r["guild_id"] for r in history] == [GUILD_0, GUILD_1]

                # a fine-tune in shard 1's server trains in the trainer, then serves there only
                job = await start_job(double, GUILD_1, 9_000)
                final = await job.wait_final(has("now serving"), timeout=300)
                assert "alice v1" in final.content, final.content
                row = (await rows(postgres_url, "SELECT state, worker FROM jobs WHERE id = 1"))[0]
                trainer_pid = processes.running["trainer"].pid
                assert row["state"] == "succeeded" and row["worker"].endswith(f":{trainer_pid}")
                assert await answer(double, GUILD_1) == ("alice v1", 1)
                assert await answer(double, GUILD_0) == ("alice v0", 0)

                # the trainer dies mid-job: the job fails with the reason, serving is untouched
                doomed = await start_job(double, GUILD_1, 9_000, epochs=100)
                await until_row(postgres_url, "SELECT id FROM jobs WHERE id = 2 AND progress::text LIKE '%step%'")
                assert await processes.stop("trainer", signal.SIGKILL) == -signal.SIGKILL
                failed = await doomed.wait_final(has("stopped sending heartbeats"), timeout=60)
                assert "failed" in failed.content.lower(), failed.content
                row = (await rows(postgres_url, "SELECT state, error FROM jobs WHERE id = 2"))[0]
                assert row["state"] == "failed" and "stopped sending heartbeats" in row["error"]
                assert await answer(double, GUILD_1) == ("alice v1", 1)
                await asyncio.sleep(1)  # a training child that outlived its trainer would write now
                assert files_under(models / str(GUILD_1) / "alice") == [
                    "v1", *[f"v1/{p}" for p in files_under(models / str(GUILD_1) / "alice" / "v1")]]

                # a cancel from the bot reaches the job in (another) trainer through its row
                await processes.start("trainer2", "bot.trainer", trainer_config)
                cancelled = await start_job(double, GUILD_1, 9_000, epochs=100)
                await until_row(postgres_url, "SELECT id FROM jobs WHERE id = 3 AND progress::text LIKE '%step%'")
                cancel = await double.send_command("finetune cancel", {}, user="alice", guild_id=GUILD_1,
                                                   channel_id=CHANNEL[GUILD_1])
                await cancel.wait_final(timeout=60)
                assert "cancelled" in said(cancel).lower(), said(cancel)
                assert (await rows(postgres_url, "SELECT state FROM jobs WHERE id = 3"))[0]["state"] == "cancelled"
                await cancelled.wait_final(has("cancelled"), timeout=30)
                assert await processes.stop("trainer2") == 0

                # stopping shard 1's process leaves shard 0's server answering
                assert await processes.stop("bot1") == 0
                assert await answer(double, GUILD_0) == ("alice v0", 0)
                assert await processes.stop("bot0") == 0
                double.assert_no_violations()
            finally:
                await processes.kill_all()

    try:
        asyncio.run(main())
    finally:
        for name in ("bot0", "bot1", "trainer", "trainer2"):
            if (tmp_path / f"{name}.log").is_file():
                print(f"---- {name}\n{processes.log(name)[-6000:]}")
    for name in ("bot0", "bot1", "trainer2"):
        assert "Traceback" not in processes.log(name), processes.log(name)
    assert "trainer" in processes.log("trainer") and "Traceback" not in processes.log("trainer")
    assert "not syncing commands: the process running shard 0 does" in processes.log("bot1")
