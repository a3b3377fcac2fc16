"""/finetune start|status|cancel, /models, /generate and /purge-server.

A server's admins teach the bot a new style for their server from an uploaded text; the
job waits its turn in the queue, trains in another process while /alice and /seuss keep
answering, and its result is served in that server only if it beats its base on held-out
text (or an admin says so). The bot's owners decide what every server gets by default.
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
from discord.ext import commands, tasks

from charlm.errors import CharLMError
from charlm.storage import VOCAB_FILE
from charlm.vocab import Vocabulary

from bot.cog.generate import Length, Seed, Temperature
from bot.context import BotContext, Serving, is_owner, may_manage
from bot.db.departures import Departures
from bot.db.legacy import import_legacy
from bot.db.schema import OWNERS
from bot.finetune.cleanup import clean_incoming
from bot.finetune.describe import describe, describe_models
from bot.finetune.desk import JobDesk
from bot.finetune.pool import LoadedVersions, LoadQueueFull
from bot.finetune.registry import Registry, Version, check_name
from bot.finetune.settings import FinetuneConfig
from bot.finetune.store import Job, JobStore
from bot.finetune.uploads import check_corpus, check_declared_size, download, safe_filename
from bot.respond import NO_MENTIONS, answer_error, tell
from bot.server_settings import SettingsStore

log = logging.getLogger(__name__)
BUILTIN = ("alice", "seuss")
"""Shipped models with a command of their own; /generate serves every other name."""
"""Served by their own commands; /generate serves every other model."""
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
        self.registry: Registry | None = None
        self.store: JobStore | None = None
        self.desk: JobDesk | None = None
        self.trainer = None  # bot.finetune.training.Trainer: SQLite with the full install only
        self.trainer_task: asyncio.Task | None = None
        self.departures: Departures | None = None
        self.loaded = LoadedVersions(context, context.config.engine.max_loaded)
        self._ready_task: asyncio.Task | None = None
        self.remote = context.config.postgres
        """PostgreSQL: this process only queues; bot.trainer workers train (docs/scaling.md)."""
        self.watcher: asyncio.Task | None = None

    async def cog_load(self) -> None:
        self.db = self.context.db  # the context's: it disposes of it
        try:
            self.registry = Registry(self.db, self.settings.models_dir, self.context.config.models.folders())
            self.store = JobStore(self.db)
            self.departures = Departures(self.db)
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
        self.context.resolver = self.resolve
        self.context.lister = self.registry.names
        self.purge_departed.start()
        loop = asyncio.get_running_loop()
        self.watcher = loop.create_task(self.desk.watch(), name="finetune-watch")
        if self.trainer is not None:
            self.trainer_task = loop.create_task(self.trainer.run(), name="finetune-trainer")

    async def cog_unload(self) -> None:
        self.purge_departed.cancel()
        ready = self._ready_task
        if ready is not None and not ready.done() and ready is not asyncio.current_task():
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        if self.context.resolver == self.resolve:
            self.context.resolver = None
            self.context.lister = None
        if self.trainer is not None:
            await self.trainer.shutdown()
            if self.trainer_task is not None:
                await asyncio.gather(self.trainer_task, return_exceptions=True)
        if self.desk is not None:
            await self.desk.watch_once()  # the last word of jobs this shutdown ended

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Connected: servers that added the bot back while it was away are kept, servers that
        removed it meanwhile start their retention period, and queued jobs (also from before
        a restart) start."""
        self._ready_task = asyncio.current_task()  # cog_unload waits for it: it uses the databases
        present = {guild.id for guild in self.bot.guilds}
        for guild_id in present:
            if await self.departures.returned(guild_id):
                log.info("guild %s added the bot back; its data is kept", guild_id)
            if (job := await self.store.active(guild_id)) is not None:
                self.desk.follow(job, JobMessage(self.bot, job.channel_id))  # e.g. after this process restarted
        if self._sees_every_guild():
            try:
                await self._note_departures_while_away(present)
            except Exception as exc:  # bookkeeping: the next start tries again
                log.warning("could not check for servers that removed the bot while it was away: %s", exc)
        if self.trainer is not None:
            self.trainer.wake()

    async def _note_departures_while_away(self, present: set[int]) -> None:
        known = await self.registry.guild_ids() | await self.store.guild_ids()
        known |= await self.context.history.guild_ids()
        departed = await self.departures.all()
        for guild_id in sorted(known - present - set(departed)):
            await self.departures.left(guild_id)
            log.info("guild %s removed the bot while it was away: its data goes in %d days", guild_id,
                     self.context.config.history.retention_days)

    def _sees_every_guild(self) -> bool:
        """Whether this process's gateway connection(s) carry every server of the bot (not so
        for a process that runs only some of its shards)."""
        count = self.bot.shard_count or 1
        shard_ids = getattr(self.bot, "shard_ids", None)
        if shard_ids is not None:
            return len(set(shard_ids)) >= count
        return count == 1 or isinstance(self.bot, discord.AutoShardedClient)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self.departures.left(guild.id)
        log.info("removed from guild %s: its models, jobs and history go in %d days unless it adds the bot back",
                 guild.id, self.context.config.history.retention_days)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        if await self.departures.returned(guild.id):
            log.info("guild %s added the bot back; its data is kept", guild.id)
            if self.trainer is not None:
                self.trainer.wake()  # its queued job may go ahead again

    @tasks.loop(hours=1)
    async def purge_departed(self) -> None:
        try:
            for guild_id in await self.departures.due(self.context.config.history.retention_days):
                await self.purge(guild_id)
        except Exception:
            log.exception("purging servers the bot left failed")

    async def purge(self, guild_id: int) -> str:
        """Delete everything of one server: jobs (a running one is stopped), versions, choices, history,
        settings."""
        await self.desk.cancel(guild_id)
        deleted = await self.registry.purge_guild(guild_id)
        for version in deleted:
            self.loaded.forget(version)
        jobs = await self.store.delete_guild(guild_id)
        rows = await self.context.history.forget_guild(guild_id)
        await SettingsStore(self.context.db).forget_guild(guild_id)  # its /settings
        await self.departures.returned(guild_id)
        log.info("purged guild %s: %d versions, %d jobs, %d history rows", guild_id, len(deleted), jobs, rows)
        return f"Deleted server {guild_id}'s data: {len(deleted)} model versions, {jobs} jobs, {rows} requests."

    # ---- serving --------------------------------------------------------------------------------

    async def resolve(self, guild_id: int | None, name: str) -> Serving:
        """What answers `name` in a server (the context's resolver for /alice, /seuss, /generate)."""
        version = await self.registry.served(guild_id, name)
        if version is None:
            raise CharLMError(f"There is no model called {name!r} here; /models lists them.")
        try:
            key = await self.loaded.ensure(version, OWNERS if guild_id is None else guild_id)  # its share
        except LoadQueueFull:
            raise
        except (CharLMError, OSError) as exc:
            log.error("cannot load %s %s from %s: %s", name, version.label, version.folder, exc)
            raise CharLMError(f"{name} {version.label} cannot be loaded right now; please tell an admin.") from None
        return Serving(key, f"{name} {version.label}")

    async def _preload(self, version: Version) -> None:
        await self.loaded.ensure(version)

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
        source = (await self.registry.model(guild_id, base)).served
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
        guild_id = interaction.guild_id
        if everyone and not await is_owner(interaction, self.context.config):
            await tell(interaction, NOT_OWNER)
            return
        if serve is not None:
            await self._serve(interaction, model, serve, everyone)
            return
        shown = ([await self.registry.model(guild_id, model, everyone)] if model
                 else await self.registry.models(guild_id, everyone))
        await interaction.response.send_message(describe_models(shown, guild_id, everyone), ephemeral=True,
                                                allowed_mentions=NO_MENTIONS)

    async def _serve(self, interaction: discord.Interaction, model: str | None, label: str, everyone: bool) -> None:
        guild_id = interaction.guild_id
        if not everyone:
            if guild_id is None:
                await tell(interaction, SERVER_ONLY)
                return
            if not await may_manage(interaction, self.context.config):
                await tell(interaction, NOT_ADMIN)
                return
        if model is None:
            raise CharLMError("Say which model: `/models model:<name> serve:<version>`.")
        active = await self._active_job(guild_id)
        if not everyone and active is not None and active.state != "queued" and active.target == model.strip().lower():
            raise CharLMError(f"A fine-tune job is making a new version of {model}; wait for it or cancel it.")
        version = (await self.registry.model(guild_id, model, everyone)).version(label)
        await interaction.response.defer(thinking=True, ephemeral=everyone)
        await self.loaded.ensure(version)  # load first: a broken folder leaves the served version alone
        scope = OWNERS if everyone else guild_id
        await self.registry.serve(scope, version, interaction.user.id)
        log.info("user %s switched %s to %s for %s", interaction.user.id, version.model, version.label,
                 "every server" if everyone else f"guild {guild_id}")
        where = ("as every server's default (servers that chose a version of their own keep it)" if everyone
                 else "in this server")
        await interaction.followup.send(f"Now serving **{version.model} {version.label}** {where}.",
                                        allowed_mentions=NO_MENTIONS)

    # ---- /generate ------------------------------------------------------------------------------

    @app_commands.command(name="generate", description="Continue your text with storybook or a fine-tuned model")
    @app_commands.describe(model="storybook, or a model made with /finetune", text="Text to continue (the model reads its last "
                           "100 characters)", length="Characters to write", temperature="0 always picks the "
                           "likeliest character; higher is more surprising", seed="A reply's footer seed: "
                           "the same version, text and settings write the same text again")
    async def generate(self, interaction: discord.Interaction, model: str, text: str | None = None,
                       length: Length | None = None, temperature: Temperature | None = None,
                       seed: Seed | None = None) -> None:
        name = model.strip().lower()
        if name in BUILTIN:
            raise CharLMError(f"Use /{name} for that model.")
        if await self.registry.served(interaction.guild_id, name) is None:
            raise CharLMError(f"There is no model called {model!r} here; /models lists them.")
        generation = self.bot.get_cog("GenerationCog")
        if generation is None:  # /generate shares /alice's reply, history and cooldowns
            raise CharLMError("Generation is not available right now.")
        generation.cooldowns.check(interaction.user.id)
        await generation.continue_text(interaction, name, text, length, temperature, seed)

    # ---- owners ---------------------------------------------------------------------------------

    @app_commands.command(name="purge-server", description="The bot's owners: delete a server's models, jobs "
                                                           "and history now")
    @app_commands.describe(server="The server's id")
    async def purge_server(self, interaction: discord.Interaction, server: str) -> None:
        if not await is_owner(interaction, self.context.config):
            await tell(interaction, "Only the bot's owners can purge a server.")
            return
        if not server.strip().isdigit():
            raise CharLMError(f"{server!r} is not a server id (a number).")
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.purge(int(server))
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    # ---- autocomplete and errors ----------------------------------------------------------------

    async def _all_models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = await self.registry.names(interaction.guild_id)
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def _generated_models(self, interaction: discord.Interaction,
                                current: str) -> list[app_commands.Choice[str]]:
        names = [n for n in await self.registry.names(interaction.guild_id) if n not in BUILTIN]
        return [app_commands.Choice(name=n, value=n) for n in names if current.lower() in n][:25]

    async def _versions(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        model = interaction.namespace.model
        try:
            found = await self.registry.model(interaction.guild_id, model or "")
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
