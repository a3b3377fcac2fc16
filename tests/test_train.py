"""Training, checkpoints, cancel, fine-tuning and the saved model folder."""

import json
import threading

import keras
import numpy as np
import pytest

from charlm.corpus import load_corpus
from charlm.errors import CharLMError, TrainingCancelled
from charlm.evaluate import evaluate
from charlm.jobs import finetune, train_new
from charlm.model import PRESETS, ModelSpec, build_model, with_dropout
from charlm.storage import load_model_folder, save_model_folder
from charlm.train import Checkpoints, TrainConfig, train, windowed_loss
from charlm.vocab import Vocabulary
from tests.conftest import make_text


def _ids(text_file):
    text = load_corpus(text_file).text
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text).ids
    cut = int(len(ids) * 0.9)
    return vocab, ids[:cut], ids[cut:]


def test_tiny_model_learns_and_validation_loss_falls(text_file, tmp_path):
    vocab, train_ids, val_ids = _ids(text_file)
    seen = []
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"],
                   TrainConfig(epochs=3, batch_size=32, learning_rate=1e-2),
                   checkpoint_dir=tmp_path / "ckpt", on_progress=seen.append)
    losses = [r.val_loss for r in result.history]
    assert losses[-1] < losses[0] < np.log(len(vocab)) + 0.5
    assert result.best_val_loss == min(losses)
    # progress events: every step, and a final event per epoch with its validation loss
    ends = [p for p in seen if p.epoch_done]
    assert [p.epoch for p in ends] == [1, 2, 3] and ends[-1].val_loss == pytest.approx(losses[-1])
    assert all(p.eta_seconds >= 0 for p in seen)
    names = sorted(p.name for p in (tmp_path / "ckpt").glob("epoch-*.keras"))
    assert names[-1] == f"epoch-003-val-{losses[-1]:.4f}.keras" and len(names) <= 2


def test_resume_continues_from_the_checkpoint_epoch(text_file, tmp_path):
    vocab, train_ids, val_ids = _ids(text_file)
    config = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-2)
    train(train_ids, val_ids, vocab, PRESETS["tiny"], config, checkpoint_dir=tmp_path)
    ckpt = next(tmp_path.glob("epoch-001-*.keras"))
    config.epochs = 2
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"], config, checkpoint_dir=tmp_path, resume_from=ckpt)
    assert [r.epoch for r in result.history] == [2]
    assert Checkpoints.epoch_of(next(tmp_path.glob("epoch-002-*.keras"))) == 2


def test_a_resumed_cosine_run_goes_on_where_the_uninterrupted_one_would(text_file, tmp_path):
    vocab, train_ids, val_ids = _ids(text_file)
    config = TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2, schedule="cosine", steps_per_epoch=3)
    whole = train(train_ids, val_ids, vocab, PRESETS["tiny"], config, checkpoint_dir=tmp_path / "whole")
    config.epochs = 1
    train(train_ids, val_ids, vocab, PRESETS["tiny"], config, checkpoint_dir=tmp_path / "first")
    config.epochs = 2
    rest = train(train_ids, val_ids, vocab, PRESETS["tiny"], config, checkpoint_dir=tmp_path / "first",
                 resume_from=next((tmp_path / "first").glob("epoch-001-*.keras")))
    assert rest.history[0].learning_rate == pytest.approx(whole.history[1].learning_rate)
    assert int(rest.model.optimizer.iterations) == 6  # Adam's step count (and moments) came along


def test_a_finetune_resumes_its_own_checkpoint(tiny_model, text_file, tmp_path):
    config = TrainConfig(epochs=1, batch_size=16, steps_per_epoch=4)
    finetune(text_file, tiny_model, tmp_path / "first", config, checkpoint_dir=tmp_path / "ckpt")
    ckpt = next((tmp_path / "ckpt").glob("epoch-001-*.keras"))
    with pytest.raises(CharLMError, match="ends epoch 1: ask for more epochs"):
        finetune(text_file, tiny_model, tmp_path / "again", config, resume_from=ckpt)
    with pytest.raises(CharLMError, match="keeps its checkpoint's dropout"):
        finetune(text_file, tiny_model, tmp_path / "again", TrainConfig(epochs=2), dropout=0.2, resume_from=ckpt)
    assert not (tmp_path / "again").exists()
    config.epochs = 3
    outcome = finetune(text_file, tiny_model, tmp_path / "more", config, checkpoint_dir=tmp_path / "ckpt",
                       resume_from=ckpt)
    assert [r.epoch for r in outcome.result.history] == [2, 3]
    assert int(outcome.result.model.optimizer.iterations) == 12
    card = load_model_folder(outcome.folder).card
    assert card["training"]["resumed_from"] == str(ckpt) and card["base"]["name"] == "tiny"
    again = finetune(text_file, outcome.folder, tmp_path / "again", TrainConfig(epochs=1, batch_size=16))
    assert again.card["base"]["lineage"] == ["more", "tiny"]  # every model it came from, nearest first


def test_cancel_stops_cleanly_and_saves_nothing(text_file, tmp_path):
    cancel = threading.Event()

    def hook(progress):
        if progress.step == 2:
            cancel.set()

    with pytest.raises(TrainingCancelled):
        train_new(text_file, tmp_path / "out", "tiny", TrainConfig(epochs=2, batch_size=16),
                  on_progress=hook, cancel=cancel)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_saved_folder_has_model_vocab_and_card(tiny_model):
    saved = load_model_folder(tiny_model)
    card = json.loads((tiny_model / "card.json").read_text())
    assert card["vocab_size"] == len(saved.vocab) == saved.model.output_shape[-1]
    assert card["preset"] == "tiny" and card["parameters"] == saved.model.count_params()
    assert card["corpus"]["name"] == "story.txt" and len(card["corpus"]["sha256"]) == 64
    assert card["heldout"]["bits_per_char"] > 0 and card["training"]["epochs_run"] == 3
    ids = saved.vocab.encode("alice said").ids[None, :]
    assert saved.model.predict(ids, verbose=0).shape == (1, ids.shape[1], len(saved.vocab))


def test_loading_a_broken_folder_is_one_line(tiny_model, tmp_path):
    with pytest.raises(CharLMError, match="not found"):
        load_model_folder(tmp_path / "missing")
    for victim in ("model.keras", "vocab.json", "card.json"):
        broken = tmp_path / victim
        saved = load_model_folder(tiny_model)
        save_model_folder(saved.model, saved.vocab, saved.card, broken)
        (broken / victim).unlink()
        with pytest.raises(CharLMError, match=f"{victim} is missing"):
            load_model_folder(broken)
    mismatched = tmp_path / "mismatch"
    saved = load_model_folder(tiny_model)
    save_model_folder(saved.model, Vocabulary("ab"), saved.card, mismatched)
    with pytest.raises(CharLMError, match="predicts"):
        load_model_folder(mismatched)


def test_finetune_keeps_the_vocabulary(tiny_model, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(make_text(8_000, seed=7).upper() + " 123 {}", "utf-8")
    outcome = finetune(other, tiny_model, tmp_path / "tuned", TrainConfig(epochs=1, batch_size=16))
    base, tuned = load_model_folder(tiny_model), load_model_folder(outcome.folder)
    assert tuned.vocab == base.vocab
    assert outcome.card["corpus"]["unmapped_chars_dropped"] >= 5  # digits and braces
    assert outcome.card["base"]["heldout_on_this_corpus"]["bits_per_char"] == pytest.approx(
        outcome.base_heldout.bits_per_char, abs=1e-3)


def test_a_base_is_not_rescored_on_the_held_out_text_its_own_card_scored(tiny_model, text_file, tmp_path,
                                                                           monkeypatch):
    import charlm.jobs

    scored = []
    real = charlm.jobs.heldout_eval
    monkeypatch.setattr(charlm.jobs, "heldout_eval", lambda model, *ids: scored.append(model) or real(model, *ids))
    base = load_model_folder(tiny_model)
    again = finetune(text_file, tiny_model, tmp_path / "again", TrainConfig(epochs=1, batch_size=16))
    assert len(scored) == 1  # only the tuned model: the base's figure is its card's
    assert again.base_heldout.nats_per_char == base.card["heldout"]["nats_per_char"]
    assert again.base_heldout.chars == base.card["heldout"]["chars"]

    other = tmp_path / "other.txt"  # another text, or the same text with another split, is scored
    other.write_text(make_text(8_000, seed=7), "utf-8")
    finetune(other, tiny_model, tmp_path / "other", TrainConfig(epochs=1, batch_size=16))
    finetune(text_file, tiny_model, tmp_path / "split", TrainConfig(epochs=1, batch_size=16), holdout=0.2)
    assert len(scored) == 5


def test_uniform_model_scores_log2_vocab_bits():
    model = build_model(8, PRESETS["tiny"])
    dense = model.get_layer("logits")
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    result = evaluate(model, np.arange(500) % 8)
    assert result.bits_per_char == pytest.approx(3.0, abs=1e-5) and result.chars == 499


def test_with_dropout_changes_the_rate_and_keeps_the_weights():
    model = build_model(10, ModelSpec(embed=8, units=16, layers=2, dropout=0.2))
    copy = with_dropout(model, 0.5)
    rates = [l.rate for l in copy.layers if isinstance(l, keras.layers.Dropout)]
    assert rates == [0.5, 0.5, 0.5]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    ids = np.arange(20)[None, :] % 10
    assert np.allclose(model.predict(ids, verbose=0), copy.predict(ids, verbose=0), atol=1e-6)


def test_an_epoch_can_be_a_fixed_number_of_steps(text_file, tmp_path):
    vocab, train_ids, val_ids = _ids(text_file)
    seen = []
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"],
                   TrainConfig(epochs=2, batch_size=8, learning_rate=1e-2, steps_per_epoch=3, val_windows=2),
                   on_progress=seen.append)
    assert len(result.history) == 2
    assert [p.step for p in seen if p.epoch == 1 and not p.epoch_done] == [1, 2, 3]
    assert all(p.steps == 3 for p in seen)


def test_finetune_on_a_library_folder_records_every_book(tiny_model, tmp_path):
    books = tmp_path / "library"
    books.mkdir()
    for i in range(2):
        (books / f"book{i}.txt").write_text(make_text(4000, seed=i))
    outcome = finetune(books, tiny_model, tmp_path / "tuned", TrainConfig(epochs=1, batch_size=16))
    corpus = outcome.card["corpus"]
    assert corpus["name"] == "library" and [b["name"] for b in corpus["books"]] == ["book0.txt", "book1.txt"]
    assert outcome.card["heldout"]["chars"] > 0


def test_the_time_budget_stops_mid_epoch_and_keeps_that_epoch(text_file):
    """A fine-tune job's max_minutes: an epoch too long for the budget is cut short, scored,
    and the best weights so far are kept (one epoch of an 8 MB upload takes hours)."""
    import time

    vocab, train_ids, val_ids = _ids(text_file)
    done = []

    def slow(progress):
        if progress.epoch_done:
            done.append(progress)
        elif progress.step == 1:
            time.sleep(1.5)  # the budget (1.2 s) runs out here

    result = train(train_ids, val_ids, vocab, PRESETS["tiny"],
                   TrainConfig(epochs=3, batch_size=8, steps_per_epoch=50, val_windows=2, max_minutes=0.02),
                   on_progress=slow)
    assert result.stopped == "time budget" and len(result.history) == 1 and result.best_epoch == 1
    assert len(done) == 1 and 1 <= done[0].step < 50  # the epoch ended early, after the steps it ran


def test_the_cosine_schedule_falls_to_a_tenth_over_the_planned_steps(text_file):
    from charlm.train import cosine_rate

    assert cosine_rate(2e-3, 0, 100) == pytest.approx(2e-3)
    assert cosine_rate(2e-3, 50, 100) == pytest.approx(1.1e-3)
    assert cosine_rate(2e-3, 100, 100) == pytest.approx(2e-4) == cosine_rate(2e-3, 150, 100)
    vocab, train_ids, val_ids = _ids(text_file)
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"],
                   TrainConfig(epochs=3, batch_size=8, learning_rate=1e-2, steps_per_epoch=4, val_windows=4,
                               schedule="cosine", patience=3))
    rates = [r.learning_rate for r in result.history]  # the rate of each epoch's last step
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(cosine_rate(1e-2, 11, 12), rel=1e-5)


def test_the_average_of_the_last_epochs_is_kept_only_when_it_validates_better(text_file):
    vocab, train_ids, val_ids = _ids(text_file)
    config = TrainConfig(epochs=4, batch_size=8, learning_rate=1e-2, steps_per_epoch=4, val_windows=8,
                         average_last=3, patience=4)
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"], config)
    assert result.averaged_val_loss is not None
    kept = windowed_loss(result.model, val_ids, config.seq_len, max_windows=8)
    epochs_best = min(r.val_loss for r in result.history)
    if result.averaged:  # the average won: its score is the result's, below every epoch's
        assert result.averaged == 3 and result.averaged_val_loss < epochs_best
        assert kept == pytest.approx(result.averaged_val_loss, rel=1e-5) == result.best_val_loss
    else:  # the best epoch's weights stayed
        assert result.averaged_val_loss >= epochs_best
        assert kept == pytest.approx(epochs_best, rel=1e-5) == result.best_val_loss


def test_averaging_a_single_epoch_changes_nothing(text_file):
    vocab, train_ids, val_ids = _ids(text_file)
    result = train(train_ids, val_ids, vocab, PRESETS["tiny"],
                   TrainConfig(epochs=1, batch_size=8, steps_per_epoch=2, val_windows=2, average_last=3))
    assert result.averaged == 0 and result.averaged_val_loss is None


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule must be one of plateau, cosine"):
        TrainConfig(schedule="linear")


def test_charlm_finetune_and_the_bots_jobs_share_the_fine_tune_defaults(tmp_path):
    """The study's best (charlm.train_config.FINETUNE) is what both train with unless told otherwise."""
    from dataclasses import fields

    from bot.finetune.settings import FinetuneConfig
    from charlm.cli import _train_config, build_parser
    from charlm.train_config import FINETUNE

    cli = _train_config(build_parser().parse_args(["finetune", "corpus.txt", "--model", "m", "--out", "o"]))
    assert cli == FINETUNE
    bot = FinetuneConfig()
    assert (bot.default_epochs, bot.learning_rate, bot.patience, bot.schedule, bot.average_last, bot.batch_size) == (
        FINETUNE.epochs, FINETUNE.learning_rate, FINETUNE.patience, FINETUNE.schedule, FINETUNE.average_last,
        FINETUNE.batch_size)
    # and the shipped config.toml does not override them
    from bot.config import load_config
    from bot.finetune.settings import finetune_config
    from pathlib import Path

    shipped = finetune_config(load_config(Path(__file__).resolve().parents[1] / "config.toml"))
    assert {f.name: getattr(shipped, f.name) for f in fields(bot) if f.name in (
        "default_epochs", "learning_rate", "patience", "schedule", "average_last", "batch_size")} == {
        "default_epochs": FINETUNE.epochs, "learning_rate": FINETUNE.learning_rate, "patience": FINETUNE.patience,
        "schedule": FINETUNE.schedule, "average_last": FINETUNE.average_last, "batch_size": FINETUNE.batch_size}


def test_a_fine_tune_runs_at_the_default_dropout_where_the_base_has_dropout_layers(text_file, tmp_path):
    from charlm.train_config import FINETUNE_DROPOUT

    base = tmp_path / "base"
    train_new(text_file, base, "tiny", TrainConfig(epochs=1, batch_size=32))
    card = json.loads((base / "card.json").read_text())
    card["layers"]["dropout"] = 0.3  # a base with dropout layers: rebuild it so
    saved = load_model_folder(base)
    spec = ModelSpec(**card["layers"])
    model = build_model(len(saved.vocab), spec)
    model.set_weights(saved.model.get_weights())
    save_model_folder(model, saved.vocab, card, tmp_path / "dropped")
    tuned = finetune(text_file, tmp_path / "dropped", tmp_path / "tuned", TrainConfig(epochs=1, batch_size=32))
    assert tuned.card["layers"]["dropout"] == FINETUNE_DROPOUT
    # a base without dropout layers keeps none; asking for a rate it cannot take is one line
    plain = finetune(text_file, base, tmp_path / "plain", TrainConfig(epochs=1, batch_size=32))
    assert plain.card["layers"]["dropout"] == 0.0
    with pytest.raises(CharLMError, match="no dropout layers"):
        finetune(text_file, base, tmp_path / "asked", TrainConfig(epochs=1, batch_size=32), dropout=0.2)
