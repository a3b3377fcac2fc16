"""The `bot.finetune` extension: /finetune start|status|cancel and /models.

Load it after `bot.cog` (it shares that extension's services, `bot.charlm`, and adds its
jobs to the data a departed server loses): `await bot.load_extension("bot.finetune")`. Settings come
from the [finetune] table of config.toml (see docs/finetune.md).

This module stays free of imports: the training process runs `bot.finetune.worker`,
and should not pay for discord.py on its way to TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discord.ext import commands


async def setup(bot: "commands.Bot") -> None:
    from bot.context import get_context
    from bot.finetune.cog import FinetuneCog
    from bot.finetune.settings import finetune_config

    context = get_context(bot)
    await bot.add_cog(FinetuneCog(bot, context, finetune_config(context.config)))
