"""Where a generated reply is shown: an interaction's response (slash and message commands,
buttons), or a reply to a message in its channel (@mentions, replies to the bot)."""

from __future__ import annotations

import discord

from bot.respond import NO_MENTIONS, tell


class InteractionSurface:
    """The interaction's own response. `update`: a button edits the message it sits on
    (a deferred update, callback type 6); otherwise "thinking…" then a new message (type 5)."""

    def __init__(self, interaction: discord.Interaction, update: bool = False) -> None:
        self.interaction = interaction
        self.update = update

    async def start(self) -> None:
        if not self.interaction.response.is_done():
            if self.update:
                await self.interaction.response.defer()
            else:
                await self.interaction.response.defer(thinking=True)

    async def show(self, content: str, view: discord.ui.View | None = None) -> None:
        # view=None while writing removes the old buttons, so nobody presses them mid-reply.
        await self.interaction.edit_original_response(content=content, view=view, allowed_mentions=NO_MENTIONS)

    async def fail(self, text: str) -> None:
        await tell(self.interaction, text)


class MessageSurface:
    """A reply to `message` in its channel (or DM), created with the first text and edited after."""

    def __init__(self, message: discord.Message) -> None:
        self.message = message
        self.sent: discord.Message | None = None

    async def start(self) -> None:
        """Nothing to acknowledge: messages have no deadline."""

    async def show(self, content: str, view: discord.ui.View | None = None) -> None:
        if self.sent is None:
            kwargs = {"view": view} if view is not None else {}
            self.sent = await self.message.reply(content, mention_author=False, allowed_mentions=NO_MENTIONS,
                                                 **kwargs)
        else:
            await self.sent.edit(content=content, view=view, allowed_mentions=NO_MENTIONS)

    async def fail(self, text: str) -> None:
        """Said in the channel (a message has no private answer): one sentence, in place of the reply."""
        await self.show(text)
