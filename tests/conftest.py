"""Shared pytest setup."""

import sys
from pathlib import Path

# Make `tests.discord_double` importable under plain `pytest` too (python -m pytest adds cwd anyway).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.discord_double.fixtures import discord_log_guard  # noqa: E402,F401
from tests.postgres import postgres, postgres_url  # noqa: E402,F401

import numpy as np  # noqa: E402
import pytest  # noqa: E402

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"

_WORDS = ("alice the rabbit queen cat hatter said she was very curious little door key garden "
          "tea party march hare turtle mock gryphon duchess baby pepper king court tarts").split()


def make_text(chars: int = 20_000, seed: int = 0) -> str:
    """A deterministic pseudo-English text with sentences, commas and line breaks."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        words = [_WORDS[i] for i in rng.integers(len(_WORDS), size=int(rng.integers(4, 12)))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "!", "?", ","]) + rng.choice([" ", "\n"])
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The bot's database on each engine: a SQLite file in tmp_path, then a fresh PostgreSQL
    database (tests.postgres); store tests take this to run on both."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'charbot.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared corpora folder; tests that need it skip cleanly when it is absent."""
    if not (CORPORA / "alice.txt").is_file():
        pytest.skip("../shared/corpora is not present on this machine")
    return CORPORA


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text(make_text(), "utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, text_file) -> Path:
    """A tiny model trained for a few seconds on the synthetic text."""
    from charlm.jobs import train_new
    from charlm.train import TrainConfig

    out = tmp_path_factory.mktemp("models") / "tiny"
    train_new(text_file, out, "tiny", TrainConfig(epochs=3, batch_size=32, learning_rate=1e-2))
    return out
