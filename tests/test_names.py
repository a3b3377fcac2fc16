"""The foreign-name measure: names from other books that a style writes though its own corpus never does."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from charlm.cli import main
from charlm.generate import Generator
from charlm.names import count_foreign, foreign_name_rate, foreign_names, heldout_prompts, library_names
from charlm.sampling import Sampling
from charlm.storage import read_card, read_model_folder

OZ = ("Dorothy lived in the midst of the great Kansas prairies with Uncle Henry. "
      "When Dorothy stood in the door she saw the gray prairie. Toto played with Dorothy, "
      "and Uncle Henry never laughed. The Scarecrow said that Dorothy was kind. "
      "\"Dorothy!\" cried the Scarecrow, for the Scarecrow loved Dorothy and Toto. "
      "So the Scarecrow and Toto walked. Then Toto barked at the Scarecrow. The house was small. "
      "The Wizard was great, and Toto hid. And the Wizard said yes. But the Wizard came. "
      "Henry and Toto ran; the Wizard smiled.\n"
      "Kansas is flat. It lay in Kansas, near Kansas City, far from Kansas. All of Kansas slept.\n")
ALICE = "Alice was beginning to get very tired of sitting by her sister. The Scarecrow was not there.\n"


def test_library_names_are_words_capitalised_inside_sentences() -> None:
    names = library_names([OZ], min_count=3)
    assert {"dorothy", "toto", "scarecrow", "wizard", "kansas"} <= names
    # common words, even those that often open a sentence ("The", "When", "So"), are not names
    assert not names & {"the", "when", "so", "then", "and", "was", "house", "great", "i"}
    # "henry" is a name but used only twice mid-sentence here: below min_count
    assert "henry" not in names


def test_words_capitalised_by_rule_are_not_names() -> None:
    text = ("On Sunday Mrs Brown spoke English to Mr Grey, and on Sunday Mrs Brown spoke English to Mr Grey. "
            "Then on Sunday Mrs Brown read English to Mr Grey and Dorothy, and Dorothy and Dorothy.\n")
    assert library_names([text], min_count=2) == {"brown", "grey", "dorothy"}


def test_a_word_lowercase_inside_sentences_is_not_a_name() -> None:
    text = "The Door opened. Then the door shut, and a door creaked, and the door fell. The Door."
    assert "door" not in library_names([text], min_count=2)


def test_names_the_own_corpus_uses_are_not_foreign() -> None:
    foreign = foreign_names(library_names([OZ], min_count=3), ALICE)
    assert "scarecrow" not in foreign  # Alice's corpus (here) says it
    assert {"dorothy", "toto", "wizard", "kansas"} <= foreign


def test_count_foreign_counts_only_what_the_model_wrote() -> None:
    foreign = {"dorothy", "toto", "oz"}
    assert count_foreign("and then dorothy", " said toto. oz! ozma, dorothy's dog.", foreign) == {
        "toto": 1, "oz": 1, "dorothy": 1}
    # the prompt's last word is not the model's, unless the model ran on with it
    assert count_foreign("she met doro", "thy and the tin man", foreign) == {"dorothy": 1}
    assert count_foreign("she met toto", " and went home", foreign) == {}
    assert count_foreign("", "toto toto.", foreign) == {"toto": 2}
    # nor a word the sample's length cut off: "oz" may have been "ozone"
    assert count_foreign("", "toto toto oz", foreign) == {"toto": 2}


def test_heldout_prompts_are_evenly_spaced_windows_that_end_where_a_word_does() -> None:
    text = "".join("abcdefghi"[i % 9] if i % 10 else " " for i in range(1000))  # " abcdefghi" ten by ten
    prompts = heldout_prompts(text, n=5, size=100)
    assert prompts[0] == text[:100] and prompts[-1] == text[-100:]  # whole windows: each ends before a space
    for start, prompt in zip([0, 225, 450, 675, 900], prompts):
        assert text[start : start + len(prompt)] == prompt and 90 < len(prompt) <= 100
        assert not (prompt[-1].isalpha() and text[start + len(prompt) : start + len(prompt) + 1].isalpha())  # no word cut
    assert [len(p) for p in prompts] == [100, 96, 100, 96, 100]


def test_rate_counts_the_words_the_model_samples(tiny_model) -> None:
    gen = Generator.from_folder(tiny_model, "numpy")
    prompts = ["the rabbit said", "queen of hearts ", "alice"]
    foreign = {"the", "she", "was"}  # words even the tiny model writes
    rate = foreign_name_rate(gen, foreign, prompts, temperatures=(0.5, 1.0), length=300, seed=7)
    assert rate.chars == 3 * 2 * 300 and rate.samples == 6
    # the same samples counted independently, with a regex over the continuations
    expected = 0
    for t_index, temperature in enumerate((0.5, 1.0)):
        settings = [Sampling(temperature=temperature, seed=7 + 1000 * t_index + i, length=300) for i in range(3)]
        for sample in gen.generate([gen.vocab.window(p).ids for p in prompts], settings):
            expected += len(re.findall(r"(?<![a-z])(the|she|was)(?=[^a-z])", sample))  # whole: a letter-free end
    assert sum(rate.found.values()) == expected > 0
    assert rate.per_10k_chars == pytest.approx(10_000 * expected / 1800)
    assert foreign_name_rate(gen, set(), prompts, length=50).per_10k_chars == 0.0


def test_cli_names_writes_the_card(tiny_model, text_file, tmp_path, capsys) -> None:
    tiny_model = Path(shutil.copytree(tiny_model, tmp_path / "tiny"))  # it gets an avoid.json: others serve the original
    library = tmp_path / "library"
    library.mkdir()
    (library / "oz.txt").write_text(OZ * 3, "utf-8")
    assert main(["names", str(text_file), "--model", str(tiny_model), "--library", str(library),
                 "--length", "60", "--write"]) == 0
    progress = capsys.readouterr().err.splitlines()  # what a 2-minute run shows while it works
    assert progress[0].startswith("reading ") and progress[1].endswith("the model alone")
    assert progress[2].startswith("sampling 20 prompts, 60 characters each, as served, steering around")
    entry = read_card(tiny_model)["foreign_names"]
    assert entry["samples"] == 40 and entry["chars"] == 40 * 60 and entry["library"] == ["library"]
    assert entry["per_10k_chars"] >= 0 and entry["foreign_names_known"] >= 4
    # the foreign names went into avoid.json, which serving steers around, and were measured so too
    avoid = read_model_folder(tiny_model).avoid
    assert {"dorothy", "toto", "wizard", "kansas"} <= set(avoid["words"]) and "alice" not in avoid["words"]
    assert avoid["corpus"] == text_file.name and len(avoid["words"]) == entry["foreign_names_known"]
    assert entry["guarded"]["per_10k_chars"] == 0 and entry["guarded"]["words_avoided"] == len(avoid["words"])
    assert entry["unknown_words_per_10k_chars"] >= 0 and entry["guarded"]["unknown_words_per_10k_chars"] >= 0
    assert main(["names", str(text_file), "--model", str(tiny_model), "--library", str(library),
                 "--length", "60", "--prompts", "5"]) == 0
    assert read_card(tiny_model)["foreign_names"] == entry  # not written without --write
    finer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert finer["samples"] == 10 and finer["chars"] == 10 * 60 and finer["written"] is False


def test_widen_keeps_the_function(tmp_path) -> None:
    from charlm.model import ModelSpec, build_model, widen

    spec = ModelSpec(embed=8, units=16, layers=2, dropout=0.1)
    narrow = build_model(11, spec)
    rng = np.random.default_rng(0)
    narrow.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in narrow.get_weights()])
    wide, wide_spec = widen(narrow, spec, 24, seed=3)
    assert wide_spec.units == 24 and wide.get_layer("lstm_1").get_weights()[1].shape == (24, 96)
    ids = rng.integers(0, 11, (3, 50)).astype("int32")
    np.testing.assert_allclose(wide.predict(ids, verbose=0), narrow.predict(ids, verbose=0), atol=1e-5)
    # the new units do compute something: training has gradients to move them with
    assert np.abs(wide.get_layer("lstm_0").get_weights()[0][:, 16:24]).max() > 0


def test_widen_refuses_to_narrow() -> None:
    from charlm.errors import CharLMError
    from charlm.model import ModelSpec, build_model, widen

    spec = ModelSpec(embed=8, units=16, layers=1, dropout=0.0)
    with pytest.raises(CharLMError, match="can only widen"):
        widen(build_model(5, spec), spec, 16)
