"""Fine-tuned versions in the inference engine, loaded on demand, at most [engine] max_loaded,
with a fair share for every server.

The shipped models stay loaded under their own names. A fine-tuned version is loaded the
first time a request needs it, under its key (`seuss@v3`). Three rules keep one server
from taking the loading machinery from the others (docs/bot.md, "Fair loading"):

- Loads run one at a time on one loader thread, off the event loop, at the inference
  thread's priority (nice +bot.context.ENGINE_NICE), so a burst of loads never gets the CPU ahead of
  generation or of the event loop.
- Each server has a short queue of loads (LOAD_QUEUE distinct versions); requests for a
  version already being loaded wait for that one load, and a server asking for more
  versions than that at once is told its server is busy (OwnerBusy's sentence) instead
  of queueing a load per request. Servers take turns on the loader thread.
- Each version in memory is charged to the server that last asked for it. When there are
  more than max_loaded, a server holding more than its share (max_loaded / servers with
  versions in memory) gives up its own least recently used version; otherwise the server
  holding the most does. One server cycling through names evicts its own, never everyone's.
Requests already running on an unloaded version finish first (the engine binds a request
to the version it started on).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from charlm.engine import Engine, OwnerBusy

from bot.finetune.registry import Version
from bot.metrics import Metrics
from bot.scope import Scope

log = logging.getLogger(__name__)
LOAD_QUEUE = 2
"""Versions one server may have waiting to load at once."""


class LoadQueueFull(OwnerBusy):
    """The server already has LOAD_QUEUE versions waiting to load: its share of the loader
    is taken, as OwnerBusy says of its share of the engine (its members are told the same)."""


@dataclass
class _Entry:
    version: Version
    scope: int  # the server that last asked for it (OWNERS: a DM or the owners)


def _lower_priority(nice: int) -> None:
    """The loader thread's priority: the inference thread's (Linux sets nice per thread)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:
        log.info("loader thread keeps its priority (%s)", exc)


class LoadedVersions:
    """Which fine-tuned versions are in the engine, and the loads on their way."""

    def __init__(self, engine: Engine, metrics: Metrics, max_loaded: int, nice: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_loaded = max_loaded
        self.loaded: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Future] = {}  # key -> its one load, queued or running
        self._queues: dict[int, deque[tuple[str, Version]]] = {}  # per server, at most LOAD_QUEUE
        self._turns: deque[int] = deque()  # servers with loads waiting, in turn order
        self._loader: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="charlm-load",
                                           initializer=partial(_lower_priority, nice))
        """The one loader thread (the inference thread's nice): loads run on it one at a time."""

    async def ensure(self, version: Version, asker: Scope | None = None) -> str:
        """The engine key for a version, loading it first if it is not in memory.

        asker: the server asking (None: the version's own server; DMs share the owners' turn).
        Raises LoadQueueFull when that server already waits for LOAD_QUEUE other versions.
        """
        if version.shipped:
            return version.key
        key, scope = version.key, version.guild_id if asker is None else asker.key
        if key not in self.loaded:
            load = self._loading.get(key)
            if load is None:
                load = self._queue(key, version, scope)
            await asyncio.shield(load)  # a cancelled request leaves the load to the others waiting
        entry = self.loaded.get(key)
        if entry is not None:  # (it may already have been evicted again: the caller asks once more)
            entry.scope = scope
            self.loaded.move_to_end(key)
        return key

    def _queue(self, key: str, version: Version, scope: int) -> asyncio.Future:
        queue = self._queues.setdefault(scope, deque())
        if len(queue) >= LOAD_QUEUE:
            raise LoadQueueFull(f"this server already waits for {LOAD_QUEUE} versions to load")
        if not queue:
            self._turns.append(scope)
        queue.append((key, version))
        load = self._loading[key] = asyncio.get_running_loop().create_future()
        load.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if nobody waits
        if self._loader is None or self._loader.done():
            self._loader = asyncio.get_running_loop().create_task(self._load_in_turn(), name="version-loader")
        return load

    async def _load_in_turn(self) -> None:
        """Take one load per server in turn until every queue is empty."""
        loop = asyncio.get_running_loop()
        while self._turns:
            scope = self._turns.popleft()
            queue = self._queues[scope]
            key, version = queue.popleft()
            if queue:
                self._turns.append(scope)
            else:
                del self._queues[scope]
            load = self._loading[key]
            try:
                started = time.perf_counter()
                await loop.run_in_executor(self.executor, self.engine.load, key, version.folder)
                seconds = time.perf_counter() - started
                self.loaded[key] = _Entry(version, scope)
                metrics = self.metrics
                metrics.loads.labels(metrics.model(version.model)).inc()
                metrics.load_seconds.observe(seconds)
                log.info("loaded %s on demand in %.2f s for server %s (%d fine-tuned versions in memory)", key,
                         seconds, scope, len(self.loaded))
                self._evict(key)
                load.set_result(key)
            except Exception as exc:
                load.set_exception(exc)
            finally:
                self._loading.pop(key, None)
                self.metrics.loaded_versions.set(len(self.loaded))

    def _evict(self, keep: str) -> None:
        """Unload until max_loaded remain: from a server over its share, else the biggest holder."""
        while len(self.loaded) > self.max_loaded:
            holders = Counter(entry.scope for entry in self.loaded.values())
            share = max(1, self.max_loaded // len(holders))
            scope = self.loaded[keep].scope
            if holders[scope] <= share:
                most = max(holders.values())
                scope = next(e.scope for e in self.loaded.values() if holders[e.scope] == most)
            key = next(k for k, e in self.loaded.items() if e.scope == scope and k != keep)
            entry = self.loaded.pop(key)
            self._unload(key)
            self.metrics.evictions.labels(self.metrics.model(entry.version.model)).inc()
            log.info("unloaded %s of server %s (%d versions held, share %d)", key, scope, holders[scope], share)

    def _unload(self, key: str) -> None:
        try:
            self.engine.unload(key)
        except Exception as exc:  # already gone: nothing to free
            log.warning("could not unload %s: %s", key, exc)

    def forget(self, version: Version) -> None:
        """A version was deleted: drop it from memory too."""
        if self.loaded.pop(version.key, None) is not None:
            self._unload(version.key)
            self.metrics.loaded_versions.set(len(self.loaded))

    def close(self) -> None:
        """Stop the loader thread; loads not started yet are cancelled."""
        self.executor.shutdown(wait=False, cancel_futures=True)

