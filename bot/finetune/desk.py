"""What a bot process does with fine-tune jobs: submit, watch, cancel, all through the row.

A bot never trains here (bot.finetune.training does, in this process on SQLite, in
`python -m bot.trainer` on PostgreSQL) and never draws: the watcher shows what the row
says, the loss plot included, so a bot installed from requirements-serve.txt imports
neither TensorFlow, Keras nor matplotlib.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from charlm.errors import CharLMError

from bot.finetune.cleanup import reap, remove
from bot.finetune.registry import Registry
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Busy, Job, JobStore

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where a job's state is shown (the Discord message of /finetune start)."""

    async def show(self, job: Job, plot: bytes | None = None, position: int | None = None) -> None: ...


class JobDesk:
    """Submit, follow and cancel jobs; the watcher edits each followed job's message."""

    def __init__(self, store: JobStore, registry: Registry, settings: FinetuneConfig, *, reaps: bool,
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.reaps = reaps  # PostgreSQL: bots also fail jobs of trainers that went silent
        self.on_queued = on_queued  # SQLite: wakes this process's trainer
        self.preparing: dict[int, bool] = {}  # guild id -> cancel requested, while an upload is checked
        self.reporters: dict[int, Reporter] = {}  # job id -> its message, until the job ends
        self.shown: dict[int, tuple[str, float]] = {}  # job id -> what its message shows, and when

    # ---- submitting ---------------------------------------------------------------------------------

    def reserve(self, guild_id: int) -> None:
        """Hold the server's one job while its upload is checked."""
        if guild_id in self.preparing:
            raise Busy("An upload for a fine-tune job of this server is being checked; wait a moment.")
        self.preparing[guild_id] = False

    def release(self, guild_id: int) -> None:
        self.preparing.pop(guild_id, None)

    async def submit(self, job: Job, corpus: bytes, reporter: Reporter) -> None:
        """Queue a job: its upload is written aside, its row inserted, the upload renamed into place."""
        if self.preparing.get(job.guild_id):
            raise CharLMError("The job was cancelled before it was queued; nothing was saved.")
        uploads = self.settings.uploads_dir
        incoming = uploads / f".incoming-{uuid.uuid4().hex}"
        await asyncio.to_thread(_write, incoming / job.corpus_name, corpus)
        try:
            await self.store.add(job)
            await asyncio.to_thread(os.replace, incoming, uploads / str(job.id))
        except BaseException:
            await asyncio.to_thread(remove, incoming)
            raise
        log.info("fine-tune job %s queued for guild %s: %s %s -> %s on %s", job.id, job.guild_id, job.base,
                 job.base_version, job.target, job.corpus_name)
        self.follow(job, reporter)
        self.on_queued()
        await self.show(job.id, reporter)

    # ---- watching -----------------------------------------------------------------------------------

    def follow(self, job: Job, reporter: Reporter) -> None:
        """Show this job in `reporter` until it ends."""
        self.reporters.setdefault(job.id, reporter)

    async def watch(self) -> None:
        """Every moment, show what the followed jobs' rows say (and, reaping, fail jobs
        whose trainer went silent). Runs until cancelled."""
        every = min(1.0, self.settings.progress_interval)
        while True:
            try:
                if self.reaps:
                    await reap(self.store, self.registry, self.settings)
                await self.watch_once()
            except Exception as exc:
                log.warning("watching fine-tune jobs failed (%s: %s); trying again", exc.__class__.__name__, exc)
            await asyncio.sleep(every)

    async def watch_once(self) -> None:
        for job_id, reporter in list(self.reporters.items()):
            await self.show(job_id, reporter)

    async def show(self, job_id: int, reporter: Reporter) -> None:
        """Edit the job's message if the row says something new: a final state at once,
        anything else at most once per progress_interval."""
        job = await self.store.get(job_id)
        if job is None:
            self.reporters.pop(job_id, None)
            return
        position = await self.store.position(job) if job.state == "queued" else None
        seen = json.dumps([job.state, job.target_version, job.progress, position], sort_keys=True)
        before, at = self.shown.get(job_id, ("", 0.0))
        due = job.final or time.monotonic() - at >= self.settings.progress_interval
        if seen != before and due:
            try:
                await reporter.show(job, job.plot if job.state == "succeeded" else None, position)
            except Exception as exc:  # the next pass tries again; the job goes on
                log.warning("could not show fine-tune job %s: %s", job.id, exc)
                return
            self.shown[job_id] = (seen, time.monotonic())
        if job.final and seen == self.shown.get(job_id, ("", 0.0))[0]:
            self.reporters.pop(job_id, None)
            self.shown.pop(job_id, None)

    # ---- cancelling ---------------------------------------------------------------------------------

    async def cancel(self, guild_id: int) -> Job | None:
        """Take the server's queued job out of the queue, or ask its trainer to stop it and
        wait until the row says it ended. None: nothing to cancel (an upload being checked
        is told not to queue)."""
        job = await self.store.active(guild_id)
        if job is None:
            if guild_id in self.preparing:
                self.preparing[guild_id] = True
            return None
        if job.state == "queued" and await self.store.cancel_queued(job):
            await asyncio.to_thread(remove, self.settings.uploads_dir / str(job.id))
            await self.watch_once()  # its message says so at once
            return job
        if not await self.store.request_cancel(job):
            return await self.store.get(job.id)  # publishing, or it just ended: too late to cancel
        deadline = time.monotonic() + self.settings.cancel_grace + self.settings.worker_timeout + 10
        while time.monotonic() < deadline:
            found = await self.store.get(job.id)
            if found is None or found.final:
                await self.watch_once()
                return found
            await asyncio.sleep(0.2)
        return await self.store.get(job.id)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
