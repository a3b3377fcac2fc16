"""`python -m charlm train | finetune | generate | eval | pad | widen | names`. Errors are one line, exit code 1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from charlm.errors import CharLMError

PRECISION_CHOICES = ("int8", "fp32")  # charlm.generate.PRECISIONS, without importing numpy for --help


def _add_training_flags(p: argparse.ArgumentParser, finetuning: bool = False) -> None:
    """The flags of `train` and `finetune`; a fine-tune's defaults are charlm's FINETUNE."""
    from charlm.train_config import FINETUNE, SCHEDULES, TrainConfig

    d = FINETUNE if finetuning else TrainConfig()
    p.add_argument("--out", required=True, type=Path, help="model folder to write (replaced atomically)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"most epochs to run (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"windows per step (default {d.batch_size})")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help=f"characters per training window (default {d.seq_len})")
    p.add_argument("--lr", type=float, default=d.learning_rate, help=f"Adam learning rate (default {d.learning_rate})")
    p.add_argument("--clipnorm", type=float, default=d.clipnorm, help=f"gradient norm clip (default {d.clipnorm})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay (default 0: plain Adam)")
    p.add_argument("--patience", type=int, default=d.patience, help=f"stop after this many epochs without a better validation loss (default {d.patience})")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help=f"learning rate: plateau halves it after an epoch that did not improve, cosine lowers it to a tenth over the run (default {d.schedule})")
    p.add_argument("--average-last", type=int, default=d.average_last,
                   help=f"keep the average of the last N epochs' weights when it validates better (default {d.average_last}; 0: off)")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget; stops after the epoch that passes it")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction at the end of the corpus held out for validation, never trained on (default 0.1)")
    p.add_argument("--checkpoints", type=Path, default=None, help="folder for per-epoch checkpoints (default: OUT.checkpoints beside OUT)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="training steps per epoch (default: one pass over the text); validation, checkpoints and the time budget come after each epoch")
    p.add_argument("--val-windows", type=int, default=None, help="validate on at most this many evenly spaced held-out windows (default: all)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed for weights and batch order (default {d.seed})")


def _add_resume_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", type=Path, default=None,
                   help="continue an earlier run of the same command from its checkpoint file epoch-NNN-val-X.keras "
                        "(weights, optimizer state, epoch count; --epochs counts from the run's start)")


def _train_config(a: argparse.Namespace):
    from charlm.train_config import TrainConfig

    for flag, value in (("--epochs", a.epochs), ("--batch-size", a.batch_size), ("--seq-len", a.seq_len),
                        ("--steps-per-epoch", a.steps_per_epoch or 1), ("--val-windows", a.val_windows or 1)):
        if value < 1:
            raise CharLMError(f"{flag} must be at least 1")
    if a.lr <= 0:
        raise CharLMError("--lr must be positive")
    if a.average_last < 0:
        raise CharLMError("--average-last must be 0 or more")
    return TrainConfig(seq_len=a.seq_len, batch_size=a.batch_size, epochs=a.epochs, learning_rate=a.lr,
                       clipnorm=a.clipnorm, weight_decay=a.weight_decay, patience=a.patience,
                       max_minutes=a.max_minutes, seed=a.seed, steps_per_epoch=a.steps_per_epoch,
                       val_windows=a.val_windows, schedule=a.schedule, average_last=a.average_last)


def _checkpoint_dir(a: argparse.Namespace) -> Path:
    return a.checkpoints or a.out.with_name(a.out.name + ".checkpoints")


def _report(outcome) -> None:
    card = outcome.card
    print(f"saved {outcome.folder}: {card['parameters']:,} parameters, best epoch {card['training']['best_epoch']}"
          f" ({card['training']['stopped']}), held-out {card['heldout']['bits_per_char']:.3f} bits/char")
    if outcome.base_heldout is not None:
        print(f"base model on the same held-out text: {outcome.base_heldout.bits_per_char:.3f} bits/char")


def cmd_train(a: argparse.Namespace) -> None:
    from charlm.jobs import train_new
    from charlm.progress import ProgressPrinter

    outcome = train_new(a.corpus, a.out, a.preset, _train_config(a), holdout=a.holdout,
                        lowercase=not a.keep_case, charset_from=a.charset_from,
                        checkpoint_dir=_checkpoint_dir(a), resume_from=a.resume, on_progress=ProgressPrinter())
    _report(outcome)


def cmd_finetune(a: argparse.Namespace) -> None:
    from charlm.jobs import finetune
    from charlm.progress import ProgressPrinter

    if a.rehearse:  # reading and searching a library takes a while before the first epoch starts
        print(f"reading {', '.join(str(folder) for folder in a.rehearse)} for rehearsal passages", file=sys.stderr)
    outcome = finetune(a.corpus, a.model, a.out, _train_config(a), holdout=a.holdout, dropout=a.dropout,
                       checkpoint_dir=_checkpoint_dir(a), resume_from=a.resume, rehearse=a.rehearse,
                       rehearse_share=a.rehearse_share, on_progress=ProgressPrinter())
    _report(outcome)


def cmd_generate(a: argparse.Namespace) -> None:
    from charlm.generate import Generator, Sampling

    sampling = Sampling(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, seed=a.seed, length=a.length)
    gen = Generator.from_folder(a.model, precision=a.precision)
    window = gen.vocab.window(a.prompt)
    if window.dropped:
        print(f"note: {sum(window.dropped.values())} characters the model does not know were dropped", file=sys.stderr)
    text = gen.generate([window.ids], [sampling])[0]
    print(window.prompt_text + text)


def _scorer(folder: Path, precision: str = "fp32"):
    """(opened folder, model to score with): for fp32 Keras on the GPU, else charlm's
    numpy step, so no TensorFlow is imported in this process; int8 is the CPU step the
    engine serves with, on a GPU host too (it is what is being measured)."""
    from charlm.generate import choose_backend, gpu_available

    if precision == "fp32" and gpu_available():
        from charlm.storage import load_model_folder

        saved = load_model_folder(folder)
        return saved, saved.model
    from charlm.storage import read_model_folder

    saved = read_model_folder(folder)
    return saved, choose_backend(saved.weights, "numpy", precision)


def cmd_eval(a: argparse.Namespace) -> None:
    from charlm.corpus import load_corpus
    from charlm.evaluate import evaluate

    saved, scorer = _scorer(a.model, a.precision)
    corpus = load_corpus(a.corpus, saved.vocab.lowercase, a.holdout)
    text = corpus.split(a.holdout)[1] if a.heldout_only else corpus.text
    if a.max_chars:
        text = text[: a.max_chars]
    ids = saved.vocab.encode(text).ids
    if len(ids) < 2:
        raise CharLMError(f"{corpus.name} has no characters this model knows")
    guard = None
    if a.guarded:
        from charlm.word_guard import WordGuard

        if saved.avoid is None:
            raise CharLMError(f"{a.model} has no avoid.json to serve with: score it without --guarded")
        guard = WordGuard.build(saved.avoid, saved.vocab)
    result = evaluate(scorer, ids, guard=guard)
    print(json.dumps({"model": str(a.model), "precision": a.precision, "corpus": corpus.name, "chars": result.chars,
                      "bits_per_char": round(result.bits_per_char, 4),
                      "nats_per_char": round(result.nats_per_char, 4), "guarded": a.guarded}))


def cmd_pad(a: argparse.Namespace) -> None:
    from charlm.corpus import load_corpus
    from charlm.padding import choose_pad
    from charlm.storage import set_padding

    saved, scorer = _scorer(a.model)
    corpus = load_corpus(a.corpus, saved.vocab.lowercase, a.holdout)
    choice = choose_pad(scorer, saved.vocab, saved.vocab.encode(corpus.split(a.holdout)[1]).ids)
    if not choice.openings:
        raise CharLMError(f"{corpus.name}'s held-out part has too few paragraphs to measure a pad on")
    if a.write:
        set_padding(a.model, saved.vocab.with_pad(choice.char), choice.to_json())
    print(json.dumps({"model": str(a.model), "corpus": corpus.name, "was": saved.vocab.pad, **choice.to_json(),
                      "written": bool(a.write)}, ensure_ascii=False))


def cmd_names(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from charlm.corpus import load_corpus
    from charlm.generate import Generator
    from charlm.names import foreign_name_rate, foreign_names, heldout_prompts, lexicon, library_names, words
    from charlm.storage import read_model_folder, set_avoid, set_card_entry
    from charlm.word_guard import avoid_entry

    folder = read_model_folder(a.model)
    corpus = load_corpus(a.corpus, folder.vocab.lowercase, a.holdout)
    print(f"reading {', '.join(str(library) for library in a.library)} for its names and words", file=sys.stderr)
    books = [load_corpus(library, lowercase=False).text for library in a.library]
    foreign = foreign_names(library_names(books), corpus.text)
    library_words, own = lexicon(books), set(words(corpus.text))
    common = library_words | own  # what the style may write: the guard steers into these
    avoid = {**avoid_entry(foreign, library_words, own), "library": [Path(library).name for library in a.library],
             "corpus": corpus.name}
    heldout = folder.vocab.decode(folder.vocab.encode(corpus.split(a.holdout)[1]).ids)
    prompts = heldout_prompts(heldout, a.prompts)
    rates = []
    for how, gen in (("the model alone", Generator(folder, guarded=False)),
                     (f"as served, steering around {len(avoid['words']):,} names", Generator(replace(folder, avoid=avoid)))):
        print(f"sampling {len(prompts)} prompts, {a.length:,} characters each, {how}", file=sys.stderr)
        rates.append(foreign_name_rate(gen, foreign, prompts, length=a.length, known=common))
    alone, guarded = rates
    guarded_entry = {k: v for k, v in guarded.to_json().items() if k in ("per_10k_chars", "found", "unknown_words_per_10k_chars")}
    entry = {**alone.to_json(), "guarded": {**guarded_entry, "words_avoided": len(avoid["words"])},
             "library": avoid["library"], "corpus": corpus.name}
    if a.write:
        set_avoid(a.model, avoid)
        set_card_entry(a.model, "foreign_names", entry)
    print(json.dumps({"model": str(a.model), **entry, "written": bool(a.write)}, ensure_ascii=False))


def cmd_widen(a: argparse.Namespace) -> None:
    from charlm.model import ModelSpec, inference_copy, widen
    from charlm.storage import load_model_folder, save_model_folder

    saved = load_model_folder(a.model)
    model, spec = widen(saved.model, ModelSpec(**saved.card["layers"]), a.units, a.seed)
    card = {**saved.card, "name": a.out.name, "layers": spec.to_json(), "parameters": int(model.count_params()),
            "widened_from": {"name": saved.card.get("name", saved.path.name), "path": str(saved.path),
                             "units": saved.card["layers"]["units"], "seed": a.seed}}
    save_model_folder(inference_copy(model), saved.vocab, card, a.out)
    print(f"saved {a.out}: {card['parameters']:,} parameters ({spec.layers}x{spec.units}), "
          f"the same function as {a.model} until trained")


def build_parser() -> argparse.ArgumentParser:
    from charlm.train_config import FINETUNE_DROPOUT

    parser = argparse.ArgumentParser(prog="python -m charlm", description="Character-level LSTM language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a new model on a text file")
    p.add_argument("corpus", type=Path, help="UTF-8 text file to learn from, or a folder of them (the last --holdout of each is held out)")
    p.add_argument("--preset", default="default", help="architecture: tiny, small, default (2x512) or gigantic (the recipe's 3x700)")
    p.add_argument("--keep-case", action="store_true", help="do not lowercase the text (the recipe lowercases)")
    p.add_argument("--charset-from", type=Path, default=None, help="take the vocabulary from this text instead (to pretrain a base for it)")
    _add_resume_flag(p)
    _add_training_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="continue training a saved model on a new text, keeping its characters")
    p.add_argument("corpus", type=Path, help="UTF-8 text file (or folder of them) to learn from, mapped onto the model's characters")
    p.add_argument("--model", required=True, type=Path, help="model folder to start from")
    p.add_argument("--dropout", type=float, default=None,
                   help=f"dropout rate while fine-tuning (default {FINETUNE_DROPOUT}, where the base has dropout layers)")
    p.add_argument("--rehearse", type=Path, action="append", default=[],
                   help="a library folder (repeatable): train also on passages of it whose names are replaced by the corpus's own, "
                        "so the style does not write the library's names")
    p.add_argument("--rehearse-share", type=float, default=0.2,
                   help="share of the training characters those passages make up (default 0.2)")
    _add_resume_flag(p)
    _add_training_flags(p, finetuning=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("generate", help="continue a prompt")
    p.add_argument("prompt", nargs="?", default="", help="text to continue (cut to its last 100 characters, or left-padded with the model's pad)")
    p.add_argument("--model", required=True, type=Path, help="model folder, e.g. weights/alice")
    p.add_argument("--length", type=int, default=400, help="characters to generate (default 400, as in the recipe)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 means the recipe's argmax (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="sample only among the k likeliest characters (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample only among the likeliest characters whose probabilities add up to p (1: all)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible output")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="int8",
                   help="weights the CPU step holds: int8 (quantised at load, what the bot serves; default) or fp32")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="bits per character of a model on a text")
    p.add_argument("corpus", type=Path, help="UTF-8 text file, or folder of them, to score")
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--heldout-only", action="store_true", help="score only the last --holdout fraction (the part training never saw)")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction for --heldout-only (default 0.1)")
    p.add_argument("--max-chars", type=int, default=0, help="score at most this many characters (0: all)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                   help="fp32 (the model itself, as its card reports; default) or int8 (the quantised CPU step the bot serves with)")
    p.add_argument("--guarded", action="store_true",
                   help="score as served: with the folder's avoid.json, refused characters taken out of each draw")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("pad", help="measure which character a model's short prompts are best padded with")
    p.add_argument("corpus", type=Path, help="the model's corpus: its held-out paragraph openings are scored")
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction, as in training (default 0.1)")
    p.add_argument("--write", action="store_true", help="save the winner in the folder's vocab.json and card")
    p.set_defaults(func=cmd_pad)

    p = sub.add_parser("widen", help="grow a model's LSTM layers, keeping what it computes, to train further")
    p.add_argument("--model", required=True, type=Path, help="model folder to widen")
    p.add_argument("--units", required=True, type=int, help="units per LSTM layer in the new model (more than now)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the new units' incoming weights (default 0)")
    p.set_defaults(func=cmd_widen)

    p = sub.add_parser("names", help="how often a model writes names from a library that its own corpus never uses")
    p.add_argument("corpus", type=Path, help="the model's own corpus: its words are not foreign, its held-out windows prompt the samples")
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--library", required=True, type=Path, action="append",
                   help="a folder of books (read with case kept) whose names are looked for; repeatable")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction, as in training (default 0.1)")
    p.add_argument("--length", type=int, default=400, help="characters per sample (default 400)")
    p.add_argument("--prompts", type=int, default=20,
                   help="evenly spaced held-out windows, each sampled at T 0.5 and 0.8 (default 20; more for a finer figure)")
    p.add_argument("--write", action="store_true",
                   help="save the figures in the folder's card as \"foreign_names\", and the foreign names in its avoid.json, "
                        "which serving then steers around")
    p.set_defaults(func=cmd_names)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CharLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
