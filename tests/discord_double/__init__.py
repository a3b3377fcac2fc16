"""A protocol-level fake Discord (REST + gateway) for testing the bot with the real discord.py client."""

from .bot_runner import running_bot
from .gateway import ResumeRecord
from .interactions import InteractionHandle
from .log_guard import LogGuard, guard_errors
from .models import (
    MANAGE_GUILD, ChannelSpec, GuildSpec, UserSpec, World, default_world, guild_id_on_shard, shard_of, sharded_world,
)
from .recording import RecordedFile, RecordedRequest, Revision, StoredAttachment, StoredMessage, Violation
from .rest import RateLimitRule
from .server import DiscordDouble, NotOffered, patch_discord, running_double

__all__ = [
    "MANAGE_GUILD", "ChannelSpec", "DiscordDouble", "GuildSpec", "NotOffered", "InteractionHandle", "LogGuard", "RateLimitRule",
    "RecordedFile", "RecordedRequest", "ResumeRecord", "Revision", "StoredAttachment", "StoredMessage", "UserSpec",
    "Violation", "World", "default_world", "guard_errors", "guild_id_on_shard", "patch_discord", "running_bot",
    "running_double", "shard_of", "sharded_world",
]
