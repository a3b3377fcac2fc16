"""Short private answers, and the one place errors are turned into them."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from charlm.errors import CharLMError

log = logging.getLogger(__name__)
NO_MENTIONS = discord.AllowedMentions.none()
SORRY = "Something went wrong on our side. It has been logged; please try again later."


async def tell(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral message, whether or not the interaction was answered already.

    After a public defer the "thinking…" placeholder is removed, so the private
    answer is not left next to a reply that never comes.
    """
    if not interaction.response.is_done():
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass  # already gone, or an ephemeral defer: the follow-up below still reaches the user
    await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


def explain(error: app_commands.AppCommandError) -> str | None:
    """The message for an error the user caused; None for a bug."""
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You cannot use this command here."
    original = getattr(error, "original", None)
    if isinstance(original, CharLMError):
        return str(original)
    return None


async def answer_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The cogs' error handler: user mistakes get their one line, bugs a polite apology."""
    message = explain(error)
    if message is None:
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error("/%s failed (user %s, guild %s, channel %s)", command, interaction.user.id,
                  interaction.guild_id, interaction.channel_id, exc_info=getattr(error, "original", error))
        message = SORRY
    await tell_quietly(interaction, message)


async def tell_quietly(interaction: discord.Interaction, text: str) -> None:
    """`tell`, when failing to reach the user must not raise (error paths, shutdown)."""
    try:
        await tell(interaction, text)
    except discord.HTTPException as exc:
        log.warning("could not tell user %s: %s", interaction.user.id, exc)
