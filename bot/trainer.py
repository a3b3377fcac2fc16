"""`python -m bot.trainer --config PATH`: a training worker for bots on PostgreSQL.

Bot processes on a PostgreSQL [database] url only queue fine-tune jobs; any number of these
workers, on any machine that reaches the database and the shared data_dir volume (uploads
and model folders), run the same trainer loop as the bot does on SQLite
(bot.finetune.training): claim, train in a child process, publish, with the job's row as
the one source of truth. Jobs of a worker that went silent are failed by whoever notices.
Nothing here talks to Discord. SIGTERM/SIGINT stop it: training jobs are stopped and
marked interrupted.
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


def check_loads(version) -> None:
    """Load a new version once, off the event loop, before it is recorded: a broken folder
    fails its job and leaves what is served alone (as the bot does with SQLite)."""
    from charlm.engine import Engine

    engine = Engine(backend="numpy")
    try:
        engine.load(version.key, version.folder)
    finally:
        engine.close()


def drop_secrets() -> None:
    """The trainer never talks to Discord: forget a bot token an environment file handed it.
    The database URL (with its password) was read into the config already; children get a
    filtered environment anyway (bot.finetune.process)."""
    os.environ.pop("DISCORD_TOKEN", None)


async def serve(config_path: Path) -> None:
    from bot.config import DATABASE_URL_ENV, load_config
    from bot.db.engine import open_database, shown
    from bot.finetune.registry import Registry
    from bot.finetune.settings import finetune_config
    from bot.finetune.store import JobStore
    from bot.finetune.training import Trainer

    drop_secrets()
    config = load_config(config_path)
    settings = finetune_config(config)
    if not config.postgres:
        raise CharLMError(NEEDS_POSTGRES)
    url = config.database_url
    os.environ.pop(DATABASE_URL_ENV, None)  # read once; nothing after this needs it
    db = await open_database(url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    from bot.endpoint import serve_trainer_metrics

    stop_metrics = await serve_trainer_metrics(config, db, worker)  # [metrics] port: /metrics and /healthz
    registry = Registry(db, settings.models_dir, config.models.folders())

    async def on_version(version) -> None:
        await asyncio.to_thread(check_loads, version)

    trainer = Trainer(JobStore(db), registry, settings, worker, on_version, poll=POLL)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("trainer %s on %s: %d job(s) at once, models under %s", worker, shown(url),
             settings.concurrent_jobs, settings.models_dir)
    try:
        while True:  # the database may be away at the start too
            try:
                await trainer.start_up(sole=False)
                break
            except Exception as exc:
                log.warning("cleaning up at start failed (%s); trying again", exc.__class__.__name__)
                try:
                    await asyncio.wait_for(stopping.wait(), POLL)
                    return
                except asyncio.TimeoutError:
                    pass
        running = asyncio.create_task(trainer.run(), name="trainer")
        await stopping.wait()
        log.info("stopping: %d job(s) training are stopped and marked interrupted", len(trainer.held))
        await trainer.shutdown()
        await running
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
