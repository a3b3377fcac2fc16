"""`python -m tests.jobflow.copy_training '<spec json>'`: a training process that speaks the
worker's protocol (bot.finetune.worker) without TensorFlow, so fault tests run in seconds.

It "trains" by copying the base folder to `out` after `spec["test"]["seconds"]` of
progress lines, and reports the held-out figures `spec["test"]` asks for. SIGTERM cancels
it (exit 3) and it dies with its parent, like the real worker.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time

from bot.finetune.worker import CANCELLED_EXIT, _die_with_parent


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    _die_with_parent()
    test = spec.get("test", {})
    cancelled = []
    signal.signal(signal.SIGTERM, lambda *_: cancelled.append(True))
    seconds = float(test.get("seconds", 0.5))
    steps = 10
    started = time.monotonic()
    for step in range(1, steps + 1):
        if cancelled:
            print(json.dumps({"event": "cancelled"}), flush=True)
            return CANCELLED_EXIT
        print(json.dumps({"event": "progress", "epoch": 1, "epochs": 1, "step": step, "steps": steps,
                          "loss": 2.0 - step / 10, "val_loss": None, "eta_seconds": 1.0,
                          "elapsed": time.monotonic() - started, "epoch_done": step == steps}), flush=True)
        time.sleep(seconds / steps)
    shutil.copytree(spec["base"], spec["out"])
    history = [{"epoch": 1, "loss": 1.5, "val_loss": 1.6, "learning_rate": 0.001, "seconds": seconds}]
    print(json.dumps({"event": "done", "folder": spec["out"], "heldout_bpc": test.get("heldout_bpc", 1.5),
                      "base_heldout_bpc": test.get("base_heldout_bpc", 2.0), "history": history,
                      "stopped": test.get("stopped", "finished"), "best_epoch": 1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
