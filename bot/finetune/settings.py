"""The [finetune] table of config.toml, checked with the same one-line errors as the rest.

bot.config hands this table over raw (it is listed in OTHER_TABLES), so the fine-tune
feature can be added or removed without touching the bot's own settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from charlm.train_config import FINETUNE, SCHEDULES

from bot.config import Config, ConfigError, _table, choice, integer, number, path, setting

MIN_CHARS_FLOOR = 1_000
TRAIN_SHARE = 0.8
"""Of [finetune] max_minutes, the share training may use; the rest is for scoring and saving."""
"""charlm refuses shorter texts: they cannot fill a few 100-character windows."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Limits and defaults of /finetune; paths are resolved like the bot's own."""

    max_upload_mb: float = setting(8.0, number(0.001, 100))
    min_chars: int = setting(20_000, integer(MIN_CHARS_FLOOR, 100_000_000))
    default_epochs: int = setting(FINETUNE.epochs, integer(1, 100))
    max_epochs: int = setting(20, integer(1, 100))
    batch_size: int = setting(64, integer(1, 4096))
    learning_rate: float = setting(FINETUNE.learning_rate, number(1e-6, 10))
    patience: int = setting(FINETUNE.patience, integer(1, 100))
    schedule: str = setting(FINETUNE.schedule, choice(*SCHEDULES))
    average_last: int = setting(FINETUNE.average_last, integer(0, 100))
    """The training defaults are charlm's (charlm.train_config.FINETUNE), as `charlm finetune`'s are."""
    progress_interval: float = setting(5.0, number(0.2, 60))
    nice: int = setting(10, integer(0, 19))
    cancel_grace: float = setting(5.0, number(0.1, 60))
    concurrent_jobs: int = setting(1, integer(1, 16))
    """Jobs trained at once by one process (the bot with SQLite, each bot.trainer with PostgreSQL)."""
    worker_timeout: float = setting(60.0, number(3, 3600))
    """Seconds without a heartbeat after which a training worker's job is failed (PostgreSQL)."""
    max_minutes: float = setting(30.0, number(0.05, 24 * 60))
    """Wall-clock limit per job, enforced by its trainer: training gets TRAIN_SHARE of it
    (then the best epoch so far is kept), evaluating and saving the rest; at the limit
    the training process is stopped and the job fails."""
    max_models: int = setting(10, integer(0, 1000))
    keep_versions: int = setting(5, integer(1, 1000))
    models_dir: Path = setting(Path("models"), path())
    database: Path = setting(Path("finetune.sqlite3"), path())

    @property
    def heartbeat_interval(self) -> float:
        """How often a worker refreshes its jobs' heartbeats: several beats per timeout."""
        return min(5.0, self.worker_timeout / 4)

    @property
    def uploads_dir(self) -> Path:
        """Uploads of queued and training jobs, one folder per job id (beside models_dir)."""
        return self.models_dir.parent / "finetune-uploads"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def finetune_config(config: Config) -> FinetuneConfig:
    """Check the raw [finetune] table; relative paths are taken from [bot] data_dir."""
    where = config.path.name
    settings = _table("finetune", FinetuneConfig, config.other_tables.get("finetune", {}), where)
    if settings.default_epochs > settings.max_epochs:
        raise ConfigError(f"{where}: [finetune] default_epochs must be at most max_epochs "
                          f"({settings.max_epochs}), got {settings.default_epochs}")

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (config.bot.data_dir / p).resolve()

    return dataclasses.replace(settings, models_dir=resolve(settings.models_dir),
                               database=resolve(settings.database))
