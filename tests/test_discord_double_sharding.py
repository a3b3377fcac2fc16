"""The double's sharding against discord.py's real AutoShardedBot: GET /gateway/bot, IDENTIFY's
shard, guilds per shard, interactions over the owning shard's session, 4010/4011 closes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.discord_double import (
    DiscordDouble, LogGuard, guild_id_on_shard, running_bot, running_double, shard_of, sharded_world,
)
from tests.discord_double.gateway import INVALID_SHARD, SHARDING_REQUIRED

GUILD_0, GUILD_1 = guild_id_on_shard(0, 2), guild_id_on_shard(1, 2)


class ShardBot(commands.AutoShardedBot):
    """A tiny sharded bot whose /where says which bot answered and which shard owns the guild."""

    def __init__(self, label: str, **options: Any) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1, **options)
        self.label = label
        self.connected_shards: list[int] = []

        @self.tree.command(description="which bot answers")
        async def where(interaction: discord.Interaction) -> None:
            guild = interaction.guild
            await interaction.response.send_message(f"{self.label} shard {guild.shard_id if guild else '-'}")

    async def setup_hook(self) -> None:
        if self.shard_ids is None or 0 in self.shard_ids:
            await self.tree.sync()

    async def on_shard_connect(self, shard_id: int) -> None:
        self.connected_shards.append(shard_id)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause between this process's IDENTIFYs: the double does not rate-limit them."""


def test_guild_ids_land_on_the_chosen_shard() -> None:
    for count in (1, 2, 3, 16):
        ids = {guild_id_on_shard(s, count, i) for s in range(count) for i in range(4)}
        assert len(ids) == 4 * count
        assert all(shard_of(guild_id_on_shard(s, count, i), count) == s for s in range(count) for i in range(4))
    with pytest.raises(ValueError):
        guild_id_on_shard(2, 2)
    world = sharded_world(2, guilds_per_shard=2)
    assert world.shards == 2 and sorted(shard_of(g.id, 2) for g in world.guilds) == [0, 0, 1, 1]


def test_gateway_bot_answers_the_shard_count(discord_log_guard: LogGuard) -> None:
    async def main() -> None:
        async with running_double(shards=3) as double, aiohttp.ClientSession() as session:
            async with session.get(double.rest_base + "/gateway/bot") as response:
                body = await response.json()
            assert body["shards"] == 3 and body["url"] == double.gateway_url
            assert body["session_start_limit"]["max_concurrency"] == 1
            async with session.get(double.rest_base + "/gateway") as response:
                assert await response.json() == {"url": double.gateway_url}

    asyncio.run(main())


def test_one_process_runs_every_shard_discord_recommends(discord_log_guard: LogGuard) -> None:
    """No shard_count: discord.py asks GET /gateway/bot, opens one session per shard, and each
    session gets only its guilds; an interaction arrives over its guild's shard."""

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            async with running_bot(ShardBot("solo")) as bot:
                assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
                assert sorted(bot.connected_shards) == [0, 1]
                sessions = {s.shard: s for s in double.gateway.sessions.values()}
                assert sorted(sessions) == [(0, 2), (1, 2)]
                for (shard_id, _), session in sessions.items():
                    ready = next(e for e in session.log if e["t"] == "READY")["d"]
                    assert ready["shard"] == [shard_id, 2]
                    assert [g["id"] for g in ready["guilds"]] == [str(guild_id_on_shard(shard_id, 2))]
                    created = [e["d"]["id"] for e in session.log if e["t"] == "GUILD_CREATE"]
                    assert created == [str(guild_id_on_shard(shard_id, 2))]
                assert {g.id: g.shard_id for g in bot.guilds} == {GUILD_0: 0, GUILD_1: 1}

                await double.wait_commands(["where"])
                for guild_id, shard_id in ((GUILD_0, 0), (GUILD_1, 1)):
                    handle = await double.send_command("where", guild_id=guild_id)
                    assert (await handle.wait_final()).content == f"solo shard {shard_id}"
                    session = double.gateway.shard_session(shard_id)
                    assert any(e["t"] == "INTERACTION_CREATE" and e["d"]["id"] == str(handle.id) for e in session.log)
                double.assert_no_violations()

    asyncio.run(main())


def test_two_processes_split_the_shards_and_one_syncs(discord_log_guard: LogGuard) -> None:
    """shard_ids [0] and [1] of 2 in two clients: each guild is answered by its own shard's client,
    only the shard-0 client syncs, and a DM-like event (no guild) goes over shard 0."""

    async def main() -> None:
        async with running_double(world=sharded_world(2)) as double:
            async with running_bot(ShardBot("A", shard_count=2, shard_ids=[0])) as a, \
                    running_bot(ShardBot("B", shard_count=2, shard_ids=[1])) as b:
                await double.wait_ready(shards=[0, 1])
                assert [g.id for g in a.guilds] == [GUILD_0] and [g.id for g in b.guilds] == [GUILD_1]
                await double.wait_commands(["where"])
                assert len(double.calls("PUT /applications/{app}/commands")) == 1
                first = await double.send_command("where", guild_id=GUILD_1)
                second = await double.send_command("where", guild_id=GUILD_0)
                assert (await first.wait_final()).content == "B shard 1"
                assert (await second.wait_final()).content == "A shard 0"

                await double.gateway.dispatch("DM_PROBE", {"channel_id": "1"})
                assert double.gateway.shard_session(0).log[-1]["t"] == "DM_PROBE"
                assert all(e["t"] != "DM_PROBE" for e in double.gateway.shard_session(1).log)

                record = await double.force_reconnect("op7", shard_id=1)
                assert record.session_id == double.gateway.shard_session(1).id
                again = await double.send_command("where", guild_id=GUILD_1)
                assert (await again.wait_final()).content == "B shard 1"
            double.assert_no_violations()

    asyncio.run(main())


async def identify_raw(double: DiscordDouble, shard: Any) -> int | None:
    """IDENTIFY over a plain websocket and return the close code the double answers with."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(double.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 10
            data: dict[str, Any] = {"token": "t", "intents": 0, "properties": {}}
            if shard is not None:
                data["shard"] = shard
            await ws.send_json({"op": 2, "d": data})
            message = await ws.receive(timeout=5)
            if message.type == aiohttp.WSMsgType.TEXT:
                return None
            return ws.close_code


def test_an_invalid_shard_is_closed_with_4010_and_too_many_guilds_with_4011(discord_log_guard: LogGuard) -> None:
    async def main() -> None:
        world = sharded_world(2)
        world.max_guilds_per_session = 1
        async with running_double(world=world) as double:
            for bad in ([2, 2], [-1, 2], [0, 0], [0], "0,1", [0.0, 1]):
                assert await identify_raw(double, bad) == INVALID_SHARD, bad
            assert await identify_raw(double, None) == SHARDING_REQUIRED
            assert await identify_raw(double, [0, 1]) == SHARDING_REQUIRED
            assert await identify_raw(double, [1, 2]) is None  # READY: one guild is allowed
            assert [code for code, _ in double.gateway.rejected] == [INVALID_SHARD] * 6 + [SHARDING_REQUIRED] * 2

            bot = ShardBot("wrong", shard_count=2, shard_ids=[2])
            with pytest.raises(discord.ConnectionClosed) as closed:
                async with bot:
                    await asyncio.wait_for(bot.start("test-token"), 15)
            assert closed.value.code == INVALID_SHARD

    asyncio.run(main())


def test_cli_double_recommends_its_shard_count() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.discord_double", "--shards", "2", "--guild-id", str(GUILD_0),
                             "--guild-id", str(GUILD_1)], stdout=subprocess.PIPE, text=True)
    try:
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))  # type: ignore[union-attr]
        with urllib.request.urlopen(lines["REST_BASE"] + "/gateway/bot") as response:
            assert json.loads(response.read())["shards"] == 2
        with urllib.request.urlopen(lines["CONTROL_URL"] + "/state") as response:
            state = json.loads(response.read())
        assert (state["shards"], state["sessions"]) == (2, [])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
