"""The model's forward pass in numpy, one character at a time, on the Keras weights.

On a CPU this is the fastest correct step: a Keras or tf.function call costs more in
dispatch than the arithmetic of one character, while numpy goes straight to BLAS.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from charlm.sampling import RowParams, sample

State = list[tuple[np.ndarray, np.ndarray]]  # per layer: (h, c), each (batch, units)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


@dataclass
class LSTMWeights:
    """Weights of Embedding -> LSTM x N -> Dense, arranged for stepping.

    The embedding and the first layer's input kernel and bias are folded into one
    (vocab, 4*units) table: one row lookup replaces a matmul per character.
    """

    table: np.ndarray
    kernels: list[np.ndarray]  # input kernels of layers 1..N-1 (layer 0's is in `table`)
    recurrent: list[np.ndarray]  # recurrent kernels of every layer
    biases: list[np.ndarray]  # biases of layers 1..N-1
    dense_w: np.ndarray
    dense_b: np.ndarray

    @classmethod
    def from_keras(cls, model: keras.Model) -> "LSTMWeights":
        embedding = next(l for l in model.layers if isinstance(l, keras.layers.Embedding))
        lstms = [l for l in model.layers if isinstance(l, keras.layers.LSTM)]
        dense = next(l for l in model.layers if isinstance(l, keras.layers.Dense))
        weights = [[np.asarray(w, dtype=np.float32) for w in l.get_weights()] for l in lstms]
        (emb,) = embedding.get_weights()
        k0, _, b0 = weights[0]
        dw, db = dense.get_weights()
        return cls(
            table=(np.asarray(emb, np.float32) @ k0 + b0).astype(np.float32),
            kernels=[w[0] for w in weights[1:]],
            recurrent=[w[1] for w in weights],
            biases=[w[2] for w in weights[1:]],
            dense_w=np.ascontiguousarray(dw, dtype=np.float32),
            dense_b=np.asarray(db, np.float32),
        )

    @property
    def units(self) -> list[int]:
        return [u.shape[0] for u in self.recurrent]


def _cell(z: np.ndarray, c: np.ndarray, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Keras LSTM gates (input, forget, cell, output) from pre-activations z."""
    i = _sigmoid(z[:, :units])
    f = _sigmoid(z[:, units : 2 * units])
    g = np.tanh(z[:, 2 * units : 3 * units])
    o = _sigmoid(z[:, 3 * units :])
    c = f * c + i * g
    return o * np.tanh(c), c


class NumpyLSTM:
    """Stateful stepping on the CPU. States are plain arrays, so rows can join and leave."""

    name = "numpy"

    def __init__(self, weights: LSTMWeights) -> None:
        self.w = weights

    def zero_state(self, batch: int) -> State:
        return [(np.zeros((batch, u), np.float32), np.zeros((batch, u), np.float32)) for u in self.w.units]

    def prime(self, ids: np.ndarray) -> tuple[State, np.ndarray]:
        """Run whole windows (batch, time) once, layer by layer; return state and last logits."""
        ids = np.asarray(ids, dtype=np.int64)
        batch, steps = ids.shape
        state: State = []
        seq_in = self.w.table[ids]  # (batch, time, 4*units) input pre-activations of layer 0
        for layer, units in enumerate(self.w.units):
            if layer > 0:
                seq_in = seq_out @ self.w.kernels[layer - 1] + self.w.biases[layer - 1]
            u = self.w.recurrent[layer]
            h = np.zeros((batch, units), np.float32)
            c = np.zeros((batch, units), np.float32)
            seq_out = np.empty((batch, steps, units), np.float32)
            for t in range(steps):
                h, c = _cell(seq_in[:, t] + h @ u, c, units)
                seq_out[:, t] = h
            state.append((h, c))
        return state, self.logits(state)

    def logits(self, state: State) -> np.ndarray:
        return state[-1][0] @ self.w.dense_w + self.w.dense_b

    def step(self, state: State, ids: np.ndarray) -> np.ndarray:
        """Advance every row by one character (in place); return the next logits."""
        x = None
        for layer, units in enumerate(self.w.units):
            h, c = state[layer]
            if layer == 0:
                z = self.w.table[ids] + h @ self.w.recurrent[0]
            else:
                z = x @ self.w.kernels[layer - 1] + h @ self.w.recurrent[layer] + self.w.biases[layer - 1]
            h, c = _cell(z, c, units)
            state[layer] = (h, c)
            x = h
        return self.logits(state)

    def advance(self, state: State, logits: np.ndarray, params: RowParams,
                uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample and step `uniforms.shape[1]` characters; return (ids (batch, k), logits)."""
        out = np.empty(uniforms.shape, np.int32)
        for k in range(uniforms.shape[1]):
            out[:, k] = sample(logits, params, uniforms[:, k])
            logits = self.step(state, out[:, k])
        return out, logits

    @staticmethod
    def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    @staticmethod
    def take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x[rows]
