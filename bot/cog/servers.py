"""Servers joining and leaving: a server that removes the bot keeps its data for [history]
retention_days (adding the bot back keeps it), then every store's rows of it go; the bot's
owners can purge a server at once with /purge-server.

It runs over `context.servers` (bot.server_data), so a bot that loads only `bot.cog`
forgets a departed server's history and settings, and one with the fine-tune extension
its models and jobs as well.
"""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands, tasks

from charlm.errors import CharLMError

from bot.context import BotContext, is_owner
from bot.db.departures import Departures
from bot.respond import NO_MENTIONS, answer_error, tell

log = logging.getLogger(__name__)


class ServersCog(commands.Cog):
    """Departures, the hourly retention pass, and /purge-server."""

    def __init__(self, bot: commands.Bot, context: BotContext) -> None:
        self.bot = bot
        self.context = context
        self.departures = Departures(context.db)
        self._ready_task: asyncio.Task | None = None

    async def cog_load(self) -> None:
        self.purge_departed.start()

    async def cog_unload(self) -> None:
        self.purge_departed.cancel()
        ready = self._ready_task
        if ready is not None and not ready.done() and ready is not asyncio.current_task():
            ready.cancel()  # it uses the database, which closes after this
            await asyncio.gather(ready, return_exceptions=True)

    @property
    def retention_days(self) -> int:
        return self.context.config.history.retention_days

    # ---- departures -----------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Connected: servers that added the bot back while it was away are kept, and servers
        that removed it meanwhile start their retention period."""
        self._ready_task = asyncio.current_task()
        present = {guild.id for guild in self.bot.guilds}
        for guild_id in present:
            await self._returned(guild_id)
        if self._sees_every_guild():
            try:
                await self._note_departures_while_away(present)
            except Exception as exc:  # bookkeeping: the next start tries again
                log.warning("could not check for servers that removed the bot while it was away: %s", exc)

    async def _note_departures_while_away(self, present: set[int]) -> None:
        known = await self.context.servers.guild_ids()
        departed = await self.departures.all()
        for guild_id in sorted(known - present - set(departed)):
            await self.departures.left(guild_id)
            log.info("guild %s removed the bot while it was away: its data goes in %d days", guild_id,
                     self.retention_days)

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
        log.info("removed from guild %s: its data goes in %d days unless it adds the bot back",
                 guild.id, self.retention_days)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._returned(guild.id)

    async def _returned(self, guild_id: int) -> None:
        if await self.departures.returned(guild_id):
            log.info("guild %s added the bot back; its data is kept", guild_id)
            self.context.servers.returned(guild_id)  # e.g. its queued fine-tune may go ahead

    # ---- purging --------------------------------------------------------------------------------

    @tasks.loop(hours=1)
    async def purge_departed(self) -> None:
        """Purge every server whose retention period is over; one that fails stays departed,
        so the next pass tries it again."""
        try:
            due = await self.departures.due(self.retention_days)
        except Exception:
            log.exception("could not read the servers the bot left")
            return
        for guild_id in due:
            try:
                await self.purge(guild_id)
            except Exception:
                log.exception("purging guild %s failed; the next pass tries again", guild_id)

    async def purge(self, guild_id: int) -> str:
        """Delete everything of one server from every store, then its departure; returns the
        owners' summary."""
        counts = await self.context.servers.purge(guild_id)
        await self.departures.returned(guild_id)  # last: a failure above leaves it for the next pass
        listed = ", ".join(f"{n} {noun}" for noun, n in counts)
        return f"Deleted server {guild_id}'s data: {listed}."

    @app_commands.command(name="purge-server", description="The bot's owners: delete a server's models, jobs, "
                                                           "history and settings now")
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

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
