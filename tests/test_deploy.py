"""The compose file and the configs it mounts: the scaled-out setup serves what the single
bot serves, with the image each process needs (docs/scaling.md)."""

from pathlib import Path

import pytest
import yaml

from bot.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCALE = {"postgres", "bot-shard0", "bot-shard1", "trainer"}
IMAGE_ROOT = Path("/app")  # where the Dockerfile puts the project


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))["services"]


def mounts(service: dict) -> dict[str, str]:
    """{container path: source} of a service's volumes."""
    return {spec.split(":")[1]: spec.split(":")[0] for spec in service.get("volumes", [])}


def mounted_config(service: dict) -> Path:
    """The project file a service mounts as the config its command names."""
    command = service["command"]
    inside = command[command.index("--config") + 1]
    source = mounts(service)[inside]
    assert source.startswith("./"), source
    return ROOT / source


def test_the_default_setup_is_one_bot_and_the_scale_profile_the_rest(services):
    assert {name for name, s in services.items() if not s.get("profiles")} == {"bot"}
    assert {name for name, s in services.items() if "scale" in s.get("profiles", [])} == SCALE


def test_bot_processes_run_the_serving_image_and_the_trainer_the_training_one(services):
    for name in ("bot-shard0", "bot-shard1"):
        assert services[name]["build"]["args"]["REQUIREMENTS"] == "requirements-serve.txt"
    for name in ("bot", "trainer"):
        assert services[name]["build"]["args"]["REQUIREMENTS"] == "requirements.txt"
    assert services["trainer"]["entrypoint"][-2:] == ["-m", "bot.trainer"]
    images = {name: services[name]["image"] for name in ("bot", "bot-shard0", "bot-shard1", "trainer")}
    assert images["bot-shard0"] == images["bot-shard1"] != images["trainer"] == images["bot"]


def test_every_scaled_process_shares_the_database_and_one_data_volume(services):
    for name in ("bot-shard0", "bot-shard1", "trainer"):
        service = services[name]
        assert service["environment"]["CHARLM_DATABASE_URL"].startswith("postgresql://")
        assert service["environment"]["CHARLM_DATABASE_URL"].endswith("@postgres:5432/charbot")
        assert mounts(service)["/app/data"] == "charlm-shared"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_mounted_configs_split_the_shards_and_serve_the_single_bots_models(services):
    shipped = load_config(ROOT / "config.toml").models.folders()
    shards = []
    for name in ("bot-shard0", "bot-shard1", "trainer"):
        config = load_config(mounted_config(services[name]))
        assert config.bot.data_dir == IMAGE_ROOT / "data"
        served = config.models.folders()
        assert set(served) == set(shipped), name  # storybook too: /generate answers everywhere
        for model, folder in served.items():
            assert folder == IMAGE_ROOT / shipped[model].relative_to(ROOT), (name, model)
        if name != "trainer":
            assert config.discord.shard_count == 2
            shards.append(config.discord.shard_ids)
    assert shards == [(0,), (1,)]


def test_the_trainer_gets_no_bot_token(services):
    """bot.trainer never talks to Discord: no .env (which holds DISCORD_TOKEN) is handed to it."""
    trainer = services["trainer"]
    assert "env_file" not in trainer and "DISCORD_TOKEN" not in trainer.get("environment", {})
    assert all("env_file" in services[name] for name in ("bot", "bot-shard0", "bot-shard1"))
