"""Renamed library passages: a fine-tune rehearses the library with the style's own names."""

import re

import pytest

from charlm.errors import CharLMError
from charlm.jobs import finetune
from charlm.names import foreign_names, library_names, words
from charlm.rehearsal import own_names, renamed_passages
from charlm.storage import load_model_folder
from charlm.train import TrainConfig

LIBRARY = ("Then Dorothy said to the Scarecrow that Dorothy was tired of the road. The Woodman and Dorothy "
           "walked on, and Toto ran after the Scarecrow into the tall corn by the river.\n") * 12
OWN = "The cat said to Alice that Alice was late. The queen and Alice met the Hatter, and Alice ran.\n" * 12


def test_own_names_are_the_corpus_names_likeliest_first() -> None:
    assert own_names(OWN) == ["alice", "hatter"]


def test_every_foreign_name_in_a_passage_is_replaced_by_an_own_one() -> None:
    foreign = foreign_names(library_names([LIBRARY]), OWN)
    assert foreign == {"dorothy", "scarecrow", "woodman", "toto"}
    rehearsal = renamed_passages(LIBRARY, foreign, ["alice", "hatter"], 600, size=120)
    written = set(words(rehearsal.text))
    assert not written & foreign and written & {"alice", "hatter"}
    assert 600 <= len(rehearsal.text) < 600 + 2 * 140 and rehearsal.names_replaced >= rehearsal.passages
    # each passage is the library's own text, lowercase, with its names swapped
    for passage in rehearsal.text.split("\n\n"):
        pattern = re.escape(passage)
        pattern = re.sub(r"alice|hatter", "(?:dorothy|scarecrow|woodman|toto)", pattern)
        assert re.search(pattern, LIBRARY.lower()), passage


def test_one_passage_keeps_one_own_name_for_each_foreign_one() -> None:
    text = "The road was long. Then Dorothy met Toto, and Dorothy laughed at Toto. " * 40
    rehearsal = renamed_passages(text, {"dorothy", "toto"}, ["alice", "hatter", "queen", "king"], 2_000, size=60)
    said = [match for passage in rehearsal.text.split("\n\n")
            for match in re.findall(r"then (\w+) met (\w+), and (\w+) laughed at (\w+)", passage)]
    assert said and all((first, second) == (again, again_second) for first, second, again, again_second in said)


def test_a_finetune_rehearses_and_says_so_in_its_card(tiny_model, tmp_path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "oz.txt").write_text(LIBRARY.replace("Scarecrow", "Queen"), "utf-8")
    own = tmp_path / "own.txt"
    own.write_text(OWN * 8, "utf-8")
    with pytest.raises(CharLMError, match="rehearsal share"):
        finetune(own, tiny_model, tmp_path / "bad", TrainConfig(epochs=1, batch_size=16),
                 rehearse=[library], rehearse_share=1.0)
    outcome = finetune(own, tiny_model, tmp_path / "tuned", TrainConfig(epochs=1, batch_size=16),
                       rehearse=[library], rehearse_share=0.25)
    rehearsal = load_model_folder(outcome.folder).card["base"]["rehearsal"]
    assert rehearsal["library"] == ["library"] and rehearsal["share"] == 0.25
    assert rehearsal["own_names"] == ["alice", "hatter"] and rehearsal["names_replaced"] > 0
    own_chars = outcome.card["corpus"]["chars"] * 0.9
    assert own_chars / 3 * 0.9 < rehearsal["chars"] < own_chars / 3 * 1.2
