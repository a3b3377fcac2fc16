"""The training process: `python -m bot.finetune.worker '<job json>'`.

Training runs here, in its own process at a lower priority, so the bot's event loop and
inference thread never wait for it. It talks to the bot in JSON lines on stdout:

    {"event": "progress", "epoch": 1, "epochs": 5, "step": 10, "steps": 40, "loss": 1.9, ...}
    {"event": "done", "folder": "...", "heldout_bpc": 2.1, "base_heldout_bpc": 2.4, "history": [...]}
    {"event": "error", "message": "one line"}        (exit code 1)
    {"event": "cancelled"}                             (exit code 3, after SIGTERM)

Anything else a library prints goes to stderr, which the bot keeps for error reports.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from typing import Any, TextIO

CANCELLED_EXIT = 3
PROGRESS_EVERY = 0.5
"""Seconds between progress lines; the bot throttles its message edits further."""


def _channel() -> TextIO:
    """A private copy of stdout for our lines; fd 1 then points at stderr, so stray
    prints from TensorFlow or Keras cannot corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the one that started it dies (a bot.trainer killed
    mid-job), so no orphan goes on writing a model folder after the job was failed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(CANCELLED_EXIT)


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[0])
    _die_with_parent()
    channel = _channel()

    def send(event: str, **data: Any) -> None:
        channel.write(json.dumps({"event": event, **data}) + "\n")

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: cancel.set())
    if spec.get("nice"):
        os.nice(spec["nice"])

    from charlm.errors import CharLMError, TrainingCancelled
    from charlm.jobs import finetune
    from charlm.train import TrainConfig, TrainProgress

    last = 0.0

    def on_progress(p: TrainProgress) -> None:
        nonlocal last
        now = time.monotonic()
        if p.epoch_done or now - last >= PROGRESS_EVERY:
            last = now
            send("progress", **asdict(p))

    try:
        if cancel.is_set():
            raise TrainingCancelled("cancelled before training started")
        outcome = finetune(spec["corpus"], spec["base"], spec["out"], TrainConfig(**spec["config"]),
                           on_progress=on_progress, cancel=cancel)
    except TrainingCancelled:
        send("cancelled")
        return CANCELLED_EXIT
    except CharLMError as exc:
        send("error", message=str(exc))
        return 1
    except Exception as exc:  # report it in one line; the traceback goes to stderr
        traceback.print_exc()
        send("error", message=f"{exc.__class__.__name__}: {exc}")
        return 1
    if cancel.is_set():  # cancelled after the last step: the bot will discard the folder
        send("cancelled")
        return CANCELLED_EXIT
    send("done", folder=str(outcome.folder), heldout_bpc=outcome.heldout.bits_per_char,
         base_heldout_bpc=outcome.base_heldout.bits_per_char if outcome.base_heldout else None,
         history=outcome.card["training"]["history"], stopped=outcome.result.stopped,
         best_epoch=outcome.result.best_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
