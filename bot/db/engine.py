"""Opening the database: one async SQLAlchemy engine, migrated to the newest schema by Alembic."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from charlm.errors import CharLMError

log = logging.getLogger(__name__)
# Alembic announces its plugins and migration context at INFO whenever it is asked for
# the schema; `_upgrade` logs the one line that matters (from which schema to which).
logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x636861726C6D  # "charlm": the PostgreSQL advisory lock held while migrating


class DatabaseError(CharLMError):
    """The database cannot be opened or migrated (one line, naming it)."""


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest schema revision this bot knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: sa.Connection) -> None:
    current = MigrationContext.configure(connection).get_current_revision()
    script = ScriptDirectory.from_config(alembic_config())
    known = {r.revision for r in script.walk_revisions()}
    if current is not None and current not in known:
        raise DatabaseError(f"the database has schema {current}, newer than this bot's {head()}")
    if current != head():
        log.info("migrating the database from schema %s to %s", current or "(empty)", head())
        command.upgrade(alembic_config(connection), "head")


class MigrationFailed(DatabaseError):
    """A migration failed and was undone: the database is still at the schema it had."""


def _upgrade_sqlite(connection: sa.Connection) -> None:
    """Migrate a SQLite file in one transaction. SQLite's DDL is transactional, but Python's
    sqlite3 module only opens a transaction before INSERT/UPDATE/DELETE, so a CREATE or
    ALTER would commit on its own and a failure halfway would leave a half-migrated file:
    here the module's transaction handling is switched off and BEGIN IMMEDIATE sent, so the
    migration, its table rebuilds and alembic_version commit together or not at all."""
    raw = connection.connection.dbapi_connection
    level = raw.isolation_level
    raw.isolation_level = None
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            _upgrade(connection)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    finally:
        raw.isolation_level = level


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


async def open_database(url: str) -> AsyncEngine:
    """Create the engine (and a SQLite file's folder), then bring the schema to head.

    postgresql:// and sqlite:// URLs get their async drivers (asyncpg, aiosqlite)."""
    from bot.config import database_url

    url = database_url(url) or url
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # PostgreSQL: a connection from before a server restart is tested before use, not failed on
        engine = create_async_engine(parsed, pool_pre_ping=parsed.get_backend_name() == "postgresql")
    except (sa.exc.ArgumentError, OSError, ImportError) as exc:
        raise DatabaseError(f"cannot open the database {shown(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    before, reached = None, False
    try:
        async with engine.connect() as connection:
            before = await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            await connection.rollback()
        reached = True
        if engine.dialect.name == "sqlite":
            async with engine.connect() as connection:
                await connection.run_sync(_upgrade_sqlite)
        else:  # PostgreSQL's DDL is transactional as it is; processes starting together migrate one at a time
            async with engine.begin() as connection:
                await connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                await connection.run_sync(_upgrade)
    except DatabaseError:
        await engine.dispose()
        raise
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        cause = getattr(exc, "orig", None) or exc  # the driver's own words, without the statement
        if reached and before != head():
            raise MigrationFailed(f"migrating the database {shown(url)} from schema {before or '(empty)'} to "
                                  f"{head()} failed and was undone, so it is still at {before or '(empty)'}: "
                                  f"{cause.__class__.__name__}: {str(cause).splitlines()[0]}") from None
        raise DatabaseError(f"cannot use the database {shown(url)}: {exc.__class__.__name__}: {exc}") from None
    except BaseException:
        await engine.dispose()
        raise
    return engine
