"""Fine-tuned versions in the inference engine, loaded on demand, at most [engine] max_loaded.

The shipped models stay loaded under their own names. A fine-tuned version is loaded
(off the event loop) the first time a request needs it, under its key (`seuss@v3`), and
the least recently used one is unloaded when there are more than `max_loaded`; requests
already running on it finish first (the engine binds a request to the version it started on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from bot.context import BotContext
from bot.finetune.registry import Version

log = logging.getLogger(__name__)


class LoadedVersions:
    """An LRU of engine keys over the context's engine."""

    def __init__(self, context: BotContext, max_loaded: int) -> None:
        self.context = context
        self.max_loaded = max_loaded
        self.loaded: OrderedDict[str, Version] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.load_seconds: dict[str, float] = {}
        """How long each key's last load took (for the operator's figures)."""

    async def ensure(self, version: Version) -> str:
        """The engine key for a version, loading it first if it is not in memory."""
        if version.shipped:
            return version.key
        key = version.key
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self.loaded:
                started = time.perf_counter()
                await self.context.load_model(key, version.folder)
                self.load_seconds[key] = time.perf_counter() - started
                self.loaded[key] = version
                log.info("loaded %s on demand in %.2f s (%d fine-tuned versions in memory)", key,
                         self.load_seconds[key], len(self.loaded))
                self._evict()
        self._locks.pop(key, None)
        self.loaded.move_to_end(key)
        return key

    def _evict(self) -> None:
        while len(self.loaded) > self.max_loaded:
            key, _ = self.loaded.popitem(last=False)
            self._unload(key)
            log.info("unloaded %s, the least recently used fine-tuned version", key)

    def _unload(self, key: str) -> None:
        try:
            self.context.engine.unload(key)
        except Exception as exc:  # already gone: nothing to free
            log.warning("could not unload %s: %s", key, exc)

    def forget(self, version: Version) -> None:
        """A version was deleted: drop it from memory too."""
        if self.loaded.pop(version.key, None) is not None:
            self._unload(version.key)
