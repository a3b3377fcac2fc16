"""The pad a model is served with: measured on held-out paragraph openings, saved with it."""

import json
import shutil

import numpy as np
import pytest

from charlm import WINDOW
from charlm.cli import main
from charlm.corpus import load_corpus
from charlm.jobs import train_new
from charlm.numpy_lstm import NumpyLSTM
from charlm.padding import OPENING_CHARS, choose_pad, paragraph_openings
from charlm.storage import load_model_folder, read_model_folder
from charlm.train import TrainConfig
from tests.conftest import make_text


def paragraphs_text(chars: int = 20_000) -> str:
    """make_text's words in paragraphs of 15, with blank lines between them."""
    words = make_text(chars).split()
    return "\n\n".join(" ".join(words[i:i + 15]) for i in range(0, len(words), 15))


@pytest.fixture(scope="module")
def paragraph_model(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "paragraphs.txt"
    corpus.write_text(paragraphs_text(), "utf-8")
    out = tmp_path_factory.mktemp("models") / "para"
    train_new(corpus, out, "tiny", TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2))
    return corpus, out


def bits_by_keras(model, pad_id: int, openings: np.ndarray) -> float:
    """The same figure the slow, obvious way: Keras over each full row, softmax by hand."""
    rows = np.concatenate([np.full((len(openings), WINDOW), pad_id), openings], axis=1)
    logits = model.predict(rows, verbose=0).astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    total = 0.0
    for r, row in enumerate(rows):
        for t in range(WINDOW, len(row)):
            total -= np.log2(probs[r, t - 1, row[t]])
    return total / openings.size


def test_openings_are_the_starts_of_paragraphs_without_their_indentation():
    from charlm.vocab import Vocabulary

    text = "one two.\n\n  three four five six.\n\n\nseven eight nine ten.\nno new paragraph here at all"
    vocab = Vocabulary.from_text(text)
    rows = paragraph_openings(vocab.encode(text).ids, vocab, length=10)
    assert [vocab.decode(r) for r in rows] == ["three four", "seven eigh"]


def test_the_pad_with_the_lower_measured_bits_is_chosen(paragraph_model):
    corpus_path, folder = paragraph_model
    saved = load_model_folder(folder)
    served = read_model_folder(folder)
    heldout = saved.vocab.encode(load_corpus(corpus_path).split(0.1)[1]).ids
    choice = choose_pad(NumpyLSTM(served.weights), served.vocab, heldout)
    openings = paragraph_openings(heldout, saved.vocab)
    assert choice.openings == len(openings) >= 5 and openings.shape[1] == OPENING_CHARS
    for char, bits in choice.bits_per_char.items():
        assert bits == pytest.approx(bits_by_keras(saved.model, saved.vocab.index[char], openings), abs=1e-3)
    assert choice.char == min(choice.bits_per_char, key=choice.bits_per_char.get)


def test_training_saves_the_measured_pad_in_the_folder(paragraph_model):
    _, folder = paragraph_model
    card = json.loads((folder / "card.json").read_text("utf-8"))
    padding = card["padding"]
    assert set(padding["bits_per_char"]) == {" ", "\n"} and padding["openings"] >= 5
    assert padding["char"] == min(padding["bits_per_char"], key=padding["bits_per_char"].get)
    vocab = read_model_folder(folder).vocab
    assert vocab.pad == padding["char"] and vocab.window("ab").text.startswith(padding["char"] * (WINDOW - 2))


def test_text_without_paragraphs_keeps_the_default_pad(tiny_model, text_file):
    saved = read_model_folder(tiny_model)
    heldout = saved.vocab.encode(make_text(2000, seed=3).replace("\n", " ")).ids
    choice = choose_pad(NumpyLSTM(saved.weights), saved.vocab, heldout)
    assert choice.char == saved.vocab.pad == " " and choice.openings == 0


def test_the_pad_command_measures_and_writes(paragraph_model, tmp_path, capsys):
    corpus_path, folder = paragraph_model
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    vocab = json.loads((copy / "vocab.json").read_text("utf-8"))
    other = " " if vocab["pad"] == "\n" else "\n"
    (copy / "vocab.json").write_text(json.dumps({**vocab, "pad": other}), "utf-8")  # as if badly chosen
    assert main(["pad", str(corpus_path), "--model", str(copy)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["was"] == other and report["char"] == vocab["pad"] and report["written"] is False
    assert read_model_folder(copy).vocab.pad == other  # measuring alone changes nothing
    assert main(["pad", str(corpus_path), "--model", str(copy), "--write"]) == 0
    assert read_model_folder(copy).vocab.pad == vocab["pad"]
    assert json.loads((copy / "card.json").read_text("utf-8"))["padding"]["char"] == vocab["pad"]
    assert not list(copy.glob(".*.tmp"))


def test_the_pad_command_refuses_a_text_without_paragraphs(tiny_model, text_file, capsys):
    assert main(["pad", str(text_file), "--model", str(tiny_model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: story.txt's held-out part has too few paragraphs") and err.count("\n") == 1
