"""Batched, stateful generation: read each window once, then one step per character.

Every row carries its own sampling settings and random generator, so one pass serves
many users, and a row's output depends only on its own prompt, settings and seed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from charlm.errors import CharLMError
from charlm.numpy_lstm import LSTMWeights, NumpyLSTM
from charlm.sampling import RowParams, Sampling
from charlm.storage import ModelFolder, SavedModel, read_model_folder
from charlm.vocab import Vocabulary
from charlm.word_guard import WordGuard

log = logging.getLogger(__name__)
Backend = Literal["auto", "numpy", "tensorflow"]
Precision = Literal["int8", "fp32"]
PRECISIONS: tuple[str, ...] = ("int8", "fp32")
SERVING_PRECISION: Precision = "int8"
"""What the engine (and so the bot) steps in on a CPU unless told otherwise: int8 is
2-4x faster and a quarter of the memory, and keeps every shipped model within 0.001
bits/char of float32 (README, Design). Generator and `eval` default to float32, the
reference that Keras and the cards agree with."""


def _no_gpu_device() -> bool:
    """True when no CUDA device can be there: no NVIDIA device node or driver, or
    CUDA_VISIBLE_DEVICES hides them all. Checked first, so a CPU host never pays
    seconds and hundreds of MB for importing TensorFlow just to hear "no GPU"."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not (os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")
                or os.path.exists("/dev/nvidiactl"))


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU; imports TensorFlow only where one may exist."""
    if _no_gpu_device() or importlib.util.find_spec("tensorflow") is None:
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose_backend(weights: LSTMWeights, backend: Backend = "auto", precision: Precision = "fp32",
                   guard: WordGuard | None = None):
    """numpy on a CPU (no dispatch overhead), TensorFlow graphs on a GPU. `precision`
    "int8" quantises the weights for the CPU step (charlm.quantize); the GPU path is
    float32 either way. `guard`: words every draw steers around (charlm.word_guard)."""
    if backend not in ("auto", "numpy", "tensorflow"):
        raise CharLMError(f"unknown backend {backend!r}: use auto, numpy or tensorflow")
    if precision not in PRECISIONS:
        raise CharLMError(f"unknown precision {precision!r}: use int8 or fp32")
    if backend == "auto":
        backend = "tensorflow" if gpu_available() else "numpy"
        why = "a GPU is present" if backend == "tensorflow" else "no GPU: numpy steps beat TensorFlow dispatch on a CPU"
    else:
        why = "forced by setting"
    log.info("generation backend: %s (%s), %s", backend, why, precision if backend == "numpy" else "fp32")
    if backend == "tensorflow":
        from charlm.tf_lstm import TFLSTM

        return TFLSTM(weights, guard)
    if precision == "int8":
        from charlm.int8_lstm import Int8LSTM
        from charlm.quantize import QuantizedWeights

        stepper = Int8LSTM(QuantizedWeights.of(weights))
    else:
        stepper = NumpyLSTM(weights)
    stepper.guard = guard
    return stepper


@dataclass
class Row:
    """One prompt being continued."""

    settings: Sampling
    rng: np.random.Generator
    ids: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.ids) >= self.settings.length


class Batch:
    """Rows stepped together. Rows join after priming their window and leave when done."""

    def __init__(self, stepper) -> None:
        self.stepper = stepper
        self.rows: list[Row] = []
        self.state = None
        self.logits = None
        self.params: RowParams | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, windows: np.ndarray, settings: list[Sampling], vocab_size: int) -> list[Row]:
        """Prime new windows (batch, time) together and append them as rows."""
        state, logits = self.stepper.prime(np.asarray(windows, np.int32))
        new = [Row(s, s.rng()) for s in settings]
        params = RowParams.of(settings, vocab_size)
        if self.stepper.guard is not None:
            params.words = self.stepper.guard.start(windows)
        if self.rows:
            cat = self.stepper.concat_rows
            state = [(cat([h0, h1]), cat([c0, c1])) for (h0, c0), (h1, c1) in zip(self.state, state)]
            logits = cat([self.logits, logits])
            params = RowParams.concat([self.params, params])
        self.rows += new
        self.state, self.logits, self.params = state, logits, params
        return new

    def advance(self, steps: int = 1) -> np.ndarray:
        """Generate `steps` characters for every row; returns the ids (rows, steps)."""
        uniforms = np.stack([row.rng.random(steps) for row in self.rows])
        ids, self.logits = self.stepper.advance(self.state, self.logits, self.params, uniforms)
        for row, new in zip(self.rows, ids):
            row.ids.extend(int(i) for i in new[: row.settings.length - len(row.ids)])
        return ids

    def keep(self, rows: list[int]) -> None:
        """Keep only these row positions (finished or cancelled rows leave)."""
        index = np.asarray(rows, dtype=np.int64)
        self.rows = [self.rows[i] for i in rows]
        if not self.rows:
            self.state = self.logits = self.params = None
            return
        take = self.stepper.take_rows
        self.state = [(take(h, index), take(c, index)) for h, c in self.state]
        self.logits = take(self.logits, index)
        self.params = self.params.take(index)


class Generator:
    """A loaded model ready to continue prompts."""

    def __init__(self, saved: ModelFolder | SavedModel, backend: Backend = "auto",
                 precision: Precision = "fp32", guarded: bool = True) -> None:
        """`guarded`: steer around the folder's avoid.json words, as serving does (when it has one)."""
        self.saved = saved
        self.vocab: Vocabulary = saved.vocab
        self.card = saved.card
        weights = saved.weights if isinstance(saved, ModelFolder) else LSTMWeights.from_keras(saved.model)
        self.guard = WordGuard.build(saved.avoid, self.vocab) if guarded and saved.avoid else None
        self.stepper = choose_backend(weights, backend, precision, self.guard)

    @classmethod
    def from_folder(cls, folder: str | Path, backend: Backend = "auto", precision: Precision = "fp32",
                    guarded: bool = True) -> "Generator":
        """Read without Keras; only the TensorFlow backend imports TensorFlow."""
        return cls(read_model_folder(folder), backend, precision, guarded)

    def batch(self) -> Batch:
        return Batch(self.stepper)

    def generate(self, windows: list[np.ndarray], settings: list[Sampling], chunk: int = 16) -> list[str]:
        """Continue each window with its own settings, all rows stepped together."""
        if len(windows) != len(settings):
            raise CharLMError("one sampling setting per prompt is needed")
        batch = self.batch()
        rows = batch.join(np.stack(windows), settings, len(self.vocab))
        longest, done = max(s.length for s in settings), 0
        while done < longest:
            steps = min(chunk, longest - done)
            batch.advance(steps)
            done += steps
        return [self.vocab.decode(r.ids) for r in rows]
