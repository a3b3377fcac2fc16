"""The model's forward pass as TensorFlow graphs, for GPUs.

On a GPU every host round trip costs more than a step, so the whole sampling loop of
`k` characters runs inside one tf.function; only the chosen ids come back.
Same interface as NumpyLSTM, same weights, same sampling rule.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.numpy_lstm import LSTMWeights
from charlm.sampling import RowParams
from charlm.word_guard import REFUSED, WordGuard

TFState = list[tuple[tf.Tensor, tf.Tensor]]


def _cell(z: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    i, f, g, o = tf.split(z, 4, axis=1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def tf_sample(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
              uniforms: tf.Tensor) -> tf.Tensor:
    """charlm.sampling.sample, written in TensorFlow ops."""
    greedy = tf.argmax(logits, axis=1, output_type=tf.int32)
    z = logits / tf.maximum(temperature, 1e-6)[:, None]
    order = tf.argsort(z, axis=1, direction="DESCENDING", stable=True)
    z = tf.gather(z, order, batch_dims=1)
    p = tf.exp(z - z[:, :1])
    p = p / tf.reduce_sum(p, axis=1, keepdims=True)
    rank = tf.range(tf.shape(z)[1])[None, :]
    keep = (rank < top_k[:, None]) & ((tf.cumsum(p, axis=1) - p) < top_p[:, None])
    cdf = tf.cumsum(tf.where(keep, p, 0.0), axis=1)
    idx = tf.reduce_sum(tf.cast(cdf < uniforms[:, None] * cdf[:, -1:], tf.int32), axis=1)
    idx = tf.minimum(idx, tf.reduce_sum(tf.cast(keep, tf.int32), axis=1) - 1)
    return tf.where(temperature > 0, tf.gather(order, idx, batch_dims=1), greedy)


class TFLSTM:
    """Stateful stepping with the loop inside tf.function (GPU path)."""

    name = "tensorflow"
    precision = "fp32"  # the GPU path steps in float32 whatever precision is asked for

    def __init__(self, weights: LSTMWeights, guard: WordGuard | None = None) -> None:
        self.guard = guard
        self._refuse = None if guard is None else tf.constant(guard.refuse)
        self._next = None if guard is None else tf.constant(guard.next.astype(np.int32))
        self.table = tf.constant(weights.table)
        self.kernels = [tf.constant(k) for k in weights.kernels]
        self.recurrent = [tf.constant(u) for u in weights.recurrent]
        self.biases = [tf.constant(b) for b in weights.biases]
        self.dense_w, self.dense_b = tf.constant(weights.dense_w), tf.constant(weights.dense_b)
        self.units = weights.units

    def _step(self, state: TFState, ids: tf.Tensor) -> tuple[TFState, tf.Tensor]:
        new: TFState = []
        x = None
        for layer, (h, c) in enumerate(state):
            if layer == 0:
                z = tf.gather(self.table, ids) + h @ self.recurrent[0]
            else:
                z = x @ self.kernels[layer - 1] + h @ self.recurrent[layer] + self.biases[layer - 1]
            h, c = _cell(z, c)
            new.append((h, c))
            x = h
        return new, x @ self.dense_w + self.dense_b

    @tf.function(reduce_retracing=True)
    def _prime(self, ids: tf.Tensor) -> tuple[TFState, tf.Tensor]:
        batch = tf.shape(ids)[0]
        state = [(tf.zeros((batch, u)), tf.zeros((batch, u))) for u in self.units]
        logits = tf.zeros((batch, self.dense_w.shape[1]))
        for t in tf.range(tf.shape(ids)[1]):
            state, logits = self._step(state, ids[:, t])
        return state, logits

    @tf.function(reduce_retracing=True)
    def _advance(self, state: TFState, logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
                 top_p: tf.Tensor, uniforms: tf.Tensor,
                 words: tf.Tensor) -> tuple[tf.Tensor, TFState, tf.Tensor, tf.Tensor]:
        steps = tf.shape(uniforms)[1]
        out = tf.TensorArray(tf.int32, size=steps)
        for k in tf.range(steps):
            if self._refuse is not None:  # decided when traced: the guard is fixed per stepper
                logits = tf.where(tf.gather(self._refuse, words), REFUSED, logits)
            ids = tf_sample(logits, temperature, top_k, top_p, uniforms[:, k])
            if self._refuse is not None:
                words = tf.gather_nd(self._next, tf.stack([words, ids], axis=1))
            out = out.write(k, ids)
            state, logits = self._step(state, ids)
        return tf.transpose(out.stack()), state, logits, words

    def prime(self, ids: np.ndarray) -> tuple[TFState, tf.Tensor]:
        return self._prime(tf.constant(ids, tf.int32))

    def advance(self, state: TFState, logits: tf.Tensor, params: RowParams,
                uniforms: np.ndarray) -> tuple[np.ndarray, tf.Tensor]:
        words = params.words if self.guard is not None else np.zeros(len(uniforms), np.int32)
        ids, new_state, logits, words = self._advance(state, logits, tf.constant(params.temperature),
                                                      tf.constant(params.top_k), tf.constant(params.top_p),
                                                      tf.constant(uniforms, tf.float32),
                                                      tf.constant(words, tf.int32))
        state[:] = new_state
        if self.guard is not None:
            params.words = words.numpy().astype(self.guard.next.dtype)
        return ids.numpy(), logits

    @staticmethod
    def concat_rows(parts: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(parts, 0)

    @staticmethod
    def take_rows(x: tf.Tensor, rows: np.ndarray) -> tf.Tensor:
        return tf.gather(x, rows)
