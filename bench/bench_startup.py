"""Start-up, memory and acknowledgement latency: this tree against the TensorFlow path, in one run.

    python bench/bench_startup.py [--baseline REV] [--users 30] [--repeats 3]

The TensorFlow path is the code at `--baseline` (default: 48ca147, the last commit that
loaded models through Keras), unpacked with `git archive` into a
temporary folder and run with the same Python, weights and Discord double. For each
tree it measures:

* `python -m charlm generate --length 400` end to end (wall seconds, median of
  `--repeats`), as each tree runs it and both with one OpenBLAS thread (which
  separates the cost of importing TensorFlow from that of the thread count), and
  whether both trees print the same text for the same seed;
* the engine's RSS with alice and seuss loaded, and per further loaded version
  (three more copies of alice under new names);
* the bot process (`python -m bot`) from its start to its commands synced with a
  standalone Discord double, its RSS then, and the acknowledgement latency of
  `--users` users sending /alice or /seuss at once (default length 400): p50 and p90
  over `--bursts` bursts, after a first burst (reported apart) that also opens the
  bot's HTTP connections to the double, as a bot serving for a while has them open.

Also the size of the Python packages each image installs (an estimate of the image
sizes: the Docker test in CI measures the images themselves). Figures swing with the
machine's load; compare them only within one run. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.discord_double import driver  # noqa: E402

ENGINE_RSS = r"""
import sys
from charlm.engine import Engine

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

alice, seuss = sys.argv[1:3]
engine = Engine({"alice": alice, "seuss": seuss}, backend="numpy")
engine.submit("alice", "hello", length=50, seed=0).result()
two = rss()
for i in range(3):
    engine.load(f"extra{i}", alice)
    engine.submit(f"extra{i}", "hello", length=50, seed=0).result()
print(two, (rss() - two) / 3)
engine.close()
"""


def unpack(rev: str, into: Path) -> Path:
    """The tree at `rev`, without touching the repository's worktrees."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def rss_of(pid: int) -> float:
    """Resident MiB of a process."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def time_generate(tree: Path, repeats: int, env: dict[str, str] | None = None) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "charlm", "generate", "alice", "--model", "weights/alice",
                              "--length", "400", "--seed", "1"], cwd=tree, capture_output=True, text=True,
                             check=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - started)
        text = out.stdout
    return statistics.median(times), text


def engine_rss(tree: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", ENGINE_RSS, "weights/alice", "weights/seuss"], cwd=tree,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


class Double:
    """A standalone Discord double with `users` users, in its own process."""

    def __init__(self, users: int, workdir: Path) -> None:
        flags = [f"--user={940000000000000000 + i}:user{i}" for i in range(users)]
        self.out = workdir / "double.out"
        self.process = subprocess.Popen([sys.executable, "-m", "tests.discord_double", "--port", "0", *flags],
                                        cwd=ROOT, stdout=self.out.open("w"), stderr=subprocess.DEVNULL)
        for _ in range(200):
            lines = dict(line.split("=", 1) for line in self.out.read_text().split() if "=" in line)
            if "CONTROL_URL" in lines:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the Discord double did not start")
        self.rest, self.gateway = lines["REST_BASE"], lines["GATEWAY_URL"]
        self.url = lines["CONTROL_URL"].removesuffix("/_control")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def bot_figures(tree: Path, users: int, bursts: int, workdir: Path) -> dict[str, float]:
    double = Double(users, workdir)
    config = workdir / "config.toml"
    data = workdir / "data"
    config.write_text(f"""[bot]
data_dir = "{data}"
[models]
alice = "{tree / 'weights' / 'alice'}"
seuss = "{tree / 'weights' / 'seuss'}"
[history]
database = "{data / 'history.sqlite3'}"
[limits]
queue_size = 256
cooldown_uses = 0
[engine]
backend = "numpy"
[discord]
api_base = "{double.rest}"
gateway_url = "{double.gateway}"
""", "utf-8")
    started = time.perf_counter()
    bot = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config)], cwd=tree,
                           env={**os.environ, "DISCORD_TOKEN": "bench-token"},
                           stdout=(workdir / "bot.log").open("w"), stderr=subprocess.STDOUT)
    try:
        driver.call(double.url, "wait_ready", {"commands": ["alice", "seuss"], "timeout": 120}, timeout=130)
        ready_s = time.perf_counter() - started
        rss = rss_of(bot.pid)
        driver.send_command(double.url, "alice", {"text": "warm up", "length": 20}, user="user0", timeout=60)

        def burst() -> list[float]:
            def one(i: int) -> float:
                reply = driver.send_command(double.url, ["alice", "seuss"][i % 2], {"text": f"hello number {i}"},
                                            user=f"user{i}", timeout=120)
                return reply["ack_latency"]

            with concurrent.futures.ThreadPoolExecutor(users) as pool:
                return list(pool.map(one, range(users)))

        cold = burst()  # the first burst also opens the HTTP connections (TLS handshakes with real Discord)
        warm = sorted(ack for _ in range(bursts) for ack in burst())
        quantiles = statistics.quantiles(warm, n=10, method="inclusive")
        return {"ready_s": ready_s, "rss_mib": rss, "ack_p50_ms": statistics.median(warm) * 1e3,
                "ack_p90_ms": quantiles[8] * 1e3, "ack_cold_p50_ms": statistics.median(cold) * 1e3,
                "rss_after_mib": rss_of(bot.pid)}
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            bot.wait(30)
        except subprocess.TimeoutExpired:
            bot.kill()
        double.stop()


def package_mib(requirements: Path) -> float:
    """Installed size of the distributions a requirements file names, with their
    dependencies (as installed in this environment)."""
    seen: set[str] = set()
    todo = [line.split("==")[0].split("[")[0].strip() for line in requirements.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r"))]
    total = 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total += sum(f.locate().stat().st_size for f in dist.files or [] if f.locate().is_file())
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req.split(";")[0].split(" ")[0].split("[")[0].split("<")[0].split(">")[0]
                            .split("=")[0].split("!")[0].split("~")[0])
    return total / 2**20


TENSORFLOW_PATH = "48ca147c2832fa5b5e8d8c96a0c1d2c742204070"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=TENSORFLOW_PATH, help="the TensorFlow path's commit (default: %(default)s, the last that loaded models through Keras)")
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bursts", type=int, default=3, help="measured bursts of --users commands, after a first one")
    a = ap.parse_args()
    baseline = a.baseline
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        (Path(tmp) / "baseline").mkdir()
        trees = {"tensorflow path": unpack(baseline, Path(tmp) / "baseline"), "numpy path": ROOT}
        for tree in trees.values():  # compile the numba kernels into each tree's cache, untimed
            time_generate(tree, 1)
        results: dict[str, dict[str, float]] = {name: {} for name in trees}
        texts = {}
        for name, tree in trees.items():
            results[name]["generate_s"], texts[name] = time_generate(tree, a.repeats)
            results[name]["generate_1t_s"], _ = time_generate(tree, a.repeats, {"OPENBLAS_NUM_THREADS": "1"})
            results[name]["engine_rss_mib"], results[name]["per_version_mib"] = engine_rss(tree)
            work = Path(tmp) / name.replace(" ", "-")
            work.mkdir()
            results[name].update(bot_figures(tree, a.users, a.bursts, work))
    old, new = results["tensorflow path"], results["numpy path"]
    rows = [("bot start -> commands synced (s)", "ready_s", "<= 6"),
            ("generate --length 400, end to end (s)", "generate_s", "<= 2"),
            ("  same, OPENBLAS_NUM_THREADS=1 in both (s)", "generate_1t_s", ""),
            ("engine RSS, alice + seuss (MiB)", "engine_rss_mib", "<= 256"),
            ("bot RSS at sync, alice + seuss (MiB)", "rss_mib", "<= 256"),
            ("bot RSS after the burst (MiB)", "rss_after_mib", ""),
            ("each further loaded version (MiB)", "per_version_mib", "<= 20"),
            (f"ack p50, {a.users} users at once (ms)", "ack_p50_ms", "<= 50"),
            (f"ack p90, {a.users} users at once (ms)", "ack_p90_ms", ""),
            ("ack p50, first burst: new connections (ms)", "ack_cold_p50_ms", "")]
    print(f"baseline (TensorFlow path): {baseline[:12]}; this tree: numpy path; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'':42} {'TF path':>10} {'numpy path':>11} {'ratio':>7}  target")
    for label, key, target in rows:
        ratio = old[key] / new[key] if new[key] else float("nan")
        print(f"{label:42} {old[key]:10.2f} {new[key]:11.2f} {ratio:6.1f}x  {target}")
    serve, full = ROOT / "requirements-serve.txt", ROOT / "requirements.txt"
    print(f"{'Python packages installed (MiB)':42} {package_mib(full):10.0f} {package_mib(serve):11.0f}"
          f"         (image = base image + these + weights)")
    print(f"same generated text for seed 1: {texts['tensorflow path'] == texts['numpy path']}")


if __name__ == "__main__":
    main()
