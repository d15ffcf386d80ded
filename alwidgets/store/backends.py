"""The two databases a :class:`~alwidgets.store.LabelStore` runs on: an SQLite file and PostgreSQL.

:class:`LabelStore` writes its SQL once, with ``?`` placeholders; a back end runs
it (PostgreSQL's driver gets ``%s``), opens and re-opens the connection, takes the
write lock, and turns driver errors into :class:`~alwidgets.store.StoreError`
subclasses that say whether anything was written.

One writer at a time, on both: SQLite's ``BEGIN IMMEDIATE`` takes the file's write
lock; on PostgreSQL every write transaction first takes one transaction-level
advisory lock, so leases, supersede chains and label ids are decided exactly as on
SQLite (a team of annotators writes a few labels a second; the lock is held for
milliseconds).
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from urllib.request import pathname2url

from .errors import (
    StoreConnectionError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
    translate,
)

_NOTHING_LOST = "nothing from this call was written and earlier labels are intact"
LOCK_KEY = 0x616C77  # 'alw': the advisory lock every PostgreSQL write transaction takes (the v3 schema's
#                       alwidgets_submit function takes it too: changing it needs a schema migration)
_CHECK_AFTER_IDLE_S = 1.0  # a write after this long idle first checks that the connection is alive
_CHUNK = 900  # bound parameters per SQLite IN (...) query


def is_postgres_url(path) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` connection strings."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def open_backend(path, *, timeout: float, read_only: bool):
    if is_postgres_url(path):
        return PostgresBackend(path, timeout=timeout, read_only=read_only)
    return SQLiteBackend(path, timeout=timeout, read_only=read_only)


class SQLiteBackend:
    """One SQLite file (WAL journal, ``synchronous=FULL``) or ``":memory:"``."""

    kind = "sqlite"
    describe = "an SQLite file"
    noun = "file name"

    def __init__(self, path, *, timeout: float, read_only: bool):
        self.timeout, self.read_only = timeout, read_only
        self.memory = isinstance(path, str) and path == ":memory:"
        self.errors = (sqlite3.Error,)
        if self.memory:
            self.path = ":memory:"
            self.conn = self._connect(":memory:", uri=False)
        else:
            p = Path(os.fspath(path)).expanduser().absolute()
            if p.is_dir():
                raise StoreError(f"{p} is a folder; give a file name such as {p / 'labels.db'}", str(p))
            if not p.parent.is_dir():
                raise StoreError(f"cannot create the label store {p}: folder {p.parent} does not exist", str(p))
            if read_only and not p.exists():
                raise StoreError(f"no label store at {p} (read_only=True never creates one)", str(p))
            self.path = str(p)
            base = f"file:{pathname2url(self.path)}"
            if not read_only:
                self.conn = self._connect(f"{base}?mode=rwc")
            else:
                # A WAL store in a folder this process cannot write: SQLite cannot create the -shm
                # file, so read it as immutable (nobody can write there either).
                self.conn = self._connect(f"{base}?mode=ro")
                try:
                    self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                except sqlite3.Error as e:
                    self.conn.close()
                    err = translate(e, self.path, "opening", timeout)
                    if os.access(p.parent, os.W_OK) and not isinstance(err, StoreReadOnlyError) \
                            and "unable to open" not in str(e):
                        raise err from e
                    self.conn = self._connect(f"{base}?mode=ro&immutable=1")
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            if not self.memory and not read_only:
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: could not switch the journal to WAL (got {mode!r}); "
                                     f"is the file on a network filesystem?", self.path)
            self.conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:
            self.conn.close()
            raise translate(e, self.path, "opening", timeout) from e
        except BaseException:
            self.conn.close()
            raise

    def _connect(self, target, uri=True):
        try:
            return sqlite3.connect(target, uri=uri, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise translate(e, getattr(self, "path", target), "opening", self.timeout) from e

    # -- statements
    def ensure(self) -> None:
        if self.conn is None:
            raise StoreError(f"the label store {self.path} is closed", self.path)

    def execute(self, sql, params=()):
        return self.conn.execute(sql, params)

    # Set-based statements, written once by LabelStore for both back ends. ``columns`` are
    # ``(name, PostgreSQL type)`` pairs; SQLite runs a row at a time in-process (nothing to save).
    @staticmethod
    def in_list(column: str, values, sql_type: str = "text"):
        """``(condition, params)`` pieces that together test ``column`` against ``values``
        (SQLite: ``IN (?, ...)`` chunks short enough for one statement)."""
        values = list(values)
        for k in range(0, len(values), _CHUNK):
            chunk = values[k:k + _CHUNK]
            yield f"{column} IN ({','.join('?' * len(chunk))})", chunk

    def insert_rows(self, table: str, columns, rows, suffix: str = "") -> None:
        """``INSERT INTO table(columns) VALUES ... suffix`` for every row of ``rows``."""
        names = ", ".join(name for name, _ in columns)
        self.conn.executemany(f"INSERT INTO {table}({names}) VALUES ({','.join('?' * len(columns))}) {suffix}",
                              rows)

    def update_rows(self, table: str, set_columns, key_columns, rows) -> None:
        """``UPDATE table SET set_columns WHERE key_columns`` for every row ``(*set values, *key values)``
        (the keys of ``rows`` must be unique)."""
        sets = ", ".join(f"{name} = ?" for name, _ in set_columns)
        keys = " AND ".join(f"{name} = ?" for name, _ in key_columns)
        self.conn.executemany(f"UPDATE {table} SET {sets} WHERE {keys}", rows)

    def probe(self) -> None:
        """Nothing to check: the file is opened in-process."""

    submits_in_one_statement = False  # in-process: LabelStore's general path costs no round trips

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def pipeline(self):
        """Statements run one by one in-process: nothing to batch."""
        return contextlib.nullcontext()

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn is not None and self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def now(self) -> float:
        return time.time()

    def translate(self, exc, action: str) -> StoreError:
        return translate(exc, self.path, action, self.timeout)

    def is_disconnect(self, exc) -> bool:
        return False

    # -- schema
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def set_schema_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def begin_migration(self) -> None:
        self.conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: before BEGIN
        self.conn.execute("BEGIN IMMEDIATE")

    def end_migration(self) -> None:
        bad = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise StoreCorruptError(f"{self.path}: the migration found broken references {bad[:5]}; "
                                    f"nothing was changed. Restore it from a backup (see docs/labels.md).",
                                    self.path)
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA foreign_keys = ON")

    def abort_migration(self) -> None:
        self.rollback()
        self.conn.execute("PRAGMA foreign_keys = ON")

    def integrity(self) -> list[str]:
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        return problems + [f"foreign key: {r}" for r in self.conn.execute("PRAGMA foreign_key_check")]

    def backup_to(self, tmp: str) -> None:
        """A consistent copy, readable anywhere (rollback journal, so no -wal/-shm files are needed)."""
        target = sqlite3.connect(tmp)
        try:
            self.conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def closed(self) -> bool:
        return self.conn is None


def _mask(url: str) -> str:
    """The connection string without its password (for messages and ``store.path``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


_PLACEHOLDER = re.compile(r"\?")


class PostgresBackend:
    """A PostgreSQL database (psycopg 3), one connection in autocommit mode with explicit transactions.

    A lost connection is closed and re-opened by the next call; reads are retried once
    on a new connection, writes never (the caller decides: nothing was acknowledged).
    """

    kind = "postgresql"
    describe = "a PostgreSQL database"
    noun = "database"

    def __init__(self, url: str, *, timeout: float, read_only: bool):
        try:
            import psycopg
        except ImportError:
            raise ImportError("a postgresql:// label store needs psycopg 3: "
                              "pip install 'alwidgets[postgres]'") from None
        self._psycopg = psycopg
        self.url, self.path = url, _mask(url)
        self.timeout, self.read_only = timeout, read_only
        self.memory = False
        self.errors = (psycopg.Error,)
        self.conn = None
        self._closed = False
        self._now = self._lock_cur = None
        self._pending = False
        self._last_used = time.monotonic()
        self._connect()

    def _connect(self) -> None:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(round(self.timeout))),
                                   application_name="alwidgets")
        except psycopg.Error as e:
            raise StoreConnectionError(
                f"cannot connect to the label store {self.path}: {' '.join(str(e).split())}; {_NOTHING_LOST}. "
                f"Is the server running and the connection string right?", self.path) from e
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(self.timeout * 1000)}ms",))
            if self.read_only:
                conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")
        except psycopg.Error as e:
            conn.close()
            raise self.translate(e, "opening") from e
        self.conn = conn
        self._last_used = time.monotonic()

    # -- statements
    def ensure(self) -> None:
        if self._closed:
            raise StoreError(f"the label store {self.path} is closed", self.path)
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = None
            self._connect()

    def execute(self, sql, params=()):
        self._start()
        sql = _PLACEHOLDER.sub("%s", sql)
        return self.conn.execute(sql, list(params) if params else None, prepare=None)

    # Set-based statements: one statement whatever the number of rows, each column sent as one
    # array parameter (``unnest``), so a submit is a handful of statements, not one per label.
    @staticmethod
    def in_list(column: str, values, sql_type: str = "text"):
        """``(condition, params)``: one ``column = ANY(array)`` test for all of ``values``."""
        values = list(values)
        if values:
            yield f"{column} = ANY(?::{sql_type}[])", [values]

    @staticmethod
    def _unnest(columns, rows):
        """``unnest``'s arguments (``?::type[]`` each) and the column arrays of ``rows``."""
        return ", ".join(f"?::{sql_type}[]" for _, sql_type in columns), [list(col) for col in zip(*rows)]

    def insert_rows(self, table: str, columns, rows, suffix: str = "") -> None:
        """One ``INSERT INTO table(columns) SELECT * FROM unnest(arrays) suffix`` for all ``rows``."""
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        marks, arrays = self._unnest(columns, rows)
        self.execute(f"INSERT INTO {table}({names}) SELECT * FROM unnest({marks}) {suffix}", arrays)

    def update_rows(self, table: str, set_columns, key_columns, rows) -> None:
        """One ``UPDATE table SET ... FROM unnest(arrays) WHERE keys match`` for all ``rows``
        ``(*set values, *key values)`` (the keys of ``rows`` must be unique)."""
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        columns = [*set_columns, *key_columns]
        marks, arrays = self._unnest(columns, rows)
        sets = ", ".join(f"{name} = v.{name}" for name, _ in set_columns)
        keys = " AND ".join(f"t.{name} = v.{name}" for name, _ in key_columns)
        names = ", ".join(name for name, _ in columns)
        self.execute(f"UPDATE {table} AS t SET {sets} FROM unnest({marks}) AS v({names}) WHERE {keys}", arrays)

    def probe(self) -> None:
        """Check a connection idle for a while (one ``SELECT 1``) before a write, so a connection the
        server dropped meanwhile (a restart) is found before anything is sent and the caller reconnects."""
        if time.monotonic() - self._last_used > _CHECK_AFTER_IDLE_S:
            self.conn.execute("SELECT 1")

    def begin(self) -> None:
        """Start a write transaction: BEGIN, the write lock and the server's clock are sent with the
        transaction's first statements (one round trip with its first reads)."""
        self.probe()
        self._pending, self._lock_cur, self._now = True, None, None

    submits_in_one_statement = True

    def submit(self, session, skip_unchanged: bool, rows) -> int | None:
        """Save validated ``rows`` (:meth:`LabelStore._records` tuples, each item once) with the schema's
        ``alwidgets_submit`` function: one statement, its own transaction, one round trip. Returns the
        first new label id (the rows get consecutive ids in order), or None when the call needs
        LabelStore's general path (nothing was written)."""
        self._last_used = time.monotonic()
        items, labels, seconds, rounds, sources, annotators, payloads, media_types = (list(c) for c in zip(*rows))
        return self.conn.execute(
            "SELECT alwidgets_submit(%s, %s, %s::text[], %s::text[], %s::float8[], %s::bigint[], %s::text[], "
            "%s::text[], %s::bytea[], %s::text[])",
            [session, bool(skip_unchanged), items, labels, seconds, rounds, sources, annotators, payloads,
             media_types]).fetchone()[0]

    def _start(self) -> None:
        self._last_used = time.monotonic()
        if self._pending:
            self._pending = False
            self.conn.execute("BEGIN")
            self._lock_cur = self.conn.execute(
                "SELECT pg_advisory_xact_lock(%s), EXTRACT(EPOCH FROM clock_timestamp())::float8", (LOCK_KEY,))

    def commit(self) -> None:
        self._start()
        self._now = self._lock_cur = None
        self.conn.execute("COMMIT")

    def pipeline(self):
        """Send the statements inside together and read their results after one round trip."""
        self._last_used = time.monotonic()
        return self.conn.pipeline()

    def rollback(self) -> None:
        self._now = self._lock_cur = None
        self._pending = False
        conn = self.conn
        if conn is None or conn.closed or conn.broken:
            return
        from psycopg.pq import TransactionStatus

        if conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.execute("ROLLBACK")
            except self._psycopg.Error:
                pass

    def now(self) -> float:
        """The server's clock (read when the write lock was taken, inside a transaction): leases expire
        by one clock for every machine of a team."""
        if self._pending:
            self._start()
        if self._lock_cur is not None:
            self._now, self._lock_cur = float(self._lock_cur.fetchone()[1]), None
        if self._now is not None:
            return self._now
        return float(self.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()[0])

    def is_disconnect(self, exc) -> bool:
        conn = self.conn
        return isinstance(exc, (self._psycopg.OperationalError, self._psycopg.InterfaceError)) and (
            conn is None or conn.closed or conn.broken)

    def translate(self, exc, action: str) -> StoreError:
        errors = self._psycopg.errors
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.is_disconnect(exc):
            try:
                self.conn.close()
            finally:
                self.conn = None
            return StoreConnectionError(
                f"{action}: the connection to the label store {self.path} was lost ({text}); nothing from this "
                f"call was acknowledged (saving again is safe: a session's repeated labels are not stored twice). "
                f"The next call reconnects.", self.path)
        if isinstance(exc, (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)):
            return StoreReadOnlyError(
                f"{action}: the label store {self.path} is read-only for this role or connection "
                f"({text}); {_NOTHING_LOST}. Ask for a role that may write, or open it read_only=True.", self.path)
        if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
            return StoreLockedError(
                f"{action}: the label store {self.path} is locked by another writer after waiting "
                f"{self.timeout:g} s; {_NOTHING_LOST}. Retry. ({text})", self.path)
        if isinstance(exc, (errors.DiskFull, errors.OutOfMemory, errors.ProgramLimitExceeded)):
            return StoreFullError(
                f"{action}: the database server of the label store {self.path} is out of space ({text}); the "
                f"transaction was rolled back, so {_NOTHING_LOST}.", self.path)
        if isinstance(exc, (self._psycopg.OperationalError, self._psycopg.InterfaceError)):
            return StoreConnectionError(f"{action}: label store {self.path}: {text}; {_NOTHING_LOST}.", self.path)
        return StoreError(f"{action}: label store {self.path}: {text}", self.path)

    # -- schema
    def schema_version(self) -> int:
        if self.conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        return int(self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:  # the schema_version table is the record
        pass

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]

    def begin_migration(self) -> None:
        self.begin()
        self.now()  # take the lock now: the version is read again under it

    def end_migration(self) -> None:
        self.commit()

    def abort_migration(self) -> None:
        self.rollback()

    def integrity(self) -> list[str]:
        return []  # PostgreSQL checks pages itself; the history invariants are checked by LabelStore.check

    def close(self) -> None:
        self._closed = True
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def closed(self) -> bool:
        return self._closed
