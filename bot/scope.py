"""Whose view a request takes: one server, one user's DMs, or the owners' all-servers scope.

One value travels from the interaction to the registry, the loader and the engine, so no
caller has to pass a guild id, a user id and an owners' flag and keep them consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from bot.db.schema import OWNERS

if TYPE_CHECKING:  # the trainer processes import this module without discord.py
    import discord

Kind = Literal["server", "dm", "all"]


@dataclass(frozen=True)
class Scope:
    """A server (id: its guild id), a user's DMs (id: the user's id), or every server (id 0)."""

    kind: Kind
    id: int = 0
    ALL: ClassVar[Scope]
    """The bot's owners deciding for, or looking at, every server at once."""

    @classmethod
    def server(cls, guild_id: int) -> Scope:
        return cls("server", guild_id)

    @classmethod
    def dm(cls, user_id: int) -> Scope:
        return cls("dm", user_id)

    @classmethod
    def of(cls, guild_id: int | None, user_id: int) -> Scope:
        """Where a request was made: its server, or the user's DMs."""
        return cls.dm(user_id) if guild_id is None else cls.server(guild_id)

    @property
    def guild_id(self) -> int | None:
        """The server's id; None for DMs and for every server."""
        return self.id if self.kind == "server" else None

    @property
    def everything(self) -> bool:
        """The owners' view: every server's versions, and the default every server gets."""
        return self.kind == "all"

    @property
    def key(self) -> int:
        """Its `serving` rows' scope column: a server's own id; DMs get what every server
        gets by default, which the owners set (OWNERS, 0)."""
        return self.id if self.kind == "server" else OWNERS

    @property
    def owner(self) -> tuple[str, int]:
        """Whose share of the engine a request uses: its server, or the user in a DM."""
        return ("user" if self.kind == "dm" else self.kind, self.id)


Scope.ALL = Scope("all")


def scope_of(interaction: discord.Interaction) -> Scope:
    """The scope an interaction was made in."""
    return Scope.of(interaction.guild_id, interaction.user.id)
