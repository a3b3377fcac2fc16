"""Corpus reading and cleaning: the recipe's hand cleaning, made automatic and reported."""

import re

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


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(CharLMError, match="not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CharLMError, match="has no .txt files"):
        load_corpus(tmp_path)


def test_pre_2000_gutenberg_releases_lose_their_small_print_and_title_lines():
    raw = ("*Project Gutenberg Etext of Five Children and It, by E. Nesbit*\r\n"
           "Copyright laws are changing all over the world\r\n"
           "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\r\nlawyers.\r\n"
           "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\r\n\r\n"
           "FIVE CHILDREN AND IT\r\n\r\nThe house was three miles from the station.\r\n\r\n"
           "*Project Gutenberg Etext of Five Children and It, by E. Nesbit*\r\n")
    text, report = clean_text(raw)
    assert text == "five children and it\n\nthe house was three miles from the station.\n"
    assert report.gutenberg_stripped


def test_transcribers_credits_illustrations_and_notes_are_removed():
    raw = ("*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
           "Produced by Dave Newman and the Online Distributed\nProofreading Team\n\n"
           "Note: Project Gutenberg also has an HTML version of this\n      file.\n\n"
           "THE OWL\n\n[Illustration]\n\nThe Owl and the Pussy-cat went to sea\n"
           "[Illustration: The Owl and\nthe Pussy-cat]\nIn a beautiful pea-green boat.\n\n"
           + "They sailed away, for a year and a day.\n" * 40 +
           "\nTranscriber's Notes:\n\npage 79, period added.\n"
           "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n")
    text, report = clean_text(raw)
    assert text.startswith("the owl\n\n\nthe owl and the pussy-cat went to sea\nin a beautiful")
    assert "produced" not in text and "gutenberg" not in text and "illustration" not in text
    assert "transcriber" not in text and text.endswith("a year and a day.\n")
    assert report.removed_blocks == {"illustration and note blocks": 2,
                                     "transcriber credit and edition-note paragraphs": 2,
                                     "transcriber's notes sections": 1}
    assert "illustration and note blocks removed" in report.summary()


def test_a_folder_is_a_library_with_every_books_end_held_out(tmp_path):
    (tmp_path / "a.txt").write_text("A" * 900 + "B" * 100)
    (tmp_path / "b.txt").write_text("C" * 1800 + "D" * 200)
    (tmp_path / "notes.md").write_text("not a book")
    library = load_corpus(tmp_path)
    train, heldout = library.split(0.1)
    assert train.replace("\n", "") == "a" * 900 + "c" * 1800
    assert set(heldout.replace("\n", "")) == {"b", "d"} and heldout.count("b") == 100 and heldout.count("d") == 200
    assert [b["name"] for b in library.books] == ["a.txt", "b.txt"]
    with pytest.raises(CharLMError, match="holdout"):
        library.split(0.2)


def test_every_pretraining_book_is_cleaned_of_gutenberg_text(corpora):
    folder = corpora / "pretrain"
    if not folder.is_dir():
        pytest.skip("no pretraining library in ../shared/corpora/pretrain")
    for path in sorted(folder.glob("*.txt")):
        text = load_corpus(path).text
        assert "gutenberg" not in text and "small print!" not in text and "produced by" not in text[:2000], path.name
        assert "[illustration" not in text and not re.search(r"\be-?text\b", text), path.name


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


def test_a_library_drops_layout_spaces_and_long_gaps(tmp_path):
    (tmp_path / "verse.txt").write_text("              THE OWL\n\n\n\n\n    The Owl  and the\tPussy-cat   \n" * 60)
    library = load_corpus(tmp_path)
    assert "  " not in library.text and "\n\n\n" not in library.text
    assert library.text.startswith("the owl\n\nthe owl and the pussy-cat\nthe owl\n")
    assert library.report.removed_lines["lines of layout spacing"] == 120
    assert clean_text("  indented  verse\n")[0] == "  indented  verse\n"  # a single text keeps its layout
