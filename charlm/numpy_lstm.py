"""The model's forward pass in numpy, one character at a time, on the Keras weights.

On a CPU this is the fastest correct step: a Keras or tf.function call costs more in
dispatch than the arithmetic of one character, while numpy goes straight to BLAS.
A step for one row is a few BLAS mat-vecs plus a fixed number of small numpy calls,
so the weights are rearranged once (see `_Layout`) to make those calls as few as possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from charlm.sampling import RowParams, sample

_SCRATCH_SIZES = 4  # batch sizes kept: the running batch, rows being primed, and a little slack
State = list[tuple[np.ndarray, np.ndarray]]  # per layer: (h, c), each (batch, units)


@dataclass
class LSTMWeights:
    """Weights of Embedding -> LSTM x N -> Dense, in Keras layout (gates i, f, c, o).

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


def _gates(units: int) -> tuple[np.ndarray, np.ndarray]:
    """Column order i, f, o, c (the three sigmoid gates side by side) and the 0.5 scale
    that lets one tanh serve all four: sigmoid(x) = 0.5 * tanh(x / 2) + 0.5."""
    order = np.concatenate([np.arange(units), np.arange(units, 2 * units),
                            np.arange(3 * units, 4 * units), np.arange(2 * units, 3 * units)])
    scale = np.concatenate([np.full(3 * units, 0.5, np.float32), np.ones(units, np.float32)])
    return order, scale


@dataclass
class _Layout:
    """The weights as the step reads them: gate columns reordered and pre-scaled; for
    layers after the first, input kernel, recurrent kernel and bias stacked into one
    (in + units + 1, 4*units) matrix, multiplied by the row [x, h, 1]."""

    table: np.ndarray  # (vocab, 4*u0): layer 0 input pre-activations incl. bias
    recurrent0: np.ndarray  # (u0, 4*u0)
    stacked: list[np.ndarray]  # layers 1..N-1
    dense_w: np.ndarray
    dense_b: np.ndarray

    @classmethod
    def of(cls, w: LSTMWeights) -> "_Layout":
        def arrange(m: np.ndarray, units: int) -> np.ndarray:
            order, scale = _gates(units)
            return np.ascontiguousarray(m[..., order] * scale, dtype=np.float32)

        u = w.units
        stacked = [arrange(np.concatenate([k, r, b[None, :]]), units)
                   for k, r, b, units in zip(w.kernels, w.recurrent[1:], w.biases, u[1:])]
        return cls(arrange(w.table, u[0]), arrange(w.recurrent[0], u[0]), stacked, w.dense_w, w.dense_b)


class _Scratch:
    """Preallocated temporaries for one batch size, with their gate views made once."""

    def __init__(self, batch: int, units: list[int]) -> None:
        self.z = [np.empty((batch, 4 * u), np.float32) for u in units]
        self.tmp = [np.empty((batch, u), np.float32) for u in units]
        self.xh = [np.ones((batch, units[l - 1] + units[l] + 1), np.float32) for l in range(1, len(units))]
        self.sig = [z[:, : 3 * u] for z, u in zip(self.z, units)]
        self.gates = [(z[:, :u], z[:, u : 2 * u], z[:, 2 * u : 3 * u], z[:, 3 * u :]) for z, u in zip(self.z, units)]


class NumpyLSTM:
    """Stateful stepping on the CPU. States are plain arrays, so rows can join and leave.

    Steps update the state arrays in place and share scratch buffers, so one instance
    must be driven by one thread at a time.
    """

    name = "numpy"

    def __init__(self, weights: LSTMWeights) -> None:
        self.units = weights.units
        self._layout = _Layout.of(weights)
        self._scratch: dict[int, _Scratch] = {}  # by batch size, the few most recent

    def zero_state(self, batch: int) -> State:
        return [(np.zeros((batch, u), np.float32), np.zeros((batch, u), np.float32)) for u in self.units]

    def prime(self, ids: np.ndarray) -> tuple[State, np.ndarray]:
        """Run whole windows (batch, time) from a zero state; return state and last logits."""
        ids = np.asarray(ids, dtype=np.intp)
        state = self.zero_state(ids.shape[0])
        for t in range(ids.shape[1]):
            self._layers(state, ids[:, t])
        return state, self.logits(state)

    def logits(self, state: State) -> np.ndarray:
        out = state[-1][0] @ self._layout.dense_w
        out += self._layout.dense_b
        return out

    def step(self, state: State, ids: np.ndarray) -> np.ndarray:
        """Advance every row by one character (in place); return the next logits."""
        self._layers(state, ids)
        return self.logits(state)

    def _layers(self, state: State, ids: np.ndarray) -> None:
        lay = self._layout
        s = self._scratch_for(len(ids))
        h, c = state[0]
        np.matmul(h, lay.recurrent0, out=s.z[0])
        s.z[0] += lay.table[ids]
        self._cell(s, 0, h, c)
        for layer in range(1, len(state)):
            x, (h, c), xh = h, state[layer], s.xh[layer - 1]
            xh[:, : x.shape[1]] = x
            xh[:, x.shape[1] : -1] = h
            np.matmul(xh, lay.stacked[layer - 1], out=s.z[layer])
            self._cell(s, layer, h, c)

    def _scratch_for(self, batch: int) -> _Scratch:
        s = self._scratch.pop(batch, None) or _Scratch(batch, self.units)
        self._scratch[batch] = s  # most recent last
        if len(self._scratch) > _SCRATCH_SIZES:
            del self._scratch[next(iter(self._scratch))]
        return s

    @staticmethod
    def _cell(s: _Scratch, layer: int, h: np.ndarray, c: np.ndarray) -> None:
        """Keras LSTM gates on the pre-scaled pre-activations; writes h and c in place."""
        np.tanh(s.z[layer], out=s.z[layer])
        sig = s.sig[layer]
        sig *= 0.5
        sig += 0.5
        i, f, o, g = s.gates[layer]
        tmp = s.tmp[layer]
        c *= f
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=h)

    def advance(self, state: State, logits: np.ndarray, params: RowParams,
                uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample and step `uniforms.shape[1]` characters; return (ids (batch, k), logits)."""
        out = np.empty(uniforms.shape, np.int32)
        for k in range(uniforms.shape[1]):
            ids = sample(logits, params, uniforms[:, k])
            out[:, k] = ids
            logits = self.step(state, ids)
        return out, logits

    @staticmethod
    def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    @staticmethod
    def take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x[rows]
