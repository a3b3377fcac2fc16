"""How many OpenBLAS threads the numpy step should use: measured, quiet and beside a busy process.

    python bench/bench_threads.py [--model weights/alice] [--repeats 3] [--chars 400]

Each setting runs in a fresh process (OpenBLAS reads OPENBLAS_NUM_THREADS once, when
numpy loads): 1 thread, 2 threads and OpenBLAS's default (one per core), each
quiet and with a second process keeping one core busy with single-threaded matrix
products, as a fine-tune worker does. A run loads the model, warms up, then times
`--chars` characters of generation at batch 1 and at batch 16 (what a busy bot steps),
reporting wall and CPU milliseconds per character step; the figure is the median over
`--repeats` runs, interleaved so drifts in the machine's speed hit every setting alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
# OpenBLAS's default is one thread per core; charlm sets its own default, so the default
# is asked for explicitly here.
SETTINGS = [("1", "1")] + [(f"{n}{' (default)' if n == CORES else ''}", str(n))
                           for n in sorted({2, CORES}) if n > 1]
BATCHES = (1, 16)

CHILD = r"""
import json, sys, time
import numpy as np
from charlm.numpy_lstm import NumpyLSTM
from charlm.sampling import RowParams, Sampling
from charlm.storage import read_model_folder

folder, chars = sys.argv[1], int(sys.argv[2])
saved = read_model_folder(folder)
stepper = NumpyLSTM(saved.weights)
window = saved.vocab.window("alice was beginning to get very tired").ids
out = {}
for batch in %s:
    settings = [Sampling(seed=i, length=chars) for i in range(batch)]
    params = RowParams.of(settings, len(saved.vocab))
    uniforms = np.random.default_rng(0).random((batch, chars))
    state, logits = stepper.prime(np.stack([window] * batch))
    stepper.advance(state, logits, params, uniforms[:, :32])  # warm-up: BLAS threads, kernels
    state, logits = stepper.prime(np.stack([window] * batch))
    wall, cpu = time.perf_counter(), time.process_time()
    stepper.advance(state, logits, params, uniforms)
    out[batch] = ((time.perf_counter() - wall) / chars * 1e3, (time.process_time() - cpu) / chars * 1e3)
print(json.dumps(out))
""" % (BATCHES,)

BUSY = r"""
import numpy as np
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
while True:
    a = (a @ a.T) * np.float32(1e-3)
"""


def run_child(threads: str, model: str, chars: int) -> dict[int, tuple[float, float]]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads}
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(chars)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {int(k): tuple(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "weights" / "alice"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chars", type=int, default=400)
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {a.chars} characters per run; median of {a.repeats} runs; "
          f"load average {os.getloadavg()[0]:.1f} before (\"quiet\" adds no load of its own)")
    results: dict[tuple[str, str], list[dict]] = {}
    for load in ("quiet", "busy"):
        busy = None
        if load == "busy":
            busy = subprocess.Popen([sys.executable, "-c", BUSY],
                                    env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        try:
            for _ in range(a.repeats):
                for name, threads in SETTINGS:
                    results.setdefault((load, name), []).append(run_child(threads, a.model, a.chars))
        finally:
            if busy is not None:
                busy.terminate()
                busy.wait()
    print(f"{'load':6} {'threads':12}" + "".join(f" | batch {b:>2}: wall ms/char  cpu ms/char" for b in BATCHES))
    for (load, name), runs in results.items():
        cells = []
        for b in BATCHES:
            wall = statistics.median(r[b][0] for r in runs)
            cpu = statistics.median(r[b][1] for r in runs)
            cells.append(f" | {'':9}{wall:8.3f}  {cpu:11.3f}")
        print(f"{load:6} {name:12}" + "".join(cells))
    for load in ("quiet", "busy"):
        for b in BATCHES:
            one = statistics.median(r[b][0] for r in results[(load, "1")])
            default = statistics.median(r[b][0] for r in results[(load, SETTINGS[-1][0])])
            print(f"{load}, batch {b}: default threads / 1 thread = {default / one:.2f}x wall time")


if __name__ == "__main__":
    main()
