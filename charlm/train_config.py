"""Training settings and progress events, in a module of their own: the CLI's flags,
its progress bar and the bot's fine-tune jobs use them without importing Keras
(charlm.train does, for the training itself)."""

from __future__ import annotations

from dataclasses import dataclass

from charlm import WINDOW

SCHEDULES = ("plateau", "cosine")


@dataclass
class TrainConfig:
    """Everything that shapes a training run."""

    seq_len: int = WINDOW
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 2e-3
    clipnorm: float = 1.0
    weight_decay: float = 0.0
    patience: int = 3  # epochs without a better validation loss before stopping
    lr_decay: float = 0.5  # learning rate factor after an epoch that did not improve ("plateau")
    schedule: str = "plateau"
    """"plateau": the rate is multiplied by lr_decay after an epoch that did not improve;
    "cosine": it falls from learning_rate to a tenth of it along a half cosine over the planned steps."""
    average_last: int = 0
    """Average the weights of the last N epochs at the end and keep the average when it
    validates better than the best epoch (0: off); smooths out the noise of small texts."""
    max_minutes: float | None = None  # wall-clock budget; stops after the epoch that exceeds it
    seed: int = 0
    steps_per_epoch: int | None = None  # None: one pass over the text; fewer for a big corpus
    val_windows: int | None = None  # None: every held-out window; fewer, evenly spaced, for a big one

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.average_last < 0:
            raise ValueError(f"average_last must be 0 or more, got {self.average_last}")


@dataclass(frozen=True)
class TrainProgress:
    """What a progress hook sees, after every step and at the end of each epoch."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based, within the epoch
    steps: int
    loss: float  # mean training loss of this epoch so far (nats per char)
    val_loss: float | None  # of the last finished epoch
    eta_seconds: float
    elapsed_seconds: float
    epoch_done: bool = False


FINETUNE = TrainConfig(epochs=7, learning_rate=1e-3, patience=2)
"""How `charlm finetune` and /finetune jobs train by default: the best setting of the study
in bench/bench_finetune_study.py (held-out bits/char of 7k-82k character texts within 1.5x
the training steps of the fine-tune it replaced, which ran 5 epochs at the base's dropout):
up to 7 epochs of Adam 1e-3, halved after an epoch that did not improve, at FINETUNE_DROPOUT.
A cosine schedule and averaging the last epochs' weights did no better there.
It stops after 2 epochs without a better held-out loss: from the 2x640 alice, texts of 80k+
characters are best after epoch 3, and the 3rd idle epoch of patience 3 took a 100k upload
to 1.58x the replaced fine-tune's time (the budget is 1.5x); small texts still run all 7."""
FINETUNE_DROPOUT = 0.1
"""Dropout while fine-tuning by default, where the base has dropout layers to set: lower
than the shipped models' 0.3, which kept a few epochs on a small text from learning it
(0.5 did worse still)."""

