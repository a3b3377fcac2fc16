"""Quality for the same wall-clock budget: the recipe's training style vs charlm's.

    python bench/bench_quality.py [--minutes 10] [--preset default]

Both train the same LSTM stack on the first 90% of lowercased Alice for the same time,
then both are scored on the held-out 10% in bits per character (each character predicted
from the text before it; the recipe sees its 100-character window, charlm its carried
state). Needs ../shared/corpora/alice.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recipe import build_recipe_model, recipe_bits_per_char, recipe_inputs, recipe_windows  # noqa: E402
from charlm.corpus import load_corpus, split_holdout  # noqa: E402
from charlm.jobs import heldout_eval  # noqa: E402
from charlm.model import preset  # noqa: E402
from charlm.train import TrainConfig, train  # noqa: E402
from charlm.vocab import Vocabulary  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "alice.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="training budget for each side")
    parser.add_argument("--preset", default="default", help="architecture for both sides")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    a = parser.parse_args()
    corpus = load_corpus(a.corpus)
    vocab = Vocabulary.from_text(corpus.text)
    train_text, val_text = split_holdout(corpus.text, 0.1)
    train_ids, val_ids = vocab.encode(train_text).ids, vocab.encode(val_text).ids
    spec = preset(a.preset)

    recipe = build_recipe_model(len(vocab), spec)
    rng = np.random.default_rng(0)
    start, steps = time.monotonic(), 0
    while time.monotonic() - start < a.minutes * 60:
        x, y = recipe_windows(train_ids, rng.integers(0, len(train_ids) - 101, size=a.batch))
        recipe.train_on_batch(recipe_inputs(x, len(vocab)), y)
        steps += 1
    recipe_bpc = recipe_bits_per_char(recipe, val_ids, train_ids, len(vocab))
    print(f"recipe: {steps} steps, {steps * a.batch:,} targets in {a.minutes} min -> held-out {recipe_bpc:.3f} bits/char",
          flush=True)

    config = TrainConfig(batch_size=a.batch, epochs=1000, patience=1000, max_minutes=a.minutes)
    start = time.monotonic()
    result = train(train_ids, val_ids, vocab, spec, config)
    ours = heldout_eval(result.model, train_ids, val_ids)
    targets = sum(1 for _ in result.history) * len(train_ids)
    print(f"charlm: {len(result.history)} epochs, ~{targets:,} targets in {(time.monotonic() - start) / 60:.1f} min "
          f"-> held-out {ours.bits_per_char:.3f} bits/char (best epoch {result.best_epoch})")
    print(f"same budget, {a.preset} ({spec.layers}x{spec.units}): recipe {recipe_bpc:.3f} vs charlm "
          f"{ours.bits_per_char:.3f} bits/char; uniform guess would be {np.log2(len(vocab)):.3f}")


if __name__ == "__main__":
    main()
