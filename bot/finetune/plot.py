"""The loss plot of a finished job (matplotlib, no display needed), drawn by the trainer
that ran the job and stored as PNG in the job's row; bots only attach what the row holds.

matplotlib is imported at the first plot, not with the trainer: it costs ~0.6 s and
~35 MB, and the serving-only install does not have it (it never trains or draws).
"""

from __future__ import annotations

import io
from typing import Any


def loss_plot(history: list[dict[str, Any]], title: str) -> bytes:
    """PNG of training and validation loss (nats per char) per epoch."""
    import matplotlib

    matplotlib.use("Agg")  # the bot has no display; Agg renders straight to PNG bytes
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(6, 3.6), dpi=100)  # a Figure, not pyplot: no global state across jobs
    ax = fig.add_subplot()
    ax.plot(epochs, [r["loss"] for r in history], marker="o", label="training loss")
    ax.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per character)")
    ax.set_xticks(epochs)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
