"""/history and /forget, and the loop that deletes rows past the retention period."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.context import BotContext, may_manage
from bot.history import Counts, Request
from bot.respond import NO_MENTIONS, answer_error
from bot.replies import MESSAGE_LIMIT

log = logging.getLogger(__name__)
SHOWN = 10
"""Rows /history lists; with the counts this stays well inside one message."""


def _short(text: str, size: int = 40) -> str:
    text = " ".join(text.split())
    return discord.utils.escape_markdown(text if len(text) <= size else text[: size - 1] + "…")


def describe_row(row: Request, show_user: bool) -> str:
    when = discord.utils.format_dt(datetime.fromtimestamp(row.created_at, timezone.utc), "R")
    who = f"<@{row.user_id}> " if show_user else ""
    prompt = f"“{_short(row.prompt)}”" if row.prompt.strip() else "(no text)"
    outcome = "ok" if row.outcome == "ok" else f"{row.outcome}: {_short(row.error, 60)}"
    return f"{when} {who}/{row.command} {prompt} → {outcome} ({row.latency_ms / 1000:.1f} s)"


def describe_counts(counts: Counts) -> str:
    outcomes = ", ".join(f"{n} {name}" for name, n in counts.by_outcome.items()) or "none"
    models = ", ".join(f"{n} {name}" for name, n in counts.by_model.items()) or "none"
    return f"**{counts.requests} requests** from {counts.users} users · outcomes: {outcomes} · models: {models}"


def fit(lines: list[str]) -> str:
    """Join lines, dropping the oldest ones that would not fit in one message."""
    while len(text := "\n".join(lines)) > MESSAGE_LIMIT:
        lines = lines[:-1]
    return text


class ForgetView(discord.ui.View):
    """Confirm or cancel /forget; only the user who asked can press the buttons."""

    def __init__(self, context: BotContext, user_id: int) -> None:
        super().__init__(timeout=120)
        self.context = context
        self.user_id = user_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete my history", style=discord.ButtonStyle.danger, custom_id="forget:confirm")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        deleted = await self.context.history.forget_user(self.user_id)
        log.info("user %s deleted their history (%d rows)", self.user_id, deleted)
        self.stop()
        await interaction.response.edit_message(content=f"Done: {deleted} requests deleted.", view=None,
                                                allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary, custom_id="forget:cancel")
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None,
                                                allowed_mentions=NO_MENTIONS)


class HistoryCog(commands.Cog):
    """What users asked for, shown back to them, and forgotten on request or with age."""

    def __init__(self, context: BotContext) -> None:
        self.context = context

    async def cog_load(self) -> None:
        self.purge.start()

    async def cog_unload(self) -> None:
        self.purge.cancel()

    @tasks.loop(hours=1)
    async def purge(self) -> None:
        days = self.context.config.history.retention_days
        try:
            deleted = await self.context.history.purge_older_than(days)
        except Exception:
            log.exception("history retention purge failed")
            return
        if deleted:
            log.info("deleted %d history rows older than %d days", deleted, days)

    @app_commands.command(name="history", description="Your recent requests, or this server's (admins)")
    @app_commands.describe(scope="me: your own requests; server: everyone's in this server (admins only)")
    async def history(self, interaction: discord.Interaction, scope: Literal["me", "server"] = "me") -> None:
        store = self.context.history
        if scope == "me":
            rows = await store.recent_for_user(interaction.user.id, SHOWN)
            head = f"Your last {len(rows)} requests:" if rows else "You have no requests on record."
            lines = [head] + [describe_row(r, show_user=False) for r in rows]
        elif interaction.guild_id is None:
            lines = ["Server history only exists inside a server."]
        elif not await may_manage(interaction, self.context.config):
            lines = ["Only admins (Manage Server permission) can see the server's history."]
        else:
            counts = await store.guild_counts(interaction.guild_id)
            rows = await store.recent_for_guild(interaction.guild_id, SHOWN)
            lines = [describe_counts(counts)] + [describe_row(r, show_user=True) for r in rows]
        await interaction.response.send_message(fit(lines), ephemeral=True, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="forget", description="Delete every request of yours this bot has stored")
    async def forget(self, interaction: discord.Interaction) -> None:
        count = await self.context.history.count(interaction.user.id)
        if not count:
            await interaction.response.send_message("You have no requests on record.", ephemeral=True)
            return
        await interaction.response.send_message(
            f"Delete all {count} of your stored requests, in every server? This cannot be undone.",
            view=ForgetView(self.context, interaction.user.id), ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        await answer_error(interaction, error)
