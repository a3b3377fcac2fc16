"""Fine-tune jobs from upload to final message: the queue, at most [finetune] concurrent_jobs
training processes, each job's row and message, and the new version of its server.

The runner knows nothing of Discord: it tells a Reporter what to show. Queued jobs wait in
the database with their upload under finetune-uploads/<job id>/, so they survive a restart.

It runs in one of two ways. `trains=True` (the bot on SQLite, and every bot.trainer): it
claims queued jobs and trains them; with a `worker` name it also keeps each job's heartbeat
and obeys cancel requests found in the row. `trains=False` (bot processes on PostgreSQL):
it only queues, and `watch()` polls the rows of the jobs whose messages it holds, shows
their progress, asks for cancels through the row, and fails jobs whose worker went silent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from charlm.errors import CharLMError
from charlm.storage import read_card
from charlm.train_config import TrainConfig

from bot.finetune.plot import loss_plot
from bot.finetune.process import Finished, TrainingProcess
from bot.finetune.registry import Registry, Version
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import FINAL_STATES, Busy, Job, JobStore

log = logging.getLogger(__name__)
OnVersion = Callable[[Version], Awaitable[None]]
"""Told about a new served version (to load it before the first request needs it)."""


class Reporter(Protocol):
    """Where a job's state is shown (the Discord message of /finetune start)."""

    async def show(self, job: Job, plot: bytes | None = None, position: int | None = None) -> None: ...


async def stop(task: asyncio.Task) -> None:
    """Cancel a helper task and wait until it has stopped."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass
class Running:
    job: Job
    process: TrainingProcess
    out: Path
    reporter: Reporter
    task: asyncio.Task | None = None
    lost: bool = False  # another process failed it (no heartbeat seen): its row is not ours


class JobRunner:
    """The queue and the training slots."""

    def __init__(self, store: JobStore, registry: Registry, settings: FinetuneConfig,
                 reporter_for: Callable[[Job], Reporter], on_version: OnVersion, *,
                 trains: bool = True, worker: str | None = None) -> None:
        self.trains = trains
        self.worker = worker  # "host:pid" when jobs are watched by other processes (PostgreSQL)
        self.store = store
        self.registry = registry
        self.settings = settings
        self.reporter_for = reporter_for
        self.on_version = on_version
        self.preparing: dict[int, bool] = {}  # guild id -> cancel requested, while an upload is checked
        self.running: dict[int, Running] = {}  # job id -> its process
        self.reporters: dict[int, Reporter] = {}  # queued job id -> its message (trains=False: until it ends)
        self.shown: dict[int, tuple[str, str, float]] = {}  # trains=False: what each message shows, and when
        self.closing = False
        self._pump = asyncio.Lock()
        self.uploads = settings.models_dir.parent / "finetune-uploads"

    # ---- per server -------------------------------------------------------------------------------

    def running_for(self, guild_id: int | None) -> Running | None:
        return next((r for r in self.running.values() if r.job.guild_id == guild_id), None)

    def reserve(self, guild_id: int) -> None:
        """Hold the server's one job while its upload is checked."""
        if guild_id in self.preparing:
            raise Busy("An upload for a fine-tune job of this server is being checked; wait a moment.")
        self.preparing[guild_id] = False

    def release(self, guild_id: int) -> None:
        self.preparing.pop(guild_id, None)

    def upload_of(self, job: Job) -> Path:
        return self.uploads / str(job.id) / job.corpus_name

    # ---- the queue --------------------------------------------------------------------------------

    async def submit(self, job: Job, corpus: bytes, reporter: Reporter) -> None:
        """Queue a job: its upload is written aside, its row inserted, the upload renamed into place."""
        if self.preparing.get(job.guild_id):
            raise CharLMError("The job was cancelled before it was queued; nothing was saved.")
        incoming = self.uploads / f".incoming-{uuid.uuid4().hex}"
        await asyncio.to_thread(_write, incoming / job.corpus_name, corpus)
        try:
            job.state = "queued"
            await self.store.add(job)
            await asyncio.to_thread(os.replace, incoming, self.uploads / str(job.id))
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self.reporters[job.id] = reporter
        log.info("fine-tune job %s queued for guild %s: %s %s -> %s on %s", job.id, job.guild_id, job.base,
                 job.base_version, job.target, job.corpus_name)
        await self.pump()
        if job.id in self.reporters:  # still waiting: show where it stands
            await self._show_position(job)

    async def pump(self) -> None:
        """Start queued jobs while there are free slots; then show the waiting ones their place."""
        async with self._pump:
            while self.trains and not self.closing and len(self.running) < self.settings.concurrent_jobs:
                job = await self.store.claim_next(self.worker)
                if job is None:
                    break
                await self._start(job)
            if not self.closing:
                for job in await self.store.in_state("queued"):
                    if job.id in self.reporters:
                        await self._show_position(job)

    async def _show_position(self, job: Job) -> None:
        reporter = self.reporters.get(job.id)
        if reporter is None:
            return
        try:
            await reporter.show(job, position=await self.store.position(job))
        except Exception as exc:
            log.warning("could not show queued fine-tune job %s: %s", job.id, exc)

    async def _start(self, job: Job) -> None:
        """Start a claimed job's training process; a job that cannot start fails with the reason."""
        reporter = self.reporters.pop(job.id, None) or self.reporter_for(job)
        upload = self.upload_of(job)
        try:
            base = await self.registry.version(job.guild_id, job.base, job.base_version)
            making = {int(r.job.target_version[1:]) for r in self.running.values() if r.job.target == job.target}
            number = await self.registry.next_number(job.target, making)
            out = self.registry.folder_for(job.guild_id, job.target, number)
            await asyncio.to_thread(self.registry.discard, out)  # left by a bot that was killed
            if not upload.is_file():
                raise CharLMError("its uploaded text was lost (the bot stopped while saving it)")
            config = TrainConfig(epochs=job.settings["epochs"], batch_size=job.settings["batch_size"],
                                 learning_rate=job.settings["learning_rate"], patience=job.settings["patience"])
            spec = {"corpus": str(upload), "base": str(base.folder), "out": str(out), "config": asdict(config),
                    "nice": self.settings.nice}
            try:
                process = await TrainingProcess.start(spec)
            except OSError as exc:
                raise CharLMError(f"could not start the training process: {exc}") from None
        except CharLMError as exc:
            job.state, job.error, job.finished_at = "failed", str(exc), time.time()
            await self.store.update(job, "state", "error", "finished_at")
            shutil.rmtree(upload.parent, ignore_errors=True)
            await _show(reporter, job)
            return
        job.target_version, job.pid = f"v{number}", process.pid
        await self.store.update(job, "target_version", "pid")
        running = self.running[job.id] = Running(job, process, out, reporter)
        await _show(reporter, job)  # shown before the job's task exists, so it never overwrites the final one
        log.info("fine-tune job %s started (pid %s): %s %s -> %s %s on %s", job.id, job.pid, job.base,
                 job.base_version, job.target, job.target_version, job.corpus_name)
        running.task = asyncio.create_task(self._run(running), name=f"finetune-job-{job.id}")

    # ---- one job ----------------------------------------------------------------------------------

    async def _run(self, running: Running) -> None:
        job, process, out, reporter = running.job, running.process, running.out, running.reporter
        changed = asyncio.Event()

        def on_progress(event: dict[str, Any]) -> None:
            job.progress = {k: v for k, v in event.items() if k != "event"}
            changed.set()

        updates = asyncio.create_task(self._show_progress(job, changed, reporter))
        beats = asyncio.create_task(self._beat(running)) if self.worker else None
        plot = None
        try:
            finished = await process.run(on_progress)
            await stop(updates)  # no progress edit may land after the final one
            if beats is not None:
                await stop(beats)
            if running.lost:
                raise CharLMError("its worker was taken for dead by another process")
            plot = await self._finish(job, finished, out)
        except Exception as exc:
            log.exception("fine-tune job %s could not be finished", job.id)
            job.state, job.error = "failed", f"{exc.__class__.__name__}: {exc}"
            self.registry.discard(out)
        finally:  # also when the bot stops (CancelledError): shutdown() then marks the job
            await stop(updates)
            if beats is not None:
                await stop(beats)
            shutil.rmtree(self.upload_of(job).parent, ignore_errors=True)
        if running.lost:  # the row says failed already, with the reason; leave it so
            self.running.pop(job.id, None)
            await self.pump()
            return
        job.finished_at, job.pid = time.time(), None
        await self.store.update(job, "state", "progress", "heldout_bpc", "base_heldout_bpc", "served", "error",
                                "finished_at", "pid")
        self.running.pop(job.id, None)
        await _show(reporter, job, plot)
        await self.pump()

    async def _show_progress(self, job: Job, changed: asyncio.Event, reporter: Reporter) -> None:
        """Store and show the latest progress, at most once per progress_interval."""
        while True:
            await changed.wait()
            changed.clear()
            await self.store.update(job, "progress")
            await _show(reporter, job)
            await asyncio.sleep(self.settings.progress_interval)

    async def _beat(self, running: Running) -> None:
        """Keep the row's heartbeat fresh; stop training when the row asks for a cancel, or
        when it is no longer ours (another process failed it after missed heartbeats)."""
        job = running.job
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                cancel = await self.store.heartbeat(job, self.worker)
            except Exception as exc:  # the database is away: the next beat tries again
                log.warning("heartbeat of fine-tune job %s failed: %s", job.id, exc)
                continue
            if cancel is None:
                log.warning("fine-tune job %s was failed by another process (missed heartbeats); stopping it",
                            job.id)
                running.lost = True
            if cancel is None or cancel:
                await running.process.stop(self.settings.cancel_grace)
                return

    async def _finish(self, job: Job, finished: Finished, out: Path) -> bytes | None:
        """Record the outcome; a good (or forced) result becomes what the job's server serves."""
        if finished.kind != "done":
            job.state = finished.kind
            job.error = finished.reason
            if finished.kind == "failed":
                log.warning("fine-tune job %s failed: %s\n%s", job.id, finished.reason, finished.stderr)
            self.registry.discard(out)
            return None
        result = finished.result
        job.heldout_bpc, job.base_heldout_bpc = result["heldout_bpc"], result["base_heldout_bpc"]
        card = await asyncio.to_thread(read_card, out)
        version = await self.registry.add(job.guild_id, job.target, int(job.target_version[1:]), out, card, job.id)
        job.state = "succeeded"
        if job.settings.get("force") or job.heldout_bpc < job.base_heldout_bpc:
            await self.on_version(version)  # loaded first: a broken folder leaves the served one alone
            await self.registry.serve(job.guild_id, version, job.user_id)
            job.served = True
        await self.prune(job.guild_id, job.target)
        log.info("fine-tune job %s succeeded: %.3f bits/char vs base %.3f, %s", job.id, job.heldout_bpc,
                 job.base_heldout_bpc, "served" if job.served else "not served")
        job.progress = {**job.progress, "history": result["history"]}  # for the plot in another process
        return await plot_of(job)

    async def prune(self, guild_id: int, name: str) -> list[Version]:
        """Keep at most keep_versions of a server's model; bases of waiting jobs stay."""
        protect = set()
        for other in await self.store.in_state("queued", "running"):
            if other.base == name and other.base_version != "v0":
                base = next((v for v in (await self.registry.model(other.guild_id, name)).versions
                             if v.label == other.base_version), None)
                if base is not None and base.id is not None:
                    protect.add(base.id)
        deleted = await self.registry.prune(guild_id, name, self.settings.keep_versions, protect)
        for version in deleted:
            log.info("deleted %s %s of guild %s (more than keep_versions=%d)", version.model, version.label,
                     guild_id, self.settings.keep_versions)
        return deleted

    # ---- cancel and shutdown ----------------------------------------------------------------------

    async def cancel(self, guild_id: int) -> Job | None:
        """Stop the server's running job, or take its queued one out of the queue."""
        if not self.trains:
            return await self._cancel_elsewhere(guild_id)
        running = self.running_for(guild_id)
        if running is None:
            job = await self.store.active(guild_id)
            if job is not None and job.state == "queued" and await self.store.cancel_queued(job):
                shutil.rmtree(self.upload_of(job).parent, ignore_errors=True)
                reporter = self.reporters.pop(job.id, None)
                if reporter is not None:
                    await _show(reporter, job)
                await self.pump()  # the others move up
                return job
            running = self.running_for(guild_id)  # it may have started meanwhile
        if running is None:
            if guild_id in self.preparing:
                self.preparing[guild_id] = True
            return None
        await running.process.stop(self.settings.cancel_grace)
        if running.task is not None:
            await asyncio.shield(running.task)
        return running.job

    async def _cancel_elsewhere(self, guild_id: int) -> Job | None:
        """The job trains in a bot.trainer: ask through its row, and wait until it has stopped."""
        job = await self.store.active(guild_id)
        if job is None:
            if guild_id in self.preparing:
                self.preparing[guild_id] = True
            return None
        if job.state == "queued" and await self.store.cancel_queued(job):
            shutil.rmtree(self.upload_of(job).parent, ignore_errors=True)
            await self.watch_once()  # its message says so at once
            return job
        await self.store.request_cancel(job)
        deadline = time.monotonic() + self.settings.cancel_grace + self.settings.worker_timeout + 10
        while time.monotonic() < deadline:
            found = await self.store.get(job.id)
            if found is None or found.state in FINAL_STATES:
                await self.watch_once()
                return found
            await asyncio.sleep(0.5)
        return await self.store.get(job.id)

    # ---- watching jobs that train elsewhere -------------------------------------------------------

    def follow(self, job: Job, reporter: Reporter) -> None:
        """Show this job in `reporter` until it ends (trains=False)."""
        self.reporters.setdefault(job.id, reporter)

    async def watch(self, interval: float = 1.0) -> None:
        """trains=False: every `interval`, show what the followed jobs' rows say and fail the
        jobs whose worker went silent. Runs until cancelled."""
        while True:
            try:
                await self.reap()
                await self.watch_once()
            except Exception:
                log.exception("watching fine-tune jobs failed; trying again")
            await asyncio.sleep(interval)

    async def watch_once(self) -> None:
        for job_id, reporter in list(self.reporters.items()):
            job = await self.store.get(job_id)
            if job is None:
                self.reporters.pop(job_id, None)
                continue
            final = job.state in FINAL_STATES
            position = await self.store.position(job) if job.state == "queued" else None
            seen = json.dumps([job.state, job.target_version, job.progress, position], sort_keys=True)
            before, state, at = self.shown.get(job_id, ("", "", 0.0))
            # a new state shows at once; progress at most once per progress_interval
            due = state != job.state or time.monotonic() - at >= self.settings.progress_interval
            if seen != before and due:
                self.shown[job_id] = (seen, job.state, time.monotonic())
                if job.state == "queued":
                    await reporter_show(reporter, job, position=position)
                else:
                    await _show(reporter, job, await plot_of(job) if job.state == "succeeded" else None)
            if final:
                self.reporters.pop(job_id, None)
                self.shown.pop(job_id, None)

    async def reap(self) -> list[Job]:
        """Fail running jobs whose worker stopped sending heartbeats; their partial folder goes."""
        failed = []
        for job in await self.store.stale(self.settings.worker_timeout):
            if not await self.store.fail_stale(job):
                continue  # it beat meanwhile, or someone else noticed first
            log.warning("fine-tune job %s failed: %s", job.id, job.error)
            if job.target_version:
                out = self.registry.folder_for(job.guild_id, job.target, int(job.target_version[1:]))
                await asyncio.to_thread(self.registry.discard, out)
            shutil.rmtree(self.upload_of(job).parent, ignore_errors=True)
            failed.append(job)
        return failed

    async def shutdown(self) -> None:
        """The bot is stopping: stop training, discard the output, mark those jobs interrupted.
        Queued jobs stay queued and start after the next start."""
        self.closing = True
        for running in list(self.running.values()):
            job = running.job
            if running.task is not None:
                running.task.cancel()
            await running.process.stop(self.settings.cancel_grace)
            self.registry.discard(running.out)
            job.state, job.finished_at, job.pid = "interrupted", time.time(), None
            job.error = "the bot stopped while this job was training"
            await self.store.update(job, "state", "progress", "finished_at", "pid", "error")
            self.running.pop(job.id, None)


async def plot_of(job: Job) -> bytes | None:
    """The loss plot of a finished job, from the history its row keeps."""
    history = (job.progress or {}).get("history")
    if not history or job.heldout_bpc is None or job.base_heldout_bpc is None:
        return None
    title = (f"{job.target} {job.target_version} from {job.base} {job.base_version}: held-out "
             f"{job.heldout_bpc:.3f} vs {job.base_heldout_bpc:.3f} bits/char")
    return await asyncio.to_thread(loss_plot, history, title)


async def reporter_show(reporter: Reporter, job: Job, position: int | None) -> None:
    try:
        await reporter.show(job, position=position)
    except Exception as exc:
        log.warning("could not show queued fine-tune job %s: %s", job.id, exc)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _show(reporter: Reporter, job: Job, plot: bytes | None = None) -> None:
    try:
        await reporter.show(job, plot)
    except Exception as exc:  # the next update tries again; the job goes on
        log.warning("could not show fine-tune job %s: %s", job.id, exc)
