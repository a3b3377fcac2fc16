"""/finetune, /models and /generate through the Discord double, with real training processes.

The base is conftest's tiny model; each job fine-tunes it for an epoch or two on a
small generated text, so a whole job (process start, TensorFlow import, training,
evaluation, save) takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.db.engine import head
from bot.runner import CharLMBot
from bot.scope import Scope
from charlm.train_config import FINETUNE
from tests.discord_double import DiscordDouble, LogGuard, InteractionHandle, running_bot, running_double

REPLY_EDIT = "PATCH /webhooks/{app}/{token}/messages/@original"
Scenario = Callable[[DiscordDouble, CharLMBot], Awaitable[None]]

# Short sentences on a loop: a style the base has not seen and learns within an epoch.
RHYMES = ("the cat said she was very curious.\n", "the hatter said the queen was little.\n",
          "a rabbit, a door, a key, the garden said tea.\n", "she was a duchess, said the king.\n")


def rhymes(chars: int) -> bytes:
    text = "".join(RHYMES[i % len(RHYMES)] for i in range(chars // 30 + 1))
    return text[:chars].encode()


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def write_config(folder: Path, base: Path, **finetune: object) -> Config:
    settings = {"min_chars": 5000, "default_epochs": 1, "batch_size": 16, "learning_rate": 0.003,
                "progress_interval": 0.5, "max_upload_mb": 0.1, "cancel_grace": 3, **finetune}
    lines = [f'[bot]\ndata_dir = "{folder / "data"}"', f'[models]\nalice = "{base}"\nseuss = "{base}"',
             f'[history]\ndatabase = "{folder / "data" / "history.sqlite3"}"', "[limits]\ncooldown_uses = 0",
             "[finetune]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return load_config(path)


def run(config: Config, scenario: Scenario) -> None:
    async def main() -> None:
        async with running_double() as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60) as bot:
                await double.wait_commands(["alice", "finetune", "models", "generate"])
                await scenario(double, bot)
            double.assert_no_violations()

    asyncio.run(main())


GUILD = 910000000000000001


def jobs(config: Config) -> list[sqlite3.Row]:
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head()
    db.close()
    return rows


def serving_rows(config: Config) -> list[tuple]:
    """(scope, name, version label or None for the shipped v0) of every serving choice."""
    with sqlite3.connect(config.bot.data_dir / "charbot.sqlite3") as db:
        rows = db.execute("SELECT s.scope, s.name, v.number FROM serving s LEFT JOIN versions v "
                          "ON v.id = s.version_id ORDER BY s.scope, s.name").fetchall()
    db.close()
    return [(scope, name, None if n is None else f"v{n}") for scope, name, n in rows]


async def served_path(bot: CharLMBot, name: str, guild_id: int | None = GUILD) -> str:
    """The folder the engine answers `name` from in a server."""
    serving = await bot.charlm.serving(Scope.of(guild_id, 1), name)
    return bot.charlm.engine.models()[serving.key].path


def tree(folder: Path) -> list[str]:
    """Every path under a folder, hidden ones included (to catch half-written models)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def said(handle: InteractionHandle) -> str:
    """What the user was finally shown: the last follow-up, else the original response."""
    return handle.followups[-1].content if handle.followups else handle.original.content


def has(text: str) -> Callable[[InteractionHandle], bool]:
    return lambda h: any(text in c for m in h.messages for c in m.contents)


async def start_job(double: DiscordDouble, corpus: bytes, **options: object) -> InteractionHandle:
    attachment = double.add_attachment("rhymes.txt", corpus)
    handle = await double.send_command("finetune start", {"corpus": attachment, "base": "alice", **options},
                                       user="alice")
    assert await handle.acknowledged() == 5  # deferred at once: the upload is checked after
    return handle


async def training_pid(bot: CharLMBot, timeout: float = 60) -> int:
    """The pid of the training process of this process's trainer (once it started)."""
    trainer = bot.get_cog("FinetuneCog").trainer
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = [h for h in trainer.held.values() if h.process is not None]
        if held:
            return held[0].process.pid
        assert asyncio.get_running_loop().time() < deadline, "no training process started"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_admin_fine_tunes_a_new_model_that_generate_serves(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    models = config.bot.data_dir / "models"

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        job = await start_job(double, rhymes(30_000), name="Rhymes", epochs=2)
        final = await job.wait_final(has("now serving"), timeout=90)
        assert not final.ephemeral
        text = final.content
        assert text.startswith("**Fine-tune #1: alice v0 → rhymes v1 on `rhymes.txt`**")
        assert "30,000 chars in" in text and "2 epochs · batch 16" in text
        assert "held-out bits per character on the new text: **" in text and " new, " in text
        assert any("epoch 1/2" in c and "left" in c for c in final.contents)  # live progress bar
        assert any("val " in c and "epoch 2/2" in c for c in final.contents)
        [plot] = final.attachments
        assert plot.filename == "finetune-1-loss.png" and plot.data.startswith(b"\x89PNG")
        edits = [c.at for c in double.calls(REPLY_EDIT) if c.path.endswith(job.token + "/messages/@original")]
        assert all(b - a >= 0.45 for a, b in zip(edits, edits[1:-1]))  # throttled, except the final edit

        choices = await double.send_autocomplete("generate", {"model": "rh"}, focused="model", user="bob")
        await choices.acknowledged()
        assert choices.choices == [{"name": "rhymes", "value": "rhymes"}]
        reply = await double.send_command("generate", {"model": "rhymes", "text": "the cat", "temperature": 0},
                                          user="bob")
        final = await reply.wait_final(timeout=30)
        assert not final.ephemeral and final.content.startswith("**the cat**") and "rhymes" in final.content

        listing = await double.send_command("models", user="bob")
        shown = said(await listing.wait_final() and listing)
        assert "**rhymes** (serving v1)" in shown and "▶ v1: from tiny, trained on `rhymes.txt`" in shown

    async def after_restart(double: DiscordDouble, bot: CharLMBot) -> None:
        assert await served_path(bot, "rhymes") == str(models / str(GUILD) / "rhymes" / "v1")
        reply = await double.send_command("generate", {"model": "rhymes", "text": "the cat"}, user="bob")
        assert (await reply.wait_final(timeout=30)).content.startswith("**the cat**")

    run(config, scenario)
    run(config, after_restart)
    g = str(GUILD)
    assert tree(models) == [g, f"{g}/rhymes", f"{g}/rhymes/v1", f"{g}/rhymes/v1/card.json",
                            f"{g}/rhymes/v1/model.keras", f"{g}/rhymes/v1/vocab.json"]
    assert serving_rows(config) == [(GUILD, "rhymes", "v1")]
    [row] = jobs(config)
    assert (row["state"], row["served"], row["user_id"], row["target"], row["corpus_name"]) == (
        "succeeded", 1, 930000000000000001, "rhymes", "rhymes.txt")
    assert row["heldout_bpc"] < row["base_heldout_bpc"] and json.loads(row["settings"])["epochs"] == 2
    # the job trained as asked and configured, and otherwise at charlm finetune's defaults
    trained = json.loads((models / g / "rhymes" / "v1" / "card.json").read_text())["training"]["config"]
    assert (trained["epochs"], trained["batch_size"], trained["learning_rate"]) == (2, 16, 0.003)
    assert (trained["schedule"], trained["average_last"], trained["patience"]) == (
        FINETUNE.schedule, FINETUNE.average_last, FINETUNE.patience)
    assert not (config.bot.data_dir / "finetune-uploads").exists() or not tree(config.bot.data_dir / "finetune-uploads")


def test_non_admins_and_bad_uploads_are_refused_with_their_reason(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    cases = [  # (file bytes, declared size, what the admin is told)
        # a fine file that claims to be too big: refused on the claim alone, before downloading
        (rhymes(9_000), 200_000, "rhymes.txt is 0.2 MB; this bot accepts corpora of up to 0.1 MB"),
        (rhymes(200_000), 1_000, "rhymes.txt turned out to be 0.2 MB when downloaded"),
        (b"", None, "rhymes.txt is empty"),
        (b"\x00\x01binary\xff" * 500, None, "rhymes.txt looks binary"),
        ("caf\u00e9 au lait. ".encode("cp1252") * 500, None, "rhymes.txt is not UTF-8 text"),
        (rhymes(3_000), None, "rhymes.txt is too short: 3,001 usable characters after cleaning, at least 5,000"),
    ]

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        for command, options in [("finetune start", {"corpus": double.add_attachment("c.txt", rhymes(9000)),
                                                     "base": "alice"}),
                                 ("finetune status", {}), ("finetune cancel", {}),
                                 ("models", {"model": "alice", "serve": "v0"})]:
            refused = await double.send_command(command, options, user="bob")
            assert await refused.acknowledged() == 4
            assert refused.ephemeral and "Manage Server permission" in said(refused)
        for data, declared, message in cases:
            attachment = double.add_attachment("rhymes.txt", data, declared_size=declared)
            handle = await double.send_command("finetune start", {"corpus": attachment, "base": "alice"},
                                               user="alice")
            await handle.wait_final(lambda h: h.followups or (h.original and h.original.ephemeral), timeout=20)
            assert message in said(handle), said(handle)
            assert handle.messages[-1].ephemeral
        unknown = await double.send_command("finetune start", {"corpus": double.add_attachment("c.txt", rhymes(9000)),
                                                               "base": "tolkien"}, user="alice")
        await unknown.wait_final()
        assert "There is no model called 'tolkien' here; /generate's model option lists them." in said(unknown)

    run(config, scenario)
    assert jobs(config) == [] and tree(config.bot.data_dir / "models") == []


def test_second_job_gets_the_status_alice_keeps_answering_and_cancel_stops_it(tmp_path: Path,
                                                                             tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model, max_epochs=50, max_upload_mb=1.0)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        job = await start_job(double, rhymes(200_000), epochs=50)
        await job.wait_until(has("step "), timeout=60)  # training, not just starting
        pid = await training_pid(bot)

        second = await double.send_command("finetune start", {
            "corpus": double.add_attachment("more.txt", rhymes(9_000)), "base": "seuss", "name": "other"},
            user="alice")
        await second.wait_final(timeout=10)
        assert second.ephemeral
        assert "**Fine-tune #1: alice v0 → alice v1" in said(second) and "epoch 1/50" in said(second)
        status = await double.send_command("finetune status", user="alice")
        await status.wait_final()
        assert "step " in said(status) and status.ephemeral

        for _ in range(3):
            reply = await double.send_command("alice", {"text": "the queen", "length": 200}, user="bob")
            await reply.wait_final(timeout=30)
            assert len(reply.original.content) > 200
        assert alive(pid)

        cancel = await double.send_command("finetune cancel", user="alice")
        await cancel.wait_final(timeout=15)
        assert "cancelled; nothing was saved" in said(cancel)
        await job.wait_final(has("cancelled"), timeout=10)
        assert not alive(pid)
        nothing = await double.send_command("finetune cancel", user="alice")
        await nothing.wait_final()
        assert said(nothing) == "This server has no fine-tune job running or queued."

    run(config, scenario)
    assert [r["state"] for r in jobs(config)] == ["cancelled"]
    assert tree(config.bot.data_dir / "models") == []


def test_a_killed_training_process_fails_the_job_and_leaves_nothing(tmp_path: Path, tiny_model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, tiny_model, max_epochs=50, max_upload_mb=1.0)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        # as if the job outlived the reply's 15 minutes (patched in the module the bot loaded:
        # discord.py imports an extension's modules afresh for every bot)
        module = sys.modules[type(bot.get_cog("FinetuneCog")).__module__]
        monkeypatch.setattr(module, "TOKEN_LIFETIME", 0)
        job = await start_job(double, rhymes(200_000), epochs=50)
        sent = "POST /channels/{channel_id}/messages"
        await double.notifier.wait_for(lambda: any(c.status == 200 for c in double.calls(sent)), 60)
        [message] = [m for m in double.rest.messages.values() if m.kind == "channel"]
        # moved to the channel (where it may still say "queued" a moment)
        await double.notifier.wait_for(lambda: message.content.startswith("**Fine-tune #1: alice v0 → alice v1"), 30)
        await job.wait_until(has("**Fine-tune #1** continues in https://discord.com/channels/"), 10)
        await double.notifier.wait_for(lambda: "step " in message.content, 60)
        os.kill(await training_pid(bot), signal.SIGKILL)
        await double.notifier.wait_for(lambda: "failed" in message.content, 60)
        assert "❌ failed: the training process was killed by SIGKILL (out of memory, or killed from outside)" \
            in message.content
        assert len(double.calls(sent)) == 1  # one message, edited from then on
        answer = await double.send_command("alice", {"text": "the queen"}, user="bob")
        await answer.wait_final(timeout=30)
        assert await served_path(bot, "alice") == str(tiny_model)  # served model untouched
        monkeypatch.setattr(module, "TOKEN_LIFETIME", 14 * 60)
        retry = await start_job(double, rhymes(9_000))  # the slot is free again
        await retry.wait_until(has("Fine-tune #2"), timeout=20)
        await bot.get_cog("FinetuneCog").desk.cancel(GUILD)
        await retry.wait_final(has("cancelled"), timeout=15)

    run(config, scenario)
    assert [(r["state"], r["error"][:40]) for r in jobs(config)] == [
        ("failed", "the training process was killed by SIGKI"), ("cancelled", "")]
    assert tree(config.bot.data_dir / "models") == []


def test_a_worse_model_is_kept_but_not_served_until_an_admin_says_so(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model, learning_rate=8.0)  # diverges: worse than its base

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        job = await start_job(double, rhymes(20_000))
        final = await job.wait_final(has("no better than its base"), timeout=90)
        assert "alice v1 is no better than its base, so it is saved but not served" in final.content
        assert final.attachments[0].data.startswith(b"\x89PNG")

        async def alice_says() -> tuple[str, str]:
            """/alice at temperature 0 (deterministic), and the folder the engine serves it from."""
            answer = await double.send_command("alice", {"text": "the queen", "length": 60, "temperature": 0},
                                               user="bob")
            content = (await answer.wait_final(timeout=30)).content
            return content.rsplit("\n-# ", 1)[0], await served_path(bot, "alice"), content

        shipped = await alice_says()
        assert shipped[1] == str(tiny_model)
        switch = await double.send_command("models", {"model": "alice", "serve": "v1"}, user="alice")
        await switch.wait_final(timeout=30)
        assert said(switch) == "Now serving **alice v1** in this server."
        forced = await alice_says()
        assert forced[1] == str(config.bot.data_dir / "models" / str(GUILD) / "alice" / "v1")
        assert forced[0] != shipped[0] and "-# alice v1 · T 0 (argmax)" in forced[2]
        back = await double.send_command("models", {"model": "alice", "serve": "v0"}, user="alice")
        await back.wait_final(timeout=30)
        assert (await alice_says())[:2] == shipped[:2]

    run(config, scenario)
    [row] = jobs(config)
    assert row["state"] == "succeeded" and row["served"] == 0 and row["heldout_bpc"] > row["base_heldout_bpc"]
    assert serving_rows(config) == [(GUILD, "alice", None)]


def test_a_job_running_when_the_bot_stops_is_interrupted(tmp_path: Path, tiny_model: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    pids: list[int] = []

    async def stop_while_training(double: DiscordDouble, bot: CharLMBot) -> None:
        job = await start_job(double, rhymes(9_000))
        await job.wait_until(has("Fine-tune #1"), timeout=20)
        pids.append(await training_pid(bot))

    async def next_start(double: DiscordDouble, bot: CharLMBot) -> None:
        status = await double.send_command("finetune status", user="alice")
        await status.wait_final()
        assert "No fine-tune job is running in this server. Last job:\n**Fine-tune #1" in said(status)
        assert "interrupted: the bot stopped while this job was training" in said(status)

    run(config, stop_while_training)
    assert not alive(pids[0])
    run(config, next_start)
    assert [r["state"] for r in jobs(config)] == ["interrupted"]
    assert tree(config.bot.data_dir / "models") == []
