"""Turn ERROR logs from discord.py, asyncio, aiohttp and the double into test failures."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GUARDED_LOGGERS = ("discord", "asyncio", "aiohttp", "tests.discord_double")


class LogGuard(logging.Handler):
    """Collects ERROR+ records; unclosed sessions and destroyed tasks surface here after gc."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self, predicate: Callable[[logging.LogRecord], bool] = lambda r: True) -> list[logging.LogRecord]:
        """Remove and return matching records, for tests that provoke an error on purpose."""
        taken = [r for r in self.records if predicate(r)]
        self.records = [r for r in self.records if r not in taken]
        return taken

    def check(self) -> None:
        gc.collect()
        if self.records:
            lines = [f"{r.name}: {r.getMessage()}" + (f"\n{self.format(r)}" if r.exc_info else "") for r in self.records]
            raise AssertionError("ERROR log records:\n" + "\n".join(lines))


@contextmanager
def guard_errors(check: bool = True) -> Iterator[LogGuard]:
    """Install a LogGuard on the guarded loggers; on exit fail if any ERROR record is left."""
    guard = LogGuard()
    guard.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in GUARDED_LOGGERS]
    for logger in loggers:
        logger.addHandler(guard)
    try:
        yield guard
        if check:
            guard.check()
    finally:
        for logger in loggers:
            logger.removeHandler(guard)
