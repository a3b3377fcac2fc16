"""The model's forward pass on the CPU, one character at a time, on the Keras weights.

On a CPU this is the fastest correct step: a Keras or tf.function call costs more in
dispatch than the arithmetic of one character. Here a step is the BLAS mat-vecs over
the weights (numpy, which is the floor) plus one compiled call per layer for the gates
and one for the draw (charlm.kernels), so little is spent beyond reading the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from charlm.kernels import cell_first, cell_next
from charlm.sampling import RowParams, sample

if TYPE_CHECKING:  # serving never imports Keras: weights come from charlm.keras_archive
    import keras
    from charlm.keras_archive import ArchiveArrays
    from charlm.word_guard import WordGuard

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
    def from_arrays(cls, embedding: np.ndarray, lstms: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    dense: tuple[np.ndarray, np.ndarray]) -> "LSTMWeights":
        """From the layers' variables: embedding, (kernel, recurrent, bias) per LSTM, dense (w, b)."""
        f32 = [[np.ascontiguousarray(w, dtype=np.float32) for w in layer] for layer in lstms]
        k0, _, b0 = f32[0]
        dw, db = dense
        return cls(
            table=np.ascontiguousarray(np.asarray(embedding, np.float32) @ k0 + b0, dtype=np.float32),
            kernels=[w[0] for w in f32[1:]],
            recurrent=[w[1] for w in f32],
            biases=[w[2] for w in f32[1:]],
            dense_w=np.ascontiguousarray(dw, dtype=np.float32),
            dense_b=np.ascontiguousarray(db, dtype=np.float32),
        )

    @classmethod
    def from_archive(cls, arrays: "ArchiveArrays") -> "LSTMWeights":
        """From a `.keras` file read without Keras (charlm.keras_archive.read_archive)."""
        return cls.from_arrays(arrays.embedding, arrays.lstms, arrays.dense)

    @classmethod
    def from_keras(cls, model: "keras.Model") -> "LSTMWeights":
        """From a Keras model in memory (training, fine-tuning, tests)."""
        import keras

        embedding = next(l for l in model.layers if isinstance(l, keras.layers.Embedding))
        lstms = [l for l in model.layers if isinstance(l, keras.layers.LSTM)]
        dense = next(l for l in model.layers if isinstance(l, keras.layers.Dense))
        (emb,) = embedding.get_weights()
        return cls.from_arrays(emb, [l.get_weights() for l in lstms], tuple(dense.get_weights()))

    @property
    def units(self) -> list[int]:
        return [u.shape[0] for u in self.recurrent]


@dataclass
class _PaddingStates:
    """Each layer's (h, c) after 0, every, 2 * every, ... repeats of the padding character `pad`."""

    pad: int
    layers: list[tuple[np.ndarray, np.ndarray]]  # per layer: (positions // every + 1, units) each
    every: int = 1

    def covers(self, pad: int, positions: int) -> bool:
        return self.pad == pad and len(self.layers[0][0]) > positions // self.every

    def state_after(self, positions: int, batch: int) -> State:
        i = positions // self.every
        return [(np.repeat(h[i][None], batch, axis=0), np.repeat(c[i][None], batch, axis=0)) for h, c in self.layers]


class _Scratch:
    """Preallocated pre-activation buffers for one batch size."""

    def __init__(self, batch: int, units: list[int]) -> None:
        self.z_rec = [np.empty((batch, 4 * u), np.float32) for u in units]
        self.z_in = [np.empty((batch, 4 * u), np.float32) for u in units[1:]]


class NumpyLSTM:
    """Stateful stepping on the CPU: BLAS mat-vecs (numpy) for the weights, compiled
    kernels (charlm.kernels) for the gates and the draw. States are plain arrays, so
    rows can join and leave.

    Steps update the state arrays in place and share scratch buffers, so one instance
    must be driven by one thread at a time.
    """

    name = "numpy"
    precision = "fp32"
    pad_every = 1
    scratch_type: type = _Scratch  # the step's reused buffers; the int8 step has its own
    """Padding states kept every this many positions (priming steps the rest)."""
    guard: "WordGuard | None" = None  # words the draws steer around (charlm.word_guard), set by choose_backend

    def __init__(self, weights: LSTMWeights) -> None:
        self.units = weights.units
        self.w = weights
        self._scratch: dict[int, _Scratch] = {}  # by batch size, the few most recent
        self._padding: _PaddingStates | None = None

    def zero_state(self, batch: int) -> State:
        return [(np.zeros((batch, u), np.float32), np.zeros((batch, u), np.float32)) for u in self.units]

    def prime(self, ids: np.ndarray) -> tuple[State, np.ndarray]:
        """Run whole windows (batch, time) from a zero state; return state and last logits.

        Short prompts are left-padded with one character, so most windows start with a
        run of it: the state after k padding characters is the same for every prompt.
        It is computed once per position (`_padded_start`) and priming starts there,
        so a 16-character prompt costs 16 positions, not 100.
        """
        columns = np.ascontiguousarray(np.transpose(ids), dtype=np.int32)  # ids of each position
        skip, state = self._padded_start(columns)
        self._run(state, columns[skip:])
        return state, self.logits(state)

    def _padded_start(self, columns: np.ndarray) -> tuple[int, State]:
        """(positions already covered, state after them) for windows (time, batch) that
        all begin with the same character repeated; (0, zero state) otherwise."""
        steps, batch = columns.shape
        pad = columns[0, 0]
        differs = columns != pad
        skip = int(np.where(differs.any(axis=0), differs.argmax(axis=0), steps).min())
        skip -= skip % self.pad_every
        if skip < 2:
            return 0, self.zero_state(batch)
        if self._padding is None or not self._padding.covers(pad, skip):
            record: list[tuple[np.ndarray, np.ndarray]] = []
            self._run(self.zero_state(1), np.full((steps, 1), pad, np.int32), record)
            zeros = [np.zeros((1, u), np.float32) for u in self.units]
            e = self.pad_every
            self._padding = _PaddingStates(
                int(pad), [(np.concatenate([z, h[e - 1 :: e, 0]]), np.concatenate([z, c[e - 1 :: e, 0]]))
                           for (h, c), z in zip(record, zeros)], e)
        return skip, self._padding.state_after(skip, batch)

    def _run(self, state: State, columns: np.ndarray,
             record: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Step `state` in place over positions `columns` (time, batch), layer by layer:
        once a layer's outputs for every position are known, the next layer's input
        projection is one matrix product over all of them (a GEMM that reads its kernel
        once) and only the recurrent part goes position by position. `record` gets
        each layer's (h, c) after every position, arrays (time, batch, units)."""
        steps, batch = columns.shape
        if steps == 0:
            return
        w, s = self.w, self._scratch_for(batch)
        outputs = None
        for layer, (h, c) in enumerate(state):
            if layer:
                z_in = (outputs.reshape(steps * batch, -1) @ w.kernels[layer - 1]).reshape(steps, batch, -1)
            keep = record is not None or layer + 1 < len(state)  # the last layer's outputs feed nothing
            outputs = np.empty((steps, batch, self.units[layer]), np.float32) if keep else None
            cells = np.empty_like(outputs) if record is not None else None
            for t in range(steps):
                np.matmul(h, w.recurrent[layer], out=s.z_rec[layer])
                if layer:
                    cell_next(z_in[t], s.z_rec[layer], w.biases[layer - 1], c, h)
                else:
                    cell_first(s.z_rec[0], w.table, columns[t], c, h)
                if outputs is not None:
                    outputs[t] = h
                if cells is not None:
                    cells[t] = c
            if record is not None:
                record.append((outputs, cells))

    def sequence_logits(self, ids: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Logits after every position of windows (batch, time) from a zero state, as
        Keras' predict gives them (for evaluation). Runs `chunk` positions at a time, so
        memory stays bounded however long the text."""
        columns = np.ascontiguousarray(np.transpose(ids), dtype=np.int32)
        steps, batch = columns.shape
        state = self.zero_state(batch)
        out = np.empty((batch, steps, self.w.dense_b.shape[0]), np.float32)
        for start in range(0, steps, chunk):
            record: list[tuple[np.ndarray, np.ndarray]] = []
            self._run(state, columns[start:start + chunk], record)
            last = record[-1][0]  # (positions, batch, units)
            out[:, start:start + len(last)] = np.transpose(last @ self.w.dense_w + self.w.dense_b, (1, 0, 2))
        return out

    def logits(self, state: State) -> np.ndarray:
        out = state[-1][0] @ self.w.dense_w
        out += self.w.dense_b
        return out

    def step(self, state: State, ids: np.ndarray) -> np.ndarray:
        """Advance every row by one character (in place); return the next logits."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)  # one layout: one compiled kernel
        self._layers(state, ids, self._scratch_for(len(ids)))
        return self.logits(state)

    def _layers(self, state: State, ids: np.ndarray, s: _Scratch) -> None:
        w = self.w
        h, c = state[0]
        np.matmul(h, w.recurrent[0], out=s.z_rec[0])
        cell_first(s.z_rec[0], w.table, ids, c, h)
        for layer in range(1, len(state)):
            x, (h, c) = h, state[layer]
            np.matmul(x, w.kernels[layer - 1], out=s.z_in[layer - 1])
            np.matmul(h, w.recurrent[layer], out=s.z_rec[layer])
            cell_next(s.z_in[layer - 1], s.z_rec[layer], w.biases[layer - 1], c, h)

    def _scratch_for(self, batch: int) -> _Scratch:
        s = self._scratch.pop(batch, None) or self.scratch_type(batch, self.units)
        self._scratch[batch] = s  # most recent last
        if len(self._scratch) > _SCRATCH_SIZES:
            del self._scratch[next(iter(self._scratch))]
        return s

    def advance(self, state: State, logits: np.ndarray, params: RowParams,
                uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample and step `uniforms.shape[1]` characters; return (ids (batch, k), logits).

        The hot loop of generation: per character one sampler call, the layers, the
        output layer, and nothing else at Python level."""
        steps, batch = uniforms.shape[1], uniforms.shape[0]
        ids = np.empty((steps, batch), np.int32)  # ids[k]: contiguous, written by the sampler
        columns = np.ascontiguousarray(uniforms.T)
        s = self._scratch_for(batch)
        guard = self.guard
        for k in range(steps):
            if guard is not None:
                guard.mask(logits, params.words)
            sample(logits, params, columns[k], out=ids[k])
            if guard is not None:
                params.words = guard.step(params.words, ids[k])
            self._layers(state, ids[k], s)
            logits = self.logits(state)
        return ids.T.copy(), logits

    @staticmethod
    def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    @staticmethod
    def take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x[rows]
