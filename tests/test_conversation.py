"""The bot in the conversation, through the Discord double with the real discord.py client:
@mentions, replies to its replies, "Continue as…" message commands, Reroll/Continue
buttons (also after a restart), seeds, /settings, and the output filter on every edit."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import pytest

from bot.config import Config
from bot.runner import CharLMBot
from tests.conftest import make_text
from tests.discord_double import (
    ChannelSpec, DiscordDouble, GuildSpec, InteractionHandle, LogGuard, NotOffered, StoredMessage, UserSpec, World,
    running_bot, running_double,
)
from tests.test_bot import write_config

GUILD = 910000000000000001
GENERAL, BOTS = 920000000000000001, 920000000000000002
ALICE_ID, BOB_ID = 930000000000000001, 930000000000000002
FOOTER = re.compile(r"\n-# (\S+ v\d+) · T ([\d.]+)(?: \(argmax\))? · seed (\d+) · (\d+) characters")
CHANNEL_SEND = "POST /channels/{channel}/messages"
CHANNEL_EDIT = "PATCH /channels/{channel}/messages/{message}"


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def world() -> World:
    """The default users in one guild with two channels (one for allowing, one for not)."""
    guild = GuildSpec(GUILD, channels=(ChannelSpec(GENERAL, "general"), ChannelSpec(BOTS, "bots")))
    return World(guilds=[guild], users=[UserSpec(ALICE_ID, "alice", manage_guild=True), UserSpec(BOB_ID, "bob")])


@pytest.fixture
def config(tmp_path: Path, tiny_model: Path) -> Config:
    return write_config(tmp_path, tiny_model, tiny_model, generation={"default_length": 30, "edit_interval": 0.2})


def finished(message: StoredMessage | None) -> bool:
    return message is not None and FOOTER.search(message.content) is not None


async def bot_reply_to(double: DiscordDouble, message: StoredMessage, timeout: float = 30) -> StoredMessage:
    """The bot's channel reply to `message`, once its footer (the final edit) is there."""
    def found() -> StoredMessage | None:
        for candidate in double.rest.messages.values():
            if candidate.kind == "channel" and candidate.reference and \
                    candidate.reference["message_id"] == str(message.id):
                return candidate
        return None

    await double.notifier.wait_for(lambda: finished(found()), timeout)
    await asyncio.sleep(0.3)  # nothing may follow the final edit
    reply = found()
    assert reply is not None
    return reply


async def answered(handle: InteractionHandle, timeout: float = 30) -> StoredMessage:
    reply = await handle.wait_final(lambda h: finished(h.original), timeout=timeout)
    assert reply is not None
    return reply


def rows(config: Config) -> list[sqlite3.Row]:
    db = sqlite3.connect(config.database_url.split("///", 1)[1])
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM requests ORDER BY id").fetchall()
    finally:
        db.close()


def bot_bodies(double: DiscordDouble) -> list[dict]:
    """Every JSON body the bot sent that shows text: creates, edits and callbacks."""
    return [r.json for r in double.requests
            if r.method in ("POST", "PATCH") and isinstance(r.json, dict) and "/commands" not in r.path]


def run(config: Config, scenario, **double_options) -> None:
    async def main() -> None:
        async with running_double(world=world(), **double_options) as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60) as bot:
                await double.wait_commands(["alice", "settings", "Continue as Alice", "Continue as…"])
                await scenario(double, bot)
            double.assert_no_violations()

    asyncio.run(main())


def test_mentions_are_answered_where_allowed_and_replies_continue_a_chain_of_three(config: Config) -> None:
    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        asked = await double.send_message("Alice was", mention_bot=True, user="bob")
        first = await bot_reply_to(double, asked)
        label, _, _, length = FOOTER.search(first.content).groups()
        assert label == "alice v0" and length == "30" and first.content.startswith("**alice was**")
        assert first.custom_ids() == [f"charlm:reroll:{rows(config)[0]['id']}", f"charlm:more:{rows(config)[0]['id']}"]

        # `seuss:` picks the model; in a DM no mention is needed
        seuss = await bot_reply_to(double, await double.send_message("seuss: the cat", mention_bot=True, user="bob"))
        assert FOOTER.search(seuss.content)[1] == "seuss v0" and seuss.content.startswith("**the cat**")
        in_dm = await bot_reply_to(double, await double.send_message("the queen", user="bob", dm=True))
        assert in_dm.guild_id is None and finished(in_dm)

        # a reply chain of three: replies to the bot's replies, without pinging it (so the
        # bot gets no content: it goes on from its own reply's history row)
        previous, chain = first, []
        for turn in range(3):
            said = await double.send_message("", reply_to=previous, ping_reply=False, user="alice")
            previous = await bot_reply_to(double, said)
            chain.append(previous)
        history = rows(config)
        replies = [r for r in history if r["command"] == "reply"]
        assert len(replies) == 3 and all(r["model"] == "alice" and r["outcome"] == "ok" for r in replies)
        for before, after in zip([history[0], *replies], replies):
            assert after["prompt"] == (before["prompt"] + before["output"])[-100:]  # goes on from the last reply

        # messages that do not mention the bot are not answered (and carry no content for it)
        await double.send_message("just chatting", user="bob")
        await asyncio.sleep(0.5)
        assert len(rows(config)) == 6

        # the server's admins keep it to #bots: a mention in #general is ignored, in #bots answered
        handle = await double.send_command("settings", {"channels": f"<#{BOTS}>"}, user="alice")
        saved = await handle.wait_final()
        assert saved.ephemeral and saved.content.startswith("Saved.") and f"<#{BOTS}>" in saved.content
        await double.send_message("Alice was", mention_bot=True, user="bob", channel_id=GENERAL)
        await asyncio.sleep(0.8)
        assert len(rows(config)) == 6
        allowed = await bot_reply_to(double, await double.send_message("Alice was", mention_bot=True, user="bob",
                                                                        channel_id=BOTS))
        assert finished(allowed) and len(rows(config)) == 7
        handle = await double.send_command("alice", {"text": "x"}, user="bob", channel_id=GENERAL)
        await handle.wait_final(lambda h: bool(h.followups))
        refused = handle.followups[-1]  # "thinking…" is removed, the refusal is private
        assert handle.original.deleted and refused.ephemeral
        assert refused.content == "This server's admins have turned me off in this channel."

        for call in double.calls(CHANNEL_SEND) + double.calls(CHANNEL_EDIT):
            assert call.json["allowed_mentions"]["parse"] == []
            assert call.json["allowed_mentions"].get("replied_user") in (None, False)

    run(config, scenario)


def test_message_commands_continue_any_message_and_the_picker_offers_the_servers_models(config: Config) -> None:
    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        target = await double.send_message("the rabbit said", user="bob")  # no mention: the bot got no content
        kinds = {name: double.commands()[name]["type"] for name in ("Continue as Alice", "Continue as Seuss",
                                                                       "Continue as…")}
        assert set(kinds.values()) == {3}  # message commands
        for name, model in (("Continue as Alice", "alice"), ("Continue as Seuss", "seuss")):
            handle = await double.send_message_command(name, target, user="alice")
            assert await handle.acknowledged() == 5
            reply = await answered(handle)
            assert not reply.ephemeral and reply.content.startswith("**the rabbit said**")
            assert FOOTER.search(reply.content)[1] == f"{model} v0"

        handle = await double.send_message_command("Continue as…", target, user="alice")
        picker = await handle.wait_final()
        assert picker.ephemeral and picker.custom_ids() == [f"charlm:pick:{handle.id}"]
        options = [o["value"] for o in picker.components[0]["components"][0]["options"]]
        assert options == ["alice", "seuss"]
        picked = await double.click(picker, f"charlm:pick:{handle.id}", user="alice", component_type=3,
                                    values=["seuss"])
        assert await picked.acknowledged() == 5  # a new message, in public
        reply = await answered(picked)
        assert not reply.ephemeral and FOOTER.search(reply.content)[1] == "seuss v0"
        assert reply.content.startswith("**the rabbit said**")
        assert [(r["command"], r["model"]) for r in rows(config)] == [
            ("continue-as", "alice"), ("continue-as", "seuss"), ("continue-as", "seuss")]

    run(config, scenario)


def test_reroll_is_the_askers_continue_is_anyones_and_a_seed_repeats_a_text(config: Config) -> None:
    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        handle = await double.send_command("alice", {"text": "Alice was", "temperature": 1.2, "seed": 41234},
                                           user="bob")
        first = await answered(handle)
        assert FOOTER.search(first.content).groups() == ("alice v0", "1.2", "41234", "30")
        again = await answered(await double.send_command("alice", {"text": "Alice was", "temperature": 1.2,
                                                                    "seed": 41234}, user="alice"))
        assert again.content == first.content  # the same version, text, settings and seed: the same text
        row = rows(config)[0]["id"]
        assert first.custom_ids() == [f"charlm:reroll:{row}", f"charlm:more:{row}"]

        refused = await double.click(first, f"charlm:reroll:{row}", user="alice")
        await refused.wait_final(lambda h: bool(h.original and h.original.ephemeral) or bool(h.followups))
        answer = refused.followups[-1] if refused.followups else refused.original
        assert answer.ephemeral and answer.content.startswith(f"Only <@{BOB_ID}>, who asked for this reply")

        before = first.content
        reroll = await double.click(first, f"charlm:reroll:{row}", user="bob")
        assert await reroll.acknowledged() == 6  # the reply is updated in place
        await reroll.wait_final(lambda h: h.original.content != before and finished(h.original))
        rerolled = reroll.original
        assert rerolled.id == first.id
        label, temperature, seed, length = FOOTER.search(rerolled.content).groups()
        assert (label, temperature, length) == ("alice v0", "1.2", "30")
        new_row = rows(config)[-1]
        assert new_row["command"] == "reroll" and new_row["prompt"] == "Alice was"
        assert rerolled.custom_ids() == [f"charlm:reroll:{new_row['id']}", f"charlm:more:{new_row['id']}"]
        same = await answered(await double.send_command("alice", {"text": "Alice was", "temperature": 1.2,
                                                                   "seed": int(seed)}, user="bob"))
        assert same.content.split("\n-# ")[0] == rerolled.content.split("\n-# ")[0]

        more = await double.click(rerolled, f"charlm:more:{new_row['id']}", user="alice")  # anyone may
        assert await more.acknowledged() == 5  # a new message
        continued = await answered(more)
        assert continued.id != first.id and not continued.ephemeral
        last = rows(config)[-1]
        assert last["command"] == "continue" and last["user_id"] == ALICE_ID
        assert last["prompt"] == (new_row["prompt"] + new_row["output"])[-100:]

    run(config, scenario)


def test_buttons_and_settings_survive_a_restart_and_settings_go_with_the_server(config: Config) -> None:
    async def main() -> None:
        async with running_double(world=world()) as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60):
                await double.wait_commands(["alice", "settings"])
                reply = await answered(await double.send_command("alice", {"text": "Alice was"}, user="bob"))
                handle = await double.send_command("settings", {"model": "seuss", "length": 40, "temperature": 0.5,
                                                                "words": "rabbit, hatter"}, user="alice")
                assert (await handle.wait_final()).content.startswith("Saved.")
                refused = await double.send_command("settings", {"length": 5000}, user="alice")
                assert (await refused.wait_final()).ephemeral  # Discord's own bound (1500), then ours
                handle = await double.send_command("settings", {"words": "no good!"}, user="alice")
                refusal = "'good!' is not a word: use 2 to 32 letters, digits, ' or -."
                assert (await handle.wait_final()).content == refusal
                handle = await double.send_command("settings", {"length": 20}, user="bob")
                assert (await handle.wait_final()).content == ("Only this server's admins (Manage Server) can "
                                                               "change its settings.")
            row = rows(config)[0]["id"]
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60):
                await double.wait_commands(["alice", "settings"])
                more = await double.click(reply, f"charlm:more:{row}", user="alice")  # no view kept in memory
                assert await more.acknowledged() == 5
                assert finished(await answered(more))
                shown = await (await double.send_command("settings", user="alice")).wait_final()
                assert "**Model for @mentions:** seuss" in shown.content and "rabbit, hatter" in shown.content
                assert "**Temperature:** 0.5 · **length:** 40" in shown.content
                mention = await bot_reply_to(double, await double.send_message("the cat", mention_bot=True,
                                                                                user="bob"))
                assert FOOTER.search(mention.content).groups() == ("seuss v0", "0.5", FOOTER.search(
                    mention.content)[3], "40")

                purge = await double.send_command("purge-server", {"server": str(GUILD)}, user="owner")
                await purge.wait_final(lambda h: bool(h.followups))
                assert "Deleted server" in purge.followups[-1].content
                shown = await (await double.send_command("settings", user="alice")).wait_final()
                assert "**Answers in:** every channel" in shown.content and "**Model for @mentions:** alice" in \
                    shown.content
                gone = await double.click(reply, f"charlm:reroll:{row}", user="bob")
                answer = await gone.wait_final()
                assert answer.ephemeral and answer.content.startswith("That reply is no longer in the history")
            double.assert_no_violations()

    asyncio.run(main())
    db = sqlite3.connect(config.database_url.split("///", 1)[1])
    try:
        assert db.execute("SELECT COUNT(*) FROM server_settings").fetchone()[0] == 0
    finally:
        db.close()


@pytest.fixture(scope="module")
def sweary_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model fine-tuned on a text where five common words became one on the filter's list."""
    from charlm.jobs import finetune
    from charlm.train import TrainConfig

    folder = tmp_path_factory.mktemp("sweary")
    corpus = folder / "corpus.txt"
    corpus.write_text(re.sub(r"\b(the|she|said|was|very)\b", "shit", make_text(20_000, seed=3)), "utf-8")
    finetune(corpus, tiny_model, folder / "model", TrainConfig(epochs=4, batch_size=32, learning_rate=1e-2))
    return folder / "model"


def contents(body: dict) -> list[str]:
    """The text a request body would show: content of a message, an edit or a callback."""
    found = [body.get("content")] + [(body.get("data") or {}).get("content")]
    return [c for c in found if isinstance(c, str)]


def test_the_filter_masks_every_edit_of_a_model_that_learned_a_listed_word(tmp_path: Path, sweary_model: Path) -> None:
    config = write_config(tmp_path, sweary_model, sweary_model,
                          generation={"default_length": 1500, "max_length": 1500, "edit_interval": 0.2},
                          limits={"cooldown_uses": 0, "queue_size": 200})
    word = re.compile(r"\bshit\b", re.IGNORECASE)

    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        def keep_busy() -> None:  # a batch beside each reply, so it takes long enough to be edited as it grows
            for i in range(60):
                bot.charlm.engine.submit("alice", "busy", length=10_000, seed=i)

        for prompt in ("she said", "the cat", "down the"):
            keep_busy()
            await answered(await double.send_command("alice", {"text": prompt}, user="bob"))
            keep_busy()
            await bot_reply_to(double, await double.send_message(prompt, mention_bot=True, user="bob"))
        shown = [c for body in bot_bodies(double) for c in contents(body)]
        assert len(shown) > 6  # streamed: several edits per reply, each checked
        assert not any(word.search(c) for c in shown)
        assert any(r"\*\*\*" in c for c in shown)  # masked, not dropped
        assert any(word.search(r["output"]) for r in rows(config))  # ...though the model wrote it

        handle = await double.send_command("settings", {"words": "rabbit"}, user="alice")
        await handle.wait_final()
        start = len(double.requests)
        for prompt in ("the rabbit", "a rabbit"):
            await answered(await double.send_command("alice", {"text": prompt, "length": 300}, user="bob"))
        extra = [c for r in double.requests[start:] if isinstance(r.json, dict) for c in contents(r.json)]
        assert not any(re.search(r"\brabbit\b", c) for c in extra)

        handle = await double.send_command("settings", {"filter": False}, user="alice")
        await handle.wait_final()
        start = len(double.requests)
        reply = await answered(await double.send_command("alice", {"text": "she said", "temperature": 0}, user="bob"))
        assert word.search(reply.content)  # off: shown as written

    run(config, scenario)


def test_settings_store_on_sqlite_and_postgresql(store_url: str) -> None:
    from bot.db.engine import open_database
    from bot.server_settings import ServerSettings, SettingsStore, parse_words
    from charlm.errors import CharLMError

    async def main() -> None:
        db = await open_database(store_url)
        try:
            store = SettingsStore(db)
            assert await store.get(GUILD) == ServerSettings() == await store.get(None)  # defaults, and DMs
            chosen = ServerSettings(channels=(BOTS,), mentions=False, model="seuss", temperature=0.5, length=40,
                                    filter=False, words=parse_words("Darn, heck darn"))
            await store.put(GUILD, chosen, ALICE_ID)
            await store.put(GUILD + 1, ServerSettings(length=10))
            assert await store.get(GUILD) == chosen and chosen.words == ("darn", "heck")
            assert not chosen.allows(GENERAL) and chosen.allows(BOTS) and ServerSettings().allows(GENERAL)
            assert await store.purge_server(GUILD) == 1
            assert await store.get(GUILD) == ServerSettings() and (await store.get(GUILD + 1)).length == 10
        finally:
            await db.dispose()

    asyncio.run(main())
    with pytest.raises(CharLMError, match="at most 50 words"):
        parse_words(" ".join(f"w{i}" for i in range(51)))


def test_buttons_and_message_commands_in_a_dm(config: Config) -> None:
    async def scenario(double: DiscordDouble, bot: CharLMBot) -> None:
        reply = await answered(await double.send_command("seuss", {"text": "the cat"}, user="bob", dm=True))
        row = rows(config)[0]["id"]
        before = reply.content
        reroll = await double.click(reply, f"charlm:reroll:{row}", user="bob")
        await reroll.wait_final(lambda h: h.original.content != before and finished(h.original))
        assert FOOTER.search(reroll.original.content)[1] == "seuss v0"
        said = await double.send_message("green eggs", user="bob", dm=True)
        mine = await bot_reply_to(double, said)  # in a DM every message is answered
        handle = await double.send_message_command("Continue as Alice", said, user="bob")
        assert FOOTER.search((await answered(handle)).content)[1] == "alice v0"
        assert finished(mine) and [r["guild_id"] for r in rows(config)] == [None] * 4
        with pytest.raises(NotOffered):  # /settings is server-only: Discord does not offer it in DMs
            await double.send_command("settings", user="bob", dm=True)

    run(config, scenario)
