"""The training / held-out split of a fine-tune corpus, without Keras.

One function decides what a fine-tune trains and is scored on, so a bot's upload check
(serving-only install, no TensorFlow) and the training itself (charlm.jobs) agree: an
upload the check accepts is one the job can train on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from charlm import WINDOW
from charlm.corpus import Corpus
from charlm.errors import CharLMError
from charlm.vocab import Vocabulary

DEFAULT_HOLDOUT = 0.1


@dataclass(frozen=True)
class SplitIds:
    """Training and held-out ids, each part encoded on its own: the held-out ids are
    exactly what `python -m charlm eval --heldout-only` scores."""

    train: np.ndarray
    heldout: np.ndarray
    dropped: int  # characters the vocabulary does not know, in both parts
    unknown: Counter[str] = field(default_factory=Counter)  # which ones, and how often


def split_encode(corpus: Corpus, vocab: Vocabulary, holdout: float = DEFAULT_HOLDOUT) -> SplitIds:
    train_text, heldout_text = corpus.split(holdout)
    train, heldout = vocab.encode(train_text), vocab.encode(heldout_text)
    return SplitIds(train.ids, heldout.ids, train.dropped_count + heldout.dropped_count,
                    train.dropped + heldout.dropped)


def check_trainable(name: str, ids: SplitIds, seq_len: int = WINDOW) -> None:
    """Refuse a split the training cannot use: two windows to train on, and one whole
    window (plus its next character) to score on."""
    if len(ids.train) < seq_len * 2:
        raise CharLMError(f"{name} has too few characters the model knows in its first 90% "
                          f"({len(ids.train):,}; at least {seq_len * 2} needed)")
    if len(ids.heldout) < seq_len + 1:
        raise CharLMError(f"{name} has too few characters the model knows in its last 10%, the part it is "
                          f"scored on ({len(ids.heldout):,}; at least {seq_len + 1} needed)")
