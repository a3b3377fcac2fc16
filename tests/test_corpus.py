"""Corpus reading and cleaning: the recipe's hand cleaning, made automatic and reported."""

import pytest

from charlm.corpus import MIN_CORPUS_CHARS, clean_bytes, clean_text, load_corpus, split_holdout
from charlm.errors import CharLMError
from charlm.vocab import Vocabulary


def test_odd_characters_from_sources_md_are_normalised():
    raw = ("\ufeffHorton\u2019s \u201cegg\u201d\u2026 a\u2014b \u2013 c\u00a0d "
           "soft\u00adhyphen zero\u200bwidth broken\ufffd greek\u037e mid\ufefftext\r\n")
    text, report = clean_text(raw)
    assert text == "horton's \"egg\"... a-b - c d softhyphen zerowidth broken greek; midtext\n"
    assert report.replaced["\u2019"] == 1 and report.replaced["\u2026"] == 1 and report.replaced["\u037e"] == 1
    assert report.dropped["\ufeff"] == 2 and report.dropped["\u00ad"] == 1 and report.dropped["\ufffd"] == 1
    assert "dropped" in report.summary() and "mapped" in report.summary()


def test_gutenberg_header_chapters_star_lines_and_image_lines_are_removed():
    raw = ("The Project Gutenberg eBook of Something\nlicence blah\n"
           "*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n"
           "CHAPTER I. Down the Rabbit-Hole\nAlice was tired.\n   *    *    *\n"
           "external image s_lorax1.jpg\nThe end.\n"
           "*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\nlicence again\n")
    text, report = clean_text(raw)
    assert text == "alice was tired.\nthe end.\n"
    assert report.gutenberg_stripped
    assert report.removed_lines == {"chapter headings": 1, "lines of '*'": 1, "scraped image lines": 1}


def test_lowercase_is_a_setting():
    assert clean_text("Alice\n", lowercase=False)[0] == "Alice\n"
    assert clean_text("Alice\n")[0] == "alice\n"


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"   \n\n", "is empty"),
    (b"abc\x00def" * 300, "binary"),
    (b"caf\xe9 au lait" * 300, "not UTF-8"),
    (b"short text", "too short"),
])
def test_bad_input_gives_one_line_error(data, message):
    with pytest.raises(CharLMError, match=message) as err:
        clean_bytes(data, "upload.txt")
    assert "\n" not in str(err.value) and "upload.txt" in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CharLMError, match="not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CharLMError, match="not a file"):
        load_corpus(tmp_path)


def test_holdout_split_keeps_the_end_for_validation():
    train, val = split_holdout("a" * 90 + "b" * 10, 0.1)
    assert train == "a" * 90 and val == "b" * 10
    with pytest.raises(CharLMError):
        split_holdout("abc", 1.5)


def test_minimum_length_is_enforced_after_cleaning():
    text = ("*" * 50 + "\n") * 100 + "x" * (MIN_CORPUS_CHARS - 10)
    with pytest.raises(CharLMError, match="after cleaning"):
        clean_bytes(text.encode(), "stars.txt")


def test_alice_gives_the_recipes_42_characters(corpora):
    corpus = load_corpus(corpora / "alice.txt")
    assert len(Vocabulary.from_text(corpus.text)) == 42


def test_seuss_maps_onto_alice_like_the_recipe(corpora):
    alice = Vocabulary.from_text(load_corpus(corpora / "alice.txt").text)
    seuss = load_corpus(corpora / "seuss.txt")
    assert "external image" not in seuss.text and "\ufeff" not in seuss.text and "\ufffd" not in seuss.text
    encoded = alice.encode(seuss.text)
    dropped = set(encoded.dropped)
    assert dropped <= set("0123456789/") and dropped  # digits and '/' are not in Alice
    # '[' and ']' never occur in Seuss, and '_' only did in the scraped image lines we remove
    assert len(set(encoded.ids.tolist())) == 39
