"""A one-line terminal progress bar for training, fed by TrainProgress events."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from charlm.train_config import TrainProgress


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "-" * (width - filled)


def describe(p: TrainProgress) -> str:
    """e.g. 'epoch 2/10 [#####-----] 30/60 loss 1.842 val 1.903 eta 4:10'."""
    val = f" val {p.val_loss:.3f}" if p.val_loss is not None else ""
    return (f"epoch {p.epoch}/{p.epochs} [{bar(p.step / p.steps)}] {p.step}/{p.steps} "
            f"loss {p.loss:.3f}{val} eta {format_duration(p.eta_seconds)}")


class ProgressPrinter:
    """Redraws one line at most every `interval` seconds; a newline after each epoch."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.stream = stream or sys.stderr
        self.interval, self._last = interval, 0.0
        self.tty = self.stream.isatty()

    def __call__(self, p: TrainProgress) -> None:
        now = time.monotonic()
        if not p.epoch_done and now - self._last < self.interval:
            return
        self._last = now
        line = describe(p)
        if p.epoch_done:
            self.stream.write(("\r" if self.tty else "") + line + "\n")
        elif self.tty:
            self.stream.write("\r" + line)
        else:
            return  # logs get one line per epoch, not a redraw per step
        self.stream.flush()
