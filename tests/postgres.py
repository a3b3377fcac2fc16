"""A real, throwaway PostgreSQL server for the test session (Debian's `postgresql` package
or any initdb/pg_ctl/postgres on PATH): a fresh cluster in a temp folder, listening on
127.0.0.1 on a free port and on a unix socket in that folder, stopped and deleted at the end.

initdb and postgres refuse to run as root, so as root they run as an unprivileged user
(`postgres` when the package made one, else a system user created here) via runuser
or setpriv.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "charlm"
"""The cluster's superuser (trust auth: only 127.0.0.1 and the private socket reach it)."""
FALLBACK_OS_USER = "charlm-pg"
BINARIES = ("initdb", "pg_ctl", "postgres")
REQUIRE_ENV = "CHARLM_REQUIRE_POSTGRES"
"""When set (CI does), a missing server fails the tests instead of skipping them."""


class PostgresUnavailable(RuntimeError):
    """No server can be started here; the message says why, in one line."""


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: PATH first, then Debian's layout."""
    on_path = [shutil.which(name) for name in BINARIES]
    if all(on_path):
        return Path(os.path.realpath(on_path[1])).parent  # type: ignore[arg-type]
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if all((Path(folder) / name).is_file() for name in BINARIES):
            return Path(folder)
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not on PATH or in "
                              "/usr/lib/postgresql/*/bin: install Debian's postgresql package (.ci/run does)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unprivileged_user() -> pwd.struct_passwd:
    """The OS user the server runs as when the tests run as root (created if needed)."""
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
                   check=True, capture_output=True)
    return pwd.getpwnam(FALLBACK_OS_USER)


def drop_privileges(user: pwd.struct_passwd) -> list[str]:
    """The command prefix that runs a program as `user` (root only): runuser, else setpriv."""
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    raise PostgresUnavailable("running as root without runuser or setpriv (util-linux), so postgres cannot "
                              "drop privileges")


@dataclass
class PostgresServer:
    """One running cluster; `url` is its `postgres` maintenance database, create_database() more."""

    bin_dir: Path
    root: Path
    port: int
    run_as: pwd.struct_passwd | None = None
    log_file: Path = field(init=False)
    _databases: int = 0

    def __post_init__(self) -> None:
        self.log_file = self.root / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = [*drop_privileges(self.run_as), *command]
        env = os.environ | {"LC_ALL": "C", "LANG": "C"}
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.root)

    def start(self) -> None:
        """initdb a fresh cluster tuned for tests (no fsync) and start it; wait until it accepts."""
        self.socket_dir.mkdir()
        if self.run_as is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)
        init = self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                         "--no-locale", "--no-sync")
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {_last_line(init)}")
        for attempt in range(3):
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            started = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                                "-o", options, "start")
            if started.returncode == 0:
                return
            log = self.log_file.read_text("utf-8", "replace") if self.log_file.exists() else ""
            if "could not bind" not in log or attempt == 2:
                break
            self.port = free_port()  # another process took the free port first
        raise PostgresUnavailable(f"PostgreSQL did not start: {_last_line(started)} (log: {self.log_file})")

    def halt(self) -> None:
        """Stop the server, keeping the cluster (a database restart, with resume())."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                            "-o", options, "start")
        if started.returncode != 0:
            raise PostgresUnavailable(f"PostgreSQL did not start again: {_last_line(started)}")

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions), then delete the cluster."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its postgresql:// URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        asyncio.run(_execute(self.url(), f'CREATE DATABASE "{name}"'))
        return self.url(name)


async def _execute(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def start_server() -> PostgresServer:
    """Find the binaries, make the temp folder (owned by the server's user when root) and start."""
    bin_dir = find_bin_dir()
    run_as = unprivileged_user() if os.geteuid() == 0 else None
    if run_as is not None:
        drop_privileges(run_as)  # fail early, in one line, when neither tool is there
    # As root, under /tmp itself: pytest's own temp folders are private to root.
    root = Path(tempfile.mkdtemp(prefix="charlm-pg-", dir="/tmp" if run_as is not None else None))
    server = PostgresServer(bin_dir, root, free_port(), run_as)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; skips (fails under CHARLM_REQUIRE_POSTGRES=1) without one."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{exc} ({REQUIRE_ENV} is set)", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server for one test: postgresql://charlm@127.0.0.1:PORT/test_N."""
    return postgres.create_database()
