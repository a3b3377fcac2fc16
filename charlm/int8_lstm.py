"""The CPU step on 8-bit weights: a quarter of the bytes per character of float32.

Same interface and state as charlm.numpy_lstm.NumpyLSTM (float32 (h, c) per layer, so
rows join and leave the same way, and the engine drives both alike); only the weight
products differ. Each product quantises its input rows to uint8 (h lies in (-1, 1):
a fixed scale, no per-step statistics) and runs the int8 kernel of
charlm.int8_kernels, which writes float32 pre-activations; the gates, the output layer
and the draw are float32's. Priming and evaluation step one position at a time
(the rows of a batch together), since the int8 product gains nothing from the
float32 step's one-GEMM-per-layer trick: it is cheapest where it reads each weight once
for every row.
"""

from __future__ import annotations

import numpy as np

from charlm.int8_kernels import cell_stacked, cell_table, qmatmul, quantize_rows
from charlm.numpy_lstm import NumpyLSTM, State
from charlm.quantize import QuantizedWeights, padded


class _QScratch:
    """Buffers for one batch size: float pre-activations per layer, and per layer its
    uint8 input: [h] for the first, [x; h] for later ones (each part padded)."""

    def __init__(self, batch: int, units: list[int]) -> None:
        self.z = [np.empty((batch, 4 * u), np.float32) for u in units]
        self.x = [np.zeros((batch, padded(units[0])), np.uint8)]
        self.x += [np.zeros((batch, padded(a) + padded(b)), np.uint8) for a, b in zip(units, units[1:])]


class Int8LSTM(NumpyLSTM):
    """NumpyLSTM's stepping on QuantizedWeights (charlm.quantize). One thread at a time."""

    name = "numpy"
    precision = "int8"
    scratch_type = _QScratch
    pad_every = 8  # an eighth of the padding states' 0.8 MB (2x512), for at most 7 more priming steps

    def __init__(self, weights: QuantizedWeights) -> None:  # not NumpyLSTM.__init__: no float32 weights here
        self.units = weights.units
        self.q = weights
        self._scratch: dict[int, _QScratch] = {}
        self._padding = None

    def _layers(self, state: State, ids: np.ndarray, s: _QScratch) -> None:
        q = self.q
        h, c = state[0]
        quantize_rows(h, s.x[0])
        qmatmul(s.x[0], q.first.q, q.first.offset, q.first.scale, s.z[0])
        cell_table(s.z[0], q.table, q.table_scale, ids, c, h)
        for layer in range(1, len(state)):
            x, (h, c) = h, state[layer]
            m, split = q.later[layer - 1], padded(self.units[layer - 1])
            quantize_rows(x, s.x[layer][:, :split])
            quantize_rows(h, s.x[layer][:, split:])
            qmatmul(s.x[layer], m.q, m.offset, m.scale, s.z[layer])
            cell_stacked(s.z[layer], q.biases[layer - 1], c, h)

    def logits(self, state: State) -> np.ndarray:
        """The output layer in float32 (charlm.quantize says why)."""
        out = state[-1][0] @ self.q.dense_w
        out += self.q.dense_b
        return out

    def _run(self, state: State, columns: np.ndarray,
             record: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Step `state` in place over positions `columns` (time, batch); `record` gets
        each layer's (h, c) after every position, arrays (time, batch, units)."""
        steps, batch = columns.shape
        if steps == 0:
            return
        s = self._scratch_for(batch)
        kept = [(np.empty((steps, batch, u), np.float32), np.empty((steps, batch, u), np.float32))
                for u in self.units] if record is not None else None
        for t in range(steps):
            self._layers(state, columns[t], s)
            if kept is not None:
                for (hs, cs), (h, c) in zip(kept, state):
                    hs[t], cs[t] = h, c
        if record is not None:
            record.extend(kept)

    def sequence_logits(self, ids: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Logits after every position of windows (batch, time) from a zero state (for
        evaluation), one position at a time."""
        columns = np.ascontiguousarray(np.transpose(ids), dtype=np.int32)
        steps, batch = columns.shape
        state = self.zero_state(batch)
        s = self._scratch_for(batch)
        out = np.empty((batch, steps, self.q.dense_b.shape[0]), np.float32)
        for t in range(steps):
            self._layers(state, columns[t], s)
            out[:, t] = self.logits(state)
        return out
