"""Shared pytest setup."""

import sys
from pathlib import Path

# Make `tests.discord_double` importable under plain `pytest` too (python -m pytest adds cwd anyway).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.discord_double.fixtures import discord_log_guard  # noqa: E402,F401
