"""Which fine-tuning settings generalise best from a small upload, for the same budget.

    python -m bench.bench_finetune_study [--base weights/alice] [--texts A.txt B.txt ...]
                                         [--settings today,longer,...] [--out runs/study]
                                         [--upload-chars 100000] [--today-base OLD_MODEL]

Each setting fine-tunes the same base on each text (mapped onto the base's characters,
the last 10% held out, as `charlm finetune` and /finetune do) and is scored on that
held-out tenth in bits per character. "today" is the fine-tune as it shipped before this
study (5 epochs, Adam 1e-3, the rate halved after an epoch that did not improve, the
base's dropout); every other setting may use at most 1.5x its training steps. Prints a
table per text and the mean over texts, with the CPU seconds each run took (CPU, not wall
time: this machine is shared, and its speed swings). The texts are public-domain books
of ../shared/corpora/pretrain-extra that the shipped storybook, alice and seuss never saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charlm.train_config import FINETUNE, FINETUNE_DROPOUT, TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXTRA = ROOT.parent / "shared" / "corpora" / "pretrain-extra"
TEXTS = [  # about 20k, 40k, 100k and 170k characters after cleaning
    EXTRA / "14407-the-tale-of-benjamin-bunny.txt",
    EXTRA / "13004-more-goops-and-how-not-to-be-them.txt",
    EXTRA / "697-the-light-princess.txt",
    EXTRA / "2865-otto-of-the-silver-hand.txt",
]
TODAY_EPOCHS = 5
BUDGET = 1.5  # times today's training steps


@dataclass(frozen=True)
class Setting:
    """One way to fine-tune: the training config and the dropout it runs with (None: the base's own)."""

    name: str
    config: TrainConfig
    dropout: float | None = None


TODAY = TrainConfig(epochs=TODAY_EPOCHS, learning_rate=1e-3, patience=3)
LONGER = replace(TODAY, epochs=int(TODAY_EPOCHS * BUDGET))
SETTINGS = {
    s.name: s for s in [
        Setting("today", TODAY),
        Setting("longer", LONGER),
        Setting("cosine", replace(LONGER, learning_rate=2e-3, schedule="cosine", patience=LONGER.epochs)),
        Setting("cosine-avg3", replace(LONGER, learning_rate=2e-3, schedule="cosine", patience=LONGER.epochs,
                                       average_last=3)),
        Setting("cosine-avg3-drop0.5", replace(LONGER, learning_rate=2e-3, schedule="cosine",
                                               patience=LONGER.epochs, average_last=3), dropout=0.5),
        Setting("cosine-avg3-wd", replace(LONGER, learning_rate=2e-3, schedule="cosine", patience=LONGER.epochs,
                                          average_last=3, weight_decay=0.1)),
        Setting("plateau-avg3", replace(LONGER, average_last=3)),
        Setting("cosine-lr1e-3", replace(LONGER, schedule="cosine", patience=LONGER.epochs)),
        Setting("longer-drop0.1", LONGER, dropout=0.1),
        Setting("today-drop0.1", TODAY, dropout=0.1),
        Setting("default", FINETUNE, dropout=FINETUNE_DROPOUT),  # what charlm finetune and /finetune use now
    ]
}


def run(setting: Setting, text: Path, base: Path, out: Path) -> dict:
    import keras

    from charlm.jobs import finetune

    keras.backend.clear_session()
    dropout = setting.dropout
    if dropout is None:  # the base's own rate, as fine-tunes ran before FINETUNE_DROPOUT
        dropout = json.loads((base / "card.json").read_text("utf-8"))["layers"]["dropout"] or None
    cpu, wall = time.process_time(), time.monotonic()
    outcome = finetune(text, base, out, setting.config, dropout=dropout)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    training = outcome.card["training"]
    return {"setting": setting.name, "base": f"{base.parent.name}/{base.name}", "text": text.name,
            "chars": outcome.card["corpus"]["chars"],
            "base_bits": outcome.base_heldout.bits_per_char, "bits": outcome.heldout.bits_per_char,
            "epochs_run": training["epochs_run"], "best_epoch": training["best_epoch"],
            "averaged": training["averaged_epochs"], "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "config": asdict(setting.config), "dropout": outcome.card["layers"]["dropout"]}


def cut(text: Path, chars: int, out: Path) -> Path:
    """The first `chars` characters of the cleaned text, as an upload of that size."""
    from charlm.corpus import load_corpus

    cleaned = load_corpus(text).text
    if len(cleaned) < chars:
        sys.exit(f"{text.name} has {len(cleaned):,} characters after cleaning, fewer than {chars:,}")
    upload = out / f"{text.stem}-{chars // 1000}k.txt"
    upload.write_text(cleaned[:chars])
    return upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=ROOT / "weights" / "alice")
    parser.add_argument("--texts", type=Path, nargs="+", default=TEXTS)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study", help="model folders and results.jsonl")
    parser.add_argument("--today-base", type=Path, default=None,
                        help="the model \"today\" fine-tunes (default: --base): the shipped model a new base replaces, "
                             "for the time budget of the new base at the new defaults against the old at the old")
    parser.add_argument("--upload-chars", type=int, default=0,
                        help="cut each text to its first N characters after cleaning (e.g. 100000: the time budget's upload)")
    a = parser.parse_args()
    missing = [t for t in a.texts if not t.is_file()]
    if missing:
        sys.exit(f"missing text: {missing[0]} (the study reads ../shared/corpora)")
    names = a.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        sys.exit(f"unknown setting {unknown[0]!r}; known: {', '.join(SETTINGS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    if a.upload_chars:
        a.texts = [cut(text, a.upload_chars, a.out) for text in a.texts]
    results = []
    for text in a.texts:
        for name in names:
            base = a.today_base if name == "today" and a.today_base else a.base
            row = run(SETTINGS[name], text, base, a.out / f"{text.stem}-{name}")
            results.append(row)
            with open(a.out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{text.name[:40]:40} {row['chars']:>8,} {name:22} {row['base']} {row['base_bits']:.4f} -> "
                  f"{row['bits']:.4f} bits/char  epochs {row['epochs_run']} (best {row['best_epoch']}"
                  f"{', averaged ' + str(row['averaged']) if row['averaged'] else ''})  "
                  f"{row['cpu_s']:.0f} CPU s, {row['wall_s']:.0f} s", flush=True)
    print("\nmean over texts (bits/char; CPU seconds as a ratio of today's):")
    today = [r for r in results if r["setting"] == "today"]
    for name in names:
        rows = [r for r in results if r["setting"] == name]
        mean = sum(r["bits"] for r in rows) / len(rows)
        cpu = sum(r["cpu_s"] for r in rows)
        ratio = f"  {cpu / sum(r['cpu_s'] for r in today):.2f}x today's CPU time" if today else ""
        print(f"  {name:22} {mean:.4f}{ratio}")


if __name__ == "__main__":
    main()
