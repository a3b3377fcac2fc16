"""The blog recipe's approach, kept only as a baseline to measure against.

One target per 100-character window, the window's ids scaled to 0..1 as a single float
feature, stacked LSTMs with dropout, softmax over the vocabulary; generation re-runs the
whole sliding window through `model.predict` for every character, taking the argmax.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from charlm import WINDOW
from charlm.evaluate import log_softmax
from charlm.model import ModelSpec


def build_recipe_model(vocab_size: int, spec: ModelSpec) -> keras.Model:
    """The recipe's network on the same LSTM stack: (batch, 100, 1) floats -> next-char logits."""
    x = inputs = keras.Input(shape=(WINDOW, 1))
    for i in range(spec.layers):
        x = keras.layers.LSTM(spec.units, return_sequences=i < spec.layers - 1)(x)
        x = keras.layers.Dropout(spec.dropout)(x)
    model = keras.Model(inputs, keras.layers.Dense(vocab_size)(x), name="recipe")
    model.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def recipe_inputs(windows: np.ndarray, vocab_size: int) -> np.ndarray:
    """Ids scaled to 0..1, one float per time step, as the recipe fed them."""
    return (windows.astype(np.float32) / vocab_size)[..., None]


def recipe_windows(ids: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows ending before each target: x = ids[s:s+100], y = ids[s+100]."""
    idx = starts[:, None] + np.arange(WINDOW)[None, :]
    return ids[idx], ids[starts + WINDOW]


def recipe_generate(model: keras.Model, window: np.ndarray, length: int, vocab_size: int) -> list[int]:
    """The recipe's loop: predict on the sliding window, argmax, shift, repeat."""
    window = list(window)
    out: list[int] = []
    for _ in range(length):
        logits = model.predict(recipe_inputs(np.array([window[-WINDOW:]]), vocab_size), verbose=0)[0]
        out.append(int(np.argmax(logits)))
        window.append(out[-1])
    return out


def recipe_bits_per_char(model: keras.Model, ids: np.ndarray, context: np.ndarray, vocab_size: int,
                         batch: int = 512) -> float:
    """Held-out bits per char: each character predicted from the 100 before it."""
    full = np.concatenate([context[-WINDOW:], ids])
    starts = np.arange(len(full) - WINDOW)
    total = 0.0
    for i in range(0, len(starts), batch):
        x, y = recipe_windows(full, starts[i : i + batch])
        logits = model.predict(recipe_inputs(x, vocab_size), verbose=0, batch_size=batch).astype(np.float64)
        logp = log_softmax(logits)
        total -= logp[np.arange(len(y)), y].sum()
    return total / len(starts) / math.log(2)
