"""The inference engine: one thread owns every loaded model and steps requests in batches.

Callers (the bot's event loop, the CLI) never run a model themselves: they submit a
request and wait on a future, so TensorFlow and numpy never block an asyncio loop.

How batching works. Each model version has at most one running batch ("lane"). The
thread loops: take the queued requests that fit, prime each version's new rows together
(one pass over their 100-character windows) and append them to that version's batch,
then advance every batch by one chunk (`chunk` characters, fewer if a row needs fewer).
So a request that arrives while a batch runs joins it at the next chunk boundary, and
one that arrives when the engine is idle waits up to `batch_wait` seconds for company
(1 ms by default: every millisecond waited is latency for a lone request, while a
request that misses the wait only costs one extra priming pass at the next boundary).
Joining only at chunk boundaries keeps the step loop free of per-character bookkeeping,
and priming new rows together costs one batched pass instead of one per row. Every row
keeps its own window, settings, random generator and length; between chunks, rows that
are done, cancelled, timed out or whose streaming callback failed leave the batch.

Fairness. Each request carries an opaque owner (the bot passes a server, or a user in a
DM). Which waiting requests join at a boundary, and how many an owner may hold, is
charlm.scheduler's job: by default owners take turns, so one owner's flood cannot keep
another's lone request waiting behind it.

Versions. `load(name, folder)` reads and warms a model in the caller's thread, then
swaps it in atomically as version n+1 of that name (numbers are never reused, even
after `unload`). A request is bound to the version current when it was submitted and
finishes on it, whatever is loaded or unloaded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from charlm.errors import CharLMError
from charlm.generate import SERVING_PRECISION, Backend, Batch, Precision, choose_backend
from charlm.sampling import Sampling
from charlm.scheduler import EngineBusy, Owner, OwnerBusy, Schedule, Scheduler
from charlm.storage import read_model_folder
from charlm.vocab import PromptWindow, Vocabulary
from charlm.word_guard import WordGuard

log = logging.getLogger(__name__)

OnText = Callable[[str], None]
"""Streaming callback: called with the continuation so far (a growing prefix of the result)."""


__all__ = ["Engine", "EngineBusy", "EngineClosed", "EngineTimeout", "GenerationFailed", "ModelVersion", "OwnerBusy",
           "Result"]
OnPlace = Callable[[int], None]
"""Called with a waiting request's place in line (1: next to join) whenever it changes."""


class EngineTimeout(CharLMError):
    """The request's timeout passed before its text was complete."""


class EngineClosed(CharLMError):
    """The engine shut down before the request finished, or was already shut down."""


class GenerationFailed(CharLMError):
    """A step crashed; every request in that batch gets this, the engine keeps serving."""


@dataclass(frozen=True)
class ModelVersion:
    """Which model served a request: `number` counts loads of `name` from 1."""

    name: str
    number: int
    card_name: str | None  # the card's "name" and "created", when it has them
    created: str | None
    path: str
    backend: str  # "numpy" or "tensorflow"
    precision: str = "fp32"  # "int8" or "fp32": what its steps ran in

    def __str__(self) -> str:
        return f"{self.name} v{self.number}"


@dataclass(frozen=True)
class Result:
    """One finished request."""

    text: str  # the continuation only
    window: PromptWindow  # the prompt as the model saw it (padded, cut, dropped chars)
    model: str
    version: ModelVersion
    backend: str
    settings: Sampling
    queued_s: float  # submission to the start of priming
    generation_s: float  # priming and stepping
    submitted_step: int = 0  # the engine's batch-boundary count when it was submitted,
    joined_step: int = 0  # when it joined a batch,
    finished_step: int = 0  # and when it finished (what fairness tests count, not seconds)


@dataclass(eq=False)
class _Loaded:
    """A model version the thread can step; lanes are keyed by its identity."""

    version: ModelVersion
    vocab: Vocabulary
    stepper: object  # NumpyLSTM or TFLSTM


@dataclass(eq=False)
class _Request:
    loaded: _Loaded
    window: PromptWindow
    settings: Sampling
    future: Future
    submitted: float
    deadline: float | None
    on_text: OnText | None
    every: int
    owner: Owner = None
    seq: int = 0  # arrival order
    on_place: OnPlace | None = None
    place: int = 0  # last place reported to on_place
    submitted_step: int = 0
    joined_step: int = 0
    started: float = 0.0
    streamed: int = 0


@dataclass(eq=False)
class _Lane:
    """The running batch of one version; `requests[i]` owns `batch.rows[i]`."""

    loaded: _Loaded
    batch: Batch
    requests: list[_Request] = field(default_factory=list)


def _settle(future: Future, result: Result | None = None, error: BaseException | None = None) -> None:
    """Complete a future unless the caller cancelled it meanwhile."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


def _warm_up(stepper, vocab: Vocabulary, chunk: int) -> None:
    """Run the shapes the engine will use (prime, join, shrink, short chunks) once, so
    TensorFlow traces its graphs and BLAS starts its threads before the first user."""
    window = vocab.window("").ids
    settings = Sampling(seed=0, length=2 * chunk)
    batch = Batch(stepper)
    batch.join(np.stack([window]), [settings], len(vocab))
    batch.advance(chunk)
    batch.join(np.stack([window, window]), [settings, settings], len(vocab))
    batch.advance(max(1, chunk // 2))
    batch.keep([0])
    batch.advance(chunk)


class Engine:
    """Owns the inference thread and the loaded models. Use as a context manager or
    call `close()`.

    backend: "auto" (numpy on a CPU, TensorFlow on a GPU), "numpy" or "tensorflow".
    precision: "int8" (weights quantised at load, charlm.quantize) or "fp32", for the
        numpy backend; TensorFlow steps in float32.
    max_queue: requests waiting to join a batch before `submit` raises EngineBusy.
    max_batch: most rows stepped together per model version.
    batch_wait: seconds an idle engine waits for more requests before priming.
    chunk: characters per step of the loop; also the streaming, cancel and timeout
        granularity.
    nice: added to the inference thread's nice value (Linux: per thread), so that on a
        busy CPU an event loop in the same process (the bot's) runs before generation.
    per_owner: most requests one owner may have waiting or running (None: no cap).
    schedule: "fair" (owners take turns) or "fifo" (first come, first served); see
        charlm.scheduler.
    on_step: called from the engine thread with the rows of every batch step (metrics);
        must be quick.
    """

    def __init__(self, models: Mapping[str, str | Path] | None = None, *, backend: Backend = "auto",
                 max_queue: int = 64, max_batch: int = 32, batch_wait: float = 0.001, chunk: int = 16,
                 nice: int = 0, precision: Precision = SERVING_PRECISION, per_owner: int | None = None,
                 schedule: Schedule = "fair", on_step: Callable[[int], None] | None = None) -> None:
        if max_queue < 1 or max_batch < 1 or chunk < 1 or batch_wait < 0:
            raise CharLMError("max_queue, max_batch and chunk must be at least 1, batch_wait not negative")
        self.nice = nice
        self.backend: Backend = backend
        self.precision: Precision = precision
        self.max_queue, self.max_batch, self.batch_wait, self.chunk = max_queue, max_batch, batch_wait, chunk
        self._cv = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._scheduler = Scheduler(schedule, per_owner)
        self._seq = 0
        self._step = 0  # batch boundaries passed
        self._rows = 0  # rows running at the last boundary
        self._on_step = on_step
        self._changed = False  # a request arrived since the line was last ranked
        self._models: dict[str, _Loaded] = {}
        self._loads: dict[str, int] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="charlm-engine", daemon=True)
        self._thread.start()
        try:
            for name, folder in (models or {}).items():
                self.load(name, folder)
        except BaseException:
            self.close()
            raise

    # -- models ---------------------------------------------------------------------

    def load(self, name: str, folder: str | Path) -> ModelVersion:
        """Load, warm up and swap in a new version of `name`; returns it.

        Runs in the calling thread (seconds for a big model): from asyncio, call it via
        `await asyncio.to_thread(engine.load, name, folder)`.
        """
        started = time.perf_counter()
        saved = read_model_folder(folder)  # numpy arrays, without importing Keras
        guard = WordGuard.build(saved.avoid, saved.vocab) if saved.avoid else None
        stepper = choose_backend(saved.weights, self.backend, self.precision, guard)
        _warm_up(stepper, saved.vocab, self.chunk)
        with self._cv:
            if self._closing:
                raise EngineClosed("the engine is shut down")
            number = self._loads[name] = self._loads.get(name, 0) + 1
            version = ModelVersion(name, number, saved.card.get("name"), saved.card.get("created"),
                                   str(saved.path), stepper.name, stepper.precision)
            self._models[name] = _Loaded(version, saved.vocab, stepper)
        log.info("loaded %s from %s on %s (%s) in %.1fs (warmed up), avoiding %d words", version, folder,
                 stepper.name, stepper.precision, time.perf_counter() - started, guard.words if guard else 0)
        return version

    def unload(self, name: str) -> ModelVersion:
        """Forget `name`; requests already submitted to it still finish."""
        with self._cv:
            loaded = self._models.pop(name, None)
        if loaded is None:
            raise CharLMError(f"no model named {name!r} is loaded")
        log.info("unloaded %s", loaded.version)
        return loaded.version

    def models(self) -> dict[str, ModelVersion]:
        """The current version of every loaded model, by name."""
        with self._cv:
            return {name: loaded.version for name, loaded in self._models.items()}

    def current(self, name: str) -> tuple[ModelVersion, Vocabulary]:
        """The version new requests for `name` get, and its characters."""
        loaded = self._current(name)
        return loaded.version, loaded.vocab

    def _current(self, name: str) -> _Loaded:
        with self._cv:
            loaded = self._models.get(name)
        if loaded is None:
            raise CharLMError(f"no model named {name!r} is loaded")
        return loaded

    # -- requests -------------------------------------------------------------------

    def submit(self, model: str, prompt: str, settings: Sampling | None = None, *, length: int | None = None,
               seed: int | None = None, timeout: float | None = None, on_text: OnText | None = None,
               every: int = 32, owner: Owner = None, on_place: OnPlace | None = None) -> Future:
        """Queue a continuation of `prompt`; returns a Future of Result.

        `length` and `seed` override those of `settings`. `timeout` (seconds from now)
        fails the request with EngineTimeout. `on_text(text_so_far)` is called from the
        engine thread about every `every` characters, so it must be quick; if it raises,
        the request fails. `future.cancel()` takes the request out of its batch.
        `owner` groups requests for fair turns and the per-owner cap; `on_place(n)` (engine
        thread, must be quick) gets the request's place in line while it waits.
        Raises OwnerBusy at once if `owner` holds `per_owner` requests, EngineBusy if the
        queue is full.
        """
        settings = settings or Sampling()
        if length is not None:
            settings = replace(settings, length=length)
        if seed is not None:
            settings = replace(settings, seed=seed)
        if every < 1:
            raise CharLMError("every must be at least 1 character")
        loaded = self._current(model)
        now = time.monotonic()
        request = _Request(loaded, loaded.vocab.window(prompt), settings, Future(), now,
                           None if timeout is None else now + timeout, on_text, every, owner, on_place=on_place)
        with self._cv:
            if self._closing:
                raise EngineClosed("the engine is shut down")
            self._scheduler.admit(owner)  # OwnerBusy: this owner's share is taken, others' is not
            if len(self._pending) >= self.max_queue:
                self._scheduler.release(owner)
                raise EngineBusy(f"the generator is busy ({self.max_queue} requests waiting); try again shortly")
            request.future.add_done_callback(lambda _: self._release(owner))
            self._seq += 1
            request.seq, request.submitted_step = self._seq, self._step
            self._changed = True
            self._pending.append(request)
            self._cv.notify()
        return request.future

    def _release(self, owner: Owner) -> None:
        with self._cv:  # an RLock: safe from a callback the engine thread fires with it held
            self._scheduler.release(owner)

    def waiting(self) -> int:
        """Requests waiting to join a batch (for metrics and health)."""
        with self._cv:
            return len(self._pending)

    def running_rows(self) -> int:
        """Rows in running batches at the last batch boundary."""
        return self._rows

    async def generate(self, model: str, prompt: str, settings: Sampling | None = None, *,
                       length: int | None = None, seed: int | None = None, timeout: float | None = None,
                       on_text: OnText | None = None, every: int = 32, owner: Owner = None,
                       on_place: OnPlace | None = None) -> Result:
        """`submit`, awaited from a running event loop. `on_text` and `on_place` run on this
        loop (via call_soon_threadsafe), so they may touch loop objects; cancelling the
        awaiting task takes the request out of its batch."""
        loop = asyncio.get_running_loop()

        def on_loop(callback: Callable | None) -> Callable | None:
            if callback is None:
                return None
            return lambda value: loop.call_soon_threadsafe(callback, value)

        future = self.submit(model, prompt, settings, length=length, seed=seed, timeout=timeout,
                             on_text=on_loop(on_text), every=every, owner=owner, on_place=on_loop(on_place))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    # -- shutdown -------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread: queued and running requests fail with EngineClosed."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the inference thread is alive (for health checks)."""
        return self._thread.is_alive()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the inference thread -------------------------------------------------------

    def _run(self) -> None:
        if self.nice > 0:
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
            except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at the process's priority
                log.info("inference thread keeps its priority (%s)", exc)
        lanes: dict[_Loaded, _Lane] = {}
        while True:
            with self._cv:
                if not lanes:
                    self._cv.wait_for(lambda: self._pending or self._closing)
                    end = time.monotonic() + self.batch_wait
                    while not self._closing and len(self._pending) < self.max_batch and time.monotonic() < end:
                        self._cv.wait(end - time.monotonic())
                if self._closing:
                    break
                self._step += 1
                taken, places = self._take(lanes)
            for request, place in places:
                self._tell_place(request, place)
            for loaded, requests in taken.items():
                self._join(lanes, loaded, requests)
            self._rows = sum(len(lane.requests) for lane in lanes.values())
            for lane in list(lanes.values()):
                self._advance(lane)
                if not lane.requests:
                    del lanes[lane.loaded]
        closed = EngineClosed("the engine shut down before this request finished")
        with self._cv:
            pending, self._pending = list(self._pending), deque()
        for request in pending + [r for lane in lanes.values() for r in lane.requests]:
            _settle(request.future, error=closed)

    def _take(self, lanes: dict[_Loaded, _Lane]) -> tuple[dict[_Loaded, list[_Request]], list[tuple[_Request, int]]]:
        """Pop the queued requests that fit their version's batch, in the scheduler's order;
        drop cancelled and expired ones. Returns them by version, and the new places in
        line of those left waiting whose place changed. Called with the lock held."""
        taken: dict[_Loaded, list[_Request]] = {}
        now = time.monotonic()
        live = []
        for request in self._pending:
            if request.future.cancelled():
                continue
            if request.deadline is not None and now > request.deadline:
                _settle(request.future, error=EngineTimeout("timed out while waiting in the queue"))
            else:
                live.append(request)
        room = {loaded: self.max_batch - len(lane.requests) for loaded, lane in lanes.items()}
        if not self._changed and len(live) == len(self._pending) and all(room.get(r.loaded, 1) <= 0 for r in live):
            return {}, []  # every batch is full and the line is as it was: nothing to rank (a flood's steady state)
        self._changed = False
        running = Counter(r.owner for lane in lanes.values() for r in lane.requests)
        left: list[_Request] = []
        for request in self._scheduler.order(live, running):
            group = taken.setdefault(request.loaded, [])
            lane = lanes.get(request.loaded)
            if len(group) + (len(lane.requests) if lane else 0) < self.max_batch:
                request.joined_step = self._step
                group.append(request)
            else:
                left.append(request)
        places = []
        for place, request in enumerate(left, 1):
            if request.on_place is not None and request.place != place:
                request.place = place
                places.append((request, place))
        self._pending = deque(sorted(left, key=lambda r: r.seq))  # arrival order: the scheduler ranks it
        return {loaded: group for loaded, group in taken.items() if group}, places

    @staticmethod
    def _tell_place(request: _Request, place: int) -> None:
        try:
            request.on_place(place)
        except Exception as exc:  # only a display: the request goes on
            log.warning("place-in-line callback failed (%s: %s)", type(exc).__name__, exc)

    def _join(self, lanes: dict[_Loaded, _Lane], loaded: _Loaded, requests: list[_Request]) -> None:
        """Prime the new rows of one version together and append them to its batch."""
        lane = lanes.get(loaded) or _Lane(loaded, Batch(loaded.stepper))
        started = time.monotonic()
        for request in requests:
            request.started = started
        try:
            lane.batch.join(np.stack([r.window.ids for r in requests]), [r.settings for r in requests],
                            len(loaded.vocab))
        except Exception as exc:
            self._fail(requests, loaded, exc)
            return
        lane.requests += requests
        lanes[loaded] = lane

    def _advance(self, lane: _Lane) -> None:
        """One chunk for every row of the lane, then deliver, stream and drop rows."""
        batch, vocab = lane.batch, lane.loaded.vocab
        steps = min(self.chunk, min(r.settings.length - len(r.ids) for r in batch.rows))
        if self._on_step is not None:
            try:
                self._on_step(len(batch.rows))
            except Exception as exc:
                log.warning("on_step callback failed (%s: %s)", type(exc).__name__, exc)
        try:
            batch.advance(steps)
        except Exception as exc:
            self._fail(lane.requests, lane.loaded, exc)
            lane.requests = []
            return
        keep: list[int] = []
        now = time.monotonic()
        for i, (row, request) in enumerate(zip(batch.rows, lane.requests)):
            if request.future.cancelled():
                continue
            if row.done:
                _settle(request.future, self._result(request, vocab.decode(row.ids), now))
            elif request.deadline is not None and now > request.deadline:
                _settle(request.future, error=EngineTimeout(
                    f"timed out after {len(row.ids)} of {request.settings.length} characters"))
            elif self._stream(request, row.ids, vocab):
                keep.append(i)
        if len(keep) < len(batch.rows):
            lane.requests = [lane.requests[i] for i in keep]
            batch.keep(keep)

    @staticmethod
    def _stream(request: _Request, ids: list[int], vocab: Vocabulary) -> bool:
        """Call the streaming callback if `every` new characters are due; False if it failed."""
        if request.on_text is None or len(ids) - request.streamed < request.every:
            return True
        request.streamed = len(ids)
        try:
            request.on_text(vocab.decode(ids))
        except Exception as exc:
            log.warning("streaming callback failed (%s: %s); dropping the request", type(exc).__name__, exc)
            _settle(request.future, error=CharLMError(f"streaming callback failed ({type(exc).__name__})"))
            return False
        return True

    def _result(self, request: _Request, text: str, now: float) -> Result:
        version = request.loaded.version
        return Result(text, request.window, version.name, version, version.backend, request.settings,
                      request.started - request.submitted, now - request.started,
                      request.submitted_step, request.joined_step, self._step)

    @staticmethod
    def _fail(requests: list[_Request], loaded: _Loaded, exc: Exception) -> None:
        log.exception("generation step of %s failed; failing its %d request(s)", loaded.version, len(requests))
        error = GenerationFailed(f"generation failed in {loaded.version} ({type(exc).__name__}: {exc})")
        for request in requests:
            _settle(request.future, error=error)
