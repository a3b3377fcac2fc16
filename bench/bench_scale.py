"""Issue 12's benchmark: one bot process against two shard processes on one PostgreSQL, and
history writes on SQLite against PostgreSQL, side by side in one run.

    python -m bench.bench_scale [--requests 60] [--length 200] [--guilds 4] [--writes 2000]

Requests: real `python -m bot` processes (the shipped models, numpy backend) against the
Discord double with `--guilds` servers per shard of 2; `--requests` /alice requests are sent
at once, spread over every server, and the figure is answers per second from the first send
to the last final reply, with how many came before the 60 s request deadline. Setup A is
one process running both shards, setup B two processes (shard_ids [0] and [1]), both on one
PostgreSQL. Writes: `--writes` HistoryStore.record calls, 8 at a time, on a SQLite file and
on PostgreSQL. PostgreSQL is the test suite's throwaway cluster (tests/postgres.py) unless
--postgres gives a server URL (its databases bench_scale_* are created there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.history import HistoryStore, Request  # noqa: E402
from tests.discord_double import guild_id_on_shard, running_double, sharded_world  # noqa: E402

DEADLINE = 60.0


def bot_config(folder: Path, double, shard_ids: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[bot]", f'data_dir = "{folder.parent / "shared"}"',
             "[models]", f'alice = "{ROOT / "weights" / "alice"}"', f'seuss = "{ROOT / "weights" / "seuss"}"',
             "[engine]", 'backend = "numpy"', "[limits]", "cooldown_uses = 0", "queue_size = 1000",
             "per_server_queue = 1000",  # throughput, not fairness: no server is capped here
             f"request_timeout = {DEADLINE:g}",
             "[discord]", "shard_count = 2", f"shard_ids = {shard_ids}",
             f'api_base = "{double.rest_base}"', f'gateway_url = "{double.gateway_url}"']
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


async def requests_per_second(url: str, shard_sets: list[list[int]], count: int, length: int,
                              guilds: int, folder: Path) -> tuple[float, int, float]:
    """(answers/s, answered before the deadline, slowest final reply in s) for one setup."""
    env = os.environ | {"DISCORD_TOKEN": "bench-token", "PYTHONPATH": str(ROOT), "CHARLM_DATABASE_URL": url}
    folder.mkdir(parents=True, exist_ok=True)
    async with running_double(world=sharded_world(2, guilds_per_shard=guilds)) as double:
        processes = []
        for i, shard_ids in enumerate(shard_sets):
            log = open(folder / f"bot{i}.log", "ab")
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(bot_config(folder / f"bot{i}", double, shard_ids)),
                env=env, stdout=log, stderr=log))
            log.close()
        try:
            await double.wait_commands(["alice"], timeout=180)
            await double.wait_ready(timeout=180, shards=[0, 1])
            ids = [guild_id_on_shard(s, 2, g) for g in range(guilds) for s in (0, 1)]
            warm = await double.send_command("alice", {"text": "warm", "length": 5}, user="bob", guild_id=ids[0],
                                             channel_id=ids[0] + 1)
            await warm.wait_final(lambda h: h.responded() and "is writing" not in h.original.content, timeout=60)
            started = time.perf_counter()
            handles = [await double.send_command("alice", {"text": "Alice was", "length": length}, user="bob",
                                                 guild_id=ids[i % len(ids)], channel_id=ids[i % len(ids)] + 1)
                       for i in range(count)]

            async def final(handle) -> float | None:
                try:
                    await handle.wait_final(lambda h: h.responded() and "is writing" not in h.original.content
                                            and f"{length} characters" in h.original.content, timeout=DEADLINE)
                except (AssertionError, asyncio.TimeoutError):
                    return None
                return time.perf_counter() - started

            done = await asyncio.gather(*(final(h) for h in handles))
            answered = [t for t in done if t is not None]
            elapsed = max(answered) if answered else float("nan")
            return len(answered) / elapsed, len(answered), elapsed
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()


async def writes_per_second(url: str, count: int, concurrency: int = 8) -> float:
    store = await HistoryStore.open(url)
    try:
        queue = iter(range(count))

        async def writer() -> None:
            for i in queue:
                await store.record(Request(user_id=1 + i % 50, guild_id=10, channel_id=20, command="alice",
                                           prompt="Alice was", window="Alice was", output="x" * 200, model="alice",
                                           model_version="v0", sampling={"temperature": 0.8}, latency_ms=100))

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--guilds", type=int, default=4, help="servers per shard")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--postgres", default="", help="a PostgreSQL server URL (default: a throwaway cluster)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = None
    if args.postgres:
        import asyncpg

        async def create(name: str) -> str:
            connection = await asyncpg.connect(args.postgres)
            await connection.execute(f'CREATE DATABASE "{name}"')
            await connection.close()
            return args.postgres.rsplit("/", 1)[0] + f"/{name}"

        stamp = int(time.time())
        urls = [asyncio.run(create(f"bench_scale_{stamp}_{i}")) for i in range(3)]
    else:
        from tests.postgres import start_server

        server = start_server()
        urls = [server.create_database("bench") for _ in range(3)]
    try:
        one = asyncio.run(requests_per_second(urls[0], [[]], args.requests, args.length, args.guilds,
                                              folder / "one"))
        two = asyncio.run(requests_per_second(urls[1], [[0], [1]], args.requests, args.length, args.guilds,
                                              folder / "two"))
        sqlite = asyncio.run(writes_per_second(f"sqlite:///{folder / 'writes.sqlite3'}", args.writes))
        postgres = asyncio.run(writes_per_second(urls[2], args.writes))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{os.cpu_count()} CPUs; {args.requests} concurrent /alice requests of {args.length} characters over "
          f"{2 * args.guilds} servers (2 shards), deadline {DEADLINE:g} s")
    print(f"{'':34}{'one process':>16}{'two processes':>16}{'ratio':>8}")
    print(f"{'answers per second':34}{one[0]:>16.2f}{two[0]:>16.2f}{two[0] / one[0]:>8.2f}")
    print(f"{'answered before the deadline':34}{one[1]:>16}{two[1]:>16}")
    print(f"{'last final reply (s)':34}{one[2]:>16.1f}{two[2]:>16.1f}")
    print(f"{args.writes} history writes, 8 at a time")
    print(f"{'':34}{'SQLite':>16}{'PostgreSQL':>16}{'ratio':>8}")
    print(f"{'writes per second':34}{sqlite:>16.0f}{postgres:>16.0f}{postgres / sqlite:>8.2f}")


if __name__ == "__main__":
    main()
