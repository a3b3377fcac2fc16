"""The `bot.cog` extension: /alice, /seuss, /generate, /history, /forget, /settings,
/purge-server, @mentions, replies, the "Continue as…" message commands, the Reroll/Continue
buttons, and forgetting the servers that removed the bot (bot.cog.servers).

Any discord.py bot can add them with `await bot.load_extension("bot.cog")`. If the bot
has no services yet (`bot.charlm`), the extension opens them from the config file named
by the CHARLM_CONFIG environment variable (default `config.toml`) and closes them again
when it is unloaded. Commands still need a `bot.tree.sync()`, as with any extension.
"""

from __future__ import annotations

import os

from discord.ext import commands

from bot.config import load_config
from bot.context import BotContext
from bot.cog.conversation import ConversationCog
from bot.cog.generate import GenerationCog
from bot.cog.history_commands import HistoryCog
from bot.cog.servers import ServersCog
from bot.cog.settings_command import SettingsCog
from bot.generation import Generator
from bot.outfilter import OutputFilter


async def setup(bot: commands.Bot) -> None:
    context: BotContext | None = getattr(bot, "charlm", None)
    if context is None:
        context = await BotContext.open(load_config(os.environ.get("CHARLM_CONFIG", "config.toml")))
        context.opened_by_extension = True
        bot.charlm = context  # type: ignore[attr-defined]
    generator = Generator(context, context.settings, OutputFilter(), lambda: bot.shard_count or 1)  # the one path every way of asking shares
    await bot.add_cog(GenerationCog(generator))
    await bot.add_cog(ConversationCog(bot, context, generator))
    await bot.add_cog(HistoryCog(context))
    await bot.add_cog(SettingsCog(context, context.settings))
    await bot.add_cog(ServersCog(bot, context))


async def teardown(bot: commands.Bot) -> None:
    context: BotContext | None = getattr(bot, "charlm", None)
    if context is not None and context.opened_by_extension:
        await context.close()
        bot.charlm = None  # type: ignore[attr-defined]
