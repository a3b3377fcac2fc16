"""Issue 21's serving budget for a wider model, side by side in one run.

    python -m bench.bench_wider [--old weights/alice] --new weights/sittings/storybook640 [--seconds 2]

A wider model may ship only if, served in the engine's default precision (int8), it
generates at least as fast as today's shipped model does in fp32, and each loaded version
stays at or below 8 MB. Each is served as the engine serves its folder: with its
avoid.json's word guard (charlm.word_guard) where it has one. This times both on the same
machine in one run, alternating:
the step (sample + layers + output layer, 16 per advance as the engine's chunks) at batch
1 and 32, and one 400-character reply after a 100-character prompt as `charlm generate`
makes it; then the weights each keeps and the resident memory each loaded version adds
(bench_versions.py, a fresh process per model). Speed depends on the shapes, not on the
values, so a base's sitting measures every model fine-tuned from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_int8 import BATCHES, LENGTH, _timed, kept_bytes, time_steps  # noqa: E402
from charlm.generate import SERVING_PRECISION, Generator, choose_backend  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402
from charlm.storage import read_model_folder  # noqa: E402
from charlm.word_guard import WordGuard  # noqa: E402

MAX_VERSION_MB = 8.0
ROUNDS = 4
PROMPT = "alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, default=ROOT / "weights" / "alice", help="today's shipped model, served in fp32")
    ap.add_argument("--new", type=Path, required=True, help=f"the wider model, served in {SERVING_PRECISION}")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per model and batch size")
    a = ap.parse_args()
    runs = {"old": (a.old, "fp32"), "new": (a.new, SERVING_PRECISION)}
    steppers, window = {}, None
    print(f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for key, (folder, precision) in runs.items():
        saved = read_model_folder(folder)
        guard = WordGuard.build(saved.avoid, saved.vocab) if saved.avoid else None  # as the engine serves it
        steppers[key] = choose_backend(saved.weights, "numpy", precision, guard)
        window = saved.vocab.window(PROMPT).ids
        layers = saved.card["layers"]
        guarded = (f", avoiding {guard.words:,} words (guard tables {(guard.next.nbytes + guard.refuse.nbytes) / 2**20:.2f} MB)"
                   if guard else "")
        print(f"{key}: {folder} ({layers['layers']}x{layers['units']}, {saved.card['parameters']:,} parameters) in "
              f"{precision}: weights kept {kept_bytes(steppers[key], saved.weights) / 2**20:.2f} MB{guarded}")
    if steppers["new"].guard is not None:  # the same weights without the guard: what steering costs
        steppers["new unguarded"] = choose_backend(read_model_folder(a.new).weights, "numpy", SERVING_PRECISION)
    rates = {}
    for batch in BATCHES:
        for _ in range(ROUNDS):  # alternate in short rounds, so all see the same machine
            for key in steppers:
                best = time_steps(steppers[key], window, batch, a.seconds / ROUNDS)
                rates[key, batch] = min(rates.get((key, batch), best), best)
    print(f"-- step, best wall clock (sample + layers + output layer; {LENGTH} chars per run)")
    for batch in BATCHES:
        old, new = rates["old", batch][0], rates["new", batch][0]
        print(f"  batch {batch:2d}: old fp32 {batch / old:8.0f} chars/s | new {SERVING_PRECISION} {batch / new:8.0f} chars/s"
              f"  -> new {old / new:.2f}x old (budget >= 1.00x)")
        if ("new unguarded", batch) in rates:
            bare = rates["new unguarded", batch][0]
            print(f"            new {SERVING_PRECISION} without its guard {batch / bare:8.0f} chars/s: "
                  f"the guard costs {new / bare - 1:+.1%} per step")
    print(f"-- one reply of {LENGTH} chars after a 100-char prompt (Generator, as `charlm generate`), best of 5")
    gens = {key: Generator.from_folder(folder, "numpy", precision) for key, (folder, precision) in runs.items()}
    reply = {key: float("inf") for key in gens}
    for _ in range(5):  # alternating, as above
        for key, gen in gens.items():
            reply[key] = min(reply[key], _timed(lambda: gen.generate([window], [Sampling(seed=0, length=LENGTH)])))
    for key, (_, precision) in runs.items():
        print(f"  {key} {precision}: {reply[key] / LENGTH * 1e3:.3f} ms/char")
    print(f"  -> new {reply['old'] / reply['new']:.2f}x old (budget >= 1.00x)")
    print(f"-- resident memory per loaded version (bench_versions.py, 5 versions, budget <= {MAX_VERSION_MB:g} MB for new)")
    for key, (folder, precision) in runs.items():
        out = subprocess.run([sys.executable, "-m", "bench.bench_versions", "--model", str(folder), "--precision", precision,
                              "--copies", "5"], capture_output=True, text=True, cwd=ROOT, timeout=600)
        lines = [line for line in out.stdout.splitlines() if "RSS added" in line]
        print(f"  {key} {precision}: " + (lines[0] if out.returncode == 0 and lines else f"failed: {out.stderr[-300:]}"))


if __name__ == "__main__":
    main()
