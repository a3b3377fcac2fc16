"""Compiled (numba) kernels for the CPU step: the LSTM cell and the sampler.

A step of one stream is a few BLAS mat-vecs (numpy) plus elementwise gate math and
one draw. In plain numpy the gate math alone is a dozen ufunc calls per layer, and
numpy's float32 tanh costs ~4 ns an element here; compiled, each layer's gates are a
few vectorised loops in one call (~0.5 ns an element), and the draw for every row is
one call. Both release the GIL, so the engine thread never stalls the bot's event loop.

The cell uses the rational tanh approximation TensorFlow's CPU kernels use (Eigen's
"fast tanh", |error| < 3e-7), so steps match the Keras model to well under 1e-4.
The sampler is exact: it does the float64 arithmetic of the sampling rule written as
numpy expressions (see `sample_rows`, and tests/test_sampling.py), in the same order,
so it picks the same ids; TensorFlow's twin (charlm.tf_lstm) follows the same rule.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _compiled(**options):
    """njit with an on-disk cache where the package folder (or NUMBA_CACHE_DIR) is
    writable; without one, compile at first use in every process instead.
    error_model="numpy": a division never raises, so it needs no branch and the loops
    around it vectorise."""
    def decorate(fn):
        try:
            return njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
        except RuntimeError:  # numba found no writable cache location
            return njit(cache=False, nogil=True, error_model="numpy", **options)(fn)
    return decorate


_CLAMP = np.float32(7.90531110763549805)  # beyond this, float32 tanh is +-1


@_compiled(fastmath=True, inline="always")
def _tanh(x):
    """Eigen's float tanh: x * P(x^2) / Q(x^2) on the clamped input; branch-free so
    the loops around it vectorise."""
    x = x if x < _CLAMP else _CLAMP
    x = x if x > -_CLAMP else -_CLAMP
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


@_compiled(fastmath=True, inline="always")
def _sigmoid(x):
    return np.float32(0.5) * _tanh(np.float32(0.5) * x) + np.float32(0.5)


@_compiled(fastmath=True)
def _gates(z, c, h):
    """The LSTM update from pre-activations z (batch, 4*units; blocks i, f, g, o), in
    place on z, c and h. Each loop reads and writes few arrays: LLVM checks every pair
    of them for overlap before it vectorises, and gives up past eight checks."""
    units = c.shape[1]
    for r in range(c.shape[0]):
        zr = z[r]
        for k in range(2 * units):  # i and f
            zr[k] = _sigmoid(zr[k])
        zg, zo = zr[2 * units : 3 * units], zr[3 * units :]
        for j in range(units):
            zg[j] = _tanh(zg[j])
        for j in range(units):
            zo[j] = _sigmoid(zo[j])
    for r in range(c.shape[0]):
        zr, cr = z[r], c[r]
        zi, zf, zg = zr[:units], zr[units : 2 * units], zr[2 * units : 3 * units]
        for j in range(units):
            cr[j] = zf[j] * cr[j] + zi[j] * zg[j]
    for r in range(c.shape[0]):
        zo, cr, hr = z[r, 3 * units :], c[r], h[r]
        for j in range(units):
            hr[j] = zo[j] * _tanh(cr[j])


@_compiled(fastmath=True)
def cell_first(z_rec, table, ids, c, h):
    """First layer: pre-activations are `z_rec` (h @ recurrent, overwritten) plus the
    row of `table` (embedding @ kernel + bias) for each row's character. Keras gate
    order i, f, g, o. Updates c and h (batch, units) in place."""
    for r in range(c.shape[0]):
        z, add = z_rec[r], table[ids[r]]
        for k in range(z.shape[0]):
            z[k] += add[k]
    _gates(z_rec, c, h)


@_compiled(fastmath=True)
def cell_next(z_in, z_rec, bias, c, h):
    """Later layers: pre-activations are z_rec (h @ recurrent, overwritten) + z_in
    (x @ kernel) + bias."""
    for r in range(c.shape[0]):
        z, x = z_rec[r], z_in[r]
        for k in range(z.shape[0]):
            z[k] += x[k] + bias[k]
    _gates(z_rec, c, h)


@_compiled()
def _block_sum(a, start, stop):
    """numpy's float64 sum of at most 128 items: 8 interleaved partial sums, combined
    pairwise, then the remainder in order (fewer than 8 items: plainly in order)."""
    n = stop - start
    if n < 8:
        s = 0.0
        for k in range(start, stop):
            s += a[k]
        return s
    r = a[start : start + 8].copy()
    k = start + 8
    while k < stop - (n % 8):
        for j in range(8):
            r[j] += a[k + j]
        k += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while k < stop:
        s += a[k]
        k += 1
    return s


@_compiled()
def _numpy_sum(a):
    """numpy's pairwise float64 sum of `a`, operation for operation, so probabilities
    normalise to the same bits as `p / p.sum()` in numpy. Longer than 128 items, numpy
    splits in two halves (the first a multiple of 8) and adds their sums; that
    recursion runs here on an explicit stack (numba cannot cache recursive code)."""
    n = a.size
    if n <= 128:
        return _block_sum(a, 0, n)
    starts, stops = np.empty(64, np.int64), np.empty(64, np.int64)
    stage, left = np.zeros(64, np.int64), np.zeros(64, np.float64)
    starts[0], stops[0], top, value = 0, n, 1, 0.0
    while top:
        f = top - 1
        lo, hi = starts[f], stops[f]
        half = (hi - lo) // 2
        half -= half % 8
        if hi - lo <= 128 or stage[f] == 2:
            value = _block_sum(a, lo, hi) if hi - lo <= 128 else left[f] + value
            top -= 1
            if top:
                if stage[top - 1] == 1:
                    left[top - 1] = value
                # stage 2: `value` is the right half's sum, read by the parent above
            continue
        stage[f] += 1
        starts[top], stops[top], stage[top] = (lo, lo + half, 0) if stage[f] == 1 else (lo + half, hi, 0)
        top += 1
    return value


@_compiled()
def sample_rows(logits, temperature, top_k, top_p, uniforms, out):
    """One character id per row into `out`. The rule: argmax where temperature is 0;
    otherwise sort the temperature-scaled logits from likeliest (ties by id), keep the
    first top_k whose preceding probability mass is below top_p, and take the first
    kept character whose cumulative mass reaches uniform * (kept mass).

    Computed as the numpy expressions of that rule would compute it (float64, numpy's
    summation order), so both pick the same ids."""
    vocab = logits.shape[1]
    neg = np.empty(vocab, np.float64)
    p = np.empty(vocab, np.float64)
    keep = np.empty(vocab, np.bool_)
    for r in range(logits.shape[0]):
        t = np.float64(temperature[r])
        if t <= 0.0:
            out[r] = np.argmax(logits[r])
            continue
        for v in range(vocab):
            neg[v] = -(np.float64(logits[r, v]) / t)
        order = np.argsort(neg, kind="mergesort")  # stable: ties keep id order
        top = neg[order[0]]
        for k in range(vocab):
            p[k] = np.exp(top - neg[order[k]])
        total = _numpy_sum(p)
        cum, kept = 0.0, 0
        for k in range(vocab):
            p[k] /= total
            cum += p[k]
            keep[k] = k < top_k[r] and cum - p[k] < top_p[r]
            kept += keep[k]
        cdf = 0.0
        for k in range(vocab):
            if keep[k]:
                cdf += p[k]
            p[k] = cdf  # from here on p holds the cumulative kept mass
        threshold = uniforms[r] * cdf
        idx = 0
        for k in range(vocab):
            idx += p[k] < threshold
        out[r] = order[min(idx, kept - 1)]
