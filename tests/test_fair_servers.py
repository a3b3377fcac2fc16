"""Many servers, one bot (issue 18): a flood in one server neither takes another server's
answers nor its loaded model versions. The real discord.py client against the Discord
double; the engine (or the loader thread) is held while requests arrive, so what is
waiting is the same on every run, and nothing is asserted on seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

from bot.config import Config
from bot.context import ENGINE_NICE
from bot.runner import CharLMBot
from bot.scope import Scope
from charlm.sampling import Sampling
from charlm.storage import read_card
from tests.discord_double import (
    ChannelSpec, DiscordDouble, GuildSpec, InteractionHandle, LogGuard, UserSpec, World, running_bot, running_double,
)
from tests.test_finetune import has, said, write_config
from tests.test_servers import add_version

A, B = 910000000000000001, 910000000000000002
CHANNEL = {A: 920000000000000001, B: 920000000000000002}
A_MEMBERS = [f"a{i}" for i in range(10)]
B_MEMBERS = [f"b{i}" for i in range(4)]
SERVER_BUSY = "This server has too many requests waiting for the models; please try again in a minute."


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def world() -> World:
    guilds = [GuildSpec(g, f"Guild {n}", (ChannelSpec(CHANNEL[g]),)) for n, g in zip("AB", (A, B))]
    users = [UserSpec(930000000000000100 + i, name) for i, name in enumerate(A_MEMBERS + B_MEMBERS)]
    return World(guilds=guilds, users=users)


def run(config: Config, scenario) -> None:
    async def main() -> None:
        async with running_double(world=world()) as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60) as bot:
                await double.wait_commands(["alice", "generate"])
                await scenario(double, bot)
            double.assert_no_violations()

    asyncio.run(main())


async def until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


def send(double: DiscordDouble, command: str, options: dict, user: str, guild: int):
    return double.send_command(command, options, user=user, guild_id=guild, channel_id=CHANNEL[guild])


class Hold:
    """A streaming callback that holds the engine thread until released, then slows each
    batch step a little, so later requests visibly wait in line."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, text: str) -> None:
        self.entered.set()
        assert self.release.wait(30)
        time.sleep(0.02)


def test_a_flood_in_one_server_leaves_the_others_answered(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    config = dataclasses.replace(
        config, limits=dataclasses.replace(config.limits, per_server_queue=4),
        engine=dataclasses.replace(config.engine, max_batch=1),
        generation=dataclasses.replace(config.generation, edit_interval=0.2))

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        engine = bot.charlm.engine
        hold = Hold()
        held = engine.submit("seuss", "", Sampling(temperature=0, length=1500), owner="test", on_text=hold, every=16)
        await asyncio.to_thread(hold.entered.wait, 10)

        flood = [await send(double, "alice", {"text": "hello", "length": 200}, user, A) for user in A_MEMBERS]
        # The per-server cap is 4: six of A's ten are refused at once (whichever reach the engine last).
        await until(lambda: sum(has(SERVER_BUSY)(h) for h in flood) == 6 and engine.waiting() == 4)
        refused = [h for h in flood if has(SERVER_BUSY)(h)]
        others = [await send(double, "alice", {"text": "hello", "length": 200}, user, B) for user in B_MEMBERS]
        await until(lambda: engine.waiting() == 8)  # B is not refused: its share is its own

        hold.release.set()
        answered: list[InteractionHandle] = [h for h in flood if h not in refused] + others
        for handle in answered:
            await handle.wait_final(timeout=60)
        await asyncio.wrap_future(held)

        assert all(said(h).startswith("**hello**") and "200 characters" in said(h) for h in answered)
        assert [said(h) for h in refused] == [SERVER_BUSY] * 6
        assert all(h.followups[-1].ephemeral for h in refused)  # only the asker sees it
        assert any(has("in line")(h) for h in answered)  # a waiting reply showed its place

    run(config, scenario)


def test_a_server_cycling_versions_keeps_to_its_share_and_its_short_queue(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    config = dataclasses.replace(config, engine=dataclasses.replace(config.engine, max_loaded=2))

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        cog = bot.get_cog("FinetuneCog")
        for guild, name, number in [(B, "seuss", 1), (A, "m1", 2), (A, "m2", 3), (A, "m3", 4), (A, "m4", 5)]:
            folder = add_version(config, tiny_model, guild, name, number)
            await cog.registry.serve(Scope.server(guild), await cog.registry.add(guild, name, number, folder, read_card(folder)))
        loaded = lambda: sorted(k for k in bot.charlm.engine.models() if "@" in k)  # noqa: E731
        loads = lambda: sum(bot.metrics.registry.get_sample_value(  # noqa: E731
            "charbot_version_loads_total", {"model": model}) or 0 for model in ("fine-tuned", "seuss"))

        async def generate(user: str, guild: int, model: str) -> InteractionHandle:
            command, extra = ("seuss", {}) if model == "seuss" else ("generate", {"model": model})
            return await send(double, command, {"text": "the cat", "length": 20, **extra}, user, guild)

        # Loads run on one thread at the inference thread's priority, not the event loop's.
        def nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        loader_nice = await asyncio.get_running_loop().run_in_executor(bot.charlm.pool.executor, nice)
        assert loader_nice == min(19, nice() + ENGINE_NICE)

        # The loader thread is busy: A asks for four versions at once, B for one.
        gate = threading.Event()
        bot.charlm.pool.executor.submit(gate.wait, 30)
        first = [await generate(f"a{i}", A, f"m{i + 1}") for i in range(4)]
        # One loading, two queued (A's short queue): whichever reaches the pool last is refused at once.
        await until(lambda: any(has(SERVER_BUSY)(h) for h in first))
        refused = [h for h in first if has(SERVER_BUSY)(h)]
        assert len(refused) == 1 and said(refused[0]) == SERVER_BUSY and refused[0].followups[-1].ephemeral
        b_first = await generate("b0", B, "seuss")
        gate.set()
        for handle in [h for h in first if h not in refused] + [b_first]:
            await handle.wait_final(timeout=30)
            assert said(handle).startswith("**the cat**"), said(handle)
        assert "seuss@v1" in loaded() and len(loaded()) == 2 and loads() == 4  # A's latest beside B's

        # A cycles through its versions; with max_loaded 2 its share is one, so it evicts its own.
        async def final(handle: InteractionHandle) -> str:
            await handle.wait_final(timeout=30)
            return said(handle)

        # Which of A's versions loaded last above depends on the order the loads ran in; a cycle
        # starting on the one still loaded needs no load for its first step.
        cycle = ["m1", "m2", "m3", "m4", "m1"]
        already_loaded = f"{cycle[0]}@v2" in loaded()
        for i, name in enumerate(cycle):
            assert (await final(await generate(f"a{i}", A, name))).startswith("**the cat**")
            assert loaded() == sorted(["seuss@v1", f"{name}@v{int(name[1]) + 1}"])
        b_again = await final(await generate("b1", B, "seuss"))
        assert b_again.rsplit("\n-# ", 1)[-1].startswith("seuss v1")
        assert loads() == 4 + len(cycle) - already_loaded  # B's version was never loaded again

    run(config, scenario)


def test_each_refusal_says_whose_share_is_full() -> None:
    from bot.generation import user_message
    from bot.context import outcome_of
    from bot.finetune.pool import LoadQueueFull
    from charlm.engine import EngineBusy, OwnerBusy

    assert user_message(OwnerBusy("x")) == SERVER_BUSY
    assert user_message(LoadQueueFull("x")) == SERVER_BUSY  # its versions to load, same sentence
    assert user_message(OwnerBusy("x"), in_dm=True) == ("You have too many requests waiting for the models; "
                                                        "please try again in a minute.")
    assert user_message(EngineBusy("x")) == "The models are busy right now; please try again in a minute."
    assert [outcome_of(e) for e in (OwnerBusy("x"), LoadQueueFull("x"), EngineBusy("x"))] == [
        "server_busy", "server_busy", "busy"]
