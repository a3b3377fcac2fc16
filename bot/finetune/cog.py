"""/finetune start|status|cancel, /models and /generate.

Admins teach the bot a new style from an uploaded text; the job trains in another
process while /alice and /seuss keep answering, and the result is served only if it
beats its base on held-out text (or an admin says so).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from charlm.errors import CharLMError
from charlm.storage import VOCAB_FILE
from charlm.vocab import Vocabulary

from bot.cog.generate import Length, Temperature
from bot.context import BotContext, is_admin
from bot.finetune import serving
from bot.finetune.describe import describe, describe_models
from bot.finetune.jobs import JobRunner
from bot.finetune.registry import Registry, Version, check_name
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Job, JobStore
from bot.finetune.uploads import check_corpus, check_declared_size, download, safe_filename
from bot.respond import NO_MENTIONS, answer_error, tell

log = logging.getLogger(__name__)
BUILTIN = ("alice", "seuss")
"""Served by their own commands; /generate serves every other model."""
TOKEN_LIFETIME = 14 * 60
"""Seconds an interaction's reply can be edited (Discord allows 15 minutes); after that
the job's progress moves to a plain channel message."""
NOT_ADMIN = ("Only admins can fine-tune or switch models: you need the Manage Server permission in this server, "
             "or to be listed in the bot's config.")
NO_TRAINING = ("This bot runs the serving-only image (no TensorFlow), so it cannot train; "
               "start fine-tunes on a bot that runs the full image.")
Epochs = app_commands.Range[int, 1, 100]


def can_train() -> bool:
    """Whether this install has Keras and TensorFlow, which the training process needs
    (the serving-only image leaves them out); checked without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("keras", "tensorflow"))


class JobMessage:
    """The one message that shows a job: the reply to /finetune start while Discord lets
    the bot edit it, then a channel message in the same channel."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self.started = time.monotonic()
        self.message: discord.Message | None = None

    async def show(self, job: Job, plot: bytes | None = None) -> None:
        content = describe(job)
        files = [discord.File(io.BytesIO(plot), f"finetune-{job.id}-loss.png")] if plot else []
        if time.monotonic() - self.started < TOKEN_LIFETIME:
            await self.interaction.edit_original_response(content=content, attachments=files,
                                                          allowed_mentions=NO_MENTIONS)
        elif self.message is None:
            channel = self.interaction.client.get_partial_messageable(self.interaction.channel_id)
            self.message = await channel.send(content, files=files, allowed_mentions=NO_MENTIONS)
            try:  # the reply can still be edited for a minute: point it at the new message
                await self.interaction.edit_original_response(
                    content=f"**Fine-tune #{job.id}** continues in {self.message.jump_url}", attachments=[])
            except discord.HTTPException:
                pass
        else:
            self.message = await self.message.edit(content=content, attachments=files,
                                                   allowed_mentions=NO_MENTIONS)


class FinetuneCog(commands.Cog):
    """Fine-tuning on uploaded text, and the versioned models it produces."""

    finetune = app_commands.Group(name="finetune", description="Teach the bot a new style from a text file (admins)")

    def __init__(self, bot: commands.Bot, context: BotContext, settings: FinetuneConfig) -> None:
        self.bot = bot
        self.context = context
        self.settings = settings
        self.registry = Registry(settings.models_dir, context.config.models.folders())
        self.store: JobStore | None = None
        self.runner: JobRunner | None = None

    async def cog_load(self) -> None:
        self.store = await JobStore.open(self.settings.database)
        for job in await self.store.mark_interrupted():
            log.warning("fine-tune job %s was running when the bot stopped; marked interrupted", job.id)
        self.runner = JobRunner(self.store, self.registry, self.settings, self.serve)
        for model in await asyncio.to_thread(self.registry.models):
            if model.served.number != 0:  # v0 is the config's folder, which the bot loaded itself
                await self.serve(model.name, model.served)

    async def cog_unload(self) -> None:
        if self.runner is not None:
            await self.runner.shutdown()
        if self.store is not None:
            await self.store.close()

    async def serve(self, name: str, version: Version) -> None:
        await serving.load(self.context, name, version)
        log.info("now serving %s %s from %s", name, version.label, version.folder)

    # ---- /finetune ------------------------------------------------------------------------------

    @finetune.command(name="start", description="Fine-tune a model on an uploaded UTF-8 text file (admins)")
    @app_commands.describe(
        corpus="A UTF-8 text file to learn the style of",
        base="The model to start from (its served version)",
        name="Leave empty to make a new version of the base; a new name makes a new model",
        epochs="Passes over the text (default from the config)",
        force="Serve the result even if it is not better than its base on held-out text",
    )
    async def start(self, interaction: discord.Interaction, corpus: discord.Attachment, base: str,
                    name: str | None = None, epochs: Epochs | None = None, force: bool = False) -> None:
        if not is_admin(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        if not can_train():
            await tell(interaction, NO_TRAINING)
            return
        if self.runner.busy:
            await tell(interaction, await self._status_text())
            return
        s = self.settings
        epochs = s.default_epochs if epochs is None else epochs
        if epochs > s.max_epochs:
            raise CharLMError(f"This bot allows at most {s.max_epochs} epochs per job.")
        source = self.registry.model(base).served
        target = check_name(name) if name else source.model
        target_version, out = self.registry.next_version(target)
        check_declared_size(corpus, s.max_upload_bytes)

        self.runner.reserve(f"<@{interaction.user.id}>")
        try:
            await interaction.response.defer(thinking=True)
            data = await download(corpus, s.max_upload_bytes)
            filename = safe_filename(corpus.filename)
            vocab = await asyncio.to_thread(Vocabulary.load, source.folder / VOCAB_FILE)
            checked = await asyncio.to_thread(check_corpus, data, filename, vocab, s.min_chars)
            job = Job(user_id=interaction.user.id, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                      base=source.model, base_version=source.label, target=target, target_version=target_version,
                      corpus_name=filename, corpus_sha256=checked.corpus.sha256,
                      corpus_chars=checked.usable_chars, cleaning=checked.report(),
                      settings={"epochs": epochs, "batch_size": s.batch_size, "learning_rate": s.learning_rate,
                                "patience": s.patience, "force": force})
            message = JobMessage(interaction)
            await self.runner.start(job, data, source, out, message)
        finally:
            self.runner.release()

    @finetune.command(name="status", description="The running fine-tune job, or the last one (admins)")
    async def status(self, interaction: discord.Interaction) -> None:
        if not is_admin(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        await tell(interaction, await self._status_text())

    @finetune.command(name="cancel", description="Stop the running fine-tune job; nothing is saved (admins)")
    async def cancel(self, interaction: discord.Interaction) -> None:
        if not is_admin(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        if not self.runner.busy:
            await tell(interaction, "No fine-tune job is running.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.runner.cancel()
        text = describe(job) if job else "The upload being checked will not be trained on."
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _status_text(self) -> str:
        if self.runner.job is not None:
            return describe(self.runner.job)
        if self.runner.preparing is not None:
            return f"An upload by {self.runner.preparing} is being checked for a new fine-tune job."
        latest = await self.store.latest(1)
        return "No fine-tune job is running. Last job:\n" + describe(latest[0]) if latest else "No fine-tune jobs yet."

    # ---- /models --------------------------------------------------------------------------------

    @app_commands.command(name="models", description="Models, their versions and held-out figures; admins can "
                                                     "switch versions")
    @app_commands.describe(model="Show only this model", serve="Serve this version of the model instead (admins)")
    async def models(self, interaction: discord.Interaction, model: str | None = None,
                     serve: str | None = None) -> None:
        if serve is not None:
            if not is_admin(interaction, self.context.config):
                await tell(interaction, NOT_ADMIN)
                return
            if model is None:
                raise CharLMError("Say which model: `/models model:<name> serve:<version>`.")
            if self.runner.job is not None and self.runner.job.target == model.strip().lower():
                raise CharLMError(f"A fine-tune job is making a new version of {model}; wait for it or cancel it.")
            await interaction.response.defer(thinking=True)
            version = self.registry.model(model).version(serve)
            await self.serve(version.model, version)  # load first: a broken folder leaves served.json alone
            await asyncio.to_thread(self.registry.set_served, version.model, version.label)
            log.info("user %s switched %s to %s", interaction.user.id, version.model, version.label)
            await interaction.followup.send(f"Now serving **{version.model} {version.label}**.",
                                            allowed_mentions=NO_MENTIONS)
            return
        shown = [self.registry.model(model)] if model else await asyncio.to_thread(self.registry.models)
        await interaction.response.send_message(describe_models(shown), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)

    # ---- /generate ------------------------------------------------------------------------------

    @app_commands.command(name="generate", description="Continue your text with a fine-tuned model")
    @app_commands.describe(model="A model made with /finetune", text="Text to continue (the model reads its last "
                           "100 characters)", length="Characters to write", temperature="0 always picks the "
                           "likeliest character; higher is more surprising")
    async def generate(self, interaction: discord.Interaction, model: str, text: str | None = None,
                       length: Length | None = None, temperature: Temperature | None = None) -> None:
        name = model.strip().lower()
        if name in BUILTIN:
            raise CharLMError(f"Use /{name} for that model.")
        if name not in serving.served_names(self.context):
            raise CharLMError(f"There is no model called {model!r}; /models lists them.")
        generation = self.bot.get_cog("GenerationCog")
        if generation is None:  # /generate shares /alice's reply, history and cooldowns
            raise CharLMError("Generation is not available right now.")
        generation.cooldowns.check(interaction.user.id)
        await generation.continue_text(interaction, name, text, length, temperature)

    # ---- autocomplete and errors ----------------------------------------------------------------

    async def _all_models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = await asyncio.to_thread(self.registry.names)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def _generated_models(self, interaction: discord.Interaction,
                                current: str) -> list[app_commands.Choice[str]]:
        names = [n for n in serving.served_names(self.context) if n not in BUILTIN]
        return [app_commands.Choice(name=n, value=n) for n in sorted(names) if current.lower() in n][:25]

    async def _versions(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        model = interaction.namespace.model
        try:
            found = await asyncio.to_thread(self.registry.model, model or "")
        except CharLMError:
            return []
        return [app_commands.Choice(name=f"{v.label} ({v.corpus})"[:100], value=v.label)
                for v in reversed(found.versions) if current.lower() in v.label][:25]

    start.autocomplete("base")(_all_models)
    models.autocomplete("model")(_all_models)
    models.autocomplete("serve")(_versions)
    generate.autocomplete("model")(_generated_models)

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
