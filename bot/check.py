"""`python -m bot --check`: everything a real run needs, except Discord."""

from __future__ import annotations

import time

from charlm.sampling import Sampling

from bot.config import Config
from bot.context import BotContext

PROMPT = "Once upon a time"


async def check_database(config: Config) -> str:
    """Open (and migrate) the models/jobs database and count what it holds."""
    import sqlalchemy as sa

    from bot.db.engine import head, open_database, shown
    from bot.db.schema import jobs, versions

    db = await open_database(config.database_url)
    try:
        async with db.connect() as conn:
            counts = [(await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar() for t in (versions, jobs)]
    finally:
        await db.dispose()
    return (f"database {shown(config.database_url)}: ok (schema {head()}, {counts[0]} fine-tuned versions, "
            f"{counts[1]} jobs)")


async def run_check(config: Config) -> list[str]:
    """Open the services, generate a short sample per model, close; returns what was done."""
    lines = [f"config {config.path}: ok"]
    started = time.perf_counter()
    context = await BotContext.open(config)
    try:
        lines.append(f"history: ok ({await context.history.count()} requests stored in the database)")
        for name in config.models.folders():
            result = await context.engine.generate(name, PROMPT, Sampling(temperature=0, length=40))
            version = result.version
            lines.append(f"model {name} v0 ({version.path}, {version.backend}, {version.precision}): "
                         f"{result.window.prompt_text!r} -> {result.text!r}")
    finally:
        await context.close()
    lines.append(await check_database(config))
    lines.append(f"all checks passed in {time.perf_counter() - started:.1f} s")
    return lines
