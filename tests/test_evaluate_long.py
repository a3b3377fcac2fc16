"""A long text is scored in more, shorter streams, a few at a time, so memory stays flat."""

import numpy as np
import pytest

from charlm import evaluate as ev
from charlm.numpy_lstm import NumpyLSTM
from charlm.storage import read_model_folder


def test_long_texts_are_scored_in_passes_with_the_same_figure(tiny_model, monkeypatch) -> None:
    saved = read_model_folder(tiny_model)
    scorer = NumpyLSTM(saved.weights)
    ids = np.random.default_rng(0).integers(0, len(saved.vocab), 6000)
    whole = ev.evaluate(scorer, ids)
    calls = []
    real = ev.sequence_logits
    monkeypatch.setattr(ev, "sequence_logits", lambda model, x: calls.append(x.shape) or real(model, x))
    monkeypatch.setattr(ev, "MAX_ROW", 200)
    monkeypatch.setattr(ev, "PASS_ROWS", 4)
    passes = ev.evaluate(scorer, ids)
    assert passes.chars == whole.chars == 5999
    assert len(calls) == 8 and all(rows <= 4 and width <= 200 + ev.WARMUP + 1 for rows, width in calls)
    # every character still sees at least WARMUP characters of history: the figure barely moves
    assert passes.nats_per_char == pytest.approx(whole.nats_per_char, rel=0.02)
