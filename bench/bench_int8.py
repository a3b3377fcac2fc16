"""int8 vs float32 CPU generation, side by side in one run (issue 20).

    python -m bench.bench_int8 [--model weights/alice] [--seconds 2] [--recipe-chars 10]
                               [--quality] [--eval-chars 0]

Speed, on the shipped weights: characters per second of the step (Batch.advance: sample
+ layers + output layer) at batch 1 and 32 in each precision, best of a few runs, wall
clock and CPU time of this process; the floor of each, bytes read per character over
the read bandwidth measured on a buffer of that size (the weights stay in the L3 cache
between steps; DRAM bandwidth is printed too); generation of one 400-character reply
after a 100-character prompt (what `python -m charlm generate` runs) against the
recipe's re-run-the-window loop (bench/recipe.py, random weights of the same size: the
cost does not depend on their values). Loading: read, quantise, warm up; resident MB
per loaded version from bench_versions.py in a fresh process per precision.
--quality adds held-out bits/char of alice, seuss and storybook in both precisions
(what `charlm eval --heldout-only` prints) and greedy agreement on each model's 20
held-out prompts (charlm.jobs.recitation's: 100-character windows evenly spread over
the held-out text). OpenBLAS runs on one thread, as charlm.blas sets it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from charlm.generate import Batch, Generator, choose_backend  # noqa: E402
from charlm.quantize import QuantizedWeights  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402
from charlm.storage import read_model_folder  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
SHIPPED = {"alice": "alice.txt", "seuss": "seuss.txt", "storybook": "pretrain"}
LENGTH, PROMPT, BATCHES = 400, 100, (1, 32)


@njit(nogil=True, fastmath=True, cache=False)
def _read(values):
    """Sum of every float32: a pass that only reads (fastmath lets LLVM vectorise the
    adds, so loads are the limit; integer or numpy sums measured 2.5-3x slower here)."""
    total = np.float32(0)
    for i in range(values.size):
        total += values[i]
    return total


def read_bandwidth(nbytes: int, seconds: float = 0.3) -> float:
    """Best bytes/s of repeated read passes over a buffer of `nbytes`."""
    words = np.ones(max(1, nbytes // 4), np.float32)
    _read(words)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        _read(words)
        best = min(best, time.perf_counter() - t)
    return words.nbytes / best


def fp32_bytes_per_step(weights) -> int:
    mats = weights.recurrent + weights.kernels + [weights.dense_w]
    return sum(m.nbytes for m in mats) + weights.table.shape[1] * 4 + sum(b.nbytes for b in weights.biases)


def kept_bytes(stepper, weights) -> int:
    """Bytes of weights a loaded version keeps, in its step's precision."""
    if stepper.precision == "int8":
        return stepper.q.nbytes
    return sum(a.nbytes for a in [weights.table, *weights.kernels, *weights.recurrent, *weights.biases,
                                  weights.dense_w, weights.dense_b])


def time_steps(stepper, window: np.ndarray, batch: int, seconds: float) -> tuple[float, float]:
    """(best wall, best CPU) seconds per step of `batch` rows, over runs of LENGTH steps
    (16 per advance, as the engine's chunks) until `seconds` have passed."""
    rows = Batch(stepper)
    rows.join(np.stack([window] * batch), [Sampling(temperature=0.8, seed=i, length=10_000) for i in range(batch)], 42)
    rows.advance(16)
    wall = cpu = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or wall == float("inf"):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(LENGTH // 16):
            rows.advance(16)
        wall = min(wall, (time.perf_counter() - w0) / LENGTH)
        cpu = min(cpu, (time.process_time() - c0) / LENGTH)
    return wall, cpu


def bench_speed(model: Path, seconds: float, recipe_chars: int) -> None:
    saved = read_model_folder(model)
    q = QuantizedWeights.of(saved.weights)
    steppers = {"fp32": choose_backend(saved.weights, "numpy", "fp32"), "int8": choose_backend(saved.weights, "numpy", "int8")}
    bytes_per_char = {"fp32": fp32_bytes_per_step(saved.weights), "int8": q.bytes_per_step}
    bandwidth = {p: read_bandwidth(n) for p, n in bytes_per_char.items()}
    dram = read_bandwidth(256 * 2**20)
    window = saved.vocab.window("alice was beginning to get very tired of sitting by her sister on the bank").ids
    print(f"model {model}: bytes read per step: fp32 {bytes_per_char['fp32'] / 1e6:.2f} MB, "
          f"int8 {bytes_per_char['int8'] / 1e6:.2f} MB; read bandwidth on buffers of those sizes: "
          f"fp32 {bandwidth['fp32'] / 1e9:.1f} GB/s, int8 {bandwidth['int8'] / 1e9:.1f} GB/s (DRAM, 256 MB: {dram / 1e9:.1f} GB/s)")
    rates: dict[tuple[str, int], tuple[float, float]] = {}
    for batch in BATCHES:
        for precision, stepper in steppers.items():  # alternate, so both see the same machine
            rates[precision, batch] = time_steps(stepper, window, batch, seconds)
    for kind, index in (("wall-clock", 0), ("CPU time", 1)):
        print(f"-- step, best {kind} (sample + layers + output layer; {LENGTH} chars per run)")
        for batch in BATCHES:
            line = []
            for precision in ("fp32", "int8"):
                per_step = rates[precision, batch][index]
                floor = bytes_per_char[precision] / bandwidth[precision]  # one pass over the weights per step
                line.append(f"{precision} {per_step * 1e3:7.3f} ms/step = {batch / per_step:8.0f} chars/s "
                            f"(floor {floor * 1e3:.3f} ms/step = {batch / floor:.0f} chars/s; {per_step / floor:.1f}x it)")
            ratio = rates["fp32", batch][index] / rates["int8", batch][index]
            print(f"  batch {batch:2d}: " + " | ".join(line) + f"  -> int8 {ratio:.2f}x fp32 chars/s (target >= 2x)")
    bench_reply(model, window, recipe_chars, len(saved.vocab))


def bench_reply(model: Path, window: np.ndarray, recipe_chars: int, vocab_size: int) -> None:
    """One 400-character reply after a 100-character prompt, as `charlm generate` makes
    it, in each precision, against the recipe's loop."""
    from bench.recipe import build_recipe_model, recipe_generate
    from charlm.model import preset

    recipe = build_recipe_model(vocab_size, preset("default"))
    recipe_generate(recipe, window, 2, vocab_size)
    t = time.perf_counter()
    recipe_generate(recipe, window, recipe_chars, vocab_size)
    recipe_ms = (time.perf_counter() - t) / recipe_chars * 1e3
    print(f"-- one reply of {LENGTH} chars after a {PROMPT}-char prompt (Generator, as `charlm generate`), best of 5")
    print(f"  recipe re-run-the-window loop: {recipe_ms:8.2f} ms/char (timed on {recipe_chars} chars)")
    for precision in ("fp32", "int8"):
        gen = Generator.from_folder(model, "numpy", precision)
        gen.generate([window], [Sampling(seed=0, length=20)])
        best = min(_timed(lambda: gen.generate([window], [Sampling(seed=0, length=LENGTH)])) for _ in range(5))
        ms = best / LENGTH * 1e3
        print(f"  charlm {precision}: {ms:8.3f} ms/char end to end -> {recipe_ms / ms:,.0f}x the recipe (target >= 1,000x)")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_loading(model: Path) -> None:
    print("-- loading one version (read model.keras, quantise, warm up) and what it keeps")
    for precision in ("fp32", "int8"):
        reads, quants, steppers = [], [], None
        for _ in range(5):
            t = time.perf_counter()
            saved = read_model_folder(model)
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            steppers = choose_backend(saved.weights, "numpy", precision)
            quants.append(time.perf_counter() - t)
        kept = kept_bytes(steppers, saved.weights)
        what = "quantise" if precision == "int8" else "build the step"
        print(f"  {precision}: read {statistics.median(reads) * 1e3:.0f} ms, {what} {statistics.median(quants) * 1e3:.1f} ms"
              f" (medians of 5); weights kept {kept / 2**20:.2f} MB")
    for precision in ("fp32", "int8"):
        out = subprocess.run([sys.executable, "-m", "bench.bench_versions", "--model", str(model), "--precision", precision,
                             "--copies", "5"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
        print("  " + "\n  ".join(out.stdout.strip().splitlines()) if out.returncode == 0 else f"  bench_versions failed: {out.stderr[-300:]}")


def heldout_prompts(vocab, heldout_ids: np.ndarray, n: int = 20) -> list[str]:
    """charlm.jobs.recitation's prompts: 100-character windows evenly spread over the held-out text."""
    starts = np.linspace(0, max(0, len(heldout_ids) - PROMPT), n).astype(int)
    return [vocab.decode(heldout_ids[s : s + PROMPT]) for s in starts]


def greedy_agreement(folder: Path, prompts: list[str], length: int = LENGTH) -> list[int]:
    """Characters each prompt's argmax continuation agrees on in int8 and fp32, from the start."""
    texts = {}
    for precision in ("fp32", "int8"):
        gen = Generator.from_folder(folder, "numpy", precision)
        texts[precision] = gen.generate([gen.vocab.window(p).ids for p in prompts],
                                        [Sampling(temperature=0, length=length)] * len(prompts))
    agree = []
    for a, b in zip(texts["fp32"], texts["int8"]):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agree.append(n)
    return agree


def bench_quality(eval_chars: int) -> None:
    from charlm.corpus import load_corpus
    from charlm.evaluate import evaluate

    print("-- quality: held-out bits/char (charlm eval --heldout-only) and greedy agreement on 20 held-out prompts")
    for name, corpus in SHIPPED.items():
        folder = ROOT / "weights" / name
        saved = read_model_folder(folder)
        text = load_corpus(CORPORA / corpus, saved.vocab.lowercase, 0.1).split(0.1)[1]
        ids = saved.vocab.encode(text[:eval_chars] if eval_chars else text).ids
        bpc = {}
        for precision in ("fp32", "int8"):
            t = time.perf_counter()
            bpc[precision] = evaluate(choose_backend(saved.weights, "numpy", precision), ids)
            print(f"  {name} {precision}: {bpc[precision].bits_per_char:.4f} bits/char on {bpc[precision].chars:,} chars"
                  f" ({time.perf_counter() - t:.0f} s)", flush=True)
        delta = bpc["int8"].bits_per_char - bpc["fp32"].bits_per_char
        agree = greedy_agreement(folder, heldout_prompts(saved.vocab, saved.vocab.encode(text).ids))
        full = sum(a >= 100 for a in agree)
        print(f"  {name}: int8 - fp32 = {delta:+.4f} bits/char (target within 0.01); greedy: {full}/20 prompts agree "
              f"on the first 100 chars, median {statistics.median(agree):.0f} of {LENGTH} (each: {', '.join(map(str, agree))})",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "weights" / "alice")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per precision and batch size")
    ap.add_argument("--recipe-chars", type=int, default=10)
    ap.add_argument("--quality", action="store_true", help="also eval the shipped models in both precisions (minutes)")
    ap.add_argument("--eval-chars", type=int, default=0, help="score at most this many held-out chars per model (0: all)")
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    bench_speed(a.model, a.seconds, a.recipe_chars)
    bench_loading(a.model)
    if a.quality:
        bench_quality(a.eval_chars)


if __name__ == "__main__":
    main()
