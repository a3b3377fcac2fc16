"""Item 5 of issue 11: what a fine-tuned version costs when it is loaded on demand.

    python -m bench.bench_versions [--model weights/seuss] [--copies 3] [--length 400] [--precision int8]

For `copies` versions (the same folder under different engine keys, as the bot loads each
version under `name@vN`): the resident memory each one adds once loaded, and the latency
of the first request to an unloaded version (load + warm-up + generation) against the
same request once it is loaded. Memory is the process's RSS from /proc (Linux).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

from charlm.engine import Engine
from charlm.sampling import Sampling


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("weights/seuss"))
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    args = parser.parse_args()
    settings = Sampling(temperature=0.8, length=args.length, seed=0)
    with Engine(backend=args.backend, precision=args.precision) as engine:
        engine.load("seuss", args.model)  # the shipped model, loaded at start as in the bot
        engine.submit("seuss", "warm up", settings).result()
        gc.collect()
        first, warm, loads, memory = [], [], [], []
        for i in range(args.copies):
            key = f"seuss@v{i + 1}"
            before = rss_mb()
            started = time.perf_counter()
            engine.load(key, args.model)
            loaded = time.perf_counter()
            engine.submit(key, "the cat in the hat", settings).result()
            done = time.perf_counter()
            gc.collect()
            memory.append(rss_mb() - before)
            loads.append(loaded - started)
            first.append(done - started)
            started = time.perf_counter()
            engine.submit(key, "the cat in the hat", settings).result()
            warm.append(time.perf_counter() - started)
        for key in [f"seuss@v{i + 1}" for i in range(args.copies)]:
            engine.unload(key)
        gc.collect()
        after_unload = rss_mb()
    print(f"model {args.model} on {args.backend} ({args.precision}), {args.copies} versions, {args.length} characters per request")
    print(f"load + warm-up: median {statistics.median(loads):.2f} s  (each: {', '.join(f'{x:.2f}' for x in loads)})")
    print(f"first request to an unloaded version (load + generate): median {statistics.median(first):.2f} s "
          f"(each: {', '.join(f'{x:.2f}' for x in first)})")
    print(f"same request once loaded: median {statistics.median(warm):.2f} s (each: {', '.join(f'{x:.2f}' for x in warm)})")
    print(f"RSS added per loaded version: median {statistics.median(memory):.1f} MB "
          f"(each: {', '.join(f'{x:.1f}' for x in memory)}); RSS after unloading them all: {after_unload:.0f} MB")


if __name__ == "__main__":
    main()
