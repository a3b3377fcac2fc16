"""Bits per character of a model on a text: the figure compressors are compared on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from charlm.errors import CharLMError
from charlm.word_guard import FREE, WordGuard

if TYPE_CHECKING:
    import keras

    from charlm.numpy_lstm import NumpyLSTM

WARMUP = 256
"""Characters of preceding text each scored chunk is conditioned on (and not scored)."""
PASS_ROWS = 16
MAX_ROW = 16_384
"""Most characters scored per stream: a longer text (a library's held-out tenth) is cut into
more streams, run 16 at a time, so memory stays flat (one pass over 3.8M characters kept
every LSTM output at once: over 20 GB)."""


@dataclass(frozen=True)
class Evaluation:
    nats_per_char: float
    chars: int

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def evaluate(model: "keras.Model | NumpyLSTM", ids: np.ndarray, context: np.ndarray | None = None,
             streams: int = 16, guard: WordGuard | None = None) -> Evaluation:
    """Mean next-character loss over `ids`, conditioned on what precedes each character.

    The text is cut into `streams` contiguous chunks run side by side; each chunk first
    reads the WARMUP characters before it (from `context` for the first), so every scored
    character sees at least that much real history, like a compressor that has read the
    text so far. Scoring starts at ids[1] when no context is given. `model` is a Keras
    model (training) or a NumpyLSTM (serving: `python -m charlm eval` without TensorFlow).
    `guard`: score the distribution as served with the style's avoid list (charlm.word_guard),
    each character's refused alternatives taken out; a text that writes an avoided name
    has no such score, and is a one-line error.
    """
    context = np.zeros(0, dtype=ids.dtype) if context is None else context
    full = np.concatenate([context, ids])
    first = len(context) if len(context) else 1
    n_scored = len(full) - first
    streams = max(1, min(streams, n_scored // 64), -(-n_scored // MAX_ROW))
    bounds = np.linspace(first, len(full), streams + 1).astype(int)
    rows, starts = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        s = max(0, a - WARMUP)
        rows.append(full[s:b])
        starts.append(a - s)  # position in the row of its first scored target
    total = 0.0
    for group in range(0, len(rows), PASS_ROWS):
        part = rows[group : group + PASS_ROWS]
        x = np.zeros((len(part), max(len(r) for r in part)), dtype=np.int32)
        for i, r in enumerate(part):
            x[i, : len(r)] = r
        logits = sequence_logits(model, x)
        if guard is not None:
            logits = steered(logits, x, guard)
        log_probs = log_softmax(logits)
        for i, r in enumerate(part):
            # logits at position t predict r[t + 1]; score targets r[starts[i]:]
            t = np.arange(starts[group + i] - 1, len(r) - 1)
            scored = log_probs[i, t, r[t + 1]]
            if guard is not None and np.isneginf(scored).any():
                at = int(bounds[group + i] + np.flatnonzero(np.isneginf(scored))[0]) - len(context)
                raise CharLMError(f"the text writes a word the style avoids (at its character {at + 1:,}): score it without the guard")
            total -= scored.sum()
    return Evaluation(total / n_scored, n_scored)


def steered(logits: np.ndarray, x: np.ndarray, guard: WordGuard) -> np.ndarray:
    """`logits` with the characters the guard refuses after each position set to -inf; each
    row's first word is not judged (the row may begin inside one), as in WordGuard.start."""
    states = np.full(len(x), FREE, guard.next.dtype)
    for t in range(x.shape[1]):
        states = guard.step(states, x[:, t])
        logits[:, t][guard.refuse[states]] = -np.inf
    return logits


def sequence_logits(model: "keras.Model | NumpyLSTM", x: np.ndarray) -> np.ndarray:
    """Logits after every position of windows `x` (batch, time), from either kind of model."""
    if hasattr(model, "sequence_logits"):
        return np.asarray(model.sequence_logits(x), dtype=np.float64)
    return np.asarray(model.predict(x, batch_size=len(x), verbose=0), dtype=np.float64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, stable for large logits."""
    m = logits.max(axis=-1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))
