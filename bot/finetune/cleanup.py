"""Ending jobs whose trainer went silent, and removing what dead processes left on disk.

Both bots and trainers use this, so it imports nothing heavy (no Keras, no matplotlib).
Nothing here ever deletes a registered version: a reaped job was still `training` or
`publishing`, and a version's row is committed together with its job's `succeeded`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from pathlib import Path

from bot.finetune.registry import Registry
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import ACTIVE_STATES, Job, JobStore

log = logging.getLogger(__name__)
INCOMING_MAX_AGE = 15 * 60
"""Seconds after which an `.incoming-*` upload is a leftover: an upload is checked within
one interaction, whose token lives 15 minutes."""
STAGING = re.compile(r"^\.v(\d+)\.job(\d+)\.tmp")
"""A job's staging folder, and charlm's own temporaries beside it (.v3.job7.tmp.XXXX.tmp)."""
FINAL = re.compile(r"^v(\d+)$")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_job_files(registry: Registry, settings: FinetuneConfig, job: Job) -> None:
    """A job that ended without a version: its upload, staging folder and unregistered
    final folder go (the caller made sure nothing registered it)."""
    remove(settings.uploads_dir / str(job.id))
    if job.target_number is None or job.guild_id is None:
        return
    parent = registry.folder_for(job.guild_id, job.target, job.target_number).parent
    if parent.is_dir():
        for p in parent.iterdir():
            m = STAGING.match(p.name)
            if m and int(m.group(2)) == job.id:
                remove(p)
    registry.discard(registry.folder_for(job.guild_id, job.target, job.target_number))


async def reap(store: JobStore, registry: Registry, settings: FinetuneConfig) -> list[Job]:
    """Fail held jobs whose trainer stopped sending heartbeats for worker_timeout, and
    remove their files. The conditional update decides: if the trainer beat or finished
    meanwhile, nothing happens."""
    failed = []
    for job in await store.stale(settings.worker_timeout):
        if not await store.reap(job):
            continue
        log.warning("fine-tune job %s failed: %s", job.id, job.error)
        await asyncio.to_thread(remove_job_files, registry, settings, job)
        failed.append(job)
    return failed


async def clean_incoming(settings: FinetuneConfig, now: float | None = None) -> int:
    """Uploads a bot was writing when it died (`.incoming-*`, older than one interaction)."""
    now = time.time() if now is None else now

    def run() -> int:
        count = 0
        folder = settings.uploads_dir
        for p in folder.glob(".incoming-*") if folder.is_dir() else []:
            try:
                if now - p.stat().st_mtime > INCOMING_MAX_AGE:
                    remove(p)
                    count += 1
            except OSError:
                pass
        return count

    return await asyncio.to_thread(run)


async def clean_leftovers(store: JobStore, registry: Registry, settings: FinetuneConfig) -> list[Path]:
    """At a trainer's start: uploads and staging folders of jobs that ended (or are gone),
    and version folders with no row whose job ended (a publish that died between its
    rename and its commit). Each candidate is checked against the database on its own, so
    a job another trainer claims meanwhile keeps its files."""

    async def ended(job_id: int) -> bool:
        job = await store.get(job_id)
        return job is None or job.final

    async def orphan(name: str, number: int) -> bool:
        making = [j for j in await store.in_state(*ACTIVE_STATES) if (j.target, j.target_number) == (name, number)]
        return not making and not await registry.registered(name, number)

    doomed: list[Path] = []
    uploads = settings.uploads_dir
    for p in sorted(uploads.iterdir()) if uploads.is_dir() else []:
        if p.name.isdigit() and await ended(int(p.name)):
            doomed.append(p)
    root = settings.models_dir
    for guild in sorted(root.iterdir()) if root.is_dir() else []:
        if not (guild.is_dir() and guild.name.isdigit()):
            continue  # the older bot's layout (models/<name>/v<N>) is the legacy import's
        for model in sorted(guild.iterdir()):
            for p in sorted(model.iterdir()) if model.is_dir() else []:
                if (m := STAGING.match(p.name)) and await ended(int(m.group(2))):
                    doomed.append(p)
                elif (m := FINAL.match(p.name)) and await orphan(model.name, int(m.group(1))):
                    doomed.append(p)
    for p in doomed:
        log.warning("removing %s, left behind by a process that stopped", p)
        await asyncio.to_thread(remove, p)
    return doomed
