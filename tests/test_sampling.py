"""The compiled sampler against the sampling rule written out in plain numpy."""

import numpy as np
import pytest

from charlm.kernels import _numpy_sum
from charlm.sampling import RowParams, sample


def rule(logits: np.ndarray, params: RowParams, uniforms: np.ndarray) -> np.ndarray:
    """The rule as array expressions: argmax at temperature 0; otherwise sort the scaled
    logits from likeliest (ties by id), keep the top-k whose preceding mass is below
    top-p, and invert the cumulative kept mass at uniform * (kept mass)."""
    out = np.argmax(logits, axis=1).astype(np.int32)
    rows = np.flatnonzero(params.temperature > 0)
    if rows.size == 0:
        return out
    z = logits[rows].astype(np.float64) / params.temperature[rows, None]
    order = np.argsort(-z, axis=1, kind="stable")
    z = np.take_along_axis(z, order, axis=1)
    p = np.exp(z - z[:, :1])
    p /= p.sum(axis=1, keepdims=True)
    rank = np.arange(z.shape[1])[None, :]
    keep = (rank < params.top_k[rows, None]) & ((np.cumsum(p, axis=1) - p) < params.top_p[rows, None])
    cdf = np.cumsum(np.where(keep, p, 0.0), axis=1)
    idx = (cdf < uniforms[rows, None] * cdf[:, -1:]).sum(axis=1)
    idx = np.minimum(idx, keep.sum(axis=1) - 1)
    out[rows] = order[np.arange(rows.size), idx]
    return out


@pytest.mark.parametrize("vocab", [5, 42, 97, 130, 300])
def test_compiled_sampler_picks_what_the_rule_picks(vocab):
    rng = np.random.default_rng(vocab)
    for trial in range(300):
        batch = int(rng.integers(1, 40))
        logits = (rng.standard_normal((batch, vocab)) * rng.uniform(0.1, 8)).astype(np.float32)
        if trial % 5 == 0:
            logits[:, 1:4] = logits[:, :1]  # ties broken by id
        params = RowParams(rng.choice([0.0, 0.3, 0.8, 1.0, 2.5], batch).astype(np.float32),
                           rng.choice([vocab, 1, 3, 10], batch).astype(np.int32),
                           rng.choice([1.0, 0.9, 0.5, 0.01], batch).astype(np.float32))
        uniforms = rng.random(batch)
        np.testing.assert_array_equal(sample(logits, params, uniforms), rule(logits, params, uniforms))


def test_draws_follow_the_softmax():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    params = RowParams(np.ones(1, np.float32), np.full(1, 4, np.int32), np.ones(1, np.float32))
    rng = np.random.default_rng(0)
    counts = np.bincount([sample(logits, params, rng.random(1))[0] for _ in range(20_000)], minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_pairwise_sum_is_numpys_to_the_bit():
    rng = np.random.default_rng(0)
    for n in [0, 1, 7, 8, 9, 127, 128, 129, 255, 300, 1025, 4097]:
        a = rng.random(n) * rng.choice([1.0, 1e-9, 1e9], n)
        assert _numpy_sum(a) == a.sum()
