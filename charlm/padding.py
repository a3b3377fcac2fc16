"""Which character pads a short prompt: the one after which the model best predicts how
a text begins.

A prompt shorter than the window is left-padded to it. Training never shows the model
padding, so it reads the pad as text, and what it makes of it depends on the model: to
the alice fine-tuned from the storybook base, a run of spaces is indented verse, and it
continues 16 of 40 short prompts with long runs of spaces at temperature 0.8; after a
run of newlines it begins a paragraph (0 of 40). So the pad is measured per model, when
it is trained: bits per character of held-out paragraph openings, each read after a
window of nothing but the candidate pad. The winner is saved as vocab.json's "pad".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from charlm import WINDOW
from charlm.evaluate import log_softmax, sequence_logits
from charlm.vocab import PAD_CHAR, Vocabulary

if TYPE_CHECKING:
    import keras

    from charlm.numpy_lstm import NumpyLSTM

CANDIDATES = (PAD_CHAR, "\n")
"""Characters that carry no content: a space (the old default) and a newline."""
OPENING_CHARS = 60
"""Characters scored at each opening: about what a user types as a short prompt."""
MAX_OPENINGS = 200
PARAGRAPH_START = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class PadChoice:
    char: str
    openings: int  # paragraph openings scored (0: too few to measure; the default stays)
    bits_per_char: dict[str, float] = field(default_factory=dict)  # by candidate

    def to_json(self) -> dict:
        return {"char": self.char, "openings": self.openings, "opening_chars": OPENING_CHARS,
                "bits_per_char": self.bits_per_char}


def paragraph_openings(ids: np.ndarray, vocab: Vocabulary, length: int = OPENING_CHARS,
                       limit: int = MAX_OPENINGS) -> np.ndarray:
    """The first `length` ids of (at most `limit`, evenly spread) paragraphs in `ids`,
    leading indentation skipped, as rows (openings, length)."""
    text = vocab.decode(ids)  # one character per id, so positions agree
    starts = [m.end() for m in PARAGRAPH_START.finditer(text) if m.end() + length <= len(ids)]
    if len(starts) > limit:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, limit).astype(int)]
    return np.array([ids[s:s + length] for s in starts], dtype=np.int32).reshape(len(starts), length)


def choose_pad(model: "keras.Model | NumpyLSTM", vocab: Vocabulary, heldout_ids: np.ndarray,
               min_openings: int = 5) -> PadChoice:
    """The candidate pad with the lowest bits/char on the held-out paragraph openings
    (a tie keeps the space). Too few openings to measure keeps the vocabulary's pad."""
    openings = paragraph_openings(heldout_ids, vocab)
    candidates = [c for c in CANDIDATES if c in vocab.index]
    if len(openings) < min_openings or len(candidates) < 2:
        return PadChoice(vocab.pad, 0)
    scores = {c: _opening_bits(model, vocab.index[c], openings) for c in candidates}
    best = min(candidates, key=lambda c: (scores[c], c != PAD_CHAR))
    return PadChoice(best, len(openings), {c: round(b, 4) for c, b in scores.items()})


def _opening_bits(model: "keras.Model | NumpyLSTM", pad_id: int, openings: np.ndarray) -> float:
    """Mean bits/char of `openings`, each read after WINDOW pad characters."""
    rows = np.concatenate([np.full((len(openings), WINDOW), pad_id, np.int32), openings], axis=1)
    log_probs = log_softmax(sequence_logits(model, rows[:, :-1]))
    targets = rows[:, WINDOW:]  # predicted at positions WINDOW-1 .. end-1
    picked = np.take_along_axis(log_probs[:, WINDOW - 1:], targets[..., None], axis=-1)
    return float(-picked.mean() / np.log(2))
