"""The bot's settings: one TOML file, parsed with tomllib and checked key by key.

Every mistake is reported as one line naming the file, the table and the key, so a
server owner can fix a config without reading a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CharLMError

LENGTH_LIMIT = 1500
"""Most characters a reply may generate: with the prompt, escaping and footer it still
fits Discord's 2,000-character message limit. The commands' ranges use it."""

TEMPERATURE_LIMIT = 2.0
"""Above this the models produce noise; the commands' ranges use it."""


DATABASE_URL_ENV = "CHARLM_DATABASE_URL"
"""Overrides [database] url (e.g. a PostgreSQL URL kept out of the config file)."""


class ConfigError(CharLMError):
    """A config problem, as one line that names the key."""


@dataclass(frozen=True)
class Rule:
    """What a value must be, in words, and how to accept it (None: rejected)."""

    what: str
    accept: Callable[[Any], Any]


def integer(low: int, high: int) -> Rule:
    def accept(value: Any) -> int | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return value if ok else None

    return Rule(f"an integer between {low} and {high}", accept)


def number(low: float, high: float) -> Rule:
    def accept(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        return float(value) if ok else None

    return Rule(f"a number between {low:g} and {high:g}", accept)


def choice(*options: str) -> Rule:
    return Rule("one of " + ", ".join(f'"{o}"' for o in options), lambda v: v if v in options else None)


def text() -> Rule:
    return Rule("a string", lambda v: v if isinstance(v, str) else None)


DRIVERS = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
           "postgres": "postgresql+asyncpg", "postgresql+asyncpg": "postgresql+asyncpg"}
"""URL schemes a database may be given with, and the async driver each runs on."""


def database_url(url: str) -> str | None:
    """The URL with its async driver (postgresql:// runs on asyncpg, sqlite:// on aiosqlite),
    or None if it is not a SQLite or PostgreSQL URL SQLAlchemy can parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        return None
    driver = DRIVERS.get(parsed.drivername)
    if driver is None or not parsed.database:
        return None
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def database() -> Rule:
    return Rule('empty, or a URL like "postgresql://user@host:5432/charbot" or "sqlite:////srv/charbot.sqlite3"',
                lambda v: v.strip() if isinstance(v, str) and (not v.strip() or database_url(v)) else None)


def path() -> Rule:
    return Rule("a non-empty path string", lambda v: Path(v) if isinstance(v, str) and v.strip() else None)


def snowflake_list() -> Rule:
    def accept(value: Any) -> tuple[int, ...] | None:
        if not isinstance(value, list):
            return None
        ids = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        return tuple(ids) if len(ids) == len(value) else None

    return Rule("a list of Discord user ids (positive integers)", accept)


def shard_list() -> Rule:
    def accept(value: Any) -> tuple[int, ...] | None:
        if not isinstance(value, list):
            return None
        ids = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        return tuple(sorted(ids)) if len(ids) == len(value) == len(set(ids)) else None

    return Rule("a list of distinct shard numbers (integers from 0)", accept)


def setting(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and the rule its TOML value must pass."""
    return field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class ModelsConfig:
    """Model folders behind the commands (model.keras, vocab.json, card.json): /alice,
    /seuss, and storybook, which every server reaches through /generate."""

    alice: Path = setting(Path("weights/alice"), path())
    seuss: Path = setting(Path("weights/seuss"), path())
    storybook: str = setting("", text())  # empty: not served

    def folders(self) -> dict[str, Path]:
        folders = {"alice": self.alice, "seuss": self.seuss}
        if self.storybook:
            folders["storybook"] = Path(self.storybook)
        return folders


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults and limits users see as command options."""

    default_length: int = setting(400, integer(1, LENGTH_LIMIT))
    max_length: int = setting(1000, integer(1, LENGTH_LIMIT))
    default_temperature: float = setting(0.8, number(0, TEMPERATURE_LIMIT))
    max_temperature: float = setting(1.5, number(0, TEMPERATURE_LIMIT))
    edit_interval: float = setting(1.0, number(0.2, 10))
    mention_model: str = setting("alice", text())
    """The model that answers @mentions where a server chose none (/settings model)."""


@dataclass(frozen=True)
class LimitsConfig:
    """Protection against one user or a burst of users hogging the models."""

    cooldown_uses: int = setting(3, integer(0, 1000))
    cooldown_seconds: float = setting(30.0, number(0, 86400))
    queue_size: int = setting(64, integer(1, 10000))
    per_server_queue: int = setting(16, integer(1, 10000))
    """Requests one server (or one user in DMs) may have waiting or running at once."""
    request_timeout: float = setting(60.0, number(1, 600))
    shutdown_grace: float = setting(10.0, number(0, 120))


@dataclass(frozen=True)
class EngineConfig:
    """How the inference engine batches requests."""

    backend: str = setting("auto", choice("auto", "numpy", "tensorflow"))
    precision: str = setting("int8", choice("int8", "fp32"))
    """What the CPU step's weights are held in: int8 (quantised at load) or fp32; a GPU steps in fp32."""
    batch_wait_ms: float = setting(1.0, number(0, 1000))
    max_batch: int = setting(128, integer(1, 4096))
    max_loaded: int = setting(8, integer(1, 1000))
    """Fine-tuned versions kept in memory besides the shipped models (least recently used go)."""


@dataclass(frozen=True)
class HistoryConfig:
    """Where requests are recorded and how long they are kept."""

    database: Path = setting(Path("data/history.sqlite3"), path())
    """An older bot's history file, imported into the database once (the rows live there now)."""
    retention_days: int = setting(30, integer(1, 3650))
    max_rows_per_user: int = setting(1000, integer(1, 1_000_000))
    """Requests kept per user; the oldest go first (besides retention_days)."""


@dataclass(frozen=True)
class AdminConfig:
    """The bot's owners besides the application's owner or team: admins in every server
    (like Manage Server), and the only ones who change what every server gets."""

    user_ids: tuple[int, ...] = setting((), snowflake_list())


@dataclass(frozen=True)
class DatabaseConfig:
    """Where models, serving choices, jobs and their queue live (empty: SQLite in data_dir)."""

    url: str = setting("", database())


@dataclass(frozen=True)
class DiscordConfig:
    """Where commands are synced and which Discord to talk to (empty: the real one)."""

    sync_guild_id: int = setting(0, integer(0, 2**63 - 1))
    api_base: str = setting("", text())
    gateway_url: str = setting("", text())
    shard_count: int = setting(0, integer(0, 65535))
    """Shards across every process; 0 asks Discord (GET /gateway/bot)."""
    shard_ids: tuple[int, ...] = setting((), shard_list())
    """Shards this process runs; empty: all of them."""

    @property
    def syncs_commands(self) -> bool:
        """Only the process running shard 0 syncs, so several processes never race on it."""
        return not self.shard_ids or 0 in self.shard_ids


@dataclass(frozen=True)
class MetricsConfig:
    """The HTTP endpoint for operators: /metrics (Prometheus) and /healthz."""

    port: int = setting(0, integer(0, 65535))
    """0: no endpoint. Each process needs its own port (shard processes, trainers)."""
    host: str = setting("127.0.0.1", text())


@dataclass(frozen=True)
class BotConfig:
    """Process-wide settings."""

    data_dir: Path = setting(Path("data"), path())


@dataclass(frozen=True)
class Config:
    """All settings; paths are absolute (relative ones are taken from the config's folder)."""

    path: Path
    bot: BotConfig = field(default_factory=BotConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    other_tables: dict[str, Any] = field(default_factory=dict)
    """Raw tables owned by other cogs (see OTHER_TABLES); each checks its own."""

    @property
    def health_file(self) -> Path:
        """One per process: processes running different shards may share data_dir."""
        ids = self.discord.shard_ids
        return self.bot.data_dir / ("health.json" if not ids else f"health-shards-{'-'.join(map(str, ids))}.json")

    @property
    def database_url(self) -> str:
        """CHARLM_DATABASE_URL, else [database] url, else SQLite file charbot.sqlite3 in data_dir;
        always with its async driver. A bad CHARLM_DATABASE_URL is a one-line ConfigError."""
        env = os.environ.get(DATABASE_URL_ENV, "").strip()
        if env:
            url = database_url(env)
            if url is None:
                raise ConfigError(f"{DATABASE_URL_ENV} must be {database().what}, got a value that is not")
            return url
        url = self.database.url
        return database_url(url) if url else f"sqlite+aiosqlite:///{self.bot.data_dir / 'charbot.sqlite3'}"

    @property
    def postgres(self) -> bool:
        """Whether the database is PostgreSQL: then bot processes never train (bot.trainer does)."""
        return self.database_url.startswith("postgresql")


TABLES = [f.name for f in dataclasses.fields(Config) if f.name not in ("path", "other_tables")]
OTHER_TABLES: set[str] = {"finetune"}
"""Tables other parts of the bot read from the same file (the fine-tune cog's)."""


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value).replace("True", "true").replace("False", "false")


def _table(name: str, cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{name}] must be a table, got {_show(raw)}")
    rules = {f.name: f.metadata["rule"] for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in rules:
            raise ConfigError(f"{where}: unknown key [{name}] {key} (known: {', '.join(rules)})")
        accepted = rules[key].accept(value)
        if accepted is None:
            raise ConfigError(f"{where}: [{name}] {key} must be {rules[key].what}, got {_show(value)}")
        values[key] = accepted
    return cls(**values)


def _absolute(config: Config, base: Path) -> Config:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    return dataclasses.replace(
        config,
        bot=BotConfig(resolve(config.bot.data_dir)),
        models=ModelsConfig(resolve(config.models.alice), resolve(config.models.seuss),
                            str(resolve(Path(config.models.storybook))) if config.models.storybook else ""),
        history=dataclasses.replace(config.history, database=resolve(config.history.database)),
    )


def _check_together(config: Config, where: str) -> None:
    g = config.generation
    if g.default_length > g.max_length:
        raise ConfigError(f"{where}: [generation] default_length must be at most max_length ({g.max_length}), "
                          f"got {g.default_length}")
    if g.default_temperature > g.max_temperature:
        raise ConfigError(f"{where}: [generation] default_temperature must be at most max_temperature "
                          f"({g.max_temperature:g}), got {g.default_temperature:g}")
    if config.limits.cooldown_uses and not config.limits.cooldown_seconds:
        raise ConfigError(f"{where}: [limits] cooldown_seconds must be above 0 when cooldown_uses is set")
    d = config.discord
    if d.shard_ids and not d.shard_count:
        raise ConfigError(f"{where}: [discord] shard_ids needs shard_count (the shards of every process together), "
                          "got shard_count = 0")
    if d.shard_ids and d.shard_ids[-1] >= d.shard_count:
        raise ConfigError(f"{where}: [discord] shard_ids must be below shard_count ({d.shard_count}), "
                          f"got {list(d.shard_ids)}")


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Check parsed TOML against the tables above; relative paths are taken from path's folder."""
    where = path.name
    sections: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for name, raw in data.items():
        if name in OTHER_TABLES:
            other[name] = raw
            continue
        if name not in TABLES:
            raise ConfigError(f"{where}: unknown table [{name}] (known: {', '.join(TABLES)})")
        cls = next(f.default_factory for f in dataclasses.fields(Config) if f.name == name)
        sections[name] = _table(name, cls, raw, where)
    config = Config(path=path.resolve(), other_tables=other, **sections)
    _check_together(config, where)
    return _absolute(config, path.resolve().parent)


def load_config(path: str | Path = "config.toml") -> Config:
    """Read and check a config file; any problem is a one-line ConfigError."""
    path = Path(path)
    try:
        raw = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (copy config.toml from the project or pass --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    return parse_config(data, path)
