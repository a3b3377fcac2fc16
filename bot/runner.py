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
from bot.health import INTERVAL, write_health

log = logging.getLogger(__name__)
EXTENSIONS = ["bot.cog", "bot.finetune"]
"""Extensions the standalone bot loads, in order (the fine-tune cog adds its own)."""


class CharLMBot(commands.Bot):
    """A discord.py bot that owns the services its cogs share."""

    def __init__(self, config: Config, **options) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(),
                         help_command=None, allowed_mentions=discord.AllowedMentions.none(), **options)
        self.config = config
        self.charlm: BotContext | None = None
        self.gateway_up = False
        """True between the gateway's READY (or RESUMED) and the next disconnect."""

    async def setup_hook(self) -> None:
        self.charlm = await BotContext.open(self.config)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
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

    async def on_connect(self) -> None:
        """The gateway is up: commands are served from here on, before `on_ready`, which
        discord.py delays until every server has streamed in. Health follows this, or a
        probe right after the first command would see no health file yet."""
        self.gateway_up = True
        if not self.refresh_health.is_running():
            self.refresh_health.start()

    async def on_resumed(self) -> None:
        self.gateway_up = True

    async def on_disconnect(self) -> None:
        self.gateway_up = False

    async def on_ready(self) -> None:
        log.info("logged in as %s (id %s) in %d servers", self.user, self.user.id if self.user else "?",
                 len(self.guilds))

    @tasks.loop(seconds=INTERVAL)
    async def refresh_health(self) -> None:
        connected = self.gateway_up and not self.is_closed()
        engine_alive = self.charlm is not None and await self.charlm.engine_alive()
        try:
            await asyncio.to_thread(write_health, self.config.health_file, connected, engine_alive)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.config.health_file, exc)

    async def close(self) -> None:
        """Unload the cogs (replies in flight finish within the grace period), disconnect,
        then stop the engine and close the database."""
        self.refresh_health.cancel()
        await super().close()
        if self.charlm is not None:
            await self.charlm.close()
            self.charlm = None


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
