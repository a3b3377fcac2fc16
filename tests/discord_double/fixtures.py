"""pytest fixtures; tests/conftest.py imports them so every test module can request them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .log_guard import LogGuard, guard_errors


@pytest.fixture
def discord_log_guard() -> Iterator[LogGuard]:
    """Fails the test on any ERROR record from discord/asyncio/aiohttp/the double (use .take() to allow one)."""
    with guard_errors() as guard:
        yield guard
