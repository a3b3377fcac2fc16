"""The shipped models: they load, match their cards, stay small, and score on held-out text."""

import json
import subprocess
import sys

import pytest

from charlm.corpus import load_corpus
from charlm.generate import choose_backend
from charlm.names import words
from charlm.storage import load_model_folder, read_model_folder
from charlm.word_guard import WordGuard
from tests.conftest import WEIGHTS

SHIPPED = {"alice": "alice.txt", "seuss": "seuss.txt"}
# Held-out bits per char the shipped models must keep: the targets (shipped:
# alice 1.458, seuss 2.042, both from the storybook base; before it 1.743 and 2.258).
TARGET_BPC = {"alice": 1.65, "seuss": 2.15}


def shipped(name: str):
    folder = WEIGHTS / name
    if not (folder / "model.keras").is_file():
        pytest.fail(f"weights/{name} is missing from the repository")
    return folder


@pytest.mark.parametrize("name", SHIPPED)
def test_folder_loads_and_matches_its_card(name):
    folder = shipped(name)
    saved = load_model_folder(folder)
    card = saved.card
    assert card["vocab_size"] == len(saved.vocab) == 42  # Alice's characters, Seuss mapped onto them
    assert card["parameters"] == saved.model.count_params()
    assert card["heldout"]["bits_per_char"] <= TARGET_BPC[name]
    assert card["corpus"]["name"] == SHIPPED[name] and card["corpus"]["lowercase"] is True
    assert 0.0 <= card["recitation"]["verbatim_40char_share"] < 0.01
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 25 * 1024 * 1024


def test_alice_and_seuss_were_fine_tuned_from_storybook_and_rehearsed_the_library():
    for name in SHIPPED:
        base = json.loads((shipped(name) / "card.json").read_text())["base"]
        assert base["lineage"] == [f"{name}-first", "storybook"]
        assert base["rehearsal"]["library"] == ["pretrain", "pretrain-extra"] and base["rehearsal"]["share"] == 0.2


@pytest.mark.parametrize("name", SHIPPED)
def test_each_style_avoids_the_library_names_foreign_to_it(name, corpora):
    """avoid.json (charlm names --write) holds names its own corpus never uses, and serving
    builds its guard from it; the card gives the rate with and without it."""
    folder = read_model_folder(shipped(name))
    assert folder.avoid is not None and len(folder.avoid["words"]) > 1000
    assert folder.avoid["corpus"] == SHIPPED[name] and folder.avoid["library"] == ["pretrain", "pretrain-extra"]
    own = set(words((corpora / SHIPPED[name]).read_text("utf-8")))
    assert not own & set(folder.avoid["words"])
    assert {"dorothy", "scarecrow", "woodman"} <= set(folder.avoid["words"])
    names = folder.card["foreign_names"]
    assert names["guarded"]["words_avoided"] == len(folder.avoid["words"]) == names["foreign_names_known"]
    assert names["guarded"]["per_10k_chars"] <= 1.0
    guard = WordGuard.build(folder.avoid, folder.vocab)
    assert guard.next.nbytes + guard.refuse.nbytes <= 2 * 2**20  # beside the int8 weights, within 8 MB a version


@pytest.mark.parametrize("name", SHIPPED)
def test_the_guard_never_refuses_a_character_its_own_corpus_writes(name, corpora):
    """Stepped along the whole corpus as if the model wrote it, the guard refuses none of its
    characters: so, as served, the held-out text is only likelier than the model alone makes it."""
    folder = read_model_folder(shipped(name))
    guard = WordGuard.build(folder.avoid, folder.vocab)
    ids = folder.vocab.encode(load_corpus(corpora / SHIPPED[name], folder.vocab.lowercase).text).ids
    refuse, following = guard.refuse.tolist(), guard.next.tolist()
    state, refused = 0, []
    for i, c in enumerate(ids.tolist()):
        if refuse[state][c]:
            refused.append(i)
        state = following[state][c]
    assert len(ids) > 70_000 and not refused, folder.vocab.decode(ids[refused[0] - 30 : refused[0] + 1])


def test_storybook_is_the_whole_libraries_base():
    """The 2x640 base of issue 21, pretrained on both library folders (138 books), within the
    serving budget of 8 MB per loaded version in int8 (bench/bench_wider.py measures it)."""
    saved = load_model_folder(shipped("storybook"))
    card = saved.card
    assert len(saved.vocab) == 42 and card["corpus"]["name"] == "library" and len(card["corpus"]["books"]) == 138
    assert card["layers"]["units"] == 640 and card["layers"]["layers"] == 2
    assert card["heldout"]["bits_per_char"] < 1.7 and card["heldout"]["chars"] > 3_000_000
    assert card["recitation"]["verbatim_40char_share"] < 0.01
    assert sum(f.stat().st_size for f in shipped("storybook").iterdir()) <= 25 * 1024 * 1024
    assert choose_backend(read_model_folder(shipped("storybook")).weights, "numpy", "int8").q.nbytes <= 8 * 2**20


@pytest.mark.parametrize("name", [*SHIPPED, "storybook"])
def test_eval_on_a_slice_of_the_heldout_text_in_both_precisions(name, corpora):
    """Each shipped folder loads and scores in both precisions, and int8 stays within a
    hundredth of a bit of fp32 (storybook, whose library is two folders, on Alice)."""
    folder = shipped(name)
    scored = {}
    for precision in ("fp32", "int8"):
        out = subprocess.run([sys.executable, "-m", "charlm", "eval", str(corpora / SHIPPED.get(name, "alice.txt")),
                              "--model", str(folder), "--heldout-only", "--max-chars", "2000", "--precision", precision],
                             capture_output=True, text=True, timeout=300, cwd=WEIGHTS.parent)
        assert out.returncode == 0, out.stderr
        scored[precision] = json.loads(out.stdout)
        assert 1900 <= scored[precision]["chars"] <= 1999 and 0.5 < scored[precision]["bits_per_char"] < 4.0
    assert scored["int8"]["bits_per_char"] == pytest.approx(scored["fp32"]["bits_per_char"], abs=0.01)


@pytest.mark.parametrize("name", [*SHIPPED, "storybook"])
def test_short_prompts_are_padded_with_the_measured_pad_and_not_answered_with_space_runs(name):
    """Padded with spaces, the storybook-based alice answered half of such prompts with long
    runs of spaces (indented verse) at temperature 0; each model pads with the character its
    card measured best, and no argmax continuation of a short prompt is such a run."""
    import re

    from charlm.engine import Engine
    from charlm.sampling import Sampling

    folder = shipped(name)
    padding = json.loads((folder / "card.json").read_text("utf-8"))["padding"]
    assert padding["char"] == min(padding["bits_per_char"], key=padding["bits_per_char"].get)
    prompts = ["the white rabbit", "alice", "once upon a time", "the queen said", "down the rabbit hole",
               "the cat", "she went", "why is a raven like a writing-desk?", "the mock turtle", "and then"]
    with Engine({name: folder}) as engine:
        assert engine.current(name)[1].pad == padding["char"]
        for prompt in prompts:
            text = engine.submit(name, prompt, Sampling(temperature=0, length=300)).result().text
            assert not re.search(" {12,}", text), (prompt, text)
