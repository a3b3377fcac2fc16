"""The test session's PostgreSQL server (tests/postgres.py) is real: asyncpg connects over TCP
on 127.0.0.1, runs queries, and each test gets its own empty database."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from tests.postgres import PostgresServer


def test_asyncpg_connects_and_queries(postgres: PostgresServer, postgres_url: str) -> None:
    async def main() -> None:
        connection = await asyncpg.connect(postgres_url)
        try:
            version = await connection.fetchval("SHOW server_version_num")
            assert int(version) >= 120000
            assert await connection.fetchval("SELECT current_database()") == postgres_url.rsplit("/", 1)[1]
            assert await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
            await connection.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, guild_id BIGINT, text TEXT)")
            await connection.executemany("INSERT INTO t (guild_id, text) VALUES ($1, $2)",
                                         [(1152921504606846977, "alice"), (None, "dm")])
            rows = await connection.fetch("SELECT guild_id, text FROM t ORDER BY id")
            assert [tuple(r) for r in rows] == [(1152921504606846977, "alice"), (None, "dm")]
            # What trainer workers will rely on: a row locked by one transaction is skipped by another.
            async with connection.transaction():
                locked = await connection.fetchval("SELECT id FROM t ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
                other = await asyncpg.connect(postgres_url)
                try:
                    skipped = await other.fetchval("SELECT id FROM t ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED")
                finally:
                    await other.close()
            assert (locked, skipped) == (1, 2)
        finally:
            await connection.close()

    asyncio.run(main())
    assert postgres.url().startswith("postgresql://charlm@127.0.0.1:")
    assert (postgres.socket_dir / f".s.PGSQL.{postgres.port}").exists()


def test_each_test_gets_a_fresh_database(postgres: PostgresServer, postgres_url: str) -> None:
    async def main() -> list[str]:
        connection = await asyncpg.connect(postgres_url)
        try:
            return [r[0] for r in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        finally:
            await connection.close()

    assert asyncio.run(main()) == []
    if os.geteuid() == 0:
        assert postgres.run_as is not None and postgres.run_as.pw_uid != 0
