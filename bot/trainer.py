"""`python -m bot.trainer --config PATH`: a training worker for bots on PostgreSQL.

Bot processes on a PostgreSQL [database] url only queue fine-tune jobs; any number of these
workers, on any machine that reaches the database and the shared data_dir volume (uploads
and model folders), claim them (SELECT ... FOR UPDATE SKIP LOCKED), train each in a child
process as the bot does with SQLite, and write progress and a heartbeat to the job's row.
A cancel is read from the row; jobs of a worker that went silent are failed by whoever
notices. Nothing here talks to Discord. SIGTERM/SIGINT stop it: running jobs are stopped,
their partial folders removed, and they are marked interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from charlm.errors import CharLMError

log = logging.getLogger("bot.trainer")
POLL = 1.0
"""Seconds between looks at the queue."""
NEEDS_POSTGRES = ("the trainer needs a PostgreSQL database ([database] url or CHARLM_DATABASE_URL, e.g. "
                  "postgresql://charbot@db:5432/charbot); with SQLite the bot trains its jobs itself")


class Silent:
    """A reporter for nobody: the job's row is what bot processes show."""

    async def show(self, job, plot=None, position=None) -> None:
        return None


def check_loads(version) -> None:
    """Load a new version once, off the event loop, before it is served anywhere: a broken
    folder fails its job and leaves what is served alone (as the bot does with SQLite)."""
    from charlm.engine import Engine

    engine = Engine(backend="numpy")
    try:
        engine.load(version.key, version.folder)
    finally:
        engine.close()


async def serve(config_path: Path) -> None:
    from bot.config import load_config
    from bot.db.engine import open_database, shown
    from bot.finetune.jobs import JobRunner
    from bot.finetune.registry import Registry
    from bot.finetune.settings import finetune_config
    from bot.finetune.store import JobStore

    config = load_config(config_path)
    settings = finetune_config(config)
    if not config.postgres:
        raise CharLMError(NEEDS_POSTGRES)
    db = await open_database(config.database_url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    from bot.endpoint import serve_trainer_metrics

    stop_metrics = await serve_trainer_metrics(config, db, worker)  # [metrics] port: /metrics and /healthz
    registry = Registry(db, settings.models_dir, config.models.folders())

    async def on_version(version) -> None:
        await asyncio.to_thread(check_loads, version)

    runner = JobRunner(JobStore(db), registry, settings, lambda job: Silent(), on_version, worker=worker)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("trainer %s on %s: %d job(s) at once, models under %s", worker, shown(config.database_url),
             settings.concurrent_jobs, settings.models_dir)
    try:
        while not stopping.is_set():
            try:
                await runner.reap()
                await runner.pump()
            except Exception:
                log.exception("looking at the queue failed; trying again")
            try:
                await asyncio.wait_for(stopping.wait(), POLL)
            except asyncio.TimeoutError:
                pass
        log.info("stopping: %d job(s) running are stopped and marked interrupted", len(runner.running))
        await runner.shutdown()
    finally:
        await stop_metrics()
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.trainer",
                                     description="Train the fine-tune jobs bots on PostgreSQL queue.")
    parser.add_argument("--config", type=Path, default=Path("config.toml"),
                        help="settings file (default: config.toml in the current folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-8s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.config))
    except CharLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
