"""The charbot as sharded processes: [discord] shard_count/shard_ids against the double with
servers on both shards of two; each server is answered by its own shard's bot, only the
shard-0 process syncs the commands, and health lists this process's shards."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.config import Config, load_config
from bot.health import check_health, probe
from bot.runner import CharLMBot
from tests.discord_double import (
    DiscordDouble, InteractionHandle, LogGuard, guild_id_on_shard, running_bot, running_double, sharded_world,
)

ROOT = Path(__file__).resolve().parents[1]
GUILD_0, GUILD_1 = guild_id_on_shard(0, 2), guild_id_on_shard(1, 2)
SYNC = "PUT /applications/{app}/commands"


def shard_config(folder: Path, model: Path, shard_ids: list[int], double: DiscordDouble | None = None) -> Path:
    """A config for one process of two shards; each process keeps its own data folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[bot]", f'data_dir = "{folder / "data"}"',
        "[models]", f'alice = "{model}"', f'seuss = "{model}"',
        "[engine]", 'backend = "numpy"',
        "[limits]", "cooldown_uses = 0",
        "[discord]", "shard_count = 2", f"shard_ids = {shard_ids}",
    ]
    if double is not None:
        lines += [f'api_base = "{double.rest_base}"', f'gateway_url = "{double.gateway_url}"']
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def guilds_in_history(config: Config) -> list[int]:
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        rows = [row[0] for row in db.execute("SELECT guild_id FROM requests ORDER BY id")]
    db.close()
    return rows


def over_shard(double: DiscordDouble, handle: InteractionHandle) -> int:
    """The shard whose session carried the interaction."""
    for session in double.gateway.sessions.values():
        if any(e["t"] == "INTERACTION_CREATE" and e["d"]["id"] == str(handle.id) for e in session.log):
            return session.shard[0]
    raise AssertionError("interaction was never dispatched")


def test_two_shard_bots_answer_their_own_servers_and_only_shard_0_syncs(
        tmp_path: Path, tiny_model: Path, discord_log_guard: LogGuard) -> None:
    configs = [load_config(shard_config(tmp_path / f"shard{i}", tiny_model, [i])) for i in (0, 1)]

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            async with running_bot(CharLMBot(configs[0], guild_ready_timeout=0.1), timeout=60) as first, \
                    running_bot(CharLMBot(configs[1], guild_ready_timeout=0.1), timeout=60) as second:
                await double.wait_commands(["alice", "seuss", "history", "forget"])
                await double.wait_ready(shards=[0, 1])
                assert [g.id for g in first.guilds] == [GUILD_0] and [g.id for g in second.guilds] == [GUILD_1]
                assert len(double.calls(SYNC)) == 1
                for guild_id, shard_id in ((GUILD_1, 1), (GUILD_0, 0)):
                    handle = await double.send_command("alice", {"text": "Alice", "length": 20}, user="bob",
                                                       guild_id=guild_id)
                    reply = await handle.wait_final(lambda h: h.responded() and "is writing" not in h.original.content)
                    assert reply is not None and "· 20 characters" in reply.content, reply.content
                    assert over_shard(double, handle) == shard_id

                for bot, shard_id in ((first, 0), (second, 1)):
                    await bot.refresh_health()
                    lines, problem = probe(bot.config)
                    assert problem is None, problem
                    assert lines[0] == f"shard {shard_id} of 2: connected"
                    assert lines[1].startswith("database sqlite ") and lines[1].endswith(": ok")
            double.assert_no_violations()

    asyncio.run(main())
    assert guilds_in_history(configs[0]) == [GUILD_0]
    assert guilds_in_history(configs[1]) == [GUILD_1]


def test_two_bot_processes_split_the_shards_and_one_keeps_answering_when_the_other_stops(
        tmp_path: Path, tiny_model: Path) -> None:
    """`python -m bot` twice (shard_ids [0] and [1] of 2): --health of each lists its shard; after
    SIGTERM to shard 1's process, shard 0's server still gets answers."""

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            paths = [shard_config(tmp_path / f"p{i}", tiny_model, [i], double) for i in (0, 1)]
            env = os.environ | {"DISCORD_TOKEN": "test-token", "PYTHONPATH": str(ROOT)}
            processes = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(path), cwd=path.parent, env=env,
                stderr=asyncio.subprocess.PIPE) for path in paths]
            try:
                await double.wait_commands(["alice", "seuss", "history", "forget"], timeout=120)
                await double.wait_ready(timeout=120, shards=[0, 1])
                for guild_id in (GUILD_0, GUILD_1):
                    handle = await double.send_command("alice", {"text": "Alice", "length": 20}, user="bob",
                                                       guild_id=guild_id)
                    await handle.wait_final(lambda h: h.responded() and "is writing" not in h.original.content,
                                            timeout=60)
                    assert "· 20 characters" in handle.original.content
                assert len(double.calls(SYNC)) == 1
                for i, path in enumerate(paths):
                    health = await asyncio.to_thread(
                        subprocess.run, [sys.executable, "-m", "bot", "--health", "--config", str(path)],
                        env=env, capture_output=True, text=True, timeout=60)
                    assert health.returncode == 0, health.stderr
                    assert health.stdout.splitlines()[:2] == ["healthy", f"shard {i} of 2: connected"]

                processes[1].send_signal(signal.SIGTERM)
                _, log = await asyncio.wait_for(processes[1].communicate(), 60)
                assert processes[1].returncode == 0, log.decode()
                assert "not syncing commands: the process running shard 0 does" in log.decode()
                assert " ERROR " not in log.decode() and "Traceback" not in log.decode(), log.decode()
                assert check_health(load_config(paths[1]).health_file) == "the bot is not connected to Discord"
                handle = await double.send_command("alice", {"text": "Alice", "length": 20}, user="bob",
                                                   guild_id=GUILD_0)
                await handle.wait_final(lambda h: h.responded() and "is writing" not in h.original.content,
                                        timeout=60)
                assert "· 20 characters" in handle.original.content
                processes[0].send_signal(signal.SIGTERM)
                _, log = await asyncio.wait_for(processes[0].communicate(), 60)
                assert processes[0].returncode == 0, log.decode()
                assert " ERROR " not in log.decode() and "Traceback" not in log.decode(), log.decode()
                double.assert_no_violations()
            finally:
                for process in processes:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()

    asyncio.run(main())
