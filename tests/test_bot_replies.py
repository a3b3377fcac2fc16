"""Reply formatting: prompt and continuation told apart, Markdown defused, 2,000 characters at most."""

from __future__ import annotations

from charlm.vocab import Vocabulary

from bot.replies import MESSAGE_LIMIT, final_reply, progress_reply, window_notes

LABEL = "alice v2"
VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'*_\n")


def test_prompt_is_bold_and_continuation_plain() -> None:
    text = final_reply("alice was", " beginning to get", LABEL, 0.8, 41234, [])
    assert text == "**alice was** beginning to get\n-# alice v2 · T 0.8 · seed 41234 · 17 characters"


def test_whitespace_around_the_prompt_stays_outside_the_bold() -> None:
    text = final_reply("  the queen ", "said", LABEL, 0, 7, [])
    assert text.startswith("  **the queen** said\n-# alice v2 · T 0 (argmax) · seed 7")


def test_markdown_in_prompt_and_output_is_escaped() -> None:
    text = final_reply("*shout*", " __under__ `code` ||spoiler|| > quote", LABEL, 1, 5, [])
    body = text.split("\n-# ")[0]
    assert body == r"**\*shout\***" + r" \_\_under\_\_ \`code\` \|\|spoiler\|\| > quote"


def test_an_empty_prompt_leaves_just_the_continuation() -> None:
    assert final_reply("", "once upon", LABEL, 1, 5, ["no text"]).startswith("once upon\n-# alice v2 · T 1 · seed 5")


def test_progress_shows_a_cursor_and_how_far_it_got() -> None:
    text = progress_reply("alice", " was", LABEL, 400)
    assert text == "**alice** was ▌\n-# alice v2 is writing… 4/400"


def test_escaping_that_would_pass_2000_characters_is_cut_from_the_end() -> None:
    output = "*" * 1500  # every character doubles when escaped
    text = final_reply("alice", output, LABEL, 1, 5, [])
    assert len(text) <= MESSAGE_LIMIT
    assert text.endswith("cut to fit Discord's 2,000-character limit")
    assert len(text) > MESSAGE_LIMIT - 10  # cut no more than needed


def test_window_notes_say_what_the_model_started_from() -> None:
    assert window_notes(VOCAB.window(""), 100) == ["no text given, so the model started from a blank page"]
    assert window_notes(VOCAB.window("✨🎉"), 100) == [
        "none of your characters are known to this model, so it started from a blank page"]
    assert window_notes(VOCAB.window("alice ✨"), 100) == ["1 character the model does not know left out"]
    assert window_notes(VOCAB.window("a" * 150), 100) == ["only your last 100 characters were read"]
    assert window_notes(VOCAB.window("alice"), 100) == []


def test_the_count_is_of_what_the_model_wrote_when_the_filter_masked_a_word() -> None:
    assert final_reply("", "a *** b", LABEL, 1, 5, [], written=8).endswith("· 8 characters")
    assert progress_reply("", "a *** b", LABEL, 400, written=8).endswith("8/400")
