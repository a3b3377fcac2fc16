"""The int8 CPU step: exact integer kernels, a quantised step close to the float one,
the engine and `eval` in both precisions."""

import json
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from charlm import int8_kernels as k8
from charlm.engine import Engine
from charlm.errors import CharLMError
from charlm.generate import Generator, choose_backend
from charlm.int8_lstm import Int8LSTM
from charlm.model import ModelSpec, build_model
from charlm.numpy_lstm import LSTMWeights, NumpyLSTM
from charlm.quantize import W_MAX, QuantizedWeights, dequantize, quantize_matrix
from charlm.sampling import Sampling
from charlm.storage import save_model_folder
from charlm.vocab import Vocabulary
from tests.conftest import WEIGHTS, make_text

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'\n")


def _random_int8(rng, n: int, k: int, batch: int):
    """Weights and activations over their whole ranges, and at the bounds where a
    saturating pair sum would show."""
    w = rng.integers(-W_MAX, W_MAX + 1, size=(n, k), dtype=np.int8)
    w[0, :] = W_MAX
    w[1, :] = -W_MAX
    x = rng.integers(0, 2 * k8.X_ZERO, size=(batch, k), dtype=np.uint8)
    x[0, :] = 2 * k8.X_ZERO - 1
    return w, x


@pytest.mark.parametrize("n,k,batch", [(8, 32, 1), (13, 64, 5), (2048, 512, 32), (42, 512, 3), (7, 704, 2)])
def test_kernels_sum_exactly_like_numpy(n, k, batch):
    w, x = _random_int8(np.random.default_rng(n + k + batch), n, k, batch)
    reference = x.astype(np.int64) @ w.T.astype(np.int64)
    for kernel in (k8.qmatmul_int, k8.qmatmul_int_blocked):
        out = np.zeros((batch, n), np.int32)
        kernel(x, w, out)
        blocked = (slice(None, batch - batch % 2), slice(None, n - n % 4))
        where = blocked if kernel is k8.qmatmul_int_blocked else (slice(None), slice(None))
        assert np.array_equal(out[where], reference[where])


_plain_dot = k8._dot(1, 1, avx2=False)  # the IR used where the CPU has no AVX2


@njit
def _plain_matmul(x, w, out):
    n, k = w.shape
    for j in range(n):
        for b in range(x.shape[0]):
            out[b, j] = _plain_dot(w.ctypes.data + j * k, k, x.ctypes.data + b * k, k, k)[0]


def test_the_portable_kernel_gives_the_same_sums():
    w, x = _random_int8(np.random.default_rng(3), 40, 256, 4)
    out = np.zeros((4, 40), np.int32)
    _plain_matmul(x, w, out)
    assert np.array_equal(out, x.astype(np.int64) @ w.T.astype(np.int64))


def test_float_product_removes_the_zero_point_and_scales():
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((96, 40)).astype(np.float32)  # Keras layout (inputs, outputs)
    m = quantize_matrix(weights)
    h = np.tanh(rng.standard_normal((3, 96))).astype(np.float32)
    x = np.zeros((3, m.q.shape[1]), np.uint8)
    k8.quantize_rows(h, x)
    out = np.empty((3, 40), np.float32)
    k8.qmatmul(x, m.q, m.offset, m.scale, out)
    exact = (np.rint(h * k8.X_SCALE) / k8.X_SCALE) @ dequantize(m)
    assert np.abs(out - exact).max() < 1e-4
    step = np.abs(weights).max(axis=0) / W_MAX  # per output
    assert np.all(np.abs(dequantize(m) - weights) <= step / 2 + 1e-6)
    assert m.q.shape == (40, 96) and np.all(m.q[:, 96:] == 0)  # padded to whole vectors with zeros


@pytest.fixture(scope="module")
def model():
    """Two layers (the layer-to-layer path), units not a multiple of the kernel's 32 lanes."""
    import keras

    keras.utils.set_random_seed(4)
    m = build_model(len(VOCAB), ModelSpec(embed=16, units=80, layers=2, dropout=0.0))
    for w in m.weights:  # larger than the initialiser's: character-specific outputs
        w.assign(np.asarray(w) * 3.0)
    return m


STEP_TOLERANCE = 0.1
"""Largest |logit difference| allowed between one int8 step and one float32 step from
the same state, for logits of magnitude ~5 (this random model's; ~0.04 seen). Weights
are kept to 255 levels per row (+-0.2% of the row's largest weight), activations to 127.
Over many steps a random network with large weights amplifies any difference, so the
long-run check is on trained models: bits/char (test_eval_in_both_precisions,
bench_int8)."""


def test_quantised_step_follows_the_float_step(model):
    weights = LSTMWeights.from_keras(model)
    fp32, int8 = NumpyLSTM(weights), Int8LSTM(QuantizedWeights.of(weights))
    windows = np.stack([VOCAB.window(p).ids for p in ("alice", "the queen said, off with her head", "x" * 120)])
    state, logits = fp32.prime(windows)
    assert np.abs(logits).max() > 3
    for _ in range(40):
        ids = logits.argmax(axis=1).astype(np.int32)
        copy = [(h.copy(), c.copy()) for h, c in state]
        logits, same_state = fp32.step(state, ids), int8.step(copy, ids)
        assert np.abs(same_state - logits).max() < STEP_TOLERANCE


def test_priming_and_scoring_are_the_int8_step(model):
    """prime (which starts after the padding's cached states) and sequence_logits give
    exactly what stepping one character at a time from a zero state gives."""
    int8 = Int8LSTM(QuantizedWeights.of(LSTMWeights.from_keras(model)))
    windows = np.stack([VOCAB.window(p).ids for p in ("alice", "down the rabbit hole")])
    state, logits = int8.prime(windows)
    stepped, every = int8.zero_state(2), []
    for column in windows.T:
        every.append(int8.step(stepped, column))
    assert np.array_equal(logits, every[-1])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(state, stepped))
    assert np.array_equal(int8.sequence_logits(windows), np.stack(every, axis=1))


def test_int8_holds_a_quarter_of_the_bytes(model):
    weights = LSTMWeights.from_keras(model)
    q = QuantizedWeights.of(weights)
    mats = weights.recurrent + weights.kernels + [weights.dense_w]
    assert q.bytes_per_step < 0.35 * sum(m.nbytes for m in mats)
    assert Int8LSTM(q).precision == "int8" and not hasattr(Int8LSTM(q), "w")  # no float32 matrices kept


def test_unknown_precision_is_one_line(model):
    with pytest.raises(CharLMError, match="unknown precision 'int4': use int8 or fp32"):
        choose_backend(LSTMWeights.from_keras(model), "numpy", "int4")


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return save_model_folder(model, VOCAB, {"name": "random", "vocab_size": len(VOCAB)},
                             tmp_path_factory.mktemp("int8") / "m")


def test_engine_answers_the_same_requests_in_both_precisions(folder):
    requests = [("alice was beginning", Sampling(temperature=0, length=60)),
                ("the king", Sampling(temperature=0.8, top_k=5, seed=3, length=45)),
                ("", Sampling(temperature=1.0, seed=9, length=30))] * 3
    texts = {}
    for precision in ("fp32", "int8"):
        direct = Generator.from_folder(folder, "numpy", precision)
        with Engine({"m": folder}, backend="numpy", precision=precision) as engine:
            assert engine.models()["m"].precision == precision
            futures = [engine.submit("m", p, s) for p, s in requests]
            results = [f.result(30) for f in futures]
        texts[precision] = [r.text for r in results]
        assert all(r.version.precision == precision for r in results)
        assert texts[precision] == [direct.generate([direct.vocab.window(p).ids], [s])[0] for p, s in requests]
    assert all(len(t) == s.length for t, (_, s) in zip(texts["int8"], requests))


def test_eval_in_both_precisions(tiny_model, text_file):
    out = {}
    for precision in ("fp32", "int8"):
        run = subprocess.run([sys.executable, "-m", "charlm", "eval", str(text_file), "--model", str(tiny_model),
                              "--heldout-only", "--precision", precision], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out[precision] = json.loads(run.stdout)
        assert out[precision]["precision"] == precision
    assert out["int8"]["chars"] == out["fp32"]["chars"] > 1000
    assert out["int8"]["bits_per_char"] == pytest.approx(out["fp32"]["bits_per_char"], abs=0.01)


def test_shipped_model_greedy_agrees_in_both_precisions(corpora):
    """Argmax continuations of seuss's 20 held-out prompts (charlm.jobs.recitation's:
    100-character windows evenly spread over the held-out text) agree character for
    character for the first 100 in most cases (bench_int8 counts all three models)."""
    from charlm.corpus import load_corpus

    folder = WEIGHTS / "seuss"
    gens = {p: Generator.from_folder(folder, "numpy", p) for p in ("fp32", "int8")}
    vocab = gens["fp32"].vocab
    heldout = vocab.encode(load_corpus(corpora / "seuss.txt", vocab.lowercase, 0.1).split(0.1)[1]).ids
    windows = [heldout[s : s + 100] for s in np.linspace(0, len(heldout) - 100, 20).astype(int)]
    settings = [Sampling(temperature=0, length=100)] * len(windows)
    fp32, int8 = (gens[p].generate(windows, settings) for p in ("fp32", "int8"))
    assert sum(a == b for a, b in zip(fp32, int8)) > len(windows) / 2
