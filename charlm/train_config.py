"""Training settings and progress events, in a module of their own: the CLI's flags,
its progress bar and the bot's fine-tune jobs use them without importing Keras
(charlm.train does, for the training itself)."""

from __future__ import annotations

from dataclasses import dataclass

from charlm import WINDOW


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
    lr_decay: float = 0.5  # learning rate factor after an epoch that did not improve
    max_minutes: float | None = None  # wall-clock budget; stops after the epoch that exceeds it
    seed: int = 0
    steps_per_epoch: int | None = None  # None: one pass over the text; fewer for a big corpus
    val_windows: int | None = None  # None: every held-out window; fewer, evenly spaced, for a big one


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
