"""One fine-tune job at a time: the training process, its row, its message, the swap.

The runner knows nothing of Discord: it tells a Reporter what to show, and a serve
callback which model folder should now answer for a name.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from charlm.errors import CharLMError
from charlm.train_config import TrainConfig

from bot.finetune.plot import loss_plot
from bot.finetune.process import Finished, TrainingProcess
from bot.finetune.registry import Registry, Version
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Job, JobStore

log = logging.getLogger(__name__)
Serve = Callable[[str, Version], Awaitable[None]]
"""Load a version into the inference engine under a name, replacing what served it."""


class Reporter(Protocol):
    """Where a job's state is shown (the Discord message of /finetune start)."""

    async def show(self, job: Job, plot: bytes | None = None) -> None: ...


class Busy(CharLMError):
    """A job is already being prepared or trained."""


async def stop(task: asyncio.Task) -> None:
    """Cancel a helper task and wait until it has stopped."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class JobRunner:
    """Holds the one job slot; runs a job from its accepted upload to its final message."""

    def __init__(self, store: JobStore, registry: Registry, settings: FinetuneConfig, serve: Serve) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.serve = serve
        self.preparing: str | None = None  # who is uploading, while the slot is reserved
        self.cancel_requested = False  # /finetune cancel while the upload was being checked
        self.job: Job | None = None
        self.process: TrainingProcess | None = None
        self.task: asyncio.Task | None = None
        self.uploads = settings.models_dir.parent / "finetune-uploads"

    @property
    def busy(self) -> bool:
        return self.preparing is not None or self.job is not None

    def reserve(self, who: str) -> None:
        """Take the slot while an upload is checked, so a second request sees it taken."""
        if self.busy:
            raise Busy("a fine-tune job is already running")
        self.preparing = who
        self.cancel_requested = False

    def release(self) -> None:
        """Free the slot if no job was started from the reserved upload."""
        self.preparing = None

    async def start(self, job: Job, corpus: bytes, base: Version, out: Path, reporter: Reporter) -> None:
        """Store the job, save the upload for the training process, and start it."""
        if self.cancel_requested:
            raise CharLMError("the job was cancelled before it started; nothing was saved")
        upload = self.uploads / f"{int(time.time() * 1000)}" / job.corpus_name
        upload.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upload.write_bytes, corpus)
        config = TrainConfig(epochs=job.settings["epochs"], batch_size=job.settings["batch_size"],
                             learning_rate=job.settings["learning_rate"], patience=job.settings["patience"])
        spec = {"corpus": str(upload), "base": str(base.folder), "out": str(out), "config": asdict(config),
                "nice": self.settings.nice}
        try:
            self.process = await TrainingProcess.start(spec)
        except OSError as exc:
            shutil.rmtree(upload.parent, ignore_errors=True)
            raise CharLMError(f"could not start the training process: {exc}") from None
        job.pid = self.process.pid
        await self.store.add(job)
        self.job, self.preparing = job, None
        try:  # shown before the job's task exists, so it can never overwrite the final message
            await reporter.show(job)
        except Exception as exc:
            log.warning("could not show fine-tune job %s: %s", job.id, exc)
        log.info("fine-tune job %s started (pid %s): %s %s -> %s %s on %s", job.id, job.pid, job.base,
                 job.base_version, job.target, job.target_version, job.corpus_name)
        self.task = asyncio.create_task(self._run(job, self.process, out, upload, reporter),
                                        name=f"finetune-job-{job.id}")

    async def _run(self, job: Job, process: TrainingProcess, out: Path, upload: Path, reporter: Reporter) -> None:
        changed = asyncio.Event()

        def on_progress(event: dict[str, Any]) -> None:
            job.progress = {k: v for k, v in event.items() if k != "event"}
            changed.set()

        updates = asyncio.create_task(self._show_progress(job, changed, reporter))
        plot = None
        try:
            finished = await process.run(on_progress)
            await stop(updates)  # no progress edit may land after the final one
            plot = await self._finish(job, finished, out)
        except Exception as exc:
            log.exception("fine-tune job %s could not be finished", job.id)
            job.state, job.error = "failed", f"{exc.__class__.__name__}: {exc}"
            self.registry.discard(out)
        finally:  # also when the bot stops (CancelledError): shutdown() then marks the job
            await stop(updates)
            shutil.rmtree(upload.parent, ignore_errors=True)
        job.finished_at, job.pid = time.time(), None
        await self.store.update(job, "state", "progress", "heldout_bpc", "base_heldout_bpc", "served", "error",
                                "finished_at", "pid")
        self.job = self.process = self.task = None
        try:
            await reporter.show(job, plot)
        except Exception:
            log.exception("could not show the end of fine-tune job %s", job.id)

    async def _show_progress(self, job: Job, changed: asyncio.Event, reporter: Reporter) -> None:
        """Store and show the latest progress, at most once per progress_interval."""
        while True:
            await changed.wait()
            changed.clear()
            await self.store.update(job, "progress")
            try:
                await reporter.show(job)
            except Exception as exc:  # the next update tries again; the job goes on
                log.warning("progress update of fine-tune job %s failed: %s", job.id, exc)
            await asyncio.sleep(self.settings.progress_interval)

    async def _finish(self, job: Job, finished: Finished, out: Path) -> bytes | None:
        """Record the outcome; a good (or forced) result becomes the served version."""
        if finished.kind != "done":
            job.state = finished.kind
            job.error = finished.reason
            if finished.kind == "failed":
                log.warning("fine-tune job %s failed: %s\n%s", job.id, finished.reason, finished.stderr)
            self.registry.discard(out)
            return None
        result = finished.result
        job.heldout_bpc, job.base_heldout_bpc = result["heldout_bpc"], result["base_heldout_bpc"]
        job.state = "succeeded"
        if job.settings.get("force") or job.heldout_bpc < job.base_heldout_bpc:
            version = self.registry.set_served(job.target, job.target_version)
            await self.serve(job.target, version)
            job.served = True
        log.info("fine-tune job %s succeeded: %.3f bits/char vs base %.3f, %s", job.id, job.heldout_bpc,
                 job.base_heldout_bpc, "served" if job.served else "not served")
        title = (f"{job.target} {job.target_version} from {job.base} {job.base_version}: held-out "
                 f"{job.heldout_bpc:.3f} vs {job.base_heldout_bpc:.3f} bits/char")
        return await asyncio.to_thread(loss_plot, result["history"], title)

    async def cancel(self) -> Job | None:
        """Stop the running job's process; its task records the cancellation."""
        job, process, task = self.job, self.process, self.task
        if job is None or process is None or task is None:
            self.cancel_requested = self.preparing is not None
            return None
        await process.stop(self.settings.cancel_grace)
        await asyncio.shield(task)
        return job

    async def shutdown(self) -> None:
        """The bot is stopping: stop training, discard the output, mark the job interrupted."""
        job, process, task = self.job, self.process, self.task
        if job is None or process is None or task is None:
            return
        task.cancel()
        await process.stop(self.settings.cancel_grace)
        self.registry.discard(self.registry.root / job.target / job.target_version)
        job.state, job.finished_at, job.pid = "interrupted", time.time(), None
        job.error = "the bot stopped while this job was training"
        await self.store.update(job, "state", "progress", "finished_at", "pid", "error")
        self.job = self.process = self.task = None
