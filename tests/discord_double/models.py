"""Static world of the double: users, guilds, channels and their Discord JSON shapes."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
MANAGE_GUILD = 1 << 5
# View channel, send messages, embed links, attach files, read history, use app commands.
BASE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)

_counter = itertools.count()


def snowflake() -> int:
    """A fresh, time-ordered snowflake, so discord.py's created_at values make sense."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) % (1 << 22))


def shard_of(guild_id: int, num_shards: int) -> int:
    """Discord's rule for which shard receives a guild's events."""
    return (guild_id >> 22) % num_shards


SHARDED_EPOCH_MS = 1 << 38
"""Timestamp part (ms since the Discord epoch, in 2028) of guild ids made by guild_id_on_shard."""


def guild_id_on_shard(shard_id: int, num_shards: int, index: int = 0) -> int:
    """A fixed guild id that lands on shard_id of num_shards; index gives further distinct ones."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard {shard_id} is not one of {num_shards} shards")
    timestamp = SHARDED_EPOCH_MS + index * num_shards
    timestamp += (shard_id - timestamp) % num_shards
    return (timestamp << 22) | 1


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class UserSpec:
    """A Discord user; manage_guild decides the Manage Server bit in member permissions."""

    id: int
    username: str
    manage_guild: bool = False
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def permissions(self) -> int:
        return BASE_PERMISSIONS | (MANAGE_GUILD if self.manage_guild else 0)

    def member_payload(self, permissions: int | None = None) -> dict[str, Any]:
        member: dict[str, Any] = {
            "user": self.payload(),
            "nick": None,
            "avatar": None,
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
        }
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member


@dataclass(frozen=True)
class ChannelSpec:
    """A guild text channel (type 0)."""

    id: int
    name: str = "general"
    type: int = 0

    def payload(self, guild_id: int, position: int = 0) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(guild_id),
            "name": self.name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }


@dataclass(frozen=True)
class GuildSpec:
    """A guild with channels; every configured user and the bot are members."""

    id: int
    name: str = "Test Guild"
    channels: tuple[ChannelSpec, ...] = ()
    owner_id: int | None = None

    def channel(self, channel_id: int | None) -> ChannelSpec:
        if channel_id is None:
            return self.channels[0]
        for channel in self.channels:
            if channel.id == channel_id:
                return channel
        raise KeyError(f"channel {channel_id} not in guild {self.id}")

    def payload(self, users: list[UserSpec], bot: UserSpec) -> dict[str, Any]:
        everyone = {
            "id": str(self.id),
            "name": "@everyone",
            "permissions": str(BASE_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        members = [u.member_payload() for u in [bot, *users]]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.owner_id or (users[0].id if users else bot.id)),
            "unavailable": False,
            "large": False,
            "member_count": len(members),
            "features": [],
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "members": members,
            "channels": [c.payload(self.id, i) for i, c in enumerate(self.channels)],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "preferred_locale": "en-US",
            "joined_at": "2024-01-01T00:00:00+00:00",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "system_channel_id": None,
        }


@dataclass
class World:
    """Everything the double pretends exists."""

    bot: UserSpec = field(default_factory=lambda: UserSpec(900000000000000001, "charbot", bot=True))
    application_id: int = 900000000000000002
    owner: UserSpec = field(default_factory=lambda: UserSpec(900000000000000003, "owner"))
    guilds: list[GuildSpec] = field(default_factory=list)
    users: list[UserSpec] = field(default_factory=list)
    shards: int = 1
    """What GET /gateway/bot recommends (discord.py's AutoShardedClient uses it when not told)."""
    max_guilds_per_session: int = 2500
    """A session that would hold more guilds is closed with 4011 Sharding required, as on Discord."""
    team: tuple[UserSpec, ...] = ()
    """When set, the application belongs to a team of these users (the first one owns it)."""
    dm_channels: dict[int, int] = field(default_factory=dict)
    """user id -> id of that user's DM channel with the bot (made on first use)."""

    def dm_channel(self, user: UserSpec) -> dict[str, Any]:
        """The user's DM channel with the bot (type 1), as interactions carry it."""
        channel_id = self.dm_channels.setdefault(user.id, snowflake())
        return {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0,
                "recipients": [user.payload()]}

    def team_payload(self) -> dict[str, Any] | None:
        if not self.team:
            return None
        team_id = str(self.application_id + 1)
        return {"id": team_id, "name": f"{self.bot.username} team", "icon": None,
                "owner_user_id": str(self.team[0].id),
                "members": [{"membership_state": 2, "team_id": team_id, "user": u.payload(), "role": "admin",
                             "permissions": ["*"]} for u in self.team]}

    def guild(self, guild_id: int | None) -> GuildSpec:
        if guild_id is None:
            return self.guilds[0]
        for guild in self.guilds:
            if guild.id == guild_id:
                return guild
        raise KeyError(f"guild {guild_id} is not configured")

    def guild_of_channel(self, channel_id: int) -> int | None:
        """The guild a channel is in; None for a DM channel (or one the world does not know)."""
        for guild in self.guilds:
            if any(c.id == channel_id for c in guild.channels):
                return guild.id
        return None

    def user(self, user: UserSpec | int | str | None) -> UserSpec:
        """Find a user by spec, id or username; None means the first configured user."""
        if isinstance(user, UserSpec):
            return user
        for candidate in [*self.users, self.owner, *self.team, self.bot]:
            if user is None or candidate.id == user or candidate.username == user:
                return candidate
        raise KeyError(f"user {user!r} is not configured")

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot.username,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner.payload(),
            "verify_key": "0" * 64,
            "team": self.team_payload(),
            "flags": 0,
            "bot": self.bot.payload(),
            "interactions_endpoint_url": None,
        }


def default_world() -> World:
    """One guild with a text channel, a manager 'alice' and a plain member 'bob'."""
    guild = GuildSpec(910000000000000001, channels=(ChannelSpec(920000000000000001, "general"),))
    users = [
        UserSpec(930000000000000001, "alice", manage_guild=True),
        UserSpec(930000000000000002, "bob"),
    ]
    return World(guilds=[guild], users=users)


def sharded_world(num_shards: int, guilds_per_shard: int = 1) -> World:
    """default_world()'s users with guilds spread over num_shards (GET /gateway/bot says num_shards).

    Guild i of shard s is guild_id_on_shard(s, num_shards, i), with one text channel (guild id + 1).
    """
    world = default_world()
    world.shards = num_shards
    world.guilds = []
    for index in range(guilds_per_shard):
        for shard_id in range(num_shards):
            gid = guild_id_on_shard(shard_id, num_shards, index)
            world.guilds.append(GuildSpec(gid, f"Shard {shard_id} guild {index}", (ChannelSpec(gid + 1, "general"),)))
    return world
