"""A saved model is a folder: model.keras, vocab.json, card.json (and, for a shipped
style, avoid.json: see charlm.word_guard). Written atomically.

Two ways to open one: `read_model_folder` gives the weights as numpy arrays without
importing Keras or TensorFlow (serving: the bot, the engine, `generate` and `eval`);
`load_model_folder` gives a Keras model (training and fine-tuning). Both check the
three files against each other the same way.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from charlm.errors import CharLMError
from charlm.keras_archive import read_archive
from charlm.numpy_lstm import LSTMWeights
from charlm.vocab import Vocabulary
from charlm.word_guard import AVOID_FILE, read_avoid

if TYPE_CHECKING:
    import keras

MODEL_FILE, VOCAB_FILE, CARD_FILE = "model.keras", "vocab.json", "card.json"


@dataclass
class SavedModel:
    """A model folder loaded with Keras (for training and fine-tuning)."""

    model: "keras.Model"
    vocab: Vocabulary
    card: dict
    path: Path
    avoid: dict | None = None  # avoid.json, as in ModelFolder


@dataclass
class ModelFolder:
    """A model folder read for serving: numpy weights, no Keras model."""

    weights: LSTMWeights
    vocab: Vocabulary
    card: dict
    path: Path
    avoid: dict | None = None  # avoid.json: words serving steers around (charlm.word_guard), if any


def save_model_folder(model: "keras.Model", vocab: Vocabulary, card: dict, folder: str | Path,
                      avoid: dict | None = None) -> Path:
    """Write the folder aside (with `avoid` as its avoid.json, if given), then rename it
    into place, so readers never see half of it."""
    from charlm.model import inference_copy

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is readable like any file we write
    try:
        inference_copy(model).save(tmp / MODEL_FILE)
        vocab.save(tmp / VOCAB_FILE)
        (tmp / CARD_FILE).write_text(card_text(card), "utf-8")
        if avoid is not None:
            (tmp / AVOID_FILE).write_text(avoid_text(avoid), "utf-8")
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def set_padding(folder: str | Path, vocab: Vocabulary, padding: dict) -> None:
    """Record a new pad in a saved folder: vocab.json (what serving reads) and the card's
    "padding" entry (how it was measured), each file replaced atomically."""
    folder = Path(folder)
    card = read_card(folder)
    card["padding"] = padding
    _replace(folder / CARD_FILE, card_text(card))
    _replace(folder / VOCAB_FILE, vocab.to_text())


def set_card_entry(folder: str | Path, key: str, value: dict) -> None:
    """Record a measurement made after training (e.g. "foreign_names") in the card,
    replacing the file atomically."""
    folder = Path(folder)
    card = read_card(folder)
    card[key] = value
    _replace(folder / CARD_FILE, card_text(card))


def set_avoid(folder: str | Path, entry: dict) -> None:
    """Give a saved folder the words serving steers around (charlm.word_guard), replacing
    avoid.json atomically; the engine reads it at its next load."""
    _replace(Path(folder) / AVOID_FILE, avoid_text(entry))


def avoid_text(entry: dict) -> str:
    return json.dumps(entry, ensure_ascii=False) + "\n"


def card_text(card: dict) -> str:
    """card.json as charlm writes it (indented, UTF-8 kept readable)."""
    return json.dumps(card, indent=2, ensure_ascii=False) + "\n"


def _replace(path: Path, text: str) -> None:
    """Write `text` aside, then rename it over `path`: readers see the old file or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / CARD_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CharLMError(f"{folder} is not a model folder: {CARD_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise CharLMError(f"{path} is unreadable ({exc.__class__.__name__})") from None


def _checked_files(folder: str | Path) -> tuple[Path, Vocabulary, dict]:
    """The folder, its vocabulary and card, once all three files are there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CharLMError(f"model folder not found: {folder}")
    for name in (MODEL_FILE, VOCAB_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise CharLMError(f"{folder} is not a model folder: {name} is missing")
    return folder, Vocabulary.load(folder / VOCAB_FILE), read_card(folder)


def _check_sizes(folder: Path, out_size: int, vocab: Vocabulary, card: dict) -> None:
    if out_size != len(vocab):
        raise CharLMError(
            f"{folder}: model predicts {out_size} characters but vocab.json has {len(vocab)}"
        )
    if card.get("vocab_size", len(vocab)) != len(vocab):
        raise CharLMError(f"{folder}: card.json says vocab_size {card['vocab_size']}, vocab.json has {len(vocab)}")


def read_model_folder(folder: str | Path) -> ModelFolder:
    """Read the weights for serving, without Keras; any problem is a one-line CharLMError."""
    folder, vocab, card = _checked_files(folder)
    weights = LSTMWeights.from_archive(read_archive(folder / MODEL_FILE))
    _check_sizes(folder, weights.dense_b.shape[0], vocab, card)
    return ModelFolder(weights, vocab, card, folder, read_avoid(folder))


def load_model_folder(folder: str | Path) -> SavedModel:
    """Load and cross-check the three files with Keras; any problem is a one-line CharLMError."""
    import keras

    folder, vocab, card = _checked_files(folder)
    try:
        model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise CharLMError(f"{folder / MODEL_FILE} could not be loaded ({exc.__class__.__name__})") from None
    _check_sizes(folder, model.output_shape[-1], vocab, card)
    return SavedModel(model, vocab, card, folder, read_avoid(folder))
