"""The two back ends the store's behaviour tests run against: an SQLite file and a real PostgreSQL server.

``pg_server`` (session-scoped) starts Debian's PostgreSQL (``initdb`` + ``pg_ctl``,
binaries from ``$ALWIDGETS_PG_BIN``, ``pg_config --bindir`` or
``/usr/lib/postgresql/*/bin``) on a temporary data directory, listening on
127.0.0.1 on a free port, as an unprivileged user (``postgres`` when the tests
run as root), and stops it at the end, also when tests fail. Without the
binaries the PostgreSQL cases skip with the reason (and fail under ``CI=true``).

Each test gets its own database schema (``store_target``), so stores never meet.
Import the fixtures into a test module with ``from store_backends import *``.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgresql"]


def _bindir() -> Path | None:
    candidates = [os.environ.get("ALWIDGETS_PG_BIN", "")]
    if shutil.which("pg_config"):
        try:
            candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                             timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL cluster; ``url(schema)`` gives a connection string for one schema."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="alwidgets-store-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged user
            name = "postgres"
            try:
                pwd.getpwnam(name)
            except KeyError:
                name = "alwidgets-pg"
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
            self.user = name
            os.chown(self.dir, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid)
            os.chmod(self.dir, 0o755)
        self._counter = itertools.count()

    def _run(self, *args, check=True, timeout=120):
        return subprocess.run([str(self.bindir / args[0]), *map(str, args[1:])], user=self.user,
                              capture_output=True, text=True, check=check, timeout=timeout, cwd=self.dir)

    def start(self) -> None:
        if not self.data.exists():
            self._run("initdb", "-D", self.data, "-U", "alw", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                f"-c fsync=on -c max_connections=100")
        r = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log, "-o", opts, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{self.log.read_text()[-3000:]}")

    def restart(self) -> None:
        r = self._run("pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", self.data, "-l", self.log, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {r.stdout}{r.stderr}")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", self.data, check=False)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin_url(self, user: str = "alw") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def new_schema(self) -> str:
        """A fresh schema (its own store); returns its connection string."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(name)

    def url(self, schema: str, user: str = "alw") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres?options=-csearch_path%3D{schema}"

    def sql(self, statement: str, params=None):
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="session")
def pg_server():
    bindir = _bindir()
    _require(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _require(False, "psycopg is not installed: pip install 'alwidgets[postgres]'")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def store_target(backend, tmp_path, request):
    """Where a test's store lives: an SQLite file, or a fresh PostgreSQL schema's connection string."""
    if backend == "sqlite":
        return tmp_path / "labels.db"
    return request.getfixturevalue("pg_server").new_schema()


def wait_for(predicate, timeout: float = 30.0, every: float = 0.05):
    """Poll ``predicate`` until true (AssertionError after ``timeout`` s)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


__all__ = ["BACKENDS", "PostgresServer", "pg_server", "backend", "store_target", "wait_for"]
