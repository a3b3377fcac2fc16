"""The bot in the conversation: @mentions, replies to its replies, and the "Continue as…"
message commands. All of them go through the shared path (bot.generation).

No privileged intent is needed: Discord sends a bot the content of messages that mention
it and of DMs to it. A reply to the bot's reply is recognised by that reply's Continue
button (which names its history row), so its text needs no message content at all.
"""

from __future__ import annotations

import logging
import re

import discord
from discord import app_commands
from discord.ext import commands

from bot.cog.buttons import ReplyButtons, continuation_prompt, row_of
from bot.context import BotContext
from bot.generation import Ask, Generator
from bot.respond import NO_MENTIONS, SORRY, answer_error, tell
from bot.scope import Scope, scope_of
from bot.surfaces import InteractionSurface, MessageSurface

log = logging.getLogger(__name__)
MODEL_PREFIX = re.compile(r"\s*([A-Za-z0-9_-]{1,32})\s*:\s?(.*)", re.DOTALL)
"""`@bot seuss: text` picks a model; anything else is all prompt."""
PICK_SECONDS = 300
"""How long the model picker of "Continue as…" stays usable (its text is held in memory)."""
PICKER_CHOICES = 25
"""Discord's limit for one select menu: the first 25 names are offered."""


def strip_mentions(content: str, bot_id: int) -> str:
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


class ModelPicker(discord.ui.View):
    """The ephemeral select of "Continue as…": the member picks a model, the continuation
    is posted in the channel. Only the member who opened it sees it."""

    def __init__(self, cog: "ConversationCog", text: str, names: list[str], key: int) -> None:
        super().__init__(timeout=PICK_SECONDS)
        self.cog = cog
        self.text = text
        select = discord.ui.Select(placeholder="Continue as…", custom_id=f"charlm:pick:{key}",
                                   options=[discord.SelectOption(label=n, value=n) for n in names[:PICKER_CHOICES]])
        select.callback = self.picked
        self.select = select
        self.add_item(select)

    async def picked(self, interaction: discord.Interaction) -> None:
        self.stop()
        await self.cog.continue_message(interaction, self.select.values[0], self.text)


class ConversationCog(commands.Cog):
    """Mentions, replies and message commands."""

    def __init__(self, bot: commands.Bot, context: BotContext, generator: Generator) -> None:
        self.bot = bot
        self.context = context
        self.generator = generator
        self.buttons = ReplyButtons(generator)
        self.menus = [
            app_commands.ContextMenu(name="Continue as Alice", callback=self.as_alice),
            app_commands.ContextMenu(name="Continue as Seuss", callback=self.as_seuss),
            app_commands.ContextMenu(name="Continue as…", callback=self.as_any),
        ]
        for menu in self.menus:
            menu.on_error = self.menu_error

    async def cog_load(self) -> None:
        self.generator.view_for = self.buttons.view
        self.bot.add_dynamic_items(*self.buttons.items)
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)
        self.bot.remove_dynamic_items(*self.buttons.items)
        self.generator.view_for = None

    # ---- mentions and replies ------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        replied = self._replied_row(message, me.id)
        dm = message.guild is None
        if replied is None and not dm and not any(u.id == me.id for u in message.mentions):
            return
        settings = await self.generator.settings.get(message.guild.id if message.guild else None)
        channel = message.channel
        parent = getattr(channel, "parent_id", None)
        if not settings.mentions or not (settings.allows(channel.id) or settings.allows(parent)):
            return  # the server's admins turned it off here: say nothing
        text = strip_mentions(message.content, me.id)
        try:
            self.generator.cooldowns.check(message.author.id)
        except app_commands.CommandOnCooldown as exc:
            await message.reply(f"Slow down a little: try again in {exc.retry_after:.0f} s.",
                                mention_author=False, allowed_mentions=NO_MENTIONS)
            return
        ask = Ask(user_id=message.author.id, guild_id=message.guild.id if message.guild else None,
                  channel_id=channel.id, parent_id=parent, command="mention", model="", prompt=text)
        if replied is not None:
            row = await self.context.history.get(replied)
            if row is None or row.guild_id != ask.guild_id:
                await message.reply("That reply is no longer in my history, so I cannot go on from it.",
                                    mention_author=False, allowed_mentions=NO_MENTIONS)
                return
            ask.command, ask.model, ask.prompt = "reply", row.model, continuation_prompt(row, text)
            ask.length, ask.temperature = (row.sampling or {}).get("length"), (row.sampling or {}).get("temperature")
        else:
            ask.model, ask.prompt = await self._model_and_prompt(ask.scope, text, settings.model)
        surface = MessageSurface(message)
        try:
            await self.generator.run(surface, ask)
        except Exception:
            log.exception("answering message %s (user %s, guild %s) failed", message.id, message.author.id,
                          ask.guild_id)
            await surface.fail(SORRY)

    def _replied_row(self, message: discord.Message, bot_id: int) -> int | None:
        """The history row of the bot reply this message answers, if it answers one."""
        reference = message.reference
        resolved = reference.resolved if reference is not None else None
        if not isinstance(resolved, discord.Message) or resolved.author.id != bot_id:
            return None
        return row_of(resolved)

    async def _model_and_prompt(self, scope: Scope, text: str, default: str) -> tuple[str, str]:
        """`seuss: text` -> ("seuss", "text") when seuss is a model here; else the default and all of it."""
        match = MODEL_PREFIX.match(text)
        if match and match[1].lower() in await self.context.model_names(scope):
            return match[1].lower(), match[2]
        return default or self.context.config.generation.mention_model, text

    # ---- message commands ----------------------------------------------------------------

    async def as_alice(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self.continue_message(interaction, "alice", message.content)

    async def as_seuss(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self.continue_message(interaction, "seuss", message.content)

    async def as_any(self, interaction: discord.Interaction, message: discord.Message) -> None:
        if not message.content.strip():
            await tell(interaction, "That message has no text to continue.")
            return
        names = await self.context.model_names(scope_of(interaction))
        await interaction.response.send_message("Which model should continue it?", ephemeral=True,
                                                view=ModelPicker(self, message.content, names, interaction.id),
                                                allowed_mentions=NO_MENTIONS)

    async def continue_message(self, interaction: discord.Interaction, model: str, text: str) -> None:
        """The continuation of a message's text, posted as the interaction's reply."""
        if not text.strip():
            await tell(interaction, "That message has no text to continue.")
            return
        if not await self.generator.admit(interaction):
            return
        ask = Ask.of(interaction, "continue-as", model, text)
        await self.generator.run(InteractionSurface(interaction), ask)

    async def menu_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
