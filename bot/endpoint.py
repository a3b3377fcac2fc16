"""The operator's HTTP endpoint of one process: /metrics (Prometheus text format, written by
prometheus_client) and /healthz (200 or 503 with a one-line reason), served with aiohttp
(already there for discord.py) on the process's own event loop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncio

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.metrics import JOBS_EVERY, Metrics, watch_jobs

log = logging.getLogger(__name__)
Health = Callable[[], Awaitable[str | None]]
"""None when healthy, else the reason in one line."""


class Endpoint:
    """Started with `start()`, stopped with `stop()`; nothing listens when port is 0."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int, healthy_line: str = "ok") -> None:
        self.metrics = metrics
        self.health = health
        self.host, self.port = host, port
        self.healthy_line = healthy_line
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if not self.port:
            return
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("serving /metrics and /healthz on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            problem = await self.health()
        except Exception as exc:  # a check that crashed is a failed check, said in one line
            problem = f"the health check failed ({exc.__class__.__name__})"
        if problem:
            return web.Response(status=503, text=problem + "\n")
        return web.Response(text=self.healthy_line + "\n")


async def database_answers(db: AsyncEngine, timeout: float = 2.0) -> str | None:
    """None when the database answers `SELECT 1` within `timeout` seconds, else why not (for /healthz)."""
    try:
        async with asyncio.timeout(timeout):
            async with db.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
    except TimeoutError:
        return f"the database does not answer within {timeout:g} s"
    except Exception as exc:
        return f"the database does not answer ({exc.__class__.__name__})"
    return None


async def serve_trainer_metrics(config, db: AsyncEngine, worker: str | None = None,
                                every: float = JOBS_EVERY) -> Callable[[], Awaitable[None]]:
    """A trainer's endpoint ([metrics] port; 0: none): job counts, the durations of the jobs
    `worker` trained, and /healthz as "the database answers". Returns what stops it."""
    metrics = Metrics(config.models.folders())
    endpoint = Endpoint(metrics, lambda: database_answers(db), config.metrics.host, config.metrics.port,
                        "ok: the database answers")
    await endpoint.start()
    watching = asyncio.create_task(watch_jobs(db, metrics, durations=True, every=every, worker=worker)) if config.metrics.port else None

    async def stop() -> None:
        if watching is not None:
            watching.cancel()
        await endpoint.stop()

    return stop
