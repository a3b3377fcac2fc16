"""Fine-tune jobs, one SQLite row each, in their own file (data/finetune.sqlite3).

A separate file keeps this schema's PRAGMA user_version apart from the history
database's; MIGRATIONS[n] takes this file from version n to n + 1 in one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from charlm.errors import CharLMError

from bot.sqlite import open_database

MIGRATIONS: list[str] = [
    # 1: one row per /finetune start that got past the upload checks.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,           -- unix seconds, UTC
        finished_at REAL,
        user_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER,
        base TEXT NOT NULL,                 -- model name trained from
        base_version TEXT NOT NULL,         -- e.g. v0 (shipped weights) or v3
        target TEXT NOT NULL,               -- model name the result becomes a version of
        target_version TEXT NOT NULL,       -- e.g. v4
        corpus_name TEXT NOT NULL,
        corpus_sha256 TEXT NOT NULL,
        corpus_chars INTEGER NOT NULL,      -- after cleaning
        cleaning TEXT NOT NULL,             -- the cleaning report line shown to the admin
        settings TEXT NOT NULL,             -- JSON: epochs, batch_size, learning_rate, force, ...
        state TEXT NOT NULL,                -- running, succeeded, failed, cancelled, interrupted
        progress TEXT NOT NULL DEFAULT '{}',-- JSON: the last TrainProgress
        heldout_bpc REAL,                   -- new model, bits per char on the corpus's held-out 10%
        base_heldout_bpc REAL,              -- its base, same text
        served INTEGER NOT NULL DEFAULT 0,  -- 1 if the result replaced the served version
        error TEXT NOT NULL DEFAULT '',
        pid INTEGER                         -- training process while running
    );
    CREATE INDEX jobs_state ON jobs (state);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
STATES = ("running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_STATES = STATES[1:]


class JobStoreError(CharLMError):
    """The fine-tune database cannot be used (unreadable, or from a newer bot)."""


@dataclass
class Job:
    """One fine-tune job and how far it got."""

    user_id: int
    base: str
    base_version: str
    target: str
    target_version: str
    corpus_name: str
    corpus_sha256: str
    corpus_chars: int
    cleaning: str
    settings: dict[str, Any]
    guild_id: int | None = None
    channel_id: int | None = None
    state: str = "running"
    progress: dict[str, Any] = field(default_factory=dict)
    heldout_bpc: float | None = None
    base_heldout_bpc: float | None = None
    served: bool = False
    error: str = ""
    pid: int | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    id: int | None = None


COLUMNS = ("created_at", "finished_at", "user_id", "guild_id", "channel_id", "base", "base_version", "target",
           "target_version", "corpus_name", "corpus_sha256", "corpus_chars", "cleaning", "settings", "state",
           "progress", "heldout_bpc", "base_heldout_bpc", "served", "error", "pid")
JSON_COLUMNS = ("settings", "progress")


def _row_to_job(row: aiosqlite.Row) -> Job:
    values = dict(row)
    for column in JSON_COLUMNS:
        values[column] = json.loads(values[column])
    values["served"] = bool(values["served"])
    return Job(**values)


def _value(job: Job, column: str) -> Any:
    value = getattr(job, column)
    return json.dumps(value, sort_keys=True) if column in JSON_COLUMNS else value


class JobStore:
    """The jobs table behind /finetune status and the restart check."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    async def open(cls, path: str | Path) -> "JobStore":
        """Open (creating folders and file as needed), switch to WAL and migrate."""
        path = Path(path)
        return cls(await open_database(path, MIGRATIONS, "fine-tune database", JobStoreError), path)

    async def close(self) -> None:
        await self.db.close()

    async def add(self, job: Job) -> int:
        """Insert a job; returns (and sets) its id."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        cursor = await self.db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                                       [_value(job, c) for c in COLUMNS])
        job.id = cursor.lastrowid
        await cursor.close()
        return job.id

    async def update(self, job: Job, *columns: str) -> None:
        """Write the named fields of a stored job back."""
        sets = ", ".join(f"{c} = ?" for c in columns)
        await self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*(_value(job, c) for c in columns), job.id])

    async def get(self, job_id: int) -> Job | None:
        async with self.db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM jobs WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return _row_to_job(row) if row else None

    async def latest(self, limit: int = 1) -> list[Job]:
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM jobs ORDER BY id DESC LIMIT ?"
        async with self.db.execute(sql, (limit,)) as cursor:
            return [_row_to_job(row) for row in await cursor.fetchall()]

    async def mark_interrupted(self, now: float | None = None) -> list[Job]:
        """Jobs still 'running' belong to a bot that stopped: mark them interrupted."""
        async with self.db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM jobs WHERE state = 'running'") as cursor:
            jobs = [_row_to_job(row) for row in await cursor.fetchall()]
        for job in jobs:
            job.state, job.finished_at, job.pid = "interrupted", time.time() if now is None else now, None
            job.error = "the bot stopped while this job was training"
            await self.update(job, "state", "finished_at", "pid", "error")
        return jobs
