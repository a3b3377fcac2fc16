"""Stateful generation: exact against the slow way, batched with per-row settings."""

import numpy as np
import pytest

from charlm.errors import CharLMError
from charlm.generate import Generator
from charlm.model import ModelSpec, build_model
from charlm.numpy_lstm import LSTMWeights, NumpyLSTM
from charlm.sampling import Sampling
from charlm.storage import SavedModel, load_model_folder
from charlm.vocab import Vocabulary

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz .,'\n")


@pytest.fixture(scope="module")
def random_model():
    """Two stacked layers so the layer-to-layer path is exercised; random weights give
    well-separated logits, unlike a briefly trained tiny model."""
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(len(VOCAB), ModelSpec(embed=16, units=48, layers=2, dropout=0.0))
    for w in model.weights:  # larger weights than the initialiser's make outputs character-specific
        w.assign(np.asarray(w) * 3.0)
    return SavedModel(model, VOCAB, {"name": "random"}, None)


def test_numpy_step_matches_keras():
    model = build_model(len(VOCAB), ModelSpec(embed=16, units=64, layers=2, dropout=0.0))
    ids = np.random.default_rng(0).integers(0, len(VOCAB), (4, 160))
    reference = model.predict(ids, verbose=0)
    stepper = NumpyLSTM(LSTMWeights.from_keras(model))
    state, logits = stepper.prime(ids[:, :100])
    assert np.abs(logits - reference[:, 99]).max() < 1e-4
    for t in range(100, 160):
        logits = stepper.step(state, ids[:, t])
    assert np.abs(logits - reference[:, 159]).max() < 1e-4


def test_priming_from_the_padding_cache_matches_keras():
    """Windows padded with spaces start from the cached state after their padding; the
    batches mix pad lengths, an all-padding window and one with no padding."""
    model = build_model(len(VOCAB), ModelSpec(embed=16, units=64, layers=2, dropout=0.0))
    ids = np.stack([VOCAB.window(p).ids for p in ["alice", "the queen of hearts", "", "x" * 120]])
    stepper = NumpyLSTM(LSTMWeights.from_keras(model))
    for batch in (ids[:1], ids[:3], ids[2:3], ids):  # the cache is built once, then reused
        _, logits = stepper.prime(batch)
        assert np.abs(logits - model.predict(batch, verbose=0)[:, -1]).max() < 1e-4
    assert stepper._padding is not None and stepper._padding.pad == VOCAB.encode(" ").ids[0]


def test_stateful_greedy_equals_rerunning_over_the_growing_text(random_model):
    window = VOCAB.window("the queen said to alice, off with").ids
    fast = Generator(random_model, "numpy").generate([window], [Sampling(temperature=0, length=40)])[0]
    text = list(window)
    for _ in range(40):  # the slow way: re-run the model over everything so far, every character
        logits = random_model.model.predict(np.array([text]), verbose=0)[0, -1]
        text.append(int(np.argmax(logits)))
    assert fast == VOCAB.decode(text[100:])
    assert len(set(fast)) > 1


def test_tensorflow_backend_matches_numpy(random_model):
    windows = [VOCAB.window("alice").ids, VOCAB.window("down the rabbit hole").ids]
    settings = [Sampling(temperature=0, length=30), Sampling(temperature=0.9, top_k=5, seed=3, length=30)]
    assert Generator(random_model, "numpy").generate(windows, settings) == \
        Generator(random_model, "tensorflow").generate(windows, settings)


def test_batch_with_mixed_settings_equals_each_row_alone(random_model):
    gen = Generator(random_model, "numpy")
    prompts = ["alice", "", "the hatter", "x" * 150]
    settings = [Sampling(temperature=0, length=25), Sampling(temperature=0.7, seed=1, length=40),
                Sampling(temperature=1.3, top_p=0.8, seed=2, length=10), Sampling(temperature=1.0, top_k=3, seed=4, length=33)]
    windows = [VOCAB.window(p).ids for p in prompts]
    together = gen.generate(windows, settings)
    alone = [gen.generate([w], [s])[0] for w, s in zip(windows, settings)]
    assert together == alone
    assert [len(t) for t in together] == [25, 40, 10, 33]


def test_seed_reproduces_and_top_k_1_is_greedy(random_model):
    gen = Generator(random_model, "numpy")
    w = [VOCAB.window("alice").ids]
    a = gen.generate(w, [Sampling(temperature=1.0, seed=9, length=50)])
    assert a == gen.generate(w, [Sampling(temperature=1.0, seed=9, length=50)])
    assert a != gen.generate(w, [Sampling(temperature=1.0, seed=10, length=50)])
    assert gen.generate(w, [Sampling(temperature=2.0, top_k=1, seed=5, length=30)]) == \
        gen.generate(w, [Sampling(temperature=0, length=30)])


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature"), ({"top_k": -2}, "top-k"), ({"top_p": 0}, "top-p"),
    ({"length": 0}, "length"),
])
def test_bad_sampling_settings(kwargs, message):
    with pytest.raises(CharLMError, match=message):
        Sampling(**kwargs)


def test_trained_tiny_model_generates_its_characters(tiny_model):
    gen = Generator(load_model_folder(tiny_model))
    out = gen.generate([gen.vocab.window("Alice said").ids], [Sampling(length=60, seed=0)])[0]
    assert len(out) == 60 and set(out) <= set(gen.vocab.chars)


def test_verbatim_share_detects_recitation(random_model):
    from charlm.memorization import verbatim_share

    gen = Generator(random_model, "numpy")
    prompts = ["alice", "the queen"]
    samples = gen.generate([VOCAB.window(p).ids for p in prompts],
                           [Sampling(temperature=0.8, seed=i, length=100) for i in range(2)])
    assert verbatim_share(gen, "\n".join(samples), prompts, length=100) == 1.0
    assert verbatim_share(gen, "zzzz " * 100, prompts, length=100) == 0.0
