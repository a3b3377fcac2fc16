"""/settings: a server's admins (and the bot's owners) see and change how the bot behaves there."""

from __future__ import annotations

import re
from dataclasses import replace

import discord
from discord import app_commands
from discord.ext import commands

from charlm.errors import CharLMError

from bot.cog.generate import Length, Temperature
from bot.context import BotContext, may_manage
from bot.finetune.registry import no_such_model
from bot.respond import NO_MENTIONS, answer_error, tell
from bot.scope import scope_of
from bot.server_settings import MAX_CHANNELS, ServerSettings, SettingsStore, parse_words

CHANNEL = re.compile(r"<#([0-9]{1,20})>|([0-9]{1,20})")
EVERYWHERE, NONE = "all", "none"


def parse_channels(text: str) -> tuple[int, ...]:
    """`#general #bots` (as Discord writes them, <#id>) or ids; `all` for every channel."""
    if text.strip().lower() == EVERYWHERE:
        return ()
    found = [int(a or b) for a, b in CHANNEL.findall(text)]
    if not found or CHANNEL.sub("", text).strip(" ,"):
        raise CharLMError("Give channels as #mentions separated by spaces, or `all`.")
    unique = tuple(dict.fromkeys(found))
    if len(unique) > MAX_CHANNELS:
        raise CharLMError(f"A server may list at most {MAX_CHANNELS} channels.")
    return unique


def describe(settings: ServerSettings, default_model: str, default_length: int, default_temperature: float) -> str:
    channels = " ".join(f"<#{c}>" for c in settings.channels) or "every channel"
    words = discord.utils.escape_markdown(", ".join(settings.words) or "none")
    t = settings.temperature if settings.temperature is not None else default_temperature
    return "\n".join([
        f"**Answers in:** {channels}",
        f"**Answers @mentions and replies:** {'yes' if settings.mentions else 'no'}",
        f"**Model for @mentions:** {settings.model or default_model}",
        f"**Temperature:** {t:g} · **length:** {settings.length or default_length}",
        f"**Output filter:** {'on' if settings.filter else 'off'} · **extra words:** {words}",
    ])


class SettingsCog(commands.Cog):
    """One command with an option per setting; without options it shows them."""

    def __init__(self, context: BotContext, store: SettingsStore) -> None:
        self.context = context
        self.store = store

    @app_commands.command(name="settings", description="Admins: where and how the bot answers in this server")
    @app_commands.guild_only()
    @app_commands.describe(
        channels="Channels where it answers (#mentions), or `all`",
        mentions="Whether it answers @mentions and replies to its messages",
        model="The model that answers @mentions",
        temperature="Default temperature of every reply here",
        length="Default length of every reply here",
        filter="Mask listed words in everything it writes (on by default)",
        words="Extra words for the filter, comma-separated; `none` clears them",
    )
    async def settings(self, interaction: discord.Interaction, channels: str | None = None,
                       mentions: bool | None = None, model: str | None = None,
                       temperature: Temperature | None = None, length: Length | None = None,
                       filter: bool | None = None, words: str | None = None) -> None:
        if not await may_manage(interaction, self.context.config):
            await tell(interaction, "Only this server's admins (Manage Server) can change its settings.")
            return
        g = self.context.config.generation
        current = await self.store.get(interaction.guild_id)
        changes: dict[str, object] = {}
        if channels is not None:
            changes["channels"] = parse_channels(channels)
        if mentions is not None:
            changes["mentions"] = mentions
        if model is not None:
            name = model.strip().lower()
            if name not in await self.context.model_names(scope_of(interaction)):
                raise no_such_model(model[:40])
            changes["model"] = name
        if temperature is not None:
            if temperature > g.max_temperature:
                raise CharLMError(f"The temperature can be at most {g.max_temperature:g}.")
            changes["temperature"] = temperature
        if length is not None:
            if length > g.max_length:
                raise CharLMError(f"The length can be at most {g.max_length}.")
            changes["length"] = length
        if filter is not None:
            changes["filter"] = filter
        if words is not None:
            changes["words"] = () if words.strip().lower() == NONE else parse_words(words)
        settings = replace(current, **changes)
        if changes:
            await self.store.put(interaction.guild_id, settings, interaction.user.id)
        head = "Saved." if changes else "This server's settings:"
        text = describe(settings, g.mention_model, g.default_length, g.default_temperature)
        await interaction.response.send_message(f"{head}\n{text}", ephemeral=True, allowed_mentions=NO_MENTIONS)

    @settings.autocomplete("model")
    async def _models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = await self.context.model_names(scope_of(interaction))
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
