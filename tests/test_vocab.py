"""Vocabulary encoding and the one prompt-window function the bot uses."""

import numpy as np
import pytest

from charlm import WINDOW
from charlm.errors import CharLMError
from charlm.vocab import PAD_CHAR, Vocabulary

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'\n")


def test_round_trip():
    text = "the cat, said alice.\n"
    assert VOCAB.decode(VOCAB.encode(text).ids) == text


def test_encoding_normalises_lowercases_and_counts_what_it_drops():
    encoded = VOCAB.encode("Alice\u2019s 42 Cats!")
    assert VOCAB.decode(encoded.ids) == "alice's  cats"
    assert encoded.dropped == {"4": 1, "2": 1, "!": 1} and encoded.dropped_count == 3


def test_short_prompt_is_left_padded_to_the_window():
    window = VOCAB.window("hello")
    assert len(window.ids) == WINDOW and window.padded == WINDOW - 5 and window.cut == 0
    assert window.text == PAD_CHAR * (WINDOW - 5) + "hello" and window.prompt_text == "hello"


def test_long_prompt_keeps_its_last_100_characters():
    prompt = "abcdefghij" * 15
    window = VOCAB.window(prompt)
    assert window.text == prompt[-WINDOW:] and window.cut == 50 and window.padded == 0


def test_empty_or_unmappable_prompt_is_all_padding():
    for prompt in ("", "1234!!"):
        window = VOCAB.window(prompt)
        assert window.text == PAD_CHAR * WINDOW and window.prompt_text == ""
        assert np.all(window.ids == VOCAB.index[PAD_CHAR])


def test_save_load(tmp_path):
    VOCAB.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == VOCAB
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CharLMError, match="not a valid vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_a_vocabulary_pads_with_its_own_pad_and_keeps_it_on_disk(tmp_path):
    newline = VOCAB.with_pad("\n")
    window = newline.window("hello")
    assert window.text == "\n" * (WINDOW - 5) + "hello" and window.prompt_text == "hello"
    newline.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.pad == "\n" and loaded.window("").text == "\n" * WINDOW


def test_a_vocab_file_without_a_pad_pads_with_a_space(tmp_path):
    """Folders written before the pad was measured keep padding as they did."""
    (tmp_path / "vocab.json").write_text('{"chars": ["\\n", " ", "a", "b"], "lowercase": true}', "utf-8")
    assert Vocabulary.load(tmp_path / "vocab.json").window("ab", size=4).text == "  ab"


def test_a_pad_outside_the_vocabulary_is_refused(tmp_path):
    with pytest.raises(CharLMError, match="padding character '#' is not one of"):
        VOCAB.with_pad("#")
    (tmp_path / "vocab.json").write_text('{"chars": ["a", "b"], "pad": "#"}', "utf-8")
    with pytest.raises(CharLMError, match="padding character"):
        Vocabulary.load(tmp_path / "vocab.json")
