"""8-bit weights for the CPU step: symmetric, one scale per output row, built at load.

A weight matrix of Keras layout (inputs, outputs) becomes `q` (outputs, inputs padded to
int8_kernels.LANES) int8 with w[i, j] ~ q[j, i] * step[j], step[j] = max_i |w[i, j]| / 127.
Activations h = o * tanh(c) lie in (-1, 1), so they need no per-step scale: each step
stores them as round(63 h) + 64 in uint8 (7 bits, so the AVX2 kernel's int16 pair sums
never saturate: charlm.int8_kernels), and `offset` (64 * the row's sum of q) takes the
+64 back out.

Both LSTM layers' recurrent and input kernels are quantised. The output layer stays
float32: it is 1% of the weights (512 x 42), and it is the layer whose rounding most
often changes which character is likeliest (argmax continuations of storybook's 20
held-out prompts kept float32's first 100 characters in 12 of 20 with only the output
layer quantised, 15-16 with only either LSTM layer; 13 with all but it, 10 with all).
The embedding stays a lookup: it is folded with layer 0's input kernel and bias into one
(vocab, 4 * units) table (charlm.numpy_lstm.LSTMWeights), read one row per character,
held as int16 with one scale per character: half of its 0.34 MB, which keeps a loaded
version under 4 MB, at no measurable cost (as int8 it cost alice's greedy agreement 17
of 20 prompts -> 9).
Quantising the 2x512 model takes about 17 ms (as long as reading model.keras; 40-70 ms
on a busy machine), under the ~0.1 s that would pay for a cache, so nothing is written
to disk: the int8 arrays are built from model.keras at every load and the float32 ones
are dropped with the folder's other arrays once the version is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.int8_kernels import LANES, X_SCALE, X_ZERO
from charlm.numpy_lstm import LSTMWeights

W_MAX = 127
"""Largest |q|: with activations up to 127, the AVX2 kernel's pair sums (2 * 127 * 127) fit int16."""


@dataclass
class QuantMatrix:
    """One quantised weight matrix, rows = outputs."""

    q: np.ndarray  # (outputs, padded inputs) int8; padding columns are 0
    offset: np.ndarray  # (outputs,) int32: X_ZERO * q.sum(axis=1), the activations' zero point
    scale: np.ndarray  # (outputs,) float32: step / X_SCALE, from an integer sum to the float product
    inputs: int  # inputs before padding

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.offset.nbytes + self.scale.nbytes


def padded(n: int) -> int:
    """`n` rounded up to a whole number of kernel vectors."""
    return -(-n // LANES) * LANES


def quantize_matrix(*parts: np.ndarray) -> QuantMatrix:
    """Keras-layout float weights (inputs, outputs) -> rows of int8, one scale each.
    Several parts with the same outputs are stacked along the inputs, each padded to
    whole vectors on its own (so each part's input is quantised into its own slice)."""
    rows = [np.asarray(w, np.float32).T for w in parts]
    peak = np.max([np.abs(r).max(axis=1) for r in rows], axis=0)
    step = np.where(peak > 0, peak / W_MAX, 1.0).astype(np.float32)
    q = np.zeros((rows[0].shape[0], sum(padded(r.shape[1]) for r in rows)), np.int8)
    start = 0
    for r in rows:
        q[:, start : start + r.shape[1]] = np.clip(np.rint(r / step[:, None]), -W_MAX, W_MAX)
        start += padded(r.shape[1])
    offset = (X_ZERO * q.sum(axis=1, dtype=np.int32)).astype(np.int32)
    return QuantMatrix(q, offset, (step / np.float32(X_SCALE)).astype(np.float32), rows[0].shape[1])


def quantize_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int16 rows, float32 scale per row) of a float32 table, symmetric."""
    peak = np.abs(table).max(axis=1)
    step = np.where(peak > 0, peak / 32767, 1.0).astype(np.float32)
    return np.rint(table / step[:, None]).astype(np.int16), step


def dequantize(m: QuantMatrix) -> np.ndarray:
    """The float weights `m` stands for, in Keras layout (for tests and error figures);
    of a stacked matrix, the first part."""
    return (m.q[:, : m.inputs].astype(np.float32) * (m.scale * np.float32(X_SCALE))[:, None]).T


@dataclass
class QuantizedWeights:
    """The weights the int8 step holds: int8 matrices, float32 table, biases and scales."""

    table: np.ndarray  # (vocab, 4 * units) int16: embedding @ kernel_0 + bias_0, a row per character
    table_scale: np.ndarray  # (vocab,) float32
    first: QuantMatrix  # layer 0's recurrent kernel (its input kernel is in `table`)
    later: list[QuantMatrix]  # layers 1..N-1: input kernel and recurrent kernel stacked, [x; h]
    biases: list[np.ndarray]  # biases of layers 1..N-1, float32
    dense_w: np.ndarray  # the output layer, float32 (units, vocab): see the module's docstring
    dense_b: np.ndarray
    units: list[int]

    @classmethod
    def of(cls, w: LSTMWeights) -> "QuantizedWeights":
        """Layers after the first read [x; h] through one stacked matrix: one product
        and one pass per output row instead of two (about 5% of a batch-32 step)."""
        table, table_scale = quantize_table(w.table)
        return cls(table=table, table_scale=table_scale, first=quantize_matrix(w.recurrent[0]),
                   later=[quantize_matrix(k, r) for k, r in zip(w.kernels, w.recurrent[1:])],
                   biases=list(w.biases), dense_w=w.dense_w, dense_b=w.dense_b, units=w.units)

    @property
    def matrices(self) -> list[QuantMatrix]:
        return [self.first, *self.later]

    @property
    def nbytes(self) -> int:
        """Bytes held: what a loaded version costs in memory."""
        return (sum(m.nbytes for m in self.matrices) + self.table.nbytes + self.table_scale.nbytes
                + self.dense_w.nbytes + self.dense_b.nbytes + sum(b.nbytes for b in self.biases))

    @property
    def bytes_per_step(self) -> int:
        """Bytes one character step reads: every int8 matrix, the output layer, one table row."""
        return (sum(m.nbytes for m in self.matrices) + self.dense_w.nbytes + self.dense_b.nbytes
                + self.table.shape[1] * 2 + sum(b.nbytes for b in self.biases))
