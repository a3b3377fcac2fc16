"""A small JSON file the running bot refreshes, so `python -m bot --health` (Docker's
HEALTHCHECK) can tell a live bot from a stuck one without talking to Discord; the probe
also opens the database itself, since the bot is no use without it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config

INTERVAL = 15.0
"""Seconds between refreshes of the file."""

PROBE_TIMEOUT = 2.0
"""Seconds --health waits for PostgreSQL."""

STALE_AFTER = 3 * INTERVAL
"""A file older than this means the bot stopped refreshing it."""


def write_health(path: Path, connected: bool, engine_alive: bool, now: float | None = None,
                 shards: dict[int, bool] | None = None, shard_count: int | None = None) -> None:
    """Replace the file atomically, so a reader never sees half of it.

    shards: this process's shards, each connected or not; shard_count: of all processes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"time": time.time() if now is None else now, "pid": os.getpid(),
                             "connected": connected, "engine_alive": engine_alive}
    if shards is not None:
        state["shards"] = {str(shard_id): up for shard_id, up in sorted(shards.items())}
        state["shard_count"] = shard_count
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state) + "\n", "utf-8")
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any]:
    state = json.loads(path.read_text("utf-8"))
    if not isinstance(state, dict):
        raise ValueError("not an object")
    return state


def _down_shards(state: dict[str, Any]) -> tuple[list[str], int]:
    shards = state.get("shards") or {}
    return [shard_id for shard_id, up in shards.items() if not up], len(shards)


def check_health(path: Path, now: float | None = None) -> str | None:
    """None when the bot is healthy, else the reason in one line."""
    try:
        state = _read(path)
        age = (time.time() if now is None else now) - float(state["time"])
    except FileNotFoundError:
        return f"no health file at {path}: the bot is not running or not connected yet"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"health file {path} is unreadable ({exc.__class__.__name__})"
    if age > STALE_AFTER:
        return f"health file is {age:.0f} s old (refreshed every {INTERVAL:.0f} s): the bot is stuck or stopped"
    down, total = _down_shards(state)
    if not state.get("connected") and (not total or len(down) == total):
        return "the bot is not connected to Discord"
    if down:
        of = f" of {state.get('shard_count') or '?'}"
        return (f"shard {down[0]}{of} is not connected to Discord" if len(down) == 1
                else f"shards {', '.join(down)}{of} are not connected to Discord")
    if not state.get("connected"):
        return "the bot is not connected to Discord"
    if not state.get("engine_alive"):
        return "the generation engine is not running"
    return None


def shard_lines(path: Path) -> list[str]:
    """'shard 0 of 2: connected' per shard of the process, from its health file (none if unreadable)."""
    try:
        state = _read(path)
    except (OSError, ValueError):
        return []
    count = state.get("shard_count") or "?"
    return [f"shard {shard_id} of {count}: {'connected' if up else 'not connected'}"
            for shard_id, up in (state.get("shards") or {}).items()]


def check_database(config: Config) -> tuple[str, str | None]:
    """(a report line, the problem in one line or None) for the bot's database ([database] url):
    a SQLite file is opened read-only, a PostgreSQL server is asked `SELECT 1` (2 s at most)."""
    from sqlalchemy.engine import make_url

    url = make_url(config.database_url)
    if url.get_backend_name() == "postgresql":
        return _check_postgres(url)
    return _check_sqlite(Path(url.database))


def _check_postgres(url: Any) -> tuple[str, str | None]:
    import asyncio

    import asyncpg

    shown = url.set(drivername="postgresql").render_as_string(hide_password=True)
    line = f"database postgresql {shown.partition('://')[2]}"

    async def ask() -> None:
        connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False),
                                           timeout=PROBE_TIMEOUT)
        try:
            await connection.fetchval("SELECT 1", timeout=PROBE_TIMEOUT)
        finally:
            await connection.close()

    try:
        asyncio.run(asyncio.wait_for(ask(), PROBE_TIMEOUT * 2))
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return f"{line}: unreachable", f"database {shown} cannot be reached ({reason})"
    return f"{line}: ok", None


def _check_sqlite(path: Path) -> tuple[str, str | None]:
    line = f"database sqlite {path}"
    if not path.is_file():
        return f"{line}: missing", f"database {path} does not exist (the bot creates it when it starts)"
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"{line}: cannot be opened", f"database {path} cannot be opened ({exc})"
    return f"{line}: ok", None


def probe(config: Config) -> tuple[list[str], str | None]:
    """What `--health` prints (this process's shards, then the database) and the first problem."""
    problem = check_health(config.health_file)
    database_line, database_problem = check_database(config)
    return [*shard_lines(config.health_file), database_line], problem or database_problem
