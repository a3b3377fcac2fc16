"""Fine-tune jobs and their queue: one row each in the `jobs` table (bot.db.schema).

The queue is the rows in state `queued`, oldest id first. A job is claimed by one
UPDATE ... WHERE state = 'queued' on the row a SELECT found; that SELECT carries
FOR UPDATE SKIP LOCKED, which PostgreSQL honours (any number of bot.trainer workers share
one queue) and SQLite, whose writers are serialised anyway, leaves out. A unique partial
index keeps at most one queued-or-running job per server even if two requests race.

The row is also how processes talk about a running job: its worker refreshes heartbeat_at
and reads cancel_requested, which any bot process may set; a job whose heartbeat is older
than [finetune] worker_timeout lost its worker, and whoever notices marks it failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from charlm.errors import CharLMError

from bot.db.schema import ACTIVE_STATES, departures, jobs

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_STATES = STATES[2:]


class Busy(CharLMError):
    """The server already has a job queued, running, or being checked."""


@dataclass
class Job:
    """One fine-tune job and how far it got."""

    user_id: int
    base: str
    base_version: str
    target: str
    corpus_name: str
    corpus_sha256: str
    corpus_chars: int
    cleaning: str
    settings: dict[str, Any]
    target_version: str = ""  # given when the job starts
    guild_id: int | None = None
    channel_id: int | None = None
    state: str = "queued"
    progress: dict[str, Any] = field(default_factory=dict)
    heldout_bpc: float | None = None
    base_heldout_bpc: float | None = None
    served: bool = False
    error: str = ""
    pid: int | None = None
    worker: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    id: int | None = None


COLUMNS = tuple(f.name for f in fields(Job) if f.name != "id")


def _job(row: sa.Row) -> Job:
    values = dict(row._mapping)
    values["served"] = bool(values["served"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)


class JobStore:
    """The jobs table behind /finetune, the queue, and the restart check."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def add(self, job: Job) -> int:
        """Insert a job (queued); returns (and sets) its id. Busy if the server has one already."""
        try:
            async with self.db.begin() as conn:
                result = await conn.execute(sa.insert(jobs).values({c: getattr(job, c) for c in COLUMNS}))
        except sa.exc.IntegrityError:
            raise Busy("This server already has a fine-tune job queued or running; "
                       "`/finetune status` shows it.") from None
        job.id = result.inserted_primary_key[0]
        return job.id

    async def update(self, job: Job, *columns: str) -> None:
        """Write the named fields of a stored job back."""
        async with self.db.begin() as conn:
            await conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(
                {c: getattr(job, c) for c in columns}))

    async def _select(self, query: sa.Select) -> list[Job]:
        async with self.db.connect() as conn:
            return [_job(r) for r in await conn.execute(query)]

    async def get(self, job_id: int) -> Job | None:
        found = await self._select(sa.select(jobs).where(jobs.c.id == job_id))
        return found[0] if found else None

    async def latest(self, guild_id: int | None, limit: int = 1) -> list[Job]:
        """A server's most recent jobs, newest first."""
        return await self._select(sa.select(jobs).where(jobs.c.guild_id == guild_id)
                                  .order_by(jobs.c.id.desc()).limit(limit))

    async def active(self, guild_id: int | None) -> Job | None:
        """The server's queued or running job, if any."""
        found = await self._select(sa.select(jobs).where(jobs.c.guild_id == guild_id,
                                                         jobs.c.state.in_(ACTIVE_STATES)))
        return found[0] if found else None

    async def in_state(self, *states: str) -> list[Job]:
        return await self._select(sa.select(jobs).where(jobs.c.state.in_(states)).order_by(jobs.c.id))

    async def position(self, job: Job) -> int:
        """1 for the next job to start, 2 for the one after it, ..."""
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state == "queued", jobs.c.id <= job.id)
        async with self.db.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def claim_next(self, worker: str | None = None) -> Job | None:
        """Mark the oldest queued job of a server the bot is still in as running (by `worker`,
        whose heartbeat starts now), and return it."""
        left = sa.select(departures.c.guild_id)
        pick = (sa.select(jobs.c.id).where(jobs.c.state == "queued", jobs.c.guild_id.not_in(left))
                .order_by(jobs.c.id).limit(1).with_for_update(skip_locked=True))
        now = time.time()
        async with self.db.begin() as conn:
            job_id = (await conn.execute(pick)).scalar()
            if job_id is None:
                return None
            row = (await conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.state == "queued")
                                      .values(state="running", started_at=now, worker=worker,
                                              heartbeat_at=now if worker else None)
                                      .returning(*jobs.c))).first()
        return None if row is None else _job(row)

    async def heartbeat(self, job: Job, worker: str) -> bool | None:
        """The worker is alive: refresh the job's heartbeat. Returns whether a cancel was
        requested, or None when the job is no longer this worker's running job."""
        async with self.db.begin() as conn:
            found = (await conn.execute(
                sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state == "running", jobs.c.worker == worker)
                .values(heartbeat_at=time.time()).returning(jobs.c.cancel_requested))).first()
        return None if found is None else bool(found[0])

    async def request_cancel(self, job: Job) -> bool:
        """Ask the worker of a running job (in whatever process) to stop it; False if it is not running."""
        async with self.db.begin() as conn:
            done = await conn.execute(sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state == "running")
                                      .values(cancel_requested=True))
        return done.rowcount == 1

    async def stale(self, timeout: float, now: float | None = None) -> list[Job]:
        """Running jobs whose worker has not sent a heartbeat for `timeout` seconds."""
        cutoff = (time.time() if now is None else now) - timeout
        return await self._select(sa.select(jobs).where(jobs.c.state == "running", jobs.c.worker.is_not(None),
                                                        jobs.c.heartbeat_at < cutoff).order_by(jobs.c.id))

    async def fail_stale(self, job: Job, now: float | None = None) -> bool:
        """Mark a stale job failed with the reason; False if its worker beat (or it ended) meanwhile."""
        now = time.time() if now is None else now
        error = (f"the training worker {job.worker} stopped sending heartbeats "
                 f"({now - job.heartbeat_at:.0f} s without one): it died or lost the database")
        async with self.db.begin() as conn:
            done = await conn.execute(sa.update(jobs).where(
                jobs.c.id == job.id, jobs.c.state == "running", jobs.c.heartbeat_at == job.heartbeat_at)
                .values(state="failed", error=error, finished_at=now, pid=None))
        if done.rowcount == 1:
            job.state, job.error, job.finished_at, job.pid = "failed", error, now, None
        return done.rowcount == 1

    async def cancel_queued(self, job: Job) -> bool:
        """Take a job out of the queue; False if it started (or ended) meanwhile."""
        async with self.db.begin() as conn:
            done = await conn.execute(sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state == "queued")
                                      .values(state="cancelled", finished_at=time.time()))
        if done.rowcount == 1:
            job.state = "cancelled"
        return done.rowcount == 1

    async def mark_interrupted(self, now: float | None = None) -> list[Job]:
        """Jobs still 'running' belong to a bot that stopped: mark them interrupted."""
        found = await self.in_state("running")
        for job in found:
            job.state, job.finished_at, job.pid = "interrupted", time.time() if now is None else now, None
            job.error = "the bot stopped while this job was training"
            await self.update(job, "state", "finished_at", "pid", "error")
        return found

    async def guild_ids(self) -> set[int]:
        async with self.db.connect() as conn:
            query = sa.select(jobs.c.guild_id).where(jobs.c.guild_id.is_not(None)).distinct()
            return {g for (g,) in await conn.execute(query)}

    async def delete_guild(self, guild_id: int) -> int:
        async with self.db.begin() as conn:
            return (await conn.execute(sa.delete(jobs).where(jobs.c.guild_id == guild_id))).rowcount
