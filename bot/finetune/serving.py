"""The two things the fine-tune cog asks of the inference engine: swap a model in, and
say which names it serves. Kept apart so the cog reads the same whatever the engine is."""

from __future__ import annotations

from bot.context import BotContext
from bot.finetune.registry import Version


async def load(context: BotContext, name: str, version: Version) -> None:
    """Swap a version in under `name` (the engine loads it off the event loop); requests
    already running finish on the version they started with."""
    await context.load_model(name, version.folder)


def served_names(context: BotContext) -> list[str]:
    return sorted(context.engine.models())
