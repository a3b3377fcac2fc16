"""Issue 18: one server's flood against everyone else, first come first served beside the
fair schedule, in one run.

    python -m bench.bench_fairness [--model weights/alice] [--flood 260] [--others 8]
        [--length 200] [--max-batch 128] [--queue 64] [--per-server 16] [--gap 0.05]

Server A's members send `--flood` requests, one every `--flood-gap` seconds (interactions
arrive over the gateway one by one); then `--others` servers ask once each, one every
`--gap` seconds, while A's flood is being answered. Each run is a fresh engine over the
same model.

The flood, with the bot's limits (--queue, --max-batch, --per-server):
  fifo        today's engine: one first-come-first-served queue and batch
  fair        owners take turns at batch boundaries, at most --per-server requests per owner
For each: the others' median and p99 time to the final text (submission to completion;
what a user waits beyond Discord's round trips) and how many were refused; A's answered
and refused requests and its throughput (characters of A's answers per second, from the
flood's start to its last answer); the throughput of every answer. Refusals are EngineBusy
(the bot's "busy") or OwnerBusy ("this server has too many requests waiting").

The cost of taking turns: the same requests, every one admitted (no cap, a queue that
holds them all), fifo and fair alternately, `--repeats` times each; the best total
throughput of each, per wall-clock second and per CPU second of the process (on a machine
shared with other work the CPU figure is the one to compare). The cap itself lowers one server's throughput on purpose (it gets
--per-server rows, not the whole batch); this second part shows what the ordering costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charlm.engine import Engine, EngineBusy  # noqa: E402
from charlm.sampling import Sampling  # noqa: E402



@dataclass
class Run:
    name: str
    started: float = 0.0
    flood_done: list[float] = field(default_factory=list)
    flood_refused: int = 0
    others_waits: list[float] = field(default_factory=list)
    others_refused: int = 0
    chars: int = 0
    last: float = 0.0  # the last answer, of anyone
    cpu_started: float = 0.0  # process CPU seconds (every thread), steadier than wall time on a busy machine
    cpu_last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def one_run(name: str, schedule: str, queue: int, cap: int | None, args: argparse.Namespace) -> Run:
    run = Run(name)
    settings = Sampling(temperature=0.8, length=args.length)
    with Engine({"alice": args.model}, backend=args.backend, max_queue=queue, max_batch=args.max_batch,
                schedule=schedule, per_owner=cap) as engine:
        engine.submit("alice", "warm up", Sampling(length=32)).result()
        futures: list[Future] = []

        def finished(future: Future, flood: bool, submitted: float) -> None:
            now = time.perf_counter()
            if future.cancelled() or future.exception() is not None:
                return
            with run.lock:
                run.chars += len(future.result().text)
                run.last = max(run.last, now)
                run.cpu_last = max(run.cpu_last, time.process_time())
                (run.flood_done if flood else run.others_waits).append(now - (run.started if flood else submitted))

        def submit(owner: str, flood: bool, seed: int) -> None:
            submitted = time.perf_counter()
            try:
                future = engine.submit("alice", f"request {seed} of {owner}", settings, seed=seed, owner=owner)
            except EngineBusy:
                if flood:
                    run.flood_refused += 1
                else:
                    run.others_refused += 1
                return
            future.add_done_callback(lambda f: finished(f, flood, submitted))
            futures.append(future)

        run.started, run.cpu_started = time.perf_counter(), time.process_time()
        for i in range(args.flood):
            submit("A", True, i)
            time.sleep(args.flood_gap)
        for j in range(args.others):
            time.sleep(args.gap)
            submit(f"S{j}", False, 10_000 + j)
        for future in list(futures):
            try:
                future.result()
            except Exception:
                pass
    return run


def report(run: Run, args: argparse.Namespace) -> str:
    total_s = run.last - run.started
    answered = len(run.flood_done)
    flood_s = max(run.flood_done) if run.flood_done else float("nan")
    flood_cps = answered * args.length / flood_s if run.flood_done else 0.0
    waits = run.others_waits
    others = (f"median {statistics.median(waits):6.2f} s, p99 {p99(waits):6.2f} s" if waits
              else "no answers          ")
    return (f"{run.name:9s} | others: {len(waits):3d} answered, {run.others_refused:3d} refused, {others} | "
            f"A: {answered:4d} answered, {run.flood_refused:4d} refused, {flood_cps:7.0f} chars/s | "
            f"all: {run.chars / total_s:7.0f} chars/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("weights/alice"))
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--flood", type=int, default=260)
    parser.add_argument("--others", type=int, default=8)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--max-batch", type=int, default=128)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--per-server", type=int, default=16)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--flood-gap", type=float, default=0.001)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"model {args.model} ({args.backend}); A floods {args.flood} (one every {args.flood_gap:g} s), then "
          f"{args.others} other servers ask once, one every {args.gap:g} s; {args.length} characters each; "
          f"max_batch {args.max_batch}, queue {args.queue}, per-server cap {args.per_server} (fair only)")
    for name, schedule, cap in [("fifo", "fifo", None), ("fair", "fair", args.per_server)]:
        print(report(one_run(name, schedule, args.queue, cap, args), args), flush=True)
    everyone = args.flood + args.others
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(args.repeats):
        for schedule in ("fifo", "fair"):
            run = one_run(schedule, schedule, everyone, None, args)
            wall[schedule] = max(wall.get(schedule, 0.0), run.chars / (run.last - run.started))
            cpu[schedule] = max(cpu.get(schedule, 0.0), run.chars / (run.cpu_last - run.cpu_started))
    print(f"every request admitted (queue {everyone}, no cap), best of {args.repeats}:")
    for name, figures in (("wall", wall), ("CPU", cpu)):
        print(f"  chars per {name} second: fifo {figures['fifo']:.0f}, fair {figures['fair']:.0f} "
              f"({100 * (figures['fair'] / figures['fifo'] - 1):+.1f}%)")


if __name__ == "__main__":
    main()
