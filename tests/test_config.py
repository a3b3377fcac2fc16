"""The bot's config file: the shipped one is complete, and every mistake is one named line."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.config import TABLES, Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body, "utf-8")
    return path


def test_shipped_config_sets_every_key_to_its_default() -> None:
    data = tomllib.loads((ROOT / "config.toml").read_text("utf-8"))
    config = load_config(ROOT / "config.toml")
    for table in TABLES:
        section = getattr(config, table)
        names = [f.name for f in dataclasses.fields(section)]
        assert sorted(data[table]) == sorted(names), f"config.toml [{table}] does not list every setting"
    defaults = Config(path=config.path)
    assert config.generation == defaults.generation
    assert config.limits == defaults.limits
    assert config.engine == defaults.engine
    assert config.admin == defaults.admin and config.discord == defaults.discord
    assert config.history.retention_days == defaults.history.retention_days


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", '[models]\nalice = "../w/a"\nseuss = "/abs/seuss"\n[bot]\ndata_dir = "d"\n')
    config = load_config(path)
    assert config.models.alice == (tmp_path / "w" / "a").resolve()
    assert config.models.seuss == Path("/abs/seuss")
    assert config.bot.data_dir == (tmp_path / "conf" / "d").resolve()
    assert config.health_file == config.bot.data_dir / "health.json"
    assert config.history.database == (tmp_path / "conf" / "data" / "history.sqlite3").resolve()


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.generation.default_length == 400
    assert config.discord.sync_guild_id == 0
    assert config.engine.precision == "int8"  # the shipped models keep their quality in int8 (issue 20)
    assert config.admin.user_ids == ()


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[admin]\nuser_ids = [7, 8]\n[generation]\nmax_temperature = 2\n"
                                         "[discord]\nsync_guild_id = 42\n[engine]\nbackend = \"numpy\"\n"
                                         "precision = \"fp32\"\n"))
    assert config.admin.user_ids == (7, 8)
    assert config.generation.max_temperature == 2.0
    assert config.discord.sync_guild_id == 42
    assert config.engine.backend == "numpy" and config.engine.precision == "fp32"


def test_shards_are_read_and_name_the_health_file(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, ""))
    assert (default.discord.shard_count, default.discord.shard_ids, default.discord.syncs_commands) == (0, (), True)
    second = load_config(write(tmp_path, "[discord]\nshard_count = 4\nshard_ids = [3, 1]\n"))
    assert (second.discord.shard_count, second.discord.shard_ids) == (4, (1, 3))
    assert not second.discord.syncs_commands
    assert second.health_file == second.bot.data_dir / "health-shards-1-3.json"
    first = load_config(write(tmp_path, "[discord]\nshard_count = 2\nshard_ids = [0]\n"))
    assert first.discord.syncs_commands and first.health_file.name == "health-shards-0.json"


def test_tables_of_other_cogs_are_kept_for_them(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[finetune]\nmax_jobs = 1\n"))
    assert config.other_tables == {"finetune": {"max_jobs": 1}}


BAD = [
    ('[generation]\nmax_length = "abc"',
     'config.toml: [generation] max_length must be an integer between 1 and 1500, got "abc"'),
    ("[generation]\nmax_length = 1501",
     "config.toml: [generation] max_length must be an integer between 1 and 1500, got 1501"),
    ("[generation]\ndefault_length = 0",
     "config.toml: [generation] default_length must be an integer between 1 and 1500, got 0"),
    ("[generation]\ndefault_length = 2.5",
     "config.toml: [generation] default_length must be an integer between 1 and 1500, got 2.5"),
    ("[generation]\ndefault_temperature = -1",
     "config.toml: [generation] default_temperature must be a number between 0 and 2, got -1"),
    ("[generation]\nmax_temperature = true",
     "config.toml: [generation] max_temperature must be a number between 0 and 2, got true"),
    ("[generation]\nedit_interval = 0.1",
     "config.toml: [generation] edit_interval must be a number between 0.2 and 10, got 0.1"),
    ("[generation]\ndefault_length = 900\nmax_length = 800",
     "config.toml: [generation] default_length must be at most max_length (800), got 900"),
    ("[generation]\ndefault_temperature = 1.2\nmax_temperature = 1",
     "config.toml: [generation] default_temperature must be at most max_temperature (1), got 1.2"),
    ("[limits]\ncooldown_uses = -1",
     "config.toml: [limits] cooldown_uses must be an integer between 0 and 1000, got -1"),
    ("[limits]\ncooldown_seconds = 0",
     "config.toml: [limits] cooldown_seconds must be above 0 when cooldown_uses is set"),
    ("[limits]\nqueue_size = 0",
     "config.toml: [limits] queue_size must be an integer between 1 and 10000, got 0"),
    ('[limits]\nrequest_timeout = "1m"',
     'config.toml: [limits] request_timeout must be a number between 1 and 600, got "1m"'),
    ("[limits]\nshutdown_grace = 500",
     "config.toml: [limits] shutdown_grace must be a number between 0 and 120, got 500"),
    ('[engine]\nbackend = "cuda"',
     'config.toml: [engine] backend must be one of "auto", "numpy", "tensorflow", got "cuda"'),
    ('[engine]\nprecision = "int4"',
     'config.toml: [engine] precision must be one of "int8", "fp32", got "int4"'),
    ("[engine]\nbatch_wait_ms = -5",
     "config.toml: [engine] batch_wait_ms must be a number between 0 and 1000, got -5"),
    ("[engine]\nmax_batch = 0",
     "config.toml: [engine] max_batch must be an integer between 1 and 4096, got 0"),
    ('[history]\ndatabase = ""',
     'config.toml: [history] database must be a non-empty path string, got ""'),
    ("[history]\nretention_days = 0",
     "config.toml: [history] retention_days must be an integer between 1 and 3650, got 0"),
    ('[admin]\nuser_ids = ["123"]',
     "config.toml: [admin] user_ids must be a list of Discord user ids (positive integers), got ['123']"),
    ("[admin]\nuser_ids = 123",
     "config.toml: [admin] user_ids must be a list of Discord user ids (positive integers), got 123"),
    ('[discord]\nsync_guild_id = "my server"',
     "config.toml: [discord] sync_guild_id must be an integer between 0 and 9223372036854775807, "
     'got "my server"'),
    ("[discord]\napi_base = 5",
     "config.toml: [discord] api_base must be a string, got 5"),
    ("[discord]\ngateway_url = []",
     "config.toml: [discord] gateway_url must be a string, got []"),
    ("[discord]\nshard_count = -1",
     "config.toml: [discord] shard_count must be an integer between 0 and 65535, got -1"),
    ("[discord]\nshard_ids = [0, 0]",
     "config.toml: [discord] shard_ids must be a list of distinct shard numbers (integers from 0), got [0, 0]"),
    ("[discord]\nshard_ids = 1",
     "config.toml: [discord] shard_ids must be a list of distinct shard numbers (integers from 0), got 1"),
    ("[discord]\nshard_ids = [1]",
     "config.toml: [discord] shard_ids needs shard_count (the shards of every process together), "
     "got shard_count = 0"),
    ("[discord]\nshard_count = 2\nshard_ids = [1, 2]",
     "config.toml: [discord] shard_ids must be below shard_count (2), got [1, 2]"),
    ("[models]\nalice = 1",
     "config.toml: [models] alice must be a non-empty path string, got 1"),
    ("[bot]\ndata_dir = false",
     "config.toml: [bot] data_dir must be a non-empty path string, got false"),
    ("[generation]\nmax_lenght = 10",
     "config.toml: unknown key [generation] max_lenght (known: default_length, max_length, "
     "default_temperature, max_temperature, edit_interval, mention_model)"),
    ("[models]\ngrimm = \"weights/grimm\"",
     "config.toml: unknown key [models] grimm (known: alice, seuss, storybook)"),
    ("[generations]\nmax_length = 10",
     "config.toml: unknown table [generations] (known: bot, models, generation, limits, engine, history, "
     "admin, discord, database, metrics)"),
    ("generation = 5",
     "config.toml: [generation] must be a table, got 5"),
]


@pytest.mark.parametrize("body, message", BAD, ids=[m.split(":", 1)[1].split(" must")[0].strip() for _, m in BAD])
def test_each_mistake_is_one_line_naming_it(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, body + "\n"))
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_broken_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config.toml: not valid TOML: .*line 2") as caught:
        load_config(write(tmp_path, "[generation]\nmax_length = \n"))
    assert "\n" not in str(caught.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_the_database_url_defaults_to_sqlite_in_data_dir_and_the_environment_overrides_it(
        tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[bot]\ndata_dir = "d"\n[engine]\nmax_loaded = 2\n[finetune]\nconcurrent_jobs = 2\n', "utf-8")
    monkeypatch.delenv("CHARLM_DATABASE_URL", raising=False)
    config = load_config(path)
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'd' / 'charbot.sqlite3'}"
    assert config.engine.max_loaded == 2
    path.write_text('[database]\nurl = "sqlite+aiosqlite:////srv/x.sqlite3"\n', "utf-8")
    assert load_config(path).database_url == "sqlite+aiosqlite:////srv/x.sqlite3"
    monkeypatch.setenv("CHARLM_DATABASE_URL", "postgresql+asyncpg://bot@db/charbot")
    assert load_config(path).database_url == "postgresql+asyncpg://bot@db/charbot"
