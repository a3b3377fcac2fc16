"""The standalone bot around the extension: services, command sync, health file, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

import discord
import discord.gateway
import discord.http
import yarl
from discord.ext import commands, tasks

from bot.config import Config, DiscordConfig
from bot.context import BotContext
from bot.endpoint import Endpoint, database_answers
from bot.health import INTERVAL, write_health
from bot.metrics import Metrics, watch_jobs

log = logging.getLogger(__name__)
EXTENSIONS = ["bot.cog", "bot.finetune"]
"""Extensions the standalone bot loads, in order (the fine-tune cog adds its own)."""


class CharLMBot(commands.AutoShardedBot):
    """A discord.py bot that owns the services its cogs share.

    Sharded as [discord] shard_count/shard_ids say (0/empty: as many as Discord recommends,
    all in this process); one shard is just the unsharded bot.
    """

    def __init__(self, config: Config, **options) -> None:
        settings = config.discord
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                         help_command=None, allowed_mentions=discord.AllowedMentions.none(),
                         shard_count=settings.shard_count or None, shard_ids=list(settings.shard_ids) or None,
                         **options)
        self.config = config
        self.charlm: BotContext | None = None
        self.shard_up: dict[int, bool] = {}
        """Per shard of this process: True between its READY (or RESUMED) and its next disconnect."""
        self._health_lock = asyncio.Lock()
        """The loop and shard events both write the file; one at a time."""
        self.metrics = Metrics(config.models.folders())
        self.endpoint = Endpoint(self.metrics, self.health_problem, config.metrics.host, config.metrics.port,
                                 "ok: every shard of this process is connected and the database answers")
        self._jobs_watch: asyncio.Task | None = None

    def own_shard_ids(self) -> list[int]:
        """The shards this process runs (known once discord.py has the shard count)."""
        if self.shard_ids:
            return list(self.shard_ids)
        return list(range(self.shard_count or 0))

    async def setup_hook(self) -> None:
        self.charlm = await BotContext.open(self.config, self.metrics)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.endpoint.start()
        if self.config.metrics.port:  # with SQLite this process trains, so it times the jobs
            self._jobs_watch = asyncio.create_task(
                watch_jobs(self.charlm.db, self.metrics, durations=not self.config.postgres), name="metrics-jobs")
        if not self.config.discord.syncs_commands:
            log.info("not syncing commands: the process running shard 0 does")
            return
        guild_id = self.config.discord.sync_guild_id
        if guild_id:
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d commands globally (new commands can take a while to appear)", len(synced))
        freeze_startup_objects()

    async def on_shard_connect(self, shard_id: int) -> None:
        """A shard's gateway is up: commands are served from here on, before `on_ready`, which
        discord.py delays until every server has streamed in. Health follows this, or a
        probe right after the first command would see no health file yet."""
        await self._shard_state(shard_id, True)

    async def on_shard_ready(self, shard_id: int) -> None:
        await self._shard_state(shard_id, True)

    async def on_shard_resumed(self, shard_id: int) -> None:
        await self._shard_state(shard_id, True)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        await self._shard_state(shard_id, False)

    async def _shard_state(self, shard_id: int, up: bool) -> None:
        """Record it and rewrite the health file now, not at the next refresh."""
        changed = self.shard_up.get(shard_id) is not up
        self.shard_up[shard_id] = up
        if not self.refresh_health.is_running():
            if up and not self.is_closed():
                self.refresh_health.start()
        elif changed:
            await self.refresh_health()

    async def health_problem(self) -> str | None:
        """/healthz: None when every shard of this process is connected and the database
        answers, else the first problem in one line."""
        if self.is_closed():
            return "the bot is shutting down"
        shards = {i: self.shard_up.get(i, False) for i in self.own_shard_ids()}
        down = [str(i) for i, up in shards.items() if not up]
        if not shards:
            return "the bot is not connected to Discord yet"
        if down:
            return (f"shard {down[0]} is not connected to Discord" if len(down) == 1
                    else f"shards {', '.join(down)} are not connected to Discord")
        if self.charlm is None:
            return "the bot is starting"
        return await database_answers(self.charlm.db)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: messages are the conversation cog's (bot.cog.conversation), and
        discord.py's default here would read every mention as an unknown command."""

    async def on_ready(self) -> None:
        log.info("logged in as %s (id %s) in %d servers", self.user, self.user.id if self.user else "?",
                 len(self.guilds))

    @tasks.loop(seconds=INTERVAL)
    async def refresh_health(self) -> None:
        closed = self.is_closed()
        shards = {i: self.shard_up.get(i, False) and not closed for i in self.own_shard_ids()}
        connected = bool(shards) and all(shards.values())
        engine_alive = self.charlm is not None and await self.charlm.engine_alive()
        try:
            async with self._health_lock:
                await asyncio.to_thread(write_health, self.config.health_file, connected, engine_alive,
                                        shards=shards, shard_count=self.shard_count)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.config.health_file, exc)

    async def close(self) -> None:
        """Unload the cogs (replies in flight finish within the grace period), disconnect,
        then stop the engine and close the database."""
        self.refresh_health.cancel()
        if self._jobs_watch is not None:
            self._jobs_watch.cancel()
        await self.endpoint.stop()
        await super().close()
        if self.charlm is not None:
            await self.charlm.close()
            self.charlm = None
        if self.shard_up:  # say so at once, rather than letting --health wait for the file to go stale
            self.shard_up = dict.fromkeys(self.shard_up, False)
            await self.refresh_health()


def freeze_startup_objects() -> None:
    """Move everything start-up made (modules, discord.py, numba, the models' objects) out
    of the garbage collector's reach. A full collection walks every tracked object: with
    ~140,000 of them that stalls the event loop ~100 ms (0.5 s when TensorFlow was
    imported), and bursts of interactions trigger such collections. They live as long as
    the process, so there is nothing for the collector to find among them."""
    gc.collect()
    gc.freeze()
    log.info("froze %d start-up objects out of the garbage collector's generations", gc.get_freeze_count())


def point_at(settings: DiscordConfig) -> None:
    """Talk to another Discord (a test double) when the config names one."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


async def run(config: Config, token: str) -> None:
    """Run until closed or until SIGINT/SIGTERM, then shut down cleanly."""
    point_at(config.discord)
    bot = CharLMBot(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def stop(name: str) -> None:
        log.info("%s received: shutting down", name)
        if not stopping:
            stopping.append(asyncio.create_task(bot.close()))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig.name)
    async with bot:
        await bot.start(token)
    if stopping:
        await stopping[0]
