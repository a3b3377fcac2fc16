"""What an operator sees (issue 18): /metrics in Prometheus format, parsed with
prometheus_client's own parser, moving with requests; /healthz following the gateway
session down and back up. The real discord.py client against the Discord double."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Config, MetricsConfig
from bot.runner import CharLMBot
from tests.discord_double import DiscordDouble, LogGuard, running_bot, running_double
from tests.test_finetune import said, write_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
ALLOWED_LABELS = {"shard", "model", "command", "outcome", "state", "le"}
"""Bounded labels only: never a server or a user id."""


@pytest.fixture(autouse=True)
def guard(discord_log_guard: LogGuard) -> LogGuard:
    return discord_log_guard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_metrics(config: Config) -> Config:
    return dataclasses.replace(config, metrics=MetricsConfig(port=free_port()))


async def scrape(http: aiohttp.ClientSession, config: Config) -> Samples:
    async with http.get(f"http://127.0.0.1:{config.metrics.port}/metrics") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def healthz(http: aiohttp.ClientSession, config: Config) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{config.metrics.port}/healthz") as response:
        return response.status, await response.text()


async def until(http: aiohttp.ClientSession, config: Config, status: int, timeout: float = 15) -> str:
    """Poll /healthz until it answers `status`; returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = await healthz(http, config)
        if got == status:
            return body
        assert time.monotonic() < deadline, (got, body)
        await asyncio.sleep(0.05)


def run(config: Config, scenario) -> None:
    async def main() -> None:
        async with running_double() as double:
            async with running_bot(CharLMBot(config, guild_ready_timeout=0.1), timeout=60) as bot:
                await double.wait_commands(["alice", "generate"])
                async with aiohttp.ClientSession() as http:
                    await scenario(double, bot, http)
            double.assert_no_violations()

    asyncio.run(main())


def label(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_metrics_move_with_requests_and_carry_no_ids(tmp_path: Path, tiny_model: Path) -> None:
    config = with_metrics(write_config(tmp_path, tiny_model))

    async def scenario(double: DiscordDouble, bot: CharLMBot, http: aiohttp.ClientSession) -> None:
        before = await scrape(http, config)
        for _ in range(2):
            handle = await double.send_command("alice", {"text": "Alice", "length": 20}, user="bob",
                                               guild_id=double.world.guilds[0].id)
            await handle.wait_final(timeout=30)
            assert said(handle).startswith("**alice**")
        after = await scrape(http, config)

        def moved(name: str, labels: tuple) -> float:
            return after.get((name, labels), 0) - before.get((name, labels), 0)

        assert moved("charbot_requests_total", label(shard="0", command="alice", outcome="answered")) == 2
        assert moved("charbot_ack_seconds_count", label(shard="0")) == 2
        assert moved("charbot_first_text_seconds_count", label(shard="0", model="alice")) == 2
        assert moved("charbot_reply_seconds_count", label(shard="0", model="alice")) == 2
        assert moved("charbot_batch_rows_count", ()) >= 2  # at least one step per request
        assert after[("charbot_queue_depth", ())] == 0 and after[("charbot_running_rows", ())] >= 0
        assert after[("charbot_loaded_versions", ())] == 0
        assert ("charbot_database_errors_total", ()) in after

    run(config, scenario)


def test_healthz_follows_the_gateway_session_down_and_back(tmp_path: Path, tiny_model: Path) -> None:
    config = with_metrics(write_config(tmp_path, tiny_model))

    async def scenario(double: DiscordDouble, bot: CharLMBot, http: aiohttp.ClientSession) -> None:
        body = await until(http, config, 200)
        assert body == "ok: every shard of this process is connected and the database answers\n"
        await double.drop_session()
        body = await until(http, config, 503)
        assert body == "shard 0 is not connected to Discord\n"
        resume = await double.restore_session()
        assert resume.replayed >= 0
        assert await until(http, config, 200) == "ok: every shard of this process is connected and the database answers\n"

    run(config, scenario)


def test_a_trainer_serves_job_counts_and_durations(tmp_path: Path, tiny_model: Path) -> None:
    """bot.trainer's endpoint: jobs by state, each finished job's duration once, /healthz on the database."""
    import sqlalchemy as sa

    from bot.db.engine import open_database
    from bot.db.schema import jobs
    from bot.endpoint import serve_trainer_metrics

    config = with_metrics(write_config(tmp_path, tiny_model))

    def job(state: str, started: float | None = None, finished: float | None = None,
            worker: str = "host:1") -> dict:
        return dict(created_at=time.time(), user_id=1, guild_id=None, base="alice", base_version="v0",
                    target="alice", corpus_name="c.txt", corpus_sha256="0" * 64, corpus_chars=1, cleaning="",
                    settings={}, state=state, progress={}, started_at=started, finished_at=finished,
                    worker=worker)

    async def main() -> None:
        db = await open_database(config.database_url)
        stop = await serve_trainer_metrics(config, db, "host:1", every=0.05)
        try:
            async with aiohttp.ClientSession() as http:
                async with db.begin() as conn:
                    await conn.execute(sa.insert(jobs).values(job("queued")))
                    now = time.time()
                    await conn.execute(sa.insert(jobs).values(job("succeeded", now - 90, now + 1)))
                    await conn.execute(sa.insert(jobs).values(job("failed", now - 50, now + 1, worker="other:2")))
                deadline = time.monotonic() + 10
                while True:
                    samples = await scrape(http, config)
                    if samples.get(("charbot_finetune_job_seconds_count", label(state="succeeded"))) == 1:
                        break
                    assert time.monotonic() < deadline, samples
                    await asyncio.sleep(0.05)
                assert samples[("charbot_finetune_jobs", label(state="queued"))] == 1
                assert samples[("charbot_finetune_jobs", label(state="running"))] == 0
                assert samples[("charbot_finetune_jobs", label(state="failed"))] == 1  # counted, by state
                assert ("charbot_finetune_job_seconds_count", label(state="failed")) not in samples  # another's
                assert samples[("charbot_finetune_job_seconds_sum", label(state="succeeded"))] == pytest.approx(91)
                await asyncio.sleep(0.2)  # later looks do not count the same job again
                again = await scrape(http, config)
                assert again[("charbot_finetune_job_seconds_count", label(state="succeeded"))] == 1
                assert await healthz(http, config) == (200, "ok: the database answers\n")
        finally:
            await stop()
            await db.dispose()

    asyncio.run(main())


def test_healthz_names_a_database_that_does_not_answer(tmp_path: Path) -> None:
    from bot.db.engine import open_database
    from bot.endpoint import database_answers
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> tuple[str | None, str | None]:
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'charbot.sqlite3'}")
        gone = create_async_engine(f"postgresql+asyncpg://charbot@127.0.0.1:{free_port()}/charbot")  # nobody listens
        try:
            return await database_answers(db), await database_answers(gone)
        finally:
            await db.dispose()
            await gone.dispose()

    ok, broken = asyncio.run(main())
    assert ok is None
    assert broken == "the database does not answer (ConnectionRefusedError)"
