"""The bot's side of the training process: start it, read its lines, stop it.

Everything here is asyncio subprocess I/O, so the event loop never blocks on training.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.finetune.worker import CANCELLED_EXIT

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STDERR_KEPT = 40
"""Lines of the process's stderr kept for the log when it fails."""


@dataclass
class Finished:
    """How the process ended: 'done', 'cancelled' or 'failed' (with a one-line reason)."""

    kind: str
    result: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    stderr: str = ""


KEPT_VARIABLES = {"PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONHASHSEED",
                  "PYTHONUNBUFFERED", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "LD_LIBRARY_PATH", "XLA_FLAGS", "MPLCONFIGDIR", "KERAS_HOME", "KERAS_BACKEND"}
KEPT_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "TF_", "CHARLM_BLAS", "NUMBA_")


def child_environment(parent: dict[str, str] | os._Environ) -> dict[str, str]:
    """What the training process inherits: locale, paths, thread and GPU settings; never
    the bot token or the database URL (it reads a corpus and writes a folder, nothing else)."""
    env = {k: v for k, v in parent.items() if k in KEPT_VARIABLES or k.startswith(KEPT_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), parent.get("PYTHONPATH")) if p)
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with code {returncode} without a result"


class TrainingProcess:
    """One `python -m bot.finetune.worker` child."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEPT)
        self.cancelling = False
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name=f"finetune-stderr-{proc.pid}")

    @classmethod
    async def start(cls, spec: dict[str, Any], module: str = "bot.finetune.worker") -> "TrainingProcess":
        """Start `python -m <module> '<spec json>'` (tests start other modules that speak the
        same lines)."""
        env = child_environment(os.environ)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, json.dumps(spec),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, limit=1 << 20)
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    async def run(self, on_progress: Callable[[dict[str, Any]], None]) -> Finished:
        """Read events until the process exits; progress events go to `on_progress`."""
        assert self.proc.stdout is not None
        last: dict[str, Any] = {}
        async for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("training process %s wrote a line that is not JSON: %r", self.pid, raw[:200])
                continue
            if event.get("event") == "progress":
                on_progress(event)
            else:
                last = event
        returncode = await self.proc.wait()
        await self._stderr_task
        stderr = "\n".join(self.stderr)
        kind = last.get("event")
        if kind == "done" and returncode == 0:
            return Finished("done", last)
        if self.cancelling or (kind == "cancelled" and returncode == CANCELLED_EXIT):
            return Finished("cancelled", stderr=stderr)
        if kind == "error":
            return Finished("failed", reason=last.get("message", "unknown error"), stderr=stderr)
        return Finished("failed", reason=describe_exit(returncode), stderr=stderr)

    async def stop(self, grace: float) -> None:
        """Ask the process to stop (SIGTERM: it stops at the next training step), and kill
        it if it has not within `grace` seconds. The caller's run() then returns."""
        self.cancelling = True
        if self.proc.returncode is not None:
            return
        try:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("training process %s ignored SIGTERM for %.0f s; killing it", self.pid, grace)
                self.proc.kill()
                await self.proc.wait()
        except ProcessLookupError:
            pass
