"""The trainer loop: claim queued jobs, train each in a child process, publish the result.

The same loop runs inside the bot on SQLite (the one-process default) and in every
`python -m bot.trainer` on PostgreSQL; bot processes never train, they only submit,
watch and cancel through the job's row (bot.finetune.desk). Everything a job's message
shows — progress, outcome, held-out figures, the loss plot — is written to the row here.

A job's life in this process (the row moves only by conditional updates, bot.finetune.store):

1. claim: queued -> training, with its version number, heartbeat from now on;
2. train: the child writes the new folder under a staging name beside its final place;
   progress and heartbeat go to the row, a cancel or a lost job is read from it, and
   [finetune] max_minutes stops the child;
3. publish: training -> publishing; the folder's files and directory are fsynced, its
   loss plot drawn, it is renamed into place and loaded once (a broken one fails here);
   then ONE transaction moves the job to succeeded, records the version and, if it is
   better (or forced), serves it. A failure before that commit removes the folder and
   leaves no row; after it nothing deletes the folder. Old versions are pruned afterwards,
   and a failed prune never fails the job;
4. whatever happens, the slot, the upload and the staging folder are released.

This module imports neither discord.py nor TensorFlow (the child does); matplotlib is
imported by the plot, on the first finished job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from charlm.errors import CharLMError
from charlm.storage import read_card
from charlm.train_config import TrainConfig

from bot.finetune.cleanup import clean_leftovers, reap, remove, remove_job_files
from bot.finetune.process import Finished, TrainingProcess
from bot.finetune.registry import Registry, Version
from bot.finetune.settings import TRAIN_SHARE, FinetuneConfig
from bot.finetune.store import Job, JobStore, Lost
from bot.scope import Scope

log = logging.getLogger(__name__)
CheckVersion = Callable[[Version], Awaitable[None]]
"""Loads a new version once before it is recorded (the bot: into its engine; a trainer: a
throwaway numpy engine), so a folder that cannot be served never becomes a version."""
Plot = Callable[[list[dict[str, Any]], str], bytes]
StartProcess = Callable[[dict[str, Any]], Awaitable[TrainingProcess]]
"""Starts the training child for a job's spec (TrainingProcess.start)."""
DATABASE_AWAY = (sa.exc.DBAPIError, OSError, ConnectionError, asyncio.TimeoutError)
"""What a write raises while the database restarts (after away() says so): the trainer
waits and tries again."""


def away(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable for now (not a refused statement)."""
    return isinstance(exc, DATABASE_AWAY) and not isinstance(
        exc, (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.DataError))
RETRY = 1.0
"""Seconds between tries of a write that found the database away."""


def draw_plot(history: list[dict[str, Any]], title: str) -> bytes:
    from bot.finetune.plot import loss_plot  # matplotlib: only where jobs are trained

    return loss_plot(history, title)


def flush_folder(folder: Path) -> None:
    """fsync every file of a folder, then the folder itself: after a power cut the renamed
    folder has its whole contents, or the rename never happened."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_into_place(staging: Path, final: Path) -> None:
    """The one step that makes the folder appear; then its parent is fsynced. A folder
    already there has no row (the number is this job's alone): a leftover, replaced."""
    if final.exists():
        remove(final)
    os.rename(staging, final)
    fsync_dir(final.parent)


class Undecided(Exception):
    """Shutting down while the database is away: whether the commit landed is unknown."""


@dataclass
class Held:
    """A job this trainer holds, and what its heartbeat task found out."""

    job: Job
    staging: Path
    process: TrainingProcess | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Any] | None = None
    lost: bool = False  # reaped by someone else: the row says how it ended
    stopping: str = ""  # "cancelled", "interrupted" or "timed out": why this trainer stopped the child
    task: asyncio.Task | None = None


class Trainer:
    """Claims jobs up to [finetune] concurrent_jobs at once and runs each to one final state."""

    def __init__(self, store: JobStore, registry: Registry, settings: FinetuneConfig, worker: str,
                 check_version: CheckVersion, *, plot: Plot = draw_plot, poll: float = 1.0,
                 reaps: bool = True, start_process: StartProcess = TrainingProcess.start) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.worker = worker  # "host:pid"
        self.check_version = check_version
        self.plot = plot
        self.start_process = start_process
        self.poll = poll
        self.reaps = reaps  # PostgreSQL: fail other trainers' silent jobs (with SQLite there are none)
        self.held: dict[int, Held] = {}
        self.closing = False
        self._wake = asyncio.Event()

    # ---- the loop ---------------------------------------------------------------------------------

    async def start_up(self, sole: bool) -> None:
        """Before the first claim. `sole` (SQLite: this is the only trainer): jobs still held
        were this process's before it stopped, so they are interrupted. Then leftovers of
        ended jobs are removed."""
        if sole:
            for job in await self.store.interrupt_stranded():
                log.warning("fine-tune job %s was training when the bot stopped; marked interrupted", job.id)
                await asyncio.to_thread(remove_job_files, self.registry, self.settings, job)
        await clean_leftovers(self.store, self.registry, self.settings)

    def wake(self) -> None:
        """A job was queued (in this process): look at the queue now."""
        self._wake.set()

    async def run(self) -> None:
        """Reap, claim, repeat; until shutdown(). Errors (the database away) are logged and
        the next pass tries again."""
        while not self.closing:
            try:
                if self.reaps:
                    await reap(self.store, self.registry, self.settings)
                await self.fill()
            except Exception as exc:
                if away(exc):
                    log.warning("looking at the fine-tune queue failed (%s); trying again", exc.__class__.__name__)
                else:
                    log.exception("looking at the fine-tune queue failed; trying again")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def fill(self) -> None:
        """Claim jobs while there are free slots."""
        while not self.closing and len(self.held) < self.settings.concurrent_jobs:
            job = await self.store.claim(self.worker)
            if job is None:
                return
            staging = self.registry.staging_for(job.guild_id, job.target, job.target_number, job.id)
            held = self.held[job.id] = Held(job, staging)
            log.info("fine-tune job %s claimed by %s: %s %s -> %s %s on %s", job.id, self.worker, job.base,
                     job.base_version, job.target, job.target_version, job.corpus_name)
            held.task = asyncio.create_task(self._job(held), name=f"finetune-job-{job.id}")

    async def shutdown(self, grace: float = 60.0) -> None:
        """Stop: training jobs are stopped and marked interrupted; a publishing one finishes
        (it is seconds from its end). Queued jobs stay queued for the next trainer."""
        self.closing = True
        self._wake.set()
        for held in list(self.held.values()):
            if held.job.state == "training" and held.process is not None:
                held.stopping = held.stopping or "interrupted"
                await held.process.stop(self.settings.cancel_grace)
        tasks = [h.task for h in self.held.values() if h.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- one job ----------------------------------------------------------------------------------

    async def _job(self, held: Held) -> None:
        """Run one job to its end; whatever happens, release what it holds."""
        job = held.job
        try:
            await self._run(held)
        except Undecided as exc:
            log.warning("%s; the next start or another trainer ends it", exc)
        except Exception:
            log.exception("fine-tune job %s hit an unexpected error", job.id)
            await self._end(held, "failed", "the trainer hit an unexpected error (its log has the details)")
        finally:
            self.held.pop(job.id, None)
            await asyncio.to_thread(remove, self.settings.uploads_dir / str(job.id))
            await asyncio.to_thread(remove, held.staging)  # never a version: only ever renamed away
            if not held.lost and job.state in ("failed", "cancelled", "interrupted"):  # we ended it: no row names it
                await asyncio.to_thread(remove_job_files, self.registry, self.settings, job)
            self._wake.set()  # a slot is free

    async def _run(self, held: Held) -> None:
        job = held.job
        upload = self.settings.uploads_dir / str(job.id) / job.corpus_name
        try:
            base = await self.registry.version(Scope.server(job.guild_id), job.base, job.base_version)
            if not upload.is_file():
                raise CharLMError("its uploaded text was lost (the bot stopped while saving it)")
            held.process = await self._start_process(job, upload, base, held.staging)
        except CharLMError as exc:
            await self._end(held, "failed", str(exc).rstrip("."))
            return
        except OSError as exc:
            await self._end(held, "failed", f"the training process could not start ({exc.strerror or exc})")
            return
        job.pid = held.process.pid
        beats = asyncio.create_task(self._beat(held), name=f"finetune-beat-{job.id}")
        if self.closing:  # shutdown() began while the process started
            held.stopping = "interrupted"
            await held.process.stop(self.settings.cancel_grace)
        try:
            finished = await self._train(held)
            if held.lost:
                return
            if held.stopping in ("cancelled", "interrupted"):
                await self._end(held, held.stopping)
            elif finished.kind == "cancelled" and held.stopping == "timed out":
                minutes = f"{self.settings.max_minutes:g}"
                await self._end(held, "failed", f"it ran past the [finetune] max_minutes limit of {minutes} minutes")
            elif finished.kind != "done":
                if finished.kind == "failed":
                    log.warning("fine-tune job %s failed: %s\n%s", job.id, finished.reason, finished.stderr)
                await self._end(held, finished.kind, finished.reason)
            else:
                await self.publish(held, finished.result)
        finally:
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)

    async def _start_process(self, job: Job, upload: Path, base: Version, staging: Path) -> TrainingProcess:
        s = job.settings
        # a job queued before schedule and average_last existed trains as it was asked: plateau, no average
        config = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], learning_rate=s["learning_rate"],
                             patience=s["patience"], schedule=s.get("schedule", "plateau"),
                             average_last=s.get("average_last", 0),
                             max_minutes=self.settings.max_minutes * TRAIN_SHARE)
        await asyncio.to_thread(remove, staging)
        spec = {"corpus": str(upload), "base": str(base.folder), "out": str(staging), "config": asdict(config),
                "nice": self.settings.nice}
        return await self.start_process(spec)

    async def _train(self, held: Held) -> Finished:
        """Wait for the child; at max_minutes it is stopped."""

        def on_progress(event: dict[str, Any]) -> None:
            held.progress = {k: v for k, v in event.items() if k != "event"}

        run = asyncio.ensure_future(held.process.run(on_progress))
        try:
            return await asyncio.wait_for(asyncio.shield(run), self.settings.max_minutes * 60)
        except asyncio.TimeoutError:
            held.stopping = held.stopping or "timed out"
            await held.process.stop(self.settings.cancel_grace)
            return await run

    async def _beat(self, held: Held) -> None:
        """Keep the heartbeat fresh and write new progress (at most every progress_interval);
        stop the child when the row asks for a cancel, or when the job is no longer ours."""
        job = held.job
        every = min(self.settings.progress_interval, self.settings.heartbeat_interval)
        last = 0.0
        while True:
            await asyncio.sleep(every)
            values: dict[str, Any] = {} if last else {"pid": job.pid}
            if held.progress is not held.written and job.state == "training":
                values["progress"] = held.progress
            if "progress" not in values and last and time.monotonic() - last < self.settings.heartbeat_interval:
                continue
            try:
                cancel = await self.store.beat(job, self.worker, **values)
            except Exception as exc:  # the database is away: the next beat tries again
                if away(exc):
                    log.warning("heartbeat of fine-tune job %s failed (%s)", job.id, exc.__class__.__name__)
                else:
                    log.exception("heartbeat of fine-tune job %s failed", job.id)
                continue
            last = time.monotonic()
            if "progress" in values:
                held.written = values["progress"]
                job.progress = held.progress
            if cancel is None:
                log.warning("fine-tune job %s is no longer %s's (another process ended it); stopping it", job.id,
                            self.worker)
                held.lost = True
            elif cancel and job.state == "training" and not held.stopping:
                held.stopping = "cancelled"
            else:
                continue
            if held.process is not None:
                await held.process.stop(self.settings.cancel_grace)
            if held.lost:
                return

    async def _end(self, held: Held, state: str, error: str = "") -> None:
        """training | publishing -> a final state without a version; waits out a database restart."""
        job = held.job
        while True:
            try:
                if not await self.store.end(job, self.worker, state, error):
                    held.lost = True
                    log.warning("fine-tune job %s was ended by another process before it could be marked %s",
                                job.id, state)
                else:
                    log.info("fine-tune job %s %s%s", job.id, state, f": {error}" if error else "")
                return
            except Exception as exc:
                if not away(exc):
                    raise
                log.warning("marking fine-tune job %s %s failed (%s); trying again", job.id, state,
                            exc.__class__.__name__)
                await asyncio.sleep(RETRY)

    # ---- publishing -------------------------------------------------------------------------------

    async def publish(self, held: Held, result: dict[str, Any]) -> None:
        """Turn the staged folder into the job's version, all or nothing (see the module)."""
        job = held.job
        job.heldout_bpc, job.base_heldout_bpc = result["heldout_bpc"], result["base_heldout_bpc"]
        better = job.heldout_bpc < job.base_heldout_bpc
        if result.get("stopped") == "time budget" and not better:
            await self._end(held, "failed", f"the [finetune] max_minutes limit of {self.settings.max_minutes:g} "
                            f"minutes stopped training before it beat its base ({job.heldout_bpc:.3f} vs "
                            f"{job.base_heldout_bpc:.3f} bits per character)")
            return
        if not await self._retrying(lambda: self.store.publishing(job, self.worker), "publishing"):
            held.lost = True
            return
        final = self.registry.folder_for(job.guild_id, job.target, job.target_number)
        committed: bool | None = False
        try:
            await asyncio.to_thread(flush_folder, held.staging)
            plot = await self._plot(job, result)
            await asyncio.to_thread(rename_into_place, held.staging, final)
            card = await asyncio.to_thread(read_card, final)
            try:  # id 0: not recorded yet, but its engine key is the version's (name@vN)
                await self.check_version(Version(job.target, job.target_number, final, card, job.guild_id, 0))
            except Exception as exc:
                log.exception("fine-tune job %s: the new model could not be loaded", job.id)
                raise CharLMError(f"the new model could not be loaded ({exc.__class__.__name__})") from None
            served = bool(job.settings.get("force")) or better
            await self._commit(job, final, card, plot, served)
            committed = True
        except Undecided:
            committed = None  # leave the folder: whoever ends the job removes it if no row names it
            raise
        except Lost:
            held.lost = True
        except CharLMError as exc:
            await self._end(held, "failed", str(exc))
        except Exception as exc:  # the transaction rolled back: nothing was recorded
            log.exception("fine-tune job %s could not be published", job.id)
            await self._end(held, "failed", f"publishing the new model failed ({exc.__class__.__name__})")
        finally:
            if committed is False:  # nothing recorded it: it must not stay
                await asyncio.to_thread(self.registry.discard, final)
        if committed:
            log.info("fine-tune job %s succeeded: %.3f bits/char vs base %.3f, %s", job.id, job.heldout_bpc,
                     job.base_heldout_bpc, "served" if job.served else "not served")
            await self._prune(job)

    async def _plot(self, job: Job, result: dict[str, Any]) -> bytes | None:
        """The loss plot for the message; a failure costs the picture, not the job."""
        title = (f"{job.target} {job.target_version} from {job.base} {job.base_version}: held-out "
                 f"{job.heldout_bpc:.3f} vs {job.base_heldout_bpc:.3f} bits/char")
        try:
            return await asyncio.to_thread(self.plot, result["history"], title)
        except Exception:
            log.exception("fine-tune job %s: drawing its loss plot failed; the job goes on without it", job.id)
            return None

    async def _commit(self, job: Job, final: Path, card: dict, plot: bytes | None, served: bool) -> None:
        """The one transaction: job succeeded + version row + (maybe) serving. Waits out a
        database restart; after a lost connection it asks whether the commit landed."""
        while True:
            try:
                async with self.store.db.begin() as conn:
                    await self.store.succeed(conn, job, self.worker, heldout_bpc=job.heldout_bpc,
                                             base_heldout_bpc=job.base_heldout_bpc, served=served, plot=plot)
                    version = await self.registry.record(conn, job.guild_id, job.target, job.target_number, final,
                                                         card, job.id)
                    if served:
                        await self.registry.serve_in(conn, Scope.server(job.guild_id), version, job.user_id)
                return
            except Exception as exc:
                if not away(exc):
                    raise
                log.warning("recording fine-tune job %s failed (%s); trying again", job.id, exc.__class__.__name__)
                await asyncio.sleep(RETRY)
                try:
                    if await self.registry.registered(job.target, job.target_number):
                        row = await self.store.get(job.id)
                        if row is not None and row.state == "succeeded":
                            job.state, job.served = row.state, row.served
                            return
                except Exception as again:
                    if not away(again):
                        raise
                if self.closing:  # the next start (SQLite) or a reaper (PostgreSQL) decides
                    raise Undecided(f"job {job.id} could not be recorded before shutdown") from exc

    async def _prune(self, job: Job) -> None:
        """Keep at most keep_versions of the server's model; bases of active jobs stay. A
        failure is logged: the job has succeeded, and the next job prunes again."""
        try:
            protect = set()
            for other in await self.store.in_state("queued", "training", "publishing"):
                if other.base == job.target and other.base_version != "v0":
                    model = await self.registry.model(Scope.server(other.guild_id), other.base)
                    base = next((v for v in model.versions if v.label == other.base_version), None)
                    if base is not None and base.id is not None:
                        protect.add(base.id)
            deleted = await self.registry.prune(job.guild_id, job.target, self.settings.keep_versions, protect)
            for version in deleted:
                log.info("deleted %s %s of guild %s (more than keep_versions=%d)", version.model, version.label,
                         job.guild_id, self.settings.keep_versions)
        except Exception:
            log.exception("pruning old versions after fine-tune job %s failed; the job has succeeded", job.id)

    async def _retrying(self, write: Callable[[], Awaitable[bool]], what: str) -> bool:
        while True:
            try:
                return await write()
            except Exception as exc:
                if not away(exc):
                    raise
                log.warning("marking a fine-tune job %s failed (%s); trying again", what, exc.__class__.__name__)
                await asyncio.sleep(RETRY)
