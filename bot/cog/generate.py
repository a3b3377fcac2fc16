"""/alice, /seuss and /generate: slash commands on the shared generate-and-stream path (bot.generation)."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from charlm.errors import CharLMError

from bot.config import LENGTH_LIMIT, TEMPERATURE_LIMIT
from bot.finetune.registry import no_such_model
from bot.generation import MAX_SEED, Ask, Generator
from bot.respond import answer_error
from bot.scope import scope_of
from bot.surfaces import InteractionSurface

log = logging.getLogger(__name__)

Length = app_commands.Range[int, 1, LENGTH_LIMIT]
Temperature = app_commands.Range[float, 0.0, TEMPERATURE_LIMIT]
Seed = app_commands.Range[int, 0, MAX_SEED]
OPTIONS = dict(
    text="Text to continue (the model reads its last 100 characters); empty starts from a blank page",
    length="Characters to write; empty: the server's default (400 unless changed)",
    temperature="0 always picks the likeliest character, higher is more surprising; empty: the default",
    seed="A reply's footer seed: the same version, text and settings write the same text again",
)
BUILTIN = ("alice", "seuss")
"""Served by their own commands; /generate serves every other model."""


class GenerationCog(commands.Cog):
    """Continue a user's text in the style of a model: the shipped ones by name, any other
    (storybook, a server's fine-tuned models) with /generate."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.context = generator.context
        self.cooldowns = generator.cooldowns  # shared with mentions and buttons

    async def cog_unload(self) -> None:
        await self.generator.drain()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        self.cooldowns.check(interaction.user.id)
        return True

    @app_commands.command(name="alice", description="Continue your text in the style of Alice in Wonderland")
    @app_commands.describe(**OPTIONS)
    async def alice(self, interaction: discord.Interaction, text: str | None = None,
                    length: Length | None = None, temperature: Temperature | None = None,
                    seed: Seed | None = None) -> None:
        await self.continue_text(interaction, "alice", text, length, temperature, seed)

    @app_commands.command(name="seuss", description="Continue your text in the style of Dr Seuss")
    @app_commands.describe(**OPTIONS)
    async def seuss(self, interaction: discord.Interaction, text: str | None = None,
                    length: Length | None = None, temperature: Temperature | None = None,
                    seed: Seed | None = None) -> None:
        await self.continue_text(interaction, "seuss", text, length, temperature, seed)

    @app_commands.command(name="generate", description="Continue your text with storybook or a fine-tuned model")
    @app_commands.describe(model="storybook, or a model made with /finetune", text="Text to continue (the model reads "
                           "its last 100 characters)", length="Characters to write", temperature="0 always picks "
                           "the likeliest character; higher is more surprising", seed="A reply's footer seed: "
                           "the same version, text and settings write the same text again")
    async def generate(self, interaction: discord.Interaction, model: str, text: str | None = None,
                       length: Length | None = None, temperature: Temperature | None = None,
                       seed: Seed | None = None) -> None:
        name = model.strip().lower()
        if name in BUILTIN:
            raise CharLMError(f"Use /{name} for that model.")
        if await self.context.registry.served(scope_of(interaction), name) is None:
            raise no_such_model(model)
        await self.continue_text(interaction, name, text, length, temperature, seed)

    @generate.autocomplete("model")
    async def _generated_models(self, interaction: discord.Interaction,
                                current: str) -> list[app_commands.Choice[str]]:
        names = [n for n in await self.context.model_names(scope_of(interaction)) if n not in BUILTIN]
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def continue_text(self, interaction: discord.Interaction, model: str, text: str | None,
                            length: int | None, temperature: float | None, seed: int | None = None) -> None:
        """Answer one command through the shared path (bot.generation) and record it."""
        command = interaction.command.name if interaction.command else model  # /generate: "generate"
        ask = Ask.of(interaction, command, model, text or "", length=length, temperature=temperature, seed=seed)
        await self.generator.run(InteractionSurface(interaction), ask)

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
