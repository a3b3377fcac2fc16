"""One bot, many servers: what a server's admins change stays in that server (issue 11).

Everything goes through the real discord.py client and the Discord double, which here
knows three guilds, DMs, the application's owner, and guilds removing the bot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import discord
import pytest
from discord.ext import commands

from bot.config import Config
from bot.runner import CharLMBot
from bot.scope import Scope
from bot.server_data import Member
from charlm.storage import read_card
from tests.discord_double import (
    ChannelSpec, DiscordDouble, GuildSpec, InteractionHandle, LogGuard, NotOffered, UserSpec, World, running_bot,
    running_double,
)
from tests.test_finetune import has, jobs, rhymes, said, serving_rows, tree, write_config

A, B, C = 910000000000000001, 910000000000000002, 910000000000000003
CHANNEL = {A: 920000000000000001, B: 920000000000000002, C: 920000000000000003}
ALICE, BOB, CAROL = 930000000000000001, 930000000000000002, 930000000000000003
OWNER = 900000000000000003
Scenario = Callable[[DiscordDouble, CharLMBot], Awaitable[None]]


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def world() -> World:
    """Three servers; alice runs A and C, carol runs B (Manage Server), bob is a member."""
    guilds = [GuildSpec(g, f"Guild {n}", (ChannelSpec(CHANNEL[g]),)) for n, g in zip("ABC", (A, B, C))]
    users = [UserSpec(ALICE, "alice", manage_guild=True), UserSpec(BOB, "bob"),
             UserSpec(CAROL, "carol", manage_guild=True)]
    return World(guilds=guilds, users=users)


def run(config: Config, scenario: Scenario, the_world: World | None = None) -> None:
    async def main() -> None:
        async with running_double(world=the_world or world()) as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60) as bot:
                await double.wait_commands(["alice", "finetune", "models", "generate"])
                await scenario(double, bot)
            double.assert_no_violations()

    asyncio.run(main())


async def ask(double: DiscordDouble, command: str, options: dict | None = None, *, user: str = "bob",
              guild: int | None = A, timeout: float = 30, **kwargs) -> str:
    """What the user was finally shown."""
    handle = await double.send_command(command, options or {}, user=user, guild_id=guild,
                                       channel_id=CHANNEL.get(guild), dm=guild is None, **kwargs)
    await handle.wait_final(timeout=timeout)
    return said(handle)


async def footer(double: DiscordDouble, model: str, guild: int | None, **options) -> str:
    """The `-# seuss v1 · ...` footer of a reply: which version answered."""
    command, extra = (model, {}) if model in ("alice", "seuss") else ("generate", {"model": model})
    text = await ask(double, command, {"text": "the cat", "length": 30, "temperature": 0, **extra, **options},
                     guild=guild)
    return text.rsplit("\n-# ", 1)[-1].split(" · ")[0]


async def start(double: DiscordDouble, guild: int, corpus: bytes, user: str = "alice", filename: str = "rhymes.txt",
                **options) -> InteractionHandle:
    attachment = double.add_attachment(filename, corpus, channel_id=CHANNEL[guild])
    handle = await double.send_command("finetune start", {"corpus": attachment, "base": "alice", **options},
                                       user=user, guild_id=guild, channel_id=CHANNEL[guild])
    assert await handle.acknowledged() == 5
    return handle


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll the bot's own state (which the double's notifier does not see change)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def add_version(config: Config, model: Path, guild: int, name: str, number: int) -> Path:
    """A version folder as a job leaves it (copied from the tiny model), not yet registered."""
    folder = config.bot.data_dir / "models" / str(guild) / name / f"v{number}"
    shutil.copytree(model, folder)
    return folder


def test_a_servers_fine_tune_stays_there_until_an_owner_publishes_it(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model, concurrent_jobs=2)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        assert await footer(double, "seuss", A) == "seuss v0"  # the shipped model is v0, as /models says
        job_a = await start(double, A, rhymes(9_000), base="seuss", force=True, filename="a-secret.txt")
        job_b = await start(double, B, rhymes(9_000), user="carol", name="pirate", force=True)
        await job_a.wait_until(has("Fine-tune #"), timeout=30)
        await job_b.wait_until(has("Fine-tune #"), timeout=30)  # queued (its upload checked)
        # B's admin sees nothing of A's job, and cannot cancel it
        status = await ask(double, "finetune status", user="carol", guild=B)
        assert "a-secret" not in status and f"<@{ALICE}>" not in status and "seuss" not in status
        assert "pirate" in status  # B's own job, running beside A's (concurrent_jobs = 2)
        assert await ask(double, "finetune cancel", user="carol", guild=C) == \
            "This server has no fine-tune job running or queued."  # and A's job goes on
        final_a = await job_a.wait_final(has("now serving"), timeout=120)
        assert "✅ now serving **seuss v1** in this server" in final_a.content
        await job_b.wait_final(has("now serving"), timeout=120)

        # A's fine-tune changes A's /seuss, not B's; the label is the one /models lists
        assert await footer(double, "seuss", A) == "seuss v1"
        assert await footer(double, "seuss", B) == "seuss v0"
        assert await footer(double, "seuss", None) == "seuss v0"  # a DM gets what every server gets
        listing_b = await ask(double, "models", guild=B)
        assert "**seuss** (serving v0)" in listing_b and "v1" not in listing_b.split("**pirate**")[0]
        assert "**pirate** (serving v1)" in listing_b
        assert "pirate" not in await ask(double, "models", guild=A)  # B's new model is B's alone
        assert "There is no model called 'pirate' here" in await ask(double, "generate", {"model": "pirate"})
        choices = await double.send_autocomplete("generate", {"model": ""}, focused="model", user="bob", guild_id=A)
        await choices.acknowledged()
        assert choices.choices == []
        assert await footer(double, "pirate", B) == "pirate v1"

        # B's admin can neither serve A's version in B nor change what every server gets
        refused = await ask(double, "models", {"model": "seuss", "serve": "v1"}, user="carol", guild=B)
        assert refused == "seuss has no version 'v1' here (it has v0)."
        refused = await ask(double, "models", {"model": "seuss", "serve": "v1", "everyone": True},
                            user="carol", guild=B)
        assert refused.startswith("Only the bot's owners can change what every server gets")
        assert (await ask(double, "models", {"model": "seuss", "serve": "v0"}, guild=B)).startswith(
            "Only this server's admins")

        # the application's owner (GET /oauth2/applications/@me) publishes A's version for everyone
        everything = await ask(double, "models", {"model": "seuss", "everyone": True}, user="owner", guild=B)
        assert f"v1: from tiny, server {A}" in everything
        published = await ask(double, "models", {"model": "seuss", "serve": "v1", "everyone": True},
                              user="owner", guild=B)
        assert published.startswith("Now serving **seuss v1** as every server's default")
        assert await footer(double, "seuss", B) == "seuss v1"
        assert await footer(double, "seuss", C) == "seuss v1"
        assert await footer(double, "seuss", None) == "seuss v1"
        assert "v1: from tiny, published by the bot's owners" in await ask(double, "models", guild=B)
        # ... and rolls it back; A keeps its own choice
        await ask(double, "models", {"model": "seuss", "serve": "v0", "everyone": True}, user="owner", guild=C)
        assert await footer(double, "seuss", B) == "seuss v0"
        assert await footer(double, "seuss", A) == "seuss v1"

    run(config, scenario)
    assert serving_rows(config) == [(0, "seuss", None), (A, "seuss", "v1"), (B, "pirate", "v1")]
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        labels = db.execute("SELECT guild_id, model, model_version FROM requests ORDER BY id").fetchall()
    db.close()
    assert labels[:2] == [(A, "seuss", "v0"), (A, "seuss", "v1")] and (None, "seuss", "v0") in labels


def test_the_queue_positions_cancel_and_a_restart(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model, max_epochs=50, max_upload_mb=1.0)

    async def first_run(double: DiscordDouble, bot: CharLMBot) -> None:
        long_a = await start(double, A, rhymes(200_000), epochs=50, filename="a-secret.txt")
        await long_a.wait_until(has("step "), timeout=60)
        long_b = await start(double, B, rhymes(200_000), user="carol", epochs=50)
        await long_b.wait_until(has("queued, number 1 in line"), timeout=20)
        short_c = await start(double, C, rhymes(9_000))
        await short_c.wait_until(has("queued, number 2 in line"), timeout=20)
        again = await double.send_command("finetune start", {
            "corpus": double.add_attachment("more.txt", rhymes(9_000)), "base": "alice"}, user="alice", guild_id=A)
        await again.wait_final(timeout=20)
        assert said(again).startswith("This server already has a fine-tune job") and again.ephemeral
        assert "a-secret.txt" in said(again)  # A's own job, shown to A's admin

        status_b = await ask(double, "finetune status", user="carol", guild=B)
        assert "queued, number 1 in line" in status_b and "a-secret" not in status_b
        assert (await ask(double, "finetune cancel", guild=C, user="alice")).startswith("**Fine-tune #3")
        await short_c.wait_until(has("cancelled before it started"), timeout=10)
        # A's job ends: B's starts, and its message says so
        await ask(double, "finetune cancel", guild=A, user="alice", timeout=20)
        await long_b.wait_until(has("step "), timeout=60)
        # v2: the database gave v1 to A's cancelled job, and a number is never given twice
        assert "**Fine-tune #2: alice v0 → alice v2 on `rhymes.txt`**" in long_b.original.content
        queued_a = await start(double, A, rhymes(9_000), name="pirate", force=True)
        await queued_a.wait_until(has("queued, number 1 in line"), timeout=20)
        # the bot stops: B's job is interrupted, A's stays queued

    async def after_restart(double: DiscordDouble, bot: CharLMBot) -> None:
        sent = "POST /channels/{channel_id}/messages"
        await double.notifier.wait_for(lambda: any("now serving **pirate v1**" in m.content
                                                   for m in double.rest.messages.values() if m.kind == "channel"), 120)
        [message] = [m for m in double.rest.messages.values() if m.kind == "channel"]
        assert message.channel_id == CHANNEL[A] and message.content.startswith("**Fine-tune #4: alice v0 → pirate v1")
        assert len([c for c in double.calls(sent)]) == 1
        assert "interrupted" in await ask(double, "finetune status", user="carol", guild=B)
        assert await footer(double, "pirate", A) == "pirate v1"

    run(config, first_run)
    assert [(r["guild_id"], r["state"]) for r in jobs(config)] == [
        (A, "cancelled"), (B, "interrupted"), (C, "cancelled"), (A, "queued")]
    assert tree(config.bot.data_dir / "finetune-uploads") == ["4", "4/rhymes.txt"]
    run(config, after_restart)
    assert [r["state"] for r in jobs(config)] == ["cancelled", "interrupted", "cancelled", "succeeded"]
    assert tree(config.bot.data_dir / "finetune-uploads") == []


def test_quotas_per_server_and_each_server_its_own_pirate(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model, max_models=1, keep_versions=1)
    models = config.bot.data_dir / "models"

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        first = await start(double, A, rhymes(9_000), name="pirate", force=True)
        await first.wait_final(has("now serving **pirate v1**"), timeout=120)
        refused = await double.send_command("finetune start", {
            "corpus": double.add_attachment("p.txt", rhymes(9_000)), "base": "alice", "name": "parrot"},
            user="alice", guild_id=A)
        await refused.wait_final()
        assert said(refused) == ("This server already has 1 model, the most this bot allows ([finetune] "
                                 "max_models); make a new version of one of them instead.")
        second = await start(double, A, rhymes(9_000), name="pirate", force=True)
        await second.wait_final(has("now serving **pirate v2**"), timeout=120)
        assert tree(models / str(A) / "pirate") == ["v2", "v2/card.json", "v2/model.keras", "v2/vocab.json"]
        # B has its own pirate; the numbers go on (they are unique per name), A's stays A's
        other = await start(double, B, rhymes(9_000), user="carol", name="pirate", force=True)
        await other.wait_final(has("now serving **pirate v3**"), timeout=120)
        assert await footer(double, "pirate", A) == "pirate v2"
        assert await footer(double, "pirate", B) == "pirate v3"
        listing = await ask(double, "models", {"model": "pirate"}, guild=B)
        assert "v3" in listing and "v2" not in listing and "v1" not in listing

    run(config, scenario)


def test_direct_messages(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        reply = await double.send_command("alice", {"text": "the queen", "length": 40}, user="bob", dm=True)
        final = await reply.wait_final(timeout=30)
        assert not final.ephemeral and final.content.startswith("**the queen**") and final.guild_id is None
        assert "-# alice v0" in final.content
        assert (await ask(double, "seuss", {"text": "hat", "length": 20}, guild=None)).startswith("**hat**")
        history = await ask(double, "history", guild=None)
        assert history.startswith("Your last 2 requests:")
        assert await ask(double, "history", {"scope": "server"}, guild=None) == \
            "Server history only exists inside a server."
        assert await ask(double, "models", {"model": "alice", "serve": "v0"}, guild=None, user="alice") == \
            "Switching models is done inside a server; in a DM only the bot's owners can, with `everyone:true`."
        assert "**alice** (serving v0)" in await ask(double, "models", guild=None)
        for command in ("finetune start", "finetune status", "finetune cancel"):
            with pytest.raises(NotOffered):  # guild-only: Discord does not show them in DMs
                await double.send_command(command, {}, user="alice", dm=True)
        forget = await double.send_command("forget", user="bob", dm=True)
        asked = await forget.wait_final()
        assert "Delete all 2 of your stored requests" in asked.content
        done = await double.click(asked, "forget:confirm", user="bob")
        await done.wait_final()
        assert done.original.content == "Done: 2 requests deleted."

    run(config, scenario)


def test_guild_removal_purges_after_retention_unless_readded(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    models = config.bot.data_dir / "models"

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        registry, servers = bot.charlm.registry, bot.get_cog("ServersCog")
        for guild in (A, B):
            folder = add_version(config, tiny_model, guild, "seuss", 1 if guild == A else 2)
            version = await registry.add(guild, "seuss", 1 if guild == A else 2, folder, read_card(folder))
            await registry.serve(Scope.server(guild), version)
            await ask(double, "seuss", {"text": "hat", "length": 10}, guild=guild)
        removed = await double.remove_guild(B)
        await until(lambda: bot.get_guild(B) is None)
        await double.add_guild(removed)  # added back: nothing goes
        await until(lambda: bot.get_guild(B) is not None)
        await asyncio.sleep(0.2)
        await double.remove_guild(A)
        await until(lambda: bot.get_guild(A) is None)
        await asyncio.sleep(0.2)
        assert set(await servers.departures.all()) == {A}
        await servers.purge_departed()  # not yet: retention_days have not passed
        assert (models / str(A) / "seuss" / "v1").is_dir()
        await servers.departures.left(A, at=time.time() - 31 * 86400)
        await servers.purge_departed()
        assert not (models / str(A) / "seuss").exists() and (models / str(B) / "seuss" / "v2").is_dir()
        assert await servers.departures.all() == {}
        # an owner can purge a server at once; others cannot
        assert await ask(double, "purge-server", {"server": str(B)}, user="carol", guild=B) == \
            "Only the bot's owners can purge a server."
        purged = await ask(double, "purge-server", {"server": str(B)}, user="owner", guild=C)
        assert purged == f"Deleted server {B}'s data: 1 model versions, 1 requests, 0 server settings, 0 jobs."
        assert await footer(double, "seuss", B) == "seuss v0"

    run(config, scenario)
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        guilds = [g for (g,) in db.execute("SELECT guild_id FROM requests")]
    db.close()
    assert A not in guilds and guilds.count(B) == 1  # the footer request after the purge
    assert serving_rows(config) == []


def test_a_server_that_removed_the_bot_while_it_was_away_starts_its_retention(tmp_path: Path,
                                                                                tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)

    async def before(double: DiscordDouble, bot: CharLMBot) -> None:
        await ask(double, "seuss", {"text": "hat", "length": 10}, guild=C)

    async def after(double: DiscordDouble, bot: CharLMBot) -> None:
        await departed(bot, {C})

    run(config, before)
    away = world()
    away.guilds = [g for g in away.guilds if g.id != C]  # removed while the bot was stopped
    run(config, after, away)
    run(config, lambda double, bot: departed(bot, set()))  # added back before retention_days: nothing goes


class OnlyTheCog(commands.Bot):
    """A discord.py bot of its own that loads `bot.cog` and nothing else (no fine-tuning)."""

    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1)

    async def setup_hook(self) -> None:
        await self.load_extension("bot.cog")
        await self.tree.sync()


def guild_rows(config: Config) -> dict[str, list[int]]:
    """The server of each requests and server_settings row."""
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        found = {table: sorted(g for (g,) in db.execute(f"SELECT guild_id FROM {table}"))
                 for table in ("requests", "server_settings")}
    db.close()
    return found


class FailsOnce:
    """A store whose first purge of a server fails (the fault, injected between real stores)."""

    noun = "rows"

    def __init__(self, guild_id: int) -> None:
        self.failing = {guild_id}

    async def guild_ids(self) -> set[int]:
        return set()

    async def purge_server(self, guild_id: int) -> int:
        if guild_id in self.failing:
            self.failing.discard(guild_id)
            raise RuntimeError("the database went away")
        return 0


def test_a_bot_with_only_the_cog_forgets_departed_servers_and_retries_a_failed_purge(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, tiny_model)
    monkeypatch.setenv("CHARLM_CONFIG", str(config.path))

    async def main() -> None:
        async with running_double(world=world()) as double:
            async with running_bot(OnlyTheCog(), timeout=60) as bot:
                await double.wait_commands(["alice", "seuss", "generate", "settings", "purge-server"])
                assert bot.get_cog("FinetuneCog") is None
                for guild, admin in ((A, "alice"), (B, "carol"), (C, "alice")):
                    await ask(double, "seuss", {"text": "hat", "length": 10}, guild=guild)
                    assert (await ask(double, "settings", {"mentions": False}, user=admin, guild=guild)
                            ).startswith("Saved.")
                for guild in (A, B):
                    await double.remove_guild(guild)
                    await until(lambda: bot.get_guild(guild) is None)
                servers = bot.get_cog("ServersCog")
                await departed(bot, {A, B})
                fault = FailsOnce(A)
                bot.charlm.servers.members.insert(1, Member(fault))  # after the registry, before the history
                await servers.purge_departed()  # not yet: retention_days have not passed
                assert guild_rows(config)["requests"] == [A, B, C]
                for guild in (A, B):
                    await servers.departures.left(guild, at=time.time() - 31 * 86400)
                with caplog.at_level(logging.ERROR, logger="bot.cog.servers"):
                    await servers.purge_departed()
                assert f"purging guild {A} failed; the next pass tries again" in caplog.text
                # A's purge stopped at the fault and A stays departed; B, in the same pass, is gone
                assert guild_rows(config) == {"requests": [A, C], "server_settings": [A, C]}
                assert set(await servers.departures.all()) == {A}
                await servers.purge_departed()  # the next pass
                assert guild_rows(config) == {"requests": [C], "server_settings": [C]}
                assert await servers.departures.all() == {}
            double.assert_no_violations()

    asyncio.run(main())


async def departed(bot: CharLMBot, expected: set[int], timeout: float = 10.0) -> None:
    """Wait for the cog's on_ready (a task of its own, after the bot is ready) to settle."""
    deadline = time.monotonic() + timeout
    departures = bot.get_cog("ServersCog").departures
    while set(await departures.all()) != expected:
        assert time.monotonic() < deadline, await departures.all()
        await asyncio.sleep(0.05)


def test_versions_load_on_demand_and_the_least_recently_used_is_unloaded(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    config = dataclasses.replace(config, engine=dataclasses.replace(config.engine, max_loaded=1))

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        registry = bot.charlm.registry
        for guild, number in ((A, 1), (B, 2)):
            folder = add_version(config, tiny_model, guild, "seuss", number)
            version = await registry.add(guild, "seuss", number, folder, read_card(folder))
            await registry.serve(Scope.server(guild), version)
        fine_tuned = lambda: sorted(k for k in bot.charlm.engine.models() if "@" in k)  # noqa: E731
        assert fine_tuned() == []  # nothing loaded until asked for
        assert await footer(double, "seuss", A) == "seuss v1"
        assert fine_tuned() == ["seuss@v1"]
        assert await footer(double, "seuss", B) == "seuss v2"
        assert fine_tuned() == ["seuss@v2"]  # max_loaded = 1: v1 went
        assert await footer(double, "seuss", A) == "seuss v1"  # loaded again, answered normally
        assert fine_tuned() == ["seuss@v1"] and sorted(bot.charlm.engine.models())[:2] == ["alice", "seuss"]

    run(config, scenario)


def test_a_data_folder_from_the_older_bot_migrates_on_first_start(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    data = config.bot.data_dir
    shutil.copytree(Path(__file__).parent / "fixtures" / "legacy_data", data)
    before = {str(p.relative_to(data)): p.read_bytes() for p in data.rglob("*") if p.is_file()}

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        # guild A made seuss v1 (served): A keeps it; B made the new model rhymes
        assert await footer(double, "seuss", A) == "seuss v1"
        assert await footer(double, "seuss", B) == "seuss v0"
        assert await footer(double, "rhymes", B) == "rhymes v1"
        assert "There is no model called 'rhymes' here" in await ask(double, "generate", {"model": "rhymes"})
        status_a = await ask(double, "finetune status", user="alice", guild=A)
        assert "**Fine-tune #1: seuss v0 → seuss v1 on `seussish.txt`**" in status_a
        status_b = await ask(double, "finetune status", user="carol", guild=B)
        assert "Fine-tune #2: alice v0 → rhymes v1" in status_b and "seussish" not in status_b
        assert "▶ v1: from base, trained on `seussish.txt`" in await ask(double, "models", {"model": "seuss"})
        registry = bot.charlm.registry
        assert await registry.registered("seuss", 1) and not await registry.registered("seuss", 2)
        history = await ask(double, "history", user="bob", guild=A)
        assert history.startswith("Your last 6 requests:")  # 3 from before, 3 just now

    run(config, scenario)
    run(config, scenario_restart)
    after = {str(p.relative_to(data)): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    for name, content in before.items():  # the older files are all still there, the models unchanged
        assert name in after and (name.endswith("sqlite3") or after[name] == content), name
    assert serving_rows(config) == [(A, "seuss", "v1"), (B, "rhymes", "v1")]
    assert [(r["guild_id"], r["target"], r["state"]) for r in jobs(config)] == [
        (A, "seuss", "succeeded"), (B, "rhymes", "succeeded")]


async def scenario_restart(double: DiscordDouble, bot: CharLMBot) -> None:
    """A second start imports nothing twice."""
    assert await footer(double, "seuss", A) == "seuss v1"
    assert len(await bot.get_cog("FinetuneCog").store.latest(A, 10)) == 1


def test_owners_are_the_applications_team_or_the_configs_user_ids(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, user_ids=(BOB,)))
    team_world = world()
    team_world.team = (UserSpec(900000000000000009, "dev"),)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        for user in ("dev", "bob"):  # a team member (GET /oauth2/applications/@me), a user id in [admin]
            shown = await ask(double, "models", {"model": "seuss", "everyone": True}, user=user, guild=B)
            assert shown.startswith("**seuss** (every server's default: v0)"), shown
        refused = await ask(double, "models", {"model": "seuss", "everyone": True}, user="carol", guild=B)
        assert refused.startswith("Only the bot's owners")
        assert (await ask(double, "models", {"model": "seuss", "serve": "v0", "everyone": True}, user="dev",
                          guild=None)).startswith("Now serving **seuss v0** as every server's default")

    run(config, scenario, team_world)


def test_storybook_answers_generate_in_every_server_and_in_dms(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    config = dataclasses.replace(config, models=dataclasses.replace(config.models, storybook=str(tiny_model)))

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        for guild in (A, B, None):
            assert await footer(double, "storybook", guild) == "storybook v0"
        choices = await double.send_autocomplete("generate", {"model": "st"}, focused="model", user="bob", guild_id=B)
        await choices.acknowledged()
        assert [c["value"] for c in choices.choices] == ["storybook"]
        assert await ask(double, "generate", {"model": "alice", "text": "x"}) == "Use /alice for that model."

    run(config, scenario)
