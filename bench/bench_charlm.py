"""Training and generation speed: the recipe's loops vs charlm's, side by side in one run.

    python bench/bench_charlm.py [--preset default] [--seconds 20]

Training: targets learned per second (the recipe: one per window; charlm: every position).
Generation: milliseconds per character, recipe loop vs charlm's stateful CPU stepping
(numpy BLAS + compiled kernels, and the int8 step of charlm.int8_lstm; one prompt, and
32 prompts at once).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recipe import build_recipe_model, recipe_generate, recipe_inputs, recipe_windows  # noqa: E402
from charlm.generate import Generator  # noqa: E402
from charlm.model import build_model, preset  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402
from charlm.storage import SavedModel  # noqa: E402
from charlm.train import TrainConfig, compile_model, make_windows  # noqa: E402
from charlm.vocab import Vocabulary  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "alice.txt"


def timed_steps(step, seconds: float) -> tuple[int, float]:
    """Run step() repeatedly for about `seconds` after one warm-up call."""
    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n, time.perf_counter() - start


def load_ids() -> tuple[Vocabulary, np.ndarray]:
    from charlm.corpus import load_corpus
    from tests.conftest import make_text

    text = load_corpus(CORPUS).text if CORPUS.is_file() else make_text(150_000)
    vocab = Vocabulary.from_text(text)
    return vocab, vocab.encode(text).ids


def bench_training(vocab: Vocabulary, ids: np.ndarray, preset_name: str, batch: int, seconds: float) -> None:
    spec = preset(preset_name)
    rng = np.random.default_rng(0)
    recipe = build_recipe_model(len(vocab), spec)
    rx, ry = recipe_windows(ids, rng.integers(0, len(ids) - 101, size=batch))
    rx = recipe_inputs(rx, len(vocab))
    n_r, t_r = timed_steps(lambda: recipe.train_on_batch(rx, ry), seconds)
    ours = build_model(len(vocab), spec)
    compile_model(ours, TrainConfig())
    ox, oy = make_windows(ids, 100)
    ox, oy = ox[:batch], oy[:batch]
    n_o, t_o = timed_steps(lambda: ours.train_on_batch(ox, oy), seconds)
    recipe_rate, our_rate = n_r * batch / t_r, n_o * batch * 100 / t_o
    print(f"training, {preset_name} ({spec.layers}x{spec.units}), batch {batch}:")
    print(f"  recipe  one target per window : {recipe_rate:10.1f} targets/s  ({t_r / n_r * 1000:.0f} ms/step)")
    print(f"  charlm  every position        : {our_rate:10.1f} targets/s  ({t_o / n_o * 1000:.0f} ms/step)")
    print(f"  ratio: {our_rate / recipe_rate:.0f}x more targets per second")


def bench_generation(vocab: Vocabulary, ids: np.ndarray, preset_name: str, recipe_chars: int) -> None:
    spec = preset(preset_name)
    model = build_model(len(vocab), spec)  # same cost per step as trained weights
    recipe = build_recipe_model(len(vocab), spec)
    window = ids[:100]
    recipe_generate(recipe, window, 2, len(vocab))
    start = time.perf_counter()
    recipe_generate(recipe, window, recipe_chars, len(vocab))
    recipe_ms = (time.perf_counter() - start) / recipe_chars * 1000
    print(f"generation, {preset_name}, 400 chars after a 100-char prompt (recipe timed on {recipe_chars} chars):")
    print(f"  recipe  predict on sliding window : {recipe_ms:8.2f} ms/char  ({recipe_ms * 400 / 1000:.1f} s per reply)")
    for precision in ("fp32", "int8"):
        gen = Generator(SavedModel(model, vocab, {}, None), "numpy", precision)
        gen.generate([window], [Sampling(temperature=0, length=20)])
        rows = {}
        for batch in (1, 32):
            windows = [ids[i * 100 : i * 100 + 100] for i in range(batch)]
            settings = [Sampling(temperature=0.8, seed=i, length=400) for i in range(batch)]
            start = time.perf_counter()
            gen.generate(windows, settings)
            rows[batch] = (time.perf_counter() - start) / 400 * 1000  # ms per step of the whole batch
        print(f"  charlm  {precision} stateful, 1 prompt  : {rows[1]:8.3f} ms/char  ({rows[1] * 400 / 1000:.2f} s per reply)"
              f"  -> {recipe_ms / rows[1]:.0f}x faster")
        print(f"  charlm  {precision} stateful, 32 prompts: {rows[32] / 32:8.3f} ms/char  ({rows[32]:.2f} ms per step of 32)"
              f"  -> {recipe_ms / (rows[32] / 32):.0f}x faster per char")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", help="architecture for both sides (default: default, 2x512)")
    parser.add_argument("--batch", type=int, default=64, help="training batch size for both sides")
    parser.add_argument("--seconds", type=float, default=20, help="timing per training side")
    parser.add_argument("--recipe-chars", type=int, default=20, help="characters to time the slow recipe loop on")
    a = parser.parse_args()
    vocab, ids = load_ids()
    bench_training(vocab, ids, a.preset, a.batch, a.seconds)
    bench_generation(vocab, ids, a.preset, a.recipe_chars)


if __name__ == "__main__":
    main()
