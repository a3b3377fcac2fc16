"""`python -m tests.jobflow.trainer_process URL MODELS BASE OPTIONS_JSON`: a trainer process to
kill -9 in tests. It runs the real trainer loop (bot.finetune.training) on the database at
URL with the stand-in training process (tests.jobflow.copy_training), and, when asked, a
slow load check so a test can catch it while publishing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path

from bot.db.engine import open_database
from bot.finetune.process import TrainingProcess
from bot.finetune.registry import Registry
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import JobStore
from bot.finetune.training import Trainer


async def main(url: str, models: Path, base: Path, options: dict) -> None:
    db = await open_database(url)
    settings = FinetuneConfig(models_dir=models, worker_timeout=options.get("worker_timeout", 3.0),
                              progress_interval=0.2, cancel_grace=2.0)

    async def start(spec: dict) -> TrainingProcess:
        spec["test"] = {"seconds": options.get("train_seconds", 0.5)}
        return await TrainingProcess.start(spec, "tests.jobflow.copy_training")

    async def check(version) -> None:
        await asyncio.sleep(options.get("publish_seconds", 0.0))

    trainer = Trainer(JobStore(db), Registry(db, models, {"alice": base}), settings,
                      f"{socket.gethostname()}:{os.getpid()}", check, plot=lambda history, title: b"PNG",
                      poll=0.2, start_process=start)
    await trainer.start_up(sole=options.get("sole", False))
    await trainer.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])))
