"""Fine-tune jobs: one row each in the `jobs` table (bot.db.schema), the one source of truth
about a job. Every process that touches a job does so here, with conditional updates: each
transition names the state it expects (UPDATE ... WHERE state = 'training' AND worker = me),
so a late or duplicate writer changes nothing and learns that it lost the job.

    queued --claim (a trainer)--> training --(trainer)--> publishing --(trainer)--> succeeded
    queued --cancel (a bot)--> cancelled          training --(trainer)--> failed | cancelled | interrupted
    training | publishing --reap (anyone, after worker_timeout without a heartbeat)--> failed
    training | publishing --stranded (the SQLite bot at its start)--> interrupted

The queue is the rows in state `queued`, oldest id first. A claim picks one with
FOR UPDATE SKIP LOCKED (PostgreSQL honours it, so trainers share one queue; SQLite's
writers are serialised anyway) and gives it its version number in the same transaction;
a unique partial index keeps numbers distinct among active jobs, so of two trainers
claiming jobs of one name at once, one retries with the next number. Another keeps at most
one active job per server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from charlm.errors import CharLMError

from bot.db.schema import ACTIVE_STATES, FINAL_STATES, STATES, departures, jobs, versions

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "STATES", "HELD", "Busy", "Job", "JobStore"]
HELD = ("training", "publishing")
"""States in which a trainer holds the job (and keeps its heartbeat fresh)."""
CLAIM_TRIES = 5


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
    target_number: int | None = None  # allocated by the claim
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
    plot: bytes | None = field(default=None, repr=False)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    id: int | None = None

    @property
    def target_version(self) -> str:
        """Its version's label, e.g. "v3"; empty until a trainer claims it."""
        return f"v{self.target_number}" if self.target_number is not None else ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


COLUMNS = tuple(f.name for f in fields(Job) if f.name != "id")


def _job(row: sa.Row) -> Job:
    values = dict(row._mapping)
    values["served"] = bool(values["served"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)


class Raced(Exception):
    """A claim found its job taken by another trainer meanwhile (the claim tries the next)."""


class Lost(CharLMError):
    """The job is no longer this trainer's: someone else decided its outcome."""


class JobStore:
    """The jobs table: the queue, each job's transitions, and what bots show."""

    noun = "jobs"
    """What purge_server counts (/purge-server's answer)."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    # ---- reading ----------------------------------------------------------------------------------

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
        """The server's queued, training or publishing job, if any."""
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

    async def guild_ids(self) -> set[int]:
        async with self.db.connect() as conn:
            query = sa.select(jobs.c.guild_id).where(jobs.c.guild_id.is_not(None)).distinct()
            return {g for (g,) in await conn.execute(query)}

    # ---- bots: submit and cancel ------------------------------------------------------------------

    async def add(self, job: Job) -> int:
        """Insert a job (queued); returns (and sets) its id. Busy if the server has one already."""
        job.state = "queued"
        try:
            async with self.db.begin() as conn:
                result = await conn.execute(sa.insert(jobs).values({c: getattr(job, c) for c in COLUMNS}))
        except sa.exc.IntegrityError:
            raise Busy("This server already has a fine-tune job queued or running; "
                       "`/finetune status` shows it.") from None
        job.id = result.inserted_primary_key[0]
        return job.id

    async def cancel_queued(self, job: Job) -> bool:
        """Take a job out of the queue; False if a trainer claimed it (or it ended) meanwhile."""
        done = await self._move(job, ("queued",), "cancelled", finished_at=time.time())
        return done

    async def request_cancel(self, job: Job) -> bool:
        """Ask the trainer of a training job (in whatever process) to stop it; False if it is
        not training (a publishing job is past the point where a cancel could undo it)."""
        async with self.db.begin() as conn:
            done = await conn.execute(sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state == "training")
                                      .values(cancel_requested=True))
        return done.rowcount == 1

    async def purge_server(self, guild_id: int) -> int:
        """Delete every job of one server (stop a running one first); returns how many went."""
        async with self.db.begin() as conn:
            return (await conn.execute(sa.delete(jobs).where(jobs.c.guild_id == guild_id))).rowcount

    # ---- trainers ---------------------------------------------------------------------------------

    async def claim(self, worker: str) -> Job | None:
        """Move the oldest queued job of a server the bot is still in to `training`, held by
        `worker` (its heartbeat starts now), with the next version number of its name."""
        for _ in range(CLAIM_TRIES):
            try:
                return await self._claim(worker)
            except (sa.exc.IntegrityError, Raced):  # another trainer took that number (or job) a moment ago
                continue
        return None

    async def _claim(self, worker: str) -> Job | None:
        left = sa.select(departures.c.guild_id)
        pick = (sa.select(jobs.c.id, jobs.c.target).where(jobs.c.state == "queued", jobs.c.guild_id.not_in(left))
                .order_by(jobs.c.id).limit(1).with_for_update(skip_locked=True))
        now = time.time()
        async with self.db.begin() as conn:
            found = (await conn.execute(pick)).first()
            if found is None:
                return None
            stored = sa.select(sa.func.max(versions.c.number)).where(versions.c.name == found.target)
            given = sa.select(sa.func.max(jobs.c.target_number)).where(jobs.c.target == found.target)
            top = max((await conn.execute(stored)).scalar() or 0, (await conn.execute(given)).scalar() or 0)
            row = (await conn.execute(
                sa.update(jobs).where(jobs.c.id == found.id, jobs.c.state == "queued")
                .values(state="training", started_at=now, worker=worker, heartbeat_at=now, target_number=top + 1,
                        cancel_requested=False)
                .returning(*jobs.c))).first()
        if row is None:  # SQLite has no SKIP LOCKED: another trainer claimed it between our two statements
            raise Raced()
        return _job(row)

    async def beat(self, job: Job, worker: str, **values: Any) -> bool | None:
        """The trainer is alive: refresh the heartbeat (and write `values`, e.g. progress).
        Returns whether a cancel was requested, or None when the job is no longer this
        trainer's (it was reaped, or ended)."""
        async with self.db.begin() as conn:
            found = (await conn.execute(
                sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state.in_(HELD), jobs.c.worker == worker)
                .values(heartbeat_at=time.time(), **values).returning(jobs.c.cancel_requested))).first()
        return None if found is None else bool(found[0])

    async def _move(self, job: Job, expected: tuple[str, ...], state: str, worker: str | None = None,
                    conn: AsyncConnection | None = None, **values: Any) -> bool:
        """The one way a job changes state: only from `expected` (and, given, held by `worker`).
        Returns whether it moved; the Job object follows the row when it did."""
        query = sa.update(jobs).where(jobs.c.id == job.id, jobs.c.state.in_(expected))
        if worker is not None:
            query = query.where(jobs.c.worker == worker)
        query = query.values(state=state, **values)
        if conn is None:
            async with self.db.begin() as own:
                done = (await own.execute(query)).rowcount == 1
        else:
            done = (await conn.execute(query)).rowcount == 1
        if done:
            job.state = state
            for key, value in values.items():
                setattr(job, key, value)
        return done

    async def publishing(self, job: Job, worker: str) -> bool:
        """training -> publishing: the model is trained; from here a cancel no longer applies."""
        return await self._move(job, ("training",), "publishing", worker)

    async def succeed(self, conn: AsyncConnection, job: Job, worker: str, **values: Any) -> None:
        """publishing -> succeeded, inside the transaction that records the version (Lost if
        the job is no longer ours: the transaction must then roll back)."""
        if not await self._move(job, ("publishing",), "succeeded", worker, conn, finished_at=time.time(), pid=None,
                                **values):
            raise Lost(f"job {job.id} is no longer held by {worker}")

    async def end(self, job: Job, worker: str, state: str, error: str = "", **values: Any) -> bool:
        """training | publishing -> failed, cancelled or interrupted, by the trainer that holds it."""
        return await self._move(job, HELD, state, worker, error=error, finished_at=time.time(), pid=None, **values)

    async def stale(self, timeout: float, now: float | None = None) -> list[Job]:
        """Held jobs whose trainer has not sent a heartbeat for `timeout` seconds."""
        cutoff = (time.time() if now is None else now) - timeout
        return await self._select(sa.select(jobs).where(jobs.c.state.in_(HELD), jobs.c.worker.is_not(None),
                                                        jobs.c.heartbeat_at < cutoff).order_by(jobs.c.id))

    async def reap(self, job: Job, now: float | None = None) -> bool:
        """Fail a stale job with the reason, if it is still as seen (same state, same last
        heartbeat); False if its trainer beat, or anyone moved it, meanwhile."""
        now = time.time() if now is None else now
        error = (f"its training worker {job.worker} stopped answering ({now - job.heartbeat_at:.0f} s without a "
                 "heartbeat): it died or lost the database")
        async with self.db.begin() as conn:
            done = await conn.execute(sa.update(jobs).where(
                jobs.c.id == job.id, jobs.c.state == job.state, jobs.c.heartbeat_at == job.heartbeat_at)
                .values(state="failed", error=error, finished_at=now, pid=None))
        if done.rowcount == 1:
            job.state, job.error, job.finished_at, job.pid = "failed", error, now, None
        return done.rowcount == 1

    async def interrupt_stranded(self, now: float | None = None) -> list[Job]:
        """The one trainer (the bot on SQLite) is starting: jobs still held were its own when
        it stopped. Mark them interrupted."""
        found = []
        for job in await self.in_state(*HELD):
            if await self._move(job, (job.state,), "interrupted", finished_at=time.time() if now is None else now,
                                pid=None, error="the bot stopped while this job was training"):
                found.append(job)
        return found
