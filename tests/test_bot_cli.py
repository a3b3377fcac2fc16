"""`python -m bot` as a subprocess: --check, --health, and the one-line errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot.db.engine import alembic_config, head
from bot.health import STALE_AFTER, check_health, shard_lines, write_health
from tests.discord_double import running_double

ROOT = Path(__file__).resolve().parents[1]


def run_bot(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120):
    environ = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"} | (env or {})
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=timeout)


def write_config(folder: Path, model: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(f'[models]\nalice = "{model}"\nseuss = "{model}"\n[engine]\nbackend = "numpy"\n', "utf-8")
    return path


def test_a_failed_migration_is_one_line_and_leaves_the_database_as_it_was(tmp_path: Path, tiny_model: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    config = write_config(tmp_path, tiny_model)
    path = tmp_path / "data" / "charbot.sqlite3"
    path.parent.mkdir()
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        conn.exec_driver_sql("CREATE TABLE jobs_active_target_number (x INTEGER)")  # 0003 cannot finish
    result = run_bot("--check", "--config", str(config))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: migrating the database sqlite+aiosqlite:///") and line.endswith(
        f"from schema 0002 to {head()} failed and was undone, so it is still at 0002: OperationalError: there is "
        "already a table named jobs_active_target_number")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
    db.close()


def test_check_loads_everything_and_generates(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    result = run_bot("--check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"config {config}: ok"
    assert lines[1] == "history: ok (0 requests stored in the database)"
    assert lines[2].startswith("model alice ") and lines[3].startswith("model seuss ")
    assert "'once upon a time' -> '" in lines[2]
    assert lines[-2].startswith("database sqlite+aiosqlite:///") and f"(schema {head()}, 0 fine-tuned versions, 0 jobs)" in lines[-2]
    assert lines[-1].startswith("all checks passed in ")
    assert (tmp_path / "data" / "charbot.sqlite3").is_file()


def test_check_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "nowhere")
    result = run_bot("--check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == f"error: model folder not found: {tmp_path / 'nowhere'}\n"


def test_a_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[generation]\nmax_length = "abc"\n', "utf-8")
    result = run_bot("--check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr == ('error: config.toml: [generation] max_length must be an integer between 1 and 1500, '
                             'got "abc"\n')


def test_a_bad_finetune_setting_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[finetune]\nmax_epochs = "lots"\n', "utf-8")
    for mode in (["--check"], []):
        result = run_bot(*mode, "--config", str(config), env={"DISCORD_TOKEN": "test-token"})
        assert result.returncode == 1
        assert result.stderr == 'error: config.toml: [finetune] max_epochs must be an integer between 1 and 100, got "lots"\n'


def test_running_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    result = run_bot("--config", str(ROOT / "config.toml"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: DISCORD_TOKEN is not set")
    assert "Bot -> Reset Token" in result.stderr and "export DISCORD_TOKEN=" in result.stderr


def test_health_follows_the_health_file_and_the_database(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("", "utf-8")
    health = tmp_path / "data" / "health.json"
    database = tmp_path / "data" / "charbot.sqlite3"
    db_ok = f"database sqlite {database}: ok"

    missing = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("no health file at")
    assert missing.stdout == f"database sqlite {database}: missing\n"

    write_health(health, connected=True, engine_alive=True, shards={0: True}, shard_count=1)
    no_database = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (no_database.returncode, no_database.stderr) == (
        1, f"database {database} does not exist (the bot creates it when it starts)\n")

    sqlite3.connect(database).close()
    fresh = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (fresh.returncode, fresh.stdout) == (0, f"healthy\nshard 0 of 1: connected\n{db_ok}\n")

    database.write_bytes(b"not a database at all" * 100)
    broken = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert broken.returncode == 1 and broken.stderr.startswith(f"database {database} cannot be opened (")
    database.unlink()
    sqlite3.connect(database).close()

    write_health(health, connected=True, engine_alive=True, now=time.time() - STALE_AFTER - 5)
    stale = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert stale.returncode == 1 and "the bot is stuck or stopped" in stale.stderr

    write_health(health, connected=False, engine_alive=True)
    offline = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (offline.returncode, offline.stderr) == (1, "the bot is not connected to Discord\n")

    write_health(health, connected=True, engine_alive=False)
    dead = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (dead.returncode, dead.stderr) == (1, "the generation engine is not running\n")

    config.write_text("[discord]\nshard_count = 4\nshard_ids = [1, 3]\n", "utf-8")
    own = tmp_path / "data" / "health-shards-1-3.json"
    write_health(own, connected=False, engine_alive=True, shards={1: True, 3: False}, shard_count=4)
    half = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (half.returncode, half.stderr) == (1, "shard 3 of 4 is not connected to Discord\n")
    assert half.stdout == f"shard 1 of 4: connected\nshard 3 of 4: not connected\n{db_ok}\n"
    write_health(own, connected=False, engine_alive=True, shards={1: False, 3: False}, shard_count=4)
    down = run_bot("--health", "--config", str(config), cwd=tmp_path)
    assert (down.returncode, down.stderr) == (1, "the bot is not connected to Discord\n")


def test_the_standalone_bot_runs_against_the_configured_discord_and_stops_on_sigterm(
        tmp_path: Path, tiny_model: Path) -> None:
    """`python -m bot` with [discord] api_base/gateway_url pointed at the double; SIGTERM
    while a reply is being written: the reply still completes, the process exits 0."""

    async def main() -> None:
        async with running_double() as double:
            config = write_config(tmp_path, tiny_model)
            with config.open("a", encoding="utf-8") as f:
                f.write(f'[discord]\napi_base = "{double.rest_base}"\ngateway_url = "{double.gateway_url}"\n'
                        '[generation]\nmax_length = 1500\n')
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(config), cwd=tmp_path,
                env=os.environ | {"DISCORD_TOKEN": "secret-test-token", "PYTHONPATH": str(ROOT)},
                stderr=asyncio.subprocess.PIPE)
            try:
                await double.wait_commands(["alice", "seuss", "history", "forget"], timeout=90)
                await double.wait_ready(timeout=30)
                # Commands are served before discord.py's delayed on_ready; health is good
                # as soon as the first reply is (what the Docker test probes).
                first = await double.send_command("alice", {"text": "Alice", "length": 20}, user="bob")
                await first.wait_final(timeout=60)
                assert check_health(tmp_path / "data" / "health.json") is None
                assert shard_lines(tmp_path / "data" / "health.json") == ["shard 0 of 1: connected"]
                handle = await double.send_command("alice", {"text": "Alice", "length": 1500}, user="bob")
                await handle.acknowledged()
                process.send_signal(signal.SIGTERM)
                _, stderr = await asyncio.wait_for(process.communicate(), 60)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            log = stderr.decode()
            assert process.returncode == 0, log
            assert "SIGTERM received: shutting down" in log
            assert "secret-test-token" not in log
            assert " ERROR " not in log and "Traceback" not in log, log
            assert "1500 characters" in handle.original.content
            double.assert_no_violations()

    asyncio.run(main())
    database = tmp_path / "data" / "charbot.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT outcome, length(output) FROM requests").fetchall() == [("ok", 20), ("ok", 1500)]
    db.close()
