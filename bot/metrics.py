"""What an operator can graph: the bot's Prometheus metrics, made with prometheus_client.

One `Metrics` per process, on its own CollectorRegistry (passed to whoever records), so
tests and several bots in one process never share counters. Labels are only ever shard,
model, command, outcome and job state: never a server or user id, which would make one
time series per server (unbounded cardinality). `model` is the name of a shipped model
(alice, seuss, storybook) or "fine-tuned" for every version a server made, whose names
users choose. docs/operations.md says what each metric means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

FINE_TUNED = "fine-tuned"
OUTCOMES = {"ok": "answered", "busy": "busy", "server_busy": "server_busy", "timeout": "timed_out",
            "error": "failed"}
"""History outcome -> the `outcome` label of charbot_requests_total."""
COMMANDS = ("alice", "seuss", "generate", "mention", "reply", "continue-as", "reroll", "continue")
"""The `command` label; anything else (a future command) is "other"."""
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
JOB_SECONDS = (60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
JOBS_EVERY = 15.0
"""Seconds between looks at the jobs table (one grouped count)."""


class Metrics:
    """Every metric of a bot process or a trainer; `registry` is what /metrics serves."""

    def __init__(self, shipped: Iterable[str] = (), registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.shipped = frozenset(shipped)
        r = self.registry
        self.requests = Counter("charbot_requests", "Generation requests by command and outcome "
                                "(answered, busy, server_busy, timed_out, failed)",
                                ["shard", "command", "outcome"], registry=r)
        self.ack_seconds = Histogram("charbot_ack_seconds", "Interaction to acknowledgement (Discord's "
                                     "'thinking...')", ["shard"], buckets=LATENCY, registry=r)
        self.first_text_seconds = Histogram("charbot_first_text_seconds", "Interaction to the first generated "
                                            "text shown", ["shard", "model"], buckets=LATENCY, registry=r)
        self.reply_seconds = Histogram("charbot_reply_seconds", "Interaction to the final reply (answered "
                                       "requests)", ["shard", "model"], buckets=LATENCY, registry=r)
        self.queue_depth = Gauge("charbot_queue_depth", "Requests waiting to join a batch", registry=r)
        self.running_rows = Gauge("charbot_running_rows", "Requests being generated (rows in batches)", registry=r)
        self.batch_rows = Histogram("charbot_batch_rows", "Rows in each batch step of the engine", buckets=ROWS,
                                    registry=r)
        self.loaded_versions = Gauge("charbot_loaded_versions", "Fine-tuned versions in memory", registry=r)
        self.loads = Counter("charbot_version_loads", "Fine-tuned versions loaded on demand", ["model"], registry=r)
        self.load_seconds = Histogram("charbot_version_load_seconds", "Time to load a fine-tuned version",
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.evictions = Counter("charbot_version_evictions", "Fine-tuned versions unloaded to make room",
                                 ["model"], registry=r)
        self.jobs = Gauge("charbot_finetune_jobs", "Fine-tune jobs in the database by state", ["state"], registry=r)
        self.job_seconds = Histogram("charbot_finetune_job_seconds", "Duration of finished fine-tune jobs "
                                     "(counted by the process that trains)", ["state"], buckets=JOB_SECONDS,
                                     registry=r)
        self.database_errors = Counter("charbot_database_errors", "Database operations that failed", registry=r)

    def model(self, name: str) -> str:
        """The `model` label: a shipped name, else "fine-tuned" (names users choose stay out)."""
        return name if name in self.shipped else FINE_TUNED

    def watch_engine(self, waiting: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the engine's queue at scrape time."""
        self.queue_depth.set_function(waiting)
        self.running_rows.set_function(running)

    def request(self, shard: int, command: str, model: str, outcome: str, ack_s: float | None,
                first_text_s: float | None, reply_s: float) -> None:
        """One generation request, as the history records it."""
        shard_label, model_label = str(shard), self.model(model)
        self.requests.labels(shard_label, command if command in COMMANDS else "other",
                             OUTCOMES.get(outcome, "failed")).inc()
        if ack_s is not None:
            self.ack_seconds.labels(shard_label).observe(ack_s)
        if first_text_s is not None:
            self.first_text_seconds.labels(shard_label, model_label).observe(first_text_s)
        if outcome == "ok":
            self.reply_seconds.labels(shard_label, model_label).observe(reply_s)


async def watch_jobs(db: AsyncEngine, metrics: Metrics, durations: bool, every: float = JOBS_EVERY,
                     worker: str | None = None) -> None:
    """Keep charbot_finetune_jobs current; with `durations` (the process that trains), also
    observe the duration of each job that finished since the last look, only those of
    `worker` when given (a trainer: several trainers never count one job twice). Runs until
    cancelled."""
    from bot.db.schema import jobs

    since = time.time()
    while True:
        try:
            async with db.connect() as conn:  # finished jobs first: the counts, read after, are as new
                query = sa.select(jobs.c.state, jobs.c.started_at, jobs.c.finished_at).where(
                    jobs.c.finished_at > since, jobs.c.started_at.is_not(None))
                if worker is not None:
                    query = query.where(jobs.c.worker == worker)
                finished = (await conn.execute(query)).all() if durations else []
                counts = dict((await conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(
                    jobs.c.state))).all())
            for state in JOB_STATES:
                metrics.jobs.labels(state).set(counts.get(state, 0))
            for state, started, ended in finished:
                metrics.job_seconds.labels(state).observe(max(0.0, ended - started))
                since = max(since, ended)
        except Exception as exc:  # the next look tries again; /healthz reports a dead database
            metrics.database_errors.inc()
            log.warning("counting fine-tune jobs failed: %s", exc)
        await asyncio.sleep(every)
