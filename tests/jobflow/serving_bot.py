"""`python -m tests.jobflow.serving_bot CONFIG REPORT`: the bot, run (from a venv of
requirements-serve.txt) until its fine-tune watcher has shown every job it follows in a
final state; then it writes which training modules it had imported to REPORT and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bot.config import load_config
from bot.runner import CharLMBot, point_at

HEAVY = ("tensorflow", "keras", "matplotlib")


async def main(config_path: Path, report: Path) -> None:
    config = load_config(config_path)
    point_at(config.discord)
    bot = CharLMBot(config, guild_ready_timeout=0.1)

    async def watch_until_shown() -> None:
        while (cog := bot.get_cog("FinetuneCog")) is None or not cog.desk.reporters:
            await asyncio.sleep(0.1)
        while cog.desk.reporters:  # a job leaves the watcher once its final state is shown
            await asyncio.sleep(0.1)
        heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HEAVY})
        report.write_text(json.dumps({"heavy": heavy}))
        await bot.close()

    async with bot:
        watcher = asyncio.create_task(watch_until_shown())
        await bot.start(os.environ["DISCORD_TOKEN"])
        await watcher


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
