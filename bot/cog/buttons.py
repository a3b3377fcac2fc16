"""🎲 Reroll and ➕ Continue under every finished reply.

Both are discord.ui DynamicItems whose custom_id names the reply's history row
(`charlm:reroll:<row>`, `charlm:more:<row>`): discord.py matches them by template, so they
keep working after a restart with no state kept in memory. The row holds what a press
needs (who asked, the prompt, model and version, length and temperature); once the row is
gone (/forget, retention) or its version is no longer served, a press is answered in one
sentence.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from charlm import WINDOW

from bot.generation import Ask, Generator
from bot.history import Request
from bot.respond import tell
from bot.surfaces import InteractionSurface

REROLL, MORE = "charlm:reroll:", "charlm:more:"
ROW = r"(?P<row>[0-9]{1,19})"
MORE_ID = re.compile(re.escape(MORE) + ROW)


def continuation_prompt(row: Request, added: str = "") -> str:
    """What comes next after a reply: its prompt and output, and any text the member added,
    cut to the model's window (it reads no more)."""
    text = row.prompt + row.output
    if added.strip():
        text += ("" if text.endswith((" ", "\n")) or not text else " ") + added.strip()
    return text[-WINDOW:]


def row_of(message: discord.Message) -> int | None:
    """The history row a bot reply belongs to, from its Continue button; None for any other message."""
    for row in message.components:
        for child in getattr(row, "children", []):
            match = MORE_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if match:
                return int(match["row"])
    return None


class ReplyButtons:
    """Builds the buttons of a reply and answers their presses."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        buttons = self

        class Reroll(discord.ui.DynamicItem[discord.ui.Button], template=re.escape(REROLL) + ROW):
            def __init__(self, row: int) -> None:
                super().__init__(discord.ui.Button(label="Reroll", emoji="🎲", custom_id=f"{REROLL}{row}",
                                                   style=discord.ButtonStyle.secondary))
                self.row_id = row

            @classmethod
            async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match) -> "Reroll":
                return cls(int(match["row"]))

            async def callback(self, interaction: discord.Interaction) -> None:
                await buttons.press(interaction, self.row_id, reroll=True)

        class More(discord.ui.DynamicItem[discord.ui.Button], template=re.escape(MORE) + ROW):
            def __init__(self, row: int) -> None:
                super().__init__(discord.ui.Button(label="Continue", emoji="➕", custom_id=f"{MORE}{row}",
                                                   style=discord.ButtonStyle.secondary))
                self.row_id = row

            @classmethod
            async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match) -> "More":
                return cls(int(match["row"]))

            async def callback(self, interaction: discord.Interaction) -> None:
                await buttons.press(interaction, self.row_id, reroll=False)

        self.items = (Reroll, More)

    def view(self, row: Request) -> discord.ui.View:
        """The buttons of a finished reply (the generator's `view_for`)."""
        view = discord.ui.View(timeout=None)
        reroll, more = self.items
        view.add_item(reroll(row.id))
        view.add_item(more(row.id))
        return view

    async def press(self, interaction: discord.Interaction, row_id: int, reroll: bool) -> None:
        """Reroll: the asker only, same prompt and version, a new seed, in place. Continue:
        anyone, the next characters, as a new message."""
        row = await self.generator.context.history.get(row_id)
        if row is None or row.guild_id != interaction.guild_id:
            await tell(interaction, "That reply is no longer in the history (deleted with /forget or after the "
                                    "retention period), so its buttons no longer work.")
            return
        if reroll and interaction.user.id != row.user_id:
            await tell(interaction, f"Only <@{row.user_id}>, who asked for this reply, can reroll it; "
                                    "➕ Continue is open to everyone.")
            return
        if not await self.generator.admit(interaction):
            return
        sampling = row.sampling or {}
        ask = Ask.of(interaction, "reroll" if reroll else "continue", row.model,
                     row.prompt if reroll else continuation_prompt(row), length=sampling.get("length"),
                     temperature=sampling.get("temperature"),
                     version=f"{row.model} {row.model_version}" if reroll else None)
        await self.generator.run(InteractionSurface(interaction, update=reroll), ask)
