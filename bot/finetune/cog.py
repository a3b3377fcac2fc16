"""/finetune start|status|cancel and /models.

A server's admins teach the bot a new style for their server from an uploaded text; the
job waits its turn in the queue, trains in another process while /alice and /seuss keep
answering, and its result is served in that server only if it beats its base on held-out
text (or an admin says so). The bot's owners decide what every server gets by default.

Serving those versions is the context's (BotContext.serving, with /generate in bot.cog);
a departed server's jobs go with the rest of its data (bot.cog.servers), through the job
store and the cancel hook this cog adds to `context.servers`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import logging
import os
import socket
import time

import discord
import sqlalchemy as sa
from discord import app_commands
from discord.ext import commands

from charlm.errors import CharLMError
from charlm.storage import VOCAB_FILE
from charlm.vocab import Vocabulary

from bot.context import BotContext, is_owner, may_manage
from bot.db.legacy import import_legacy
from bot.finetune.cleanup import clean_incoming
from bot.finetune.describe import describe, describe_models
from bot.finetune.desk import JobDesk
from bot.finetune.registry import Version, check_name
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Job, JobStore
from bot.finetune.uploads import check_corpus, check_declared_size, download, safe_filename
from bot.respond import NO_MENTIONS, answer_error, tell
from bot.scope import Scope, scope_of

log = logging.getLogger(__name__)
TOKEN_LIFETIME = 14 * 60
"""Seconds an interaction's reply can be edited (Discord allows 15 minutes); after that
the job's progress moves to a plain channel message."""
NOT_ADMIN = ("Only this server's admins can fine-tune or switch its models: you need the Manage Server "
             "permission here.")
NOT_OWNER = ("Only the bot's owners can change what every server gets; this server's admins can "
             "switch this server's models with `serve:` alone.")
SERVER_ONLY = "Switching models is done inside a server; in a DM only the bot's owners can, with `everyone:true`."
NO_TRAINING = ("This bot runs the serving-only image (no TensorFlow), so it cannot train; "
               "start fine-tunes on a bot that runs the full image, or give it PostgreSQL and trainers.")
Epochs = app_commands.Range[int, 1, 100]


def can_train() -> bool:
    """Whether this install has Keras and TensorFlow, which the training process needs
    (the serving-only image leaves them out); checked without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("keras", "tensorflow"))


class JobMessage:
    """The one message that shows a job: the reply to /finetune start while Discord lets
    the bot edit it, then a channel message in the same channel."""

    def __init__(self, client: discord.Client, channel_id: int | None,
                 interaction: discord.Interaction | None = None) -> None:
        self.client = client
        self.channel_id = channel_id
        self.interaction = interaction
        self.started = time.monotonic()
        self.message: discord.Message | None = None

    async def show(self, job: Job, plot: bytes | None = None, position: int | None = None) -> None:
        content = describe(job, position)
        files = [discord.File(io.BytesIO(plot), f"finetune-{job.id}-loss.png")] if plot else []
        if self.interaction is not None and time.monotonic() - self.started < TOKEN_LIFETIME:
            await self.interaction.edit_original_response(content=content, attachments=files,
                                                          allowed_mentions=NO_MENTIONS)
        elif self.message is None:
            channel = self.client.get_partial_messageable(self.channel_id)
            self.message = await channel.send(content, files=files, allowed_mentions=NO_MENTIONS)
            if self.interaction is not None:
                try:  # the reply can still be edited for a minute: point it at the new message
                    await self.interaction.edit_original_response(
                        content=f"**Fine-tune #{job.id}** continues in {self.message.jump_url}", attachments=[])
                except discord.HTTPException:
                    pass
        else:
            self.message = await self.message.edit(content=content, attachments=files,
                                                   allowed_mentions=NO_MENTIONS)


class FinetuneCog(commands.Cog):
    """Fine-tuning on uploaded text, per server, and the versioned models it produces."""

    finetune = app_commands.Group(name="finetune", description="Teach the bot a new style from a text file (admins)",
                                  guild_only=True)

    def __init__(self, bot: commands.Bot, context: BotContext, settings: FinetuneConfig) -> None:
        self.bot = bot
        self.context = context
        self.settings = settings
        self.db = None
        self.registry = context.registry
        self.store: JobStore | None = None
        self.desk: JobDesk | None = None
        self.trainer = None  # bot.finetune.training.Trainer: SQLite with the full install only
        self.trainer_task: asyncio.Task | None = None
        self._ready_task: asyncio.Task | None = None
        self.remote = context.config.postgres
        """PostgreSQL: this process only queues; bot.trainer workers train (docs/scaling.md)."""
        self.watcher: asyncio.Task | None = None

    async def cog_load(self) -> None:
        self.db = self.context.db  # the context's: it disposes of it
        try:
            self.store = JobStore(self.db)
            try:
                await import_legacy(self.db, self.settings, self.context.config.bot.data_dir)
            except sa.exc.IntegrityError:  # another process starting at the same time did it
                log.info("the older data folder was imported by another process")
            if not self.remote and can_train():  # SQLite: this process is the one trainer
                from bot.finetune.training import Trainer  # no TensorFlow: the training child imports it

                self.trainer = Trainer(self.store, self.registry, self.settings,
                                       f"{socket.gethostname()}:{os.getpid()}", self._preload, reaps=False)
                await self.trainer.start_up(sole=True)
            await clean_incoming(self.settings)
            self.desk = JobDesk(self.store, self.registry, self.settings, reaps=self.remote,
                                on_queued=self.trainer.wake if self.trainer else lambda: None)
        except BaseException:
            self.db = None
            raise
        self.context.servers.add(self.store, before_purge=self.desk.cancel,  # a running job stops first
                                 on_return=self._returned)
        loop = asyncio.get_running_loop()
        self.watcher = loop.create_task(self.desk.watch(), name="finetune-watch")
        if self.trainer is not None:
            self.trainer_task = loop.create_task(self.trainer.run(), name="finetune-trainer")

    async def cog_unload(self) -> None:
        self.context.servers.remove(self.store)
        ready = self._ready_task
        if ready is not None and not ready.done() and ready is not asyncio.current_task():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        if self.trainer is not None:
            await self.trainer.shutdown()
            if self.trainer_task is not None:
                await asyncio.gather(self.trainer_task, return_exceptions=True)
        if self.desk is not None:
            await self.desk.watch_once()  # the last word of jobs this shutdown ended

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Connected: the jobs of this bot's servers are shown again, and queued jobs (also from
        before a restart) start."""
        self._ready_task = asyncio.current_task()  # cog_unload waits for it: it uses the databases
        for guild in self.bot.guilds:
            if (job := await self.store.active(guild.id)) is not None:
                self.desk.follow(job, JobMessage(self.bot, job.channel_id))  # e.g. after this process restarted
        if self.trainer is not None:
            self.trainer.wake()

    def _returned(self, guild_id: int) -> None:
        """A server added the bot back (bot.cog.servers): its queued job may go ahead again."""
        if self.trainer is not None:
            self.trainer.wake()

    async def _preload(self, version: Version) -> None:
        await self.context.pool.ensure(version)

    # ---- /finetune ------------------------------------------------------------------------------

    @finetune.command(name="start", description="Fine-tune a model on an uploaded UTF-8 text file (admins)")
    @app_commands.describe(
        corpus="A UTF-8 text file to learn the style of",
        base="The model to start from (the version this server serves)",
        name="Leave empty to make a new version of the base for this server; a new name makes a new model",
        epochs="Passes over the text (default from the config)",
        force="Serve the result even if it is not better than its base on held-out text",
    )
    async def start(self, interaction: discord.Interaction, corpus: discord.Attachment, base: str,
                    name: str | None = None, epochs: Epochs | None = None, force: bool = False) -> None:
        if not await may_manage(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        if not self.remote and not can_train():  # with PostgreSQL, bot.trainer workers train
            await tell(interaction, NO_TRAINING)
            return
        guild_id = interaction.guild_id
        active = await self._active_job(guild_id)
        if active is not None:
            await tell(interaction, "This server already has a fine-tune job; wait for it or `/finetune cancel` "
                                    "it.\n" + await self._describe(active))
            return
        s = self.settings
        epochs = s.default_epochs if epochs is None else epochs
        if epochs > s.max_epochs:
            raise CharLMError(f"This bot allows at most {s.max_epochs} epochs per job.")
        source = (await self.registry.model(Scope.server(guild_id), base)).served
        if source is None:
            raise CharLMError(f"{base.strip().lower()} serves nothing in this server yet; serve a version of it "
                              "first with `/models serve:`.")
        target = check_name(name) if name else source.model
        owned = await self.registry.owned_names(guild_id)
        shipped = self.context.config.models.folders()
        if target not in shipped and target not in owned and len(owned) >= s.max_models:
            models = f"{len(owned)} model" + ("" if len(owned) == 1 else "s")
            raise CharLMError(f"This server already has {models}, the most this bot allows ([finetune] "
                              "max_models); make a new version of one of them instead.")
        check_declared_size(corpus, s.max_upload_bytes)

        self.desk.reserve(guild_id)
        try:
            await interaction.response.defer(thinking=True)
            data = await download(corpus, s.max_upload_bytes)
            filename = safe_filename(corpus.filename)
            vocab = await asyncio.to_thread(Vocabulary.load, source.folder / VOCAB_FILE)
            checked = await asyncio.to_thread(check_corpus, data, filename, vocab, s.min_chars)
            job = Job(user_id=interaction.user.id, guild_id=guild_id, channel_id=interaction.channel_id,
                      base=source.model, base_version=source.label, target=target,
                      corpus_name=filename, corpus_sha256=checked.corpus.sha256,
                      corpus_chars=checked.usable_chars, cleaning=checked.report(),
                      settings={"epochs": epochs, "batch_size": s.batch_size, "learning_rate": s.learning_rate,
                                "patience": s.patience, "schedule": s.schedule, "average_last": s.average_last,
                                "force": force})
            await self.desk.submit(job, data, JobMessage(self.bot, interaction.channel_id, interaction))
        finally:
            self.desk.release(guild_id)

    @finetune.command(name="status", description="This server's fine-tune job, or its last one (admins)")
    async def status(self, interaction: discord.Interaction) -> None:
        if not await may_manage(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        guild_id = interaction.guild_id
        job = await self._active_job(guild_id)
        if job is not None:
            await tell(interaction, await self._describe(job))
        elif guild_id in self.desk.preparing:
            await tell(interaction, "An upload is being checked for a new fine-tune job.")
        elif latest := await self.store.latest(guild_id, 1):
            await tell(interaction, "No fine-tune job is running in this server. Last job:\n" + describe(latest[0]))
        else:
            await tell(interaction, "This server has no fine-tune jobs yet.")

    @finetune.command(name="cancel", description="Stop this server's fine-tune job, or take it out of the "
                                                 "queue; nothing is saved (admins)")
    async def cancel(self, interaction: discord.Interaction) -> None:
        if not await may_manage(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        guild_id = interaction.guild_id
        if await self._active_job(guild_id) is None and guild_id not in self.desk.preparing:
            await tell(interaction, "This server has no fine-tune job running or queued.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.desk.cancel(guild_id)
        text = describe(job) if job else "The upload being checked will not be trained on."
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _active_job(self, guild_id: int) -> Job | None:
        """The server's queued, training or publishing job, as its row says."""
        return await self.store.active(guild_id)

    async def _describe(self, job: Job) -> str:
        return describe(job, await self.store.position(job) if job.state == "queued" else None)

    # ---- /models --------------------------------------------------------------------------------

    @app_commands.command(name="models", description="Models, their versions and held-out figures; admins can "
                                                     "switch versions")
    @app_commands.describe(model="Show only this model", serve="Serve this version of the model in this server "
                           "(admins)", everyone="The bot's owners: list every server's versions, or serve one "
                           "as every server's default")
    async def models(self, interaction: discord.Interaction, model: str | None = None,
                     serve: str | None = None, everyone: bool = False) -> None:
        if everyone and not await is_owner(interaction, self.context.config):
            await tell(interaction, NOT_OWNER)
            return
        scope = Scope.ALL if everyone else scope_of(interaction)
        if serve is not None:
            await self._serve(interaction, model, serve, scope)
            return
        shown = [await self.registry.model(scope, model)] if model else await self.registry.models(scope)
        await interaction.response.send_message(describe_models(shown, scope), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)

    async def _serve(self, interaction: discord.Interaction, model: str | None, label: str, scope: Scope) -> None:
        if scope.kind == "dm":
            await tell(interaction, SERVER_ONLY)
            return
        if not scope.everything and not await may_manage(interaction, self.context.config):
            await tell(interaction, NOT_ADMIN)
            return
        if model is None:
            raise CharLMError("Say which model: `/models model:<name> serve:<version>`.")
        if scope.guild_id is not None:
            active = await self._active_job(scope.guild_id)
            if active is not None and active.state != "queued" and active.target == model.strip().lower():
                raise CharLMError(f"A fine-tune job is making a new version of {model}; wait for it or cancel it.")
        version = (await self.registry.model(scope, model)).version(label)
        await interaction.response.defer(thinking=True, ephemeral=scope.everything)
        await self.context.pool.ensure(version)  # load first: a broken folder leaves the served version alone
        await self.registry.serve(scope, version, interaction.user.id)
        log.info("user %s switched %s to %s for %s", interaction.user.id, version.model, version.label,
                 "every server" if scope.everything else f"guild {scope.guild_id}")
        where = ("as every server's default (servers that chose a version of their own keep it)"
                 if scope.everything else "in this server")
        await interaction.followup.send(f"Now serving **{version.model} {version.label}** {where}.",
                                        allowed_mentions=NO_MENTIONS)

    # ---- autocomplete and errors ----------------------------------------------------------------

    async def _all_models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = await self.context.model_names(scope_of(interaction))
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def _versions(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        model = interaction.namespace.model
        try:
            found = await self.registry.model(scope_of(interaction), model or "")
        except CharLMError:
            return []
        return [app_commands.Choice(name=f"{v.label} ({v.corpus})"[:100], value=v.label)
                for v in reversed(found.versions) if current.lower() in v.label][:25]

    start.autocomplete("base")(_all_models)
    models.autocomplete("model")(_all_models)
    models.autocomplete("serve")(_versions)

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
