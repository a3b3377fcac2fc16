"""Train and fine-tune end to end: corpus file in, evaluated model folder out.

The CLI and the bot's fine-tune worker both call these, so a model trained either way
carries the same card.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from charlm.corpus import Corpus, load_corpus
from charlm.errors import CharLMError
from charlm.evaluate import Evaluation, evaluate
from charlm.model import ModelSpec, dropout_rate, preset as get_preset, with_dropout
from charlm.names import words
from charlm.padding import PadChoice, choose_pad
from charlm.rehearsal import rehearsal_for
from charlm.storage import SavedModel, load_model_folder, save_model_folder
from charlm.split import DEFAULT_HOLDOUT, check_trainable, split_encode
from charlm.train import CancelSignal, TrainConfig, TrainProgress, TrainResult, compile_model, train
from charlm.train_config import FINETUNE_DROPOUT
from charlm.vocab import Vocabulary
from charlm.word_guard import inherit_avoid


@dataclass
class JobOutcome:
    folder: Path
    card: dict
    result: TrainResult
    heldout: Evaluation
    base_heldout: Evaluation | None = None


def _split_encode(corpus: Corpus, vocab: Vocabulary, holdout: float) -> tuple[np.ndarray, np.ndarray, int]:
    ids = split_encode(corpus, vocab, holdout)
    return ids.train, ids.heldout, ids.dropped


def recitation(model: keras.Model, vocab: Vocabulary, train_ids: np.ndarray, val_ids: np.ndarray) -> dict:
    """Card entry: share of 40-char strings in 20 samples (400 chars, temperature 0.8)
    found verbatim in the training text, prompted with windows of the held-out text."""
    from charlm.generate import Generator
    from charlm.memorization import verbatim_share

    gen = Generator(SavedModel(model, vocab, {}, Path(".")), "numpy")
    starts = np.linspace(0, max(0, len(val_ids) - 100), 20).astype(int)
    prompts = [vocab.decode(val_ids[s : s + 100]) for s in starts]
    share = verbatim_share(gen, vocab.decode(train_ids), prompts)
    return {"verbatim_40char_share": round(share, 4), "samples": 20, "length": 400, "temperature": 0.8}


def heldout_eval(model: keras.Model, train_ids: np.ndarray, val_ids: np.ndarray) -> Evaluation:
    """Bits per char on the held-out part, conditioned on the end of the training part."""
    return evaluate(model, val_ids, context=train_ids[-1024:])


def known_heldout(saved: SavedModel, corpus: Corpus, holdout: float, val_ids: np.ndarray) -> Evaluation | None:
    """The base's held-out figure from its own card, when that card scored this very text
    (same corpus digest and cleaned length, same held-out fraction and length): a sitting
    that continues a base on its own library skips re-reading millions of characters."""
    card = saved.card
    seen, scored = card.get("corpus", {}), card.get("heldout", {})
    same = (seen.get("sha256") == corpus.sha256 and seen.get("chars") == len(corpus.text)
            and seen.get("holdout_fraction") == holdout and scored.get("chars") == len(val_ids))
    return Evaluation(scored["nats_per_char"], len(val_ids)) if same and "nats_per_char" in scored else None


def _card(name: str, spec: ModelSpec, preset_name: str, model: keras.Model, vocab: Vocabulary,
          corpus: Corpus, holdout: float, dropped: int, config: TrainConfig, result: TrainResult,
          heldout: Evaluation, seconds: float, base: dict | None, padding: PadChoice,
          train_ids: np.ndarray, val_ids: np.ndarray, resume_from: Path | None) -> dict:
    best = result.best
    return {
        "name": name,
        "preset": preset_name,
        "layers": spec.to_json(),
        "parameters": int(model.count_params()),
        "vocab_size": len(vocab),
        "corpus": {
            "name": corpus.name,
            "sha256": corpus.sha256,
            "chars": len(corpus.text),
            "holdout_fraction": holdout,
            "lowercase": corpus.report.lowercased,
            "cleaning": corpus.report.to_json(),
            "unmapped_chars_dropped": dropped,
            **({"books": corpus.books} if corpus.books else {}),
        },
        "base": base,
        "training": {
            "config": asdict(config),
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "averaged_epochs": result.averaged,
            "stopped": result.stopped,
            "resumed_from": str(resume_from) if resume_from else None,
            "seconds": round(seconds, 1),
            "history": [asdict(r) for r in result.history],
        },
        "train_loss": round(best.loss, 4),
        "val_loss": round(result.best_val_loss, 4),  # the average's, when it was kept
        "heldout": {
            "bits_per_char": round(heldout.bits_per_char, 4),
            "nats_per_char": round(heldout.nats_per_char, 4),
            "chars": heldout.chars,
        },
        "padding": padding.to_json(),
        "recitation": recitation(model, vocab, train_ids, val_ids),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def train_new(corpus_path: str | Path, out: str | Path, preset_name: str = "default",
              config: TrainConfig | None = None, *, holdout: float = DEFAULT_HOLDOUT,
              lowercase: bool = True, charset_from: str | Path | None = None,
              checkpoint_dir: Path | None = None, resume_from: Path | None = None,
              on_progress: Callable[[TrainProgress], None] | None = None,
              cancel: CancelSignal | None = None) -> JobOutcome:
    """Train a fresh model. `charset_from` takes the vocabulary from another text (so a
    base pretrained on Shakespeare can later be fine-tuned on Alice)."""
    config = config or TrainConfig()
    spec = get_preset(preset_name)
    corpus = load_corpus(corpus_path, lowercase, holdout)
    vocab_text = load_corpus(charset_from, lowercase).text if charset_from else corpus.text
    vocab = Vocabulary.from_text(vocab_text, lowercase)
    train_ids, val_ids, dropped = _split_encode(corpus, vocab, holdout)
    start = time.monotonic()
    result = train(train_ids, val_ids, vocab, spec, config, checkpoint_dir=checkpoint_dir,
                   resume_from=resume_from, on_progress=on_progress, cancel=cancel)
    if not result.history:
        raise CharLMError(f"the time budget of {config.max_minutes:g} minutes ran out before the first training step")
    heldout = heldout_eval(result.model, train_ids, val_ids)
    padding = choose_pad(result.model, vocab, val_ids)
    vocab = vocab.with_pad(padding.char)
    card = _card(Path(out).name, spec, preset_name, result.model, vocab, corpus, holdout, dropped,
                 config, result, heldout, time.monotonic() - start, None, padding, train_ids, val_ids,
                 resume_from)
    folder = save_model_folder(result.model, vocab, card, out)
    return JobOutcome(folder, card, result, heldout)


def finetune(corpus_path: str | Path, base: str | Path | SavedModel, out: str | Path,
             config: TrainConfig | None = None, *, holdout: float = DEFAULT_HOLDOUT,
             dropout: float | None = None, checkpoint_dir: Path | None = None,
             resume_from: Path | None = None, rehearse: Sequence[Path] = (), rehearse_share: float = 0.2,
             on_progress: Callable[[TrainProgress], None] | None = None,
             cancel: CancelSignal | None = None) -> JobOutcome:
    """Continue training a saved model on a new corpus, keeping its vocabulary.

    The new corpus is cleaned the way the base's was and mapped onto the base's
    characters; what cannot be mapped is dropped and counted in the card. `dropout`
    replaces the base's dropout rate (None: FINETUNE_DROPOUT, where the base has dropout layers).
    `resume_from` continues an earlier fine-tune of `base` from one of its checkpoints,
    optimizer state and dropout included, so a long run can go on in sittings.
    `rehearse` names library folders: passages of them with their names replaced by the
    corpus's own (charlm.rehearsal) are trained on beside it, `rehearse_share` of the
    training characters, so the style does not write the library's names. A base with an
    avoid list (charlm.word_guard) passes it on, less the words the corpus itself uses.
    """
    config = config or TrainConfig()
    if resume_from is not None and dropout is not None:
        raise CharLMError("a resumed fine-tune keeps its checkpoint's dropout; leave the dropout out")
    if rehearse and not 0.0 < rehearse_share < 1.0:
        raise CharLMError(f"the rehearsal share must be between 0 and 1, got {rehearse_share}")
    saved = base if isinstance(base, SavedModel) else load_model_folder(base)
    corpus = load_corpus(corpus_path, saved.vocab.lowercase, holdout)
    ids = split_encode(corpus, saved.vocab, holdout)
    check_trainable(corpus.name, ids, config.seq_len)  # the bot's upload check runs the same
    train_ids, val_ids, dropped = ids.train, ids.heldout, ids.dropped
    stream, rehearsal = train_ids, None
    if rehearse:
        own_text = load_corpus(corpus_path, lowercase=False, holdout=holdout).split(holdout)[0]
        chars = round(len(train_ids) * rehearse_share / (1 - rehearse_share))
        rehearsal = rehearsal_for(own_text, rehearse, chars, config.seed)
        stream = np.concatenate([train_ids, saved.vocab.encode(rehearsal.text).ids])
    base_heldout = known_heldout(saved, corpus, holdout, val_ids) or heldout_eval(saved.model, train_ids, val_ids)
    spec = ModelSpec(**saved.card["layers"])
    if resume_from is not None:
        model = None  # train() loads the checkpoint
    else:
        if dropout is None and spec.dropout:  # the fine-tune default, where there are dropout layers to set
            dropout = FINETUNE_DROPOUT
        if dropout is not None:
            if not 0.0 <= dropout < 1.0:
                raise CharLMError(f"dropout must be in [0, 1), got {dropout}")
            if not spec.dropout:
                raise CharLMError("this model has no dropout layers to set")
            spec = replace(spec, dropout=dropout)
        model = with_dropout(saved.model, spec.dropout)
        compile_model(model, config)
    start = time.monotonic()
    result = train(stream, val_ids, saved.vocab, spec, config, model=model, checkpoint_dir=checkpoint_dir,
                   resume_from=resume_from, on_progress=on_progress, cancel=cancel)
    spec = replace(spec, dropout=dropout_rate(result.model))
    if not result.history:
        raise CharLMError(f"the time budget of {config.max_minutes:g} minutes ran out before the first training step")
    heldout = heldout_eval(result.model, train_ids, val_ids)
    padding = choose_pad(result.model, saved.vocab, val_ids)
    vocab = saved.vocab.with_pad(padding.char)
    base_name = saved.card.get("name", saved.path.name)
    before = saved.card.get("base") or {}
    base_info = {
        "name": base_name,
        "path": str(saved.path),
        "lineage": [base_name, *before.get("lineage", [before["name"]] if "name" in before else [])],
        "corpus": saved.card.get("corpus", {}).get("name"),
        "heldout_on_this_corpus": {"bits_per_char": round(base_heldout.bits_per_char, 4),
                                   "nats_per_char": round(base_heldout.nats_per_char, 4)},
    }
    if rehearsal is not None:
        base_info["rehearsal"] = {"library": [Path(folder).name for folder in rehearse], "share": rehearse_share,
                                  **rehearsal.to_json()}
    avoid = None
    if saved.avoid is not None:  # the base's style keeps out names; so does this one, bar its corpus's own words
        avoid = {**inherit_avoid(saved.avoid, words(corpus.text)), "corpus": corpus.name, "inherited_from": base_name}
        base_info["avoid"] = {"words": len(avoid["words"]),
                              "released": sorted(set(saved.avoid["words"]) - set(avoid["words"]))}
    card = _card(Path(out).name, spec, saved.card.get("preset", "custom"), result.model, vocab,
                 corpus, holdout, dropped, config, result, heldout, time.monotonic() - start, base_info,
                 padding, train_ids, val_ids, resume_from)
    folder = save_model_folder(result.model, vocab, card, out, avoid)
    return JobOutcome(folder, card, result, heldout, base_heldout)
