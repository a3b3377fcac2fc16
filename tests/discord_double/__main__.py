"""Standalone double for out-of-process bots: python -m tests.discord_double --port P --guild-id G ..."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .models import ChannelSpec, GuildSpec, UserSpec, World, default_world
from .server import DiscordDouble


def parse_user(text: str) -> UserSpec:
    """'ID:NAME' or 'ID:NAME:manage' (the latter has Manage Server)."""
    parts = text.split(":")
    return UserSpec(int(parts[0]), parts[1], manage_guild=len(parts) > 2 and parts[2] == "manage")


def build_world(args: argparse.Namespace) -> World:
    world = default_world()
    if args.guild_id:
        channel_ids = args.channel_id or []
        world.guilds = [
            GuildSpec(gid, channels=(ChannelSpec(channel_ids[i] if i < len(channel_ids) else gid + 1, "general"),))
            for i, gid in enumerate(args.guild_id)
        ]
    if args.user:
        world.users = [parse_user(u) for u in args.user]
    world.shards = args.shards
    return world


async def serve(args: argparse.Namespace) -> None:
    double = DiscordDouble(build_world(args), heartbeat_interval_ms=args.heartbeat_ms, ack_deadline=args.ack_deadline)
    await double.start(args.host, args.port, args.advertise_host)
    print(f"REST_BASE={double.rest_base}", flush=True)
    print(f"GATEWAY_URL={double.gateway_url}", flush=True)
    print(f"CONTROL_URL={double.base_url}/_control", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await double.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--advertise-host", help="host name put into URLs (e.g. when --host is 0.0.0.0)")
    parser.add_argument("--guild-id", type=int, action="append", help="repeatable")
    parser.add_argument("--channel-id", type=int, action="append", help="text channel per guild, in order")
    parser.add_argument("--user", action="append", help="ID:NAME[:manage], repeatable")
    parser.add_argument("--shards", type=int, default=1, help="shard count GET /gateway/bot recommends")
    parser.add_argument("--heartbeat-ms", type=int, default=41250)
    parser.add_argument("--ack-deadline", type=float, default=3.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
