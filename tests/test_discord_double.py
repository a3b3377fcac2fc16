"""The Discord double against the real discord.py client and a tiny bot defined here."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.discord_double import DiscordDouble, LogGuard, running_bot, running_double
from tests.discord_double.driver import call, send_command

GUILD_ID = 910000000000000001
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MODELS = ["alice", "seuss", "alice-finetuned"]
Scenario = Callable[[DiscordDouble, commands.Bot], Awaitable[None]]


class Confirm(discord.ui.View):
    """Confirm button like /forget's."""

    @discord.ui.button(label="Confirm", custom_id="confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="forgotten", view=None)


def make_bot() -> commands.Bot:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1)

    @bot.tree.command(description="answers at once")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong", ephemeral=True)

    @bot.tree.command(description="defers, edits, then follows up with a file")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        for step in range(3):
            await interaction.edit_original_response(content=f"step {step}")
        await interaction.followup.send("plot", file=discord.File(io.BytesIO(PNG), "plot.png"))

    @bot.tree.command(description="asks for confirmation")
    async def forget(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("sure?", view=Confirm(), ephemeral=True)

    @bot.tree.command(description="autocompletes a model")
    async def generate(interaction: discord.Interaction, model: str) -> None:
        await interaction.response.send_message(f"using {model}")

    @generate.autocomplete("model")
    async def model_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]

    @bot.tree.command(description="acks too late")
    async def late(interaction: discord.Interaction) -> None:
        await asyncio.sleep(3.5)
        await interaction.response.send_message("too late")

    @bot.tree.command(description="too long")
    async def long(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("x" * 2001)

    @bot.tree.command(description="raises")
    async def boom(interaction: discord.Interaction) -> None:
        raise RuntimeError("boom")

    finetune = app_commands.Group(name="finetune", description="fine-tuning", guild_ids=[GUILD_ID])

    @finetune.command(name="start", description="start a job")
    @app_commands.default_permissions(manage_guild=True)
    async def start(interaction: discord.Interaction, corpus: discord.Attachment, epochs: int = 1) -> None:
        data = await corpus.read()
        manager = interaction.permissions.manage_guild
        await interaction.response.send_message(
            f"{corpus.filename} declared={corpus.size} actual={len(data)} epochs={epochs} manager={manager}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    bot.tree.add_command(finetune)

    async def setup_hook() -> None:
        await bot.tree.sync()
        await bot.tree.sync(guild=discord.Object(GUILD_ID))

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


def run(scenario: Scenario, **double_kwargs: object) -> None:
    """Double + bot in a fresh event loop for one scenario."""

    async def main() -> None:
        async with running_double(**double_kwargs) as double:
            async with running_bot(make_bot()) as bot:
                await scenario(double, bot)

    asyncio.run(main())


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def test_connect_sync_and_basic_answers() -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        assert bot.get_guild(GUILD_ID) is not None
        assert bot.get_guild(GUILD_ID).get_channel(920000000000000001) is not None
        assert {"ping", "slow", "forget", "generate"} <= set(double.commands())
        assert "finetune" in double.commands(GUILD_ID)
        assert double.calls("PUT /applications/{app}/commands")
        assert double.gateway.connections[0].query["compress"] == "zlib-stream"

        ping = await double.send_command("ping")
        assert await ping.acknowledged() == 4
        reply = await ping.wait_final()
        assert reply is not None and reply.content == "pong" and reply.ephemeral
        assert ping.ack_latency is not None and ping.ack_latency < 3

        slow = await double.send_command("slow", user="bob")
        assert await slow.acknowledged() == 5
        await slow.wait_final(lambda h: len(h.followups) == 1)
        assert slow.contents == ["step 0", "step 1", "step 2"]
        assert not slow.ephemeral
        assert slow.followups[0].content == "plot"
        attachment = slow.followups[0].attachments[0]
        assert attachment.filename == "plot.png" and attachment.data == PNG
        assert slow.final_latency is not None and slow.final_latency >= slow.ack_latency
        double.assert_no_violations()

    run(scenario)


def test_subcommand_attachment_component_and_autocomplete() -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        corpus = double.add_attachment("corpus.txt", b"hello world", declared_size=5_000_000)
        handle = await double.send_command("finetune start", {"corpus": corpus, "epochs": 3}, user="alice")
        reply = await handle.wait_final()
        assert reply is not None
        assert reply.content == "corpus.txt declared=5000000 actual=11 epochs=3 manager=True"
        assert reply.allowed_mentions == {"parse": []}
        options = handle.payload["data"]["options"]
        assert options[0]["type"] == 1 and options[0]["name"] == "start"
        assert handle.payload["data"]["resolved"]["attachments"][str(corpus.id)]["size"] == 5_000_000

        as_bob = await double.send_command("finetune start", {"corpus": corpus}, user="bob")
        assert (await as_bob.wait_final()).content.endswith("manager=False")

        forget = await double.send_command("forget")
        prompt = await forget.wait_final()
        assert prompt is not None and prompt.custom_ids() == ["confirm"] and prompt.ephemeral
        click = await double.click(prompt, "confirm")
        assert await click.acknowledged() == 7
        assert prompt.contents == ["sure?", "forgotten"] and prompt.components == []

        complete = await double.send_autocomplete("generate", {"model": "ali"}, focused="model")
        assert await complete.acknowledged() == 8
        assert [c["value"] for c in complete.choices or []] == ["alice", "alice-finetuned"]
        double.assert_no_violations()

    run(scenario)


def test_rate_limited_edit_is_retried(guard: LogGuard) -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        rule = double.rate_limit("PATCH /webhooks/{app}/{token}/messages/@original", count=1, retry_after=0.2)
        slow = await double.send_command("slow")
        await slow.wait_final(lambda h: len(h.followups) == 1)
        assert rule.hits == 1
        assert slow.contents == ["step 0", "step 1", "step 2"]
        statuses = [r.status for r in double.calls("PATCH /webhooks/{app}/{token}/messages/@original")]
        assert statuses == [429, 200, 200, 200]
        double.assert_no_violations()

    run(scenario)


def test_forced_reconnects_resume() -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        first = await double.force_reconnect("op7")
        assert first.path == "/resume/"
        second = await double.force_reconnect("close")
        assert second.session_id == first.session_id
        assert double.gateway.identifies == 1 and double.gateway.heartbeats >= 3
        ping = await double.send_command("ping")
        assert (await ping.wait_final()).content == "pong"
        double.assert_no_violations()

    run(scenario, heartbeat_interval_ms=500)


def test_rule_violations_are_detected(guard: LogGuard) -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        long = await double.send_command("long")
        await long.wait_until(lambda h: bool(h.violations))
        assert long.violations[0].kind == "invalid_body" and "50035" in long.violations[0].detail
        assert not long.acked
        assert double.calls("POST /interactions/{id}/{token}/callback")[-1].status == 400

        ping = await double.send_command("ping")
        await ping.acknowledged()
        url = f"{double.rest_base}/interactions/{ping.id}/{ping.token}/callback?with_response=1"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as response:
                assert response.status == 400 and (await response.json())["code"] == 40060
        assert [v.kind for v in ping.violations] == ["double_ack"]

        late = await double.send_command("late")
        await late.wait_until(lambda h: bool(h.violations), timeout=6)
        assert [v.kind for v in late.violations] == ["late_ack"]
        assert double.calls("POST /interactions/{id}/{token}/callback")[-1].status == 404
        await asyncio.sleep(0.2)  # let discord.py log the NotFound

    run(scenario)
    errors = guard.take(lambda r: r.name.startswith("discord.app_commands"))
    assert len(errors) == 2


def test_log_guard_catches_command_errors(guard: LogGuard) -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        handle = await double.send_command("boom")
        await asyncio.sleep(0.3)
        assert not handle.acked

    run(scenario)
    (record,) = guard.take()
    assert "boom" in record.getMessage()
    with pytest.raises(AssertionError, match="ERROR log records"):
        guard.records.append(record)
        guard.check()
    guard.take()


def test_unknown_routes_are_recorded() -> None:
    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        with pytest.raises(discord.NotFound):
            await bot.http.request(discord.http.Route("GET", "/nonexistent/{x}", x=1))
        assert [f"{r.method} {r.path}" for r in double.unknown_requests] == ["GET /nonexistent/1"]

    run(scenario)


def test_cli_mode_serves_urls() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.discord_double", "--guild-id", "42", "--user", "7:carol:manage"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))  # type: ignore[union-attr]
        assert lines["GATEWAY_URL"].startswith("ws://127.0.0.1:")
        base = lines["CONTROL_URL"].removesuffix("/_control")
        with urllib.request.urlopen(lines["REST_BASE"] + "/users/@me") as response:
            assert response.headers["Content-Type"] == "application/json"
            assert json.loads(response.read())["bot"] is True
        assert call(base, "state")["ready"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_control_command_drives_an_out_of_loop_bot() -> None:
    """The control endpoint answers with the final reply, as a Docker driver would see it."""

    async def scenario(double: DiscordDouble, bot: commands.Bot) -> None:
        reply = await asyncio.to_thread(send_command, double.base_url, "ping", settle=0.1)
        assert reply["final"]["content"] == "pong" and reply["ephemeral"] is True
        assert reply["ack_type"] == 4 and reply["violations"] == []

    run(scenario)


def test_bodies_are_checked_against_discords_openapi_spec() -> None:
    from tests.discord_double.spec import checker

    spec = checker()
    if spec is None:
        pytest.skip("the Discord OpenAPI spec (../shared/discord-api-spec) or jsonschema is not here")
    reply = {"content": "x", "message_reference": {"message_id": "1"}, "allowed_mentions": {"parse": []},
             "components": [{"type": 1, "components": [{"type": 2, "style": 2, "label": "Reroll",
                                                        "custom_id": "charlm:reroll:1"}]}]}
    assert spec.errors("POST", "/channels/1/messages", reply) == []
    assert spec.errors("POST", "/interactions/1/tok/callback", {"type": 6}) == []
    assert spec.errors("POST", "/channels/1/messages", {"content": 5})  # content must be a string
    assert spec.errors("POST", "/interactions/1/tok/callback", {"type": 77})  # no such callback
