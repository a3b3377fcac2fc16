"""Generation speed through the engine vs the recipe's loop and the mat-vec floor, in one run.

    python bench/bench_engine.py [--preset default] [--backend auto] [--recipe-chars 20] [--precision fp32]

(a) the recipe: sliding 100-char window, `model.predict` per character, argmax
    (only `--recipe-chars` characters are run; per-character time is extrapolated);
(b) one request through the engine: 400 characters after a 100-character prompt;
(c) 32 concurrent requests through the engine: total characters per second;
floors: matmul passes over every weight matrix a step reads, batch 1 and batch 32: the
best single pass of N (no step reads the weights faster), and 400 passes back to back
(what a request sees on a machine busy with other work). The request floor adds what
priming cannot avoid: 100 passes over the recurrent kernels, one per prompt character.
Figures come as best wall-clock and best CPU time of this process; on a loaded machine
compare the CPU ones. charlm runs OpenBLAS on one thread (charlm.blas, measured by
bench/bench_threads.py); set OPENBLAS_NUM_THREADS to try others.
Engine requests sample at temperature 0.8 (what the bot does); the recipe takes argmax.
Random weights of the preset: the cost of a step does not depend on their values.
The floors are of float32 mat-vecs, so the engine runs in fp32 unless --precision int8
(whose own floor bench/bench_int8.py prints).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recipe import build_recipe_model, recipe_generate  # noqa: E402
from charlm.engine import Engine  # noqa: E402
from charlm.model import build_model, preset  # noqa: E402
from charlm.numpy_lstm import LSTMWeights  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402
from charlm.storage import save_model_folder  # noqa: E402
from charlm.vocab import Vocabulary  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "alice.txt"
PROMPT_CHARS, LENGTH, STREAMS = 100, 400, 32


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    status = Path("/proc/self/status").read_text()
    current = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return current / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timing:
    """Best wall-clock and best CPU seconds of a few runs. On a loaded machine wall time
    mostly measures the scheduler; CPU time of this process still measures the work."""

    def __init__(self, fn, repeats: int) -> None:
        self.wall = self.cpu = float("inf")
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            self.cpu = min(self.cpu, time.process_time() - cpu)
            self.wall = min(self.wall, time.perf_counter() - wall)


def floor(weights: LSTMWeights, batch: int, passes: int, repeats: int, recurrent_only: bool = False) -> Timing:
    """Matmul passes over the matrices a step reads (layer 0's input kernel is a table
    lookup, so it is not among them); the Timing is per pass. `recurrent_only`: the
    recurrent kernels alone, the part of priming that must go position by position."""
    mats = weights.recurrent if recurrent_only else weights.recurrent + weights.kernels + [weights.dense_w]
    xs = [np.random.default_rng(0).standard_normal((batch, m.shape[0]), dtype=np.float32) for m in mats]
    timing = Timing(lambda: [x @ m for _ in range(passes) for x, m in zip(xs, mats)], repeats)
    timing.wall, timing.cpu = timing.wall / passes, timing.cpu / passes
    return timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "tensorflow"])
    ap.add_argument("--recipe-chars", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    a = ap.parse_args()

    text = CORPUS.read_text("utf-8") if CORPUS.is_file() else "alice was beginning to get very tired. " * 500
    vocab = Vocabulary.from_text(text.lower())
    spec = preset(a.preset)
    prompts = [text[i * 997 : i * 997 + PROMPT_CHARS] for i in range(STREAMS)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    folders = {}
    for name in ("one", "two"):
        model = build_model(len(vocab), spec)
        folders[name] = save_model_folder(model, vocab, {"name": name, "vocab_size": len(vocab)}, tmp / name)
    weights = LSTMWeights.from_keras(model)
    print(f"preset {a.preset} ({spec.layers}x{spec.units}), vocab {len(vocab)}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")

    with Engine(folders, backend=a.backend, max_batch=STREAMS, precision=a.precision) as engine:
        rss_loaded = rss_mib()[0]
        backend = engine.models()["one"].backend
        one = lambda n: engine.submit("one", prompts[0], Sampling(seed=0, length=n)).result()  # noqa: E731
        single, prime = Timing(lambda: one(LENGTH), a.repeats), Timing(lambda: one(1), a.repeats)

        def many() -> None:
            futures = [engine.submit("one", p, Sampling(seed=i, length=LENGTH)) for i, p in enumerate(prompts)]
            assert all(len(f.result().text) == LENGTH for f in futures)

        batch = Timing(many, max(1, a.repeats - 1))
        engine.submit("two", prompts[1], length=LENGTH).result()
        rss_two = rss_mib()
    floors = {"best pass": (floor(weights, 1, 1, 300), floor(weights, STREAMS, 1, 30)),
              "sustained": (floor(weights, 1, LENGTH, 3), floor(weights, STREAMS, LENGTH, 2))}
    prime_floor = floor(weights, 1, PROMPT_CHARS, 3, recurrent_only=True)

    recipe = build_recipe_model(len(vocab), spec)
    window = vocab.window(prompts[0]).ids
    recipe_generate(recipe, window, 1, len(vocab))  # first-call costs
    slow = Timing(lambda: recipe_generate(recipe, window, a.recipe_chars, len(vocab)), 1)

    print(f"engine backend: {backend}. Floors: 'best pass' is the best single pass of N (the issue's"
          f" definition); 'sustained' is {LENGTH} passes back to back, like a request, best of a few.")
    for kind in ("wall", "cpu"):
        recipe_ms = getattr(slow, kind) / a.recipe_chars * 1e3
        e2e = getattr(single, kind) / LENGTH * 1e3
        step = (getattr(single, kind) - getattr(prime, kind)) / (LENGTH - 1) * 1e3
        rate = STREAMS * LENGTH / getattr(batch, kind)
        print(f"-- best {'wall-clock' if kind == 'wall' else 'CPU time of this process'}")
        lines = [
            ("(a) recipe loop, per char", f"{recipe_ms:9.3f} ms", ""),
            ("(b) engine, 1 request, per char end to end", f"{e2e:9.3f} ms",
             f"{recipe_ms / e2e:7.0f}x faster than (a)  (target >= 300x)"),
            ("(b) engine, 1 request, per char after priming", f"{step:9.3f} ms", ""),
            (f"(c) engine, {STREAMS} requests, total", f"{rate:9.0f} ch/s", ""),
            ("    priming one 100-char prompt (+1 char)", f"{getattr(prime, kind) * 1e3:9.1f} ms", ""),
        ]
        for name, (f1, f32) in floors.items():
            f1_ms, f32_ms = getattr(f1, kind) * 1e3, getattr(f32, kind) * 1e3
            rate_floor = STREAMS / f32_ms * 1e3
            request_ms = (LENGTH * f1_ms + PROMPT_CHARS * getattr(prime_floor, kind) * 1e3) / LENGTH
            lines += [
                (f"    request floor ({name}), 1 stream, per char", f"{request_ms:9.3f} ms",
                 f"(b) end to end is {e2e / request_ms:.2f}x this  (priming's recurrent passes included)"),
                (f"    floor ({name}), 1 stream, per step", f"{f1_ms:9.3f} ms",
                 f"(b) after priming is {step / f1_ms:.2f}x this  (target <= 1.5x)"),
                (f"    floor ({name}), {STREAMS} streams, per step", f"{f32_ms:9.3f} ms",
                 f"= {rate_floor:.0f} ch/s; (c) is {rate / rate_floor:.0%} of it  (target >= 60%)"),
            ]
        for label, value, note in lines:
            print(f"{label:48s} {value:>14s}   {note}")
    print(f"memory, two models loaded: RSS {rss_two[0]:.0f} MiB, peak {rss_two[1]:.0f} MiB "
          f"(after loading, before serving: {rss_loaded:.0f} MiB)")


if __name__ == "__main__":
    main()
