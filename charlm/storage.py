"""A saved model is a folder: model.keras, vocab.json, card.json. Written atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras

from charlm.errors import CharLMError
from charlm.model import inference_copy
from charlm.vocab import Vocabulary

MODEL_FILE, VOCAB_FILE, CARD_FILE = "model.keras", "vocab.json", "card.json"


@dataclass
class SavedModel:
    """A loaded model folder."""

    model: keras.Model
    vocab: Vocabulary
    card: dict
    path: Path


def save_model_folder(model: keras.Model, vocab: Vocabulary, card: dict, folder: str | Path) -> Path:
    """Write the folder aside, then rename it into place, so readers never see half of it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is readable like any file we write
    try:
        inference_copy(model).save(tmp / MODEL_FILE)
        vocab.save(tmp / VOCAB_FILE)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", "utf-8")
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


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / CARD_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CharLMError(f"{folder} is not a model folder: {CARD_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise CharLMError(f"{path} is unreadable ({exc.__class__.__name__})") from None


def load_model_folder(folder: str | Path) -> SavedModel:
    """Load and cross-check the three files; any problem is a one-line CharLMError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CharLMError(f"model folder not found: {folder}")
    for name in (MODEL_FILE, VOCAB_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise CharLMError(f"{folder} is not a model folder: {name} is missing")
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    card = read_card(folder)
    try:
        model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise CharLMError(f"{folder / MODEL_FILE} could not be loaded ({exc.__class__.__name__})") from None
    out_size = model.output_shape[-1]
    if out_size != len(vocab):
        raise CharLMError(
            f"{folder}: model predicts {out_size} characters but vocab.json has {len(vocab)}"
        )
    if card.get("vocab_size", len(vocab)) != len(vocab):
        raise CharLMError(f"{folder}: card.json says vocab_size {card['vocab_size']}, vocab.json has {len(vocab)}")
    return SavedModel(model, vocab, card, folder)
