"""The services every cog shares: config, inference engine, database stores and serving.

The standalone bot opens one BotContext in setup_hook and keeps it as `bot.charlm`;
cogs receive it in their constructor, or look it up with `get_context(bot)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from charlm.engine import Engine, EngineBusy, EngineTimeout, ModelVersion, OwnerBusy
from charlm.errors import CharLMError
from charlm.sampling import Sampling

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Config
from bot.db.engine import open_database
from bot.db.legacy_history import import_history
from bot.finetune.pool import LoadedVersions, LoadQueueFull
from bot.finetune.registry import Registry, no_such_model
from bot.finetune.settings import finetune_config
from bot.history import HistoryStore, Request
from bot.metrics import Metrics
from bot.scope import Scope
from bot.server_data import ServerStores
from bot.server_settings import SettingsStore

log = logging.getLogger(__name__)
ENGINE_NICE = 5
"""The inference thread runs at nice +5 within the bot process: on a busy CPU (1-2 vCPU
VPS, a fine-tune worker at nice 10, other shards) the event loop, which acknowledges
interactions in well under a millisecond of CPU each, gets the core before generation,
which is throughput work. Still ahead of the fine-tune worker."""


def is_admin(interaction: discord.Interaction, config: Config) -> bool:
    """Manage Server in the interaction's guild, or listed in [admin] user_ids."""
    if interaction.guild_id is not None and interaction.permissions.manage_guild:
        return True
    return interaction.user.id in config.admin.user_ids


async def is_owner(interaction: discord.Interaction, config: Config) -> bool:
    """The bot's owners: the application's owner or team (Client.is_owner), or [admin] user_ids.
    They decide what every server gets; a server's admins only decide for their server."""
    if interaction.user.id in config.admin.user_ids:
        return True
    check = getattr(interaction.client, "is_owner", None)
    return bool(check is not None and await check(interaction.user))


async def may_manage(interaction: discord.Interaction, config: Config) -> bool:
    """A server's admins (Manage Server there) and the bot's owners."""
    return is_admin(interaction, config) or await is_owner(interaction, config)


@dataclass(frozen=True)
class Serving:
    """What answers a model name in one server: the engine's key and the label users see
    (the same `name vN` that /models lists)."""

    key: str
    label: str


class Cooldowns:
    """At most `uses` generations per user per `seconds`, shared by /alice and /seuss.

    Kept per cog instance (not in a decorator), so its state goes with the bot.
    """

    def __init__(self, uses: int, seconds: float) -> None:
        self.uses = uses
        self.seconds = seconds
        self.buckets: dict[int, app_commands.Cooldown] = {}
        self._next_sweep = 0.0

    def check(self, user_id: int) -> None:
        """Count one use; raise CommandOnCooldown when the user is over the limit."""
        if not self.uses:
            return
        now = time.time()
        if now >= self._next_sweep:  # at most once per window, not per use: a burst of n users costs O(n), not O(n^2)
            self._next_sweep = now + self.seconds
            for key in [k for k, b in self.buckets.items() if b.get_tokens(now) == b.rate]:
                del self.buckets[key]  # full buckets carry no state: keep the dict small
        bucket = self.buckets.setdefault(user_id, app_commands.Cooldown(self.uses, self.seconds))
        retry_after = bucket.update_rate_limit(now)
        if retry_after:
            raise app_commands.CommandOnCooldown(bucket, retry_after)


@dataclass
class BotContext:
    """Config, engine, the database and its stores, opened together and closed together.

    The shipped models live in `engine` under their names ("alice", "seuss"); the versions
    a server serves (bot.finetune.registry) load on demand through `pool`, so every cog
    answers a name the same way (`serving`), whether or not the fine-tune extension runs.
    """

    config: Config
    engine: Engine
    db: AsyncEngine
    """The bot's one database ([database] url): history, models, serving, jobs."""
    history: HistoryStore
    settings: SettingsStore
    """Each server's /settings."""
    registry: Registry
    """Which version of each name every server serves."""
    pool: LoadedVersions
    """The fine-tuned versions in the engine, loaded on demand with a fair share per server."""
    metrics: Metrics = field(default_factory=Metrics)
    """This process's metrics (bot.metrics); /metrics serves them when [metrics] port is set."""
    servers: ServerStores = field(init=False)
    """Every store with data per server: departures, retention and /purge-server reach them all."""
    opened_by_extension: bool = False

    def __post_init__(self) -> None:
        self.servers = ServerStores([self.registry, self.history, self.settings])

    @classmethod
    async def open(cls, config: Config, metrics: Metrics | None = None) -> "BotContext":
        """Open the database (importing an older history file once), start the engine and load
        the configured models."""
        metrics = metrics or Metrics(config.models.folders())
        models_dir = finetune_config(config).models_dir  # a bad [finetune] table fails before anything opens
        db = await open_database(config.database_url)
        try:
            await import_history(db, config.history.database)
            engine = Engine(backend=config.engine.backend, max_queue=config.limits.queue_size,
                            max_batch=config.engine.max_batch, batch_wait=config.engine.batch_wait_ms / 1000,
                            nice=ENGINE_NICE, precision=config.engine.precision,
                            per_owner=config.limits.per_server_queue, on_step=metrics.batch_rows.observe)
            metrics.watch_engine(engine.waiting, engine.running_rows)
            try:
                for name, folder in config.models.folders().items():
                    await asyncio.to_thread(engine.load, name, folder)
            except BaseException:
                await asyncio.to_thread(engine.close)
                raise
        except BaseException:
            await db.dispose()
            raise
        pool = LoadedVersions(engine, metrics, config.engine.max_loaded, ENGINE_NICE)
        registry = Registry(db, models_dir, config.models.folders(), on_discard=pool.forget)
        history = HistoryStore(db, max_rows_per_user=config.history.max_rows_per_user)
        return cls(config, engine, db, history, SettingsStore(db), registry, pool, metrics=metrics)

    async def close(self) -> None:
        """Stop loading and the engine (requests still queued fail), then close the database."""
        self.pool.close()
        await asyncio.to_thread(self.engine.close)
        await self.db.dispose()

    async def serving(self, scope: Scope, name: str) -> Serving:
        """What answers `name` in a server or a DM, loaded and ready."""
        version = await self.registry.served(scope, name)
        if version is None:
            raise no_such_model(name)
        try:
            key = await self.pool.ensure(version, scope)  # loading counts against the asker's share
        except LoadQueueFull:
            raise
        except (CharLMError, OSError) as exc:
            log.error("cannot load %s %s from %s: %s", name, version.label, version.folder, exc)
            raise CharLMError(f"{name} {version.label} cannot be loaded right now; please tell an admin.") from None
        return Serving(key, f"{name} {version.label}")

    async def model_names(self, scope: Scope) -> list[str]:
        """The models a server or a DM may use, for pickers."""
        return await self.registry.names(scope)

    async def load_model(self, name: str, folder: str | Path) -> ModelVersion:
        """Load a model folder as the next version of `name` (new names are added)."""
        return await asyncio.to_thread(self.engine.load, name, folder)

    async def engine_alive(self) -> bool:
        """Whether the engine thread runs and still answers: a one-character request
        goes through it, so a thread that is alive but stuck counts as dead."""
        names = list(self.engine.models())
        if not self.engine.running or not names:
            return False
        timeout = self.config.limits.request_timeout
        try:
            await asyncio.wait_for(self.engine.generate(names[0], "", Sampling(temperature=0, length=1)), timeout)
        except EngineBusy:
            return True  # the queue is full, so the thread is working
        except (CharLMError, asyncio.TimeoutError):
            return False
        return True

    async def record(self, request: Request) -> None:
        """Write a history row; a failure is logged and never reaches the user."""
        try:
            await self.history.record(request)
        except Exception:
            self.metrics.database_errors.inc()
            log.exception("history write failed for /%s by user %s (outcome %s)",
                          request.command, request.user_id, request.outcome)


def outcome_of(error: CharLMError) -> str:
    """How a failed request is recorded in the history."""
    if isinstance(error, OwnerBusy):
        return "server_busy"
    if isinstance(error, EngineBusy):
        return "busy"
    if isinstance(error, EngineTimeout):
        return "timeout"
    return "error"


def get_context(bot: commands.Bot) -> BotContext:
    """The services of a bot that loaded the `bot.cog` extension (or runs CharLMBot)."""
    context = getattr(bot, "charlm", None)
    if context is None:
        raise RuntimeError("the bot has no charlm services: load the bot.cog extension first")
    return context
