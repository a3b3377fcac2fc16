"""A small JSON file the running bot refreshes, so `python -m bot --health` (Docker's
HEALTHCHECK) can tell a live bot from a stuck one without talking to Discord."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

INTERVAL = 15.0
"""Seconds between refreshes of the file."""

STALE_AFTER = 3 * INTERVAL
"""A file older than this means the bot stopped refreshing it."""


def write_health(path: Path, connected: bool, engine_alive: bool, now: float | None = None) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"time": time.time() if now is None else now, "pid": os.getpid(),
             "connected": connected, "engine_alive": engine_alive}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state) + "\n", "utf-8")
    os.replace(tmp, path)


def check_health(path: Path, now: float | None = None) -> str | None:
    """None when the bot is healthy, else the reason in one line."""
    try:
        state = json.loads(path.read_text("utf-8"))
        age = (time.time() if now is None else now) - float(state["time"])
    except FileNotFoundError:
        return f"no health file at {path}: the bot is not running or not connected yet"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"health file {path} is unreadable ({exc.__class__.__name__})"
    if age > STALE_AFTER:
        return f"health file is {age:.0f} s old (refreshed every {INTERVAL:.0f} s): the bot is stuck or stopped"
    if not state.get("connected"):
        return "the bot is not connected to Discord"
    if not state.get("engine_alive"):
        return "the generation engine is not running"
    return None
