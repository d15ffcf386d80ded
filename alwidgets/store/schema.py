"""The label store's schema and its migrations.

The schema version lives in ``PRAGMA user_version`` (checked on every open)
and in the ``schema_version`` table (when each migration ran). A migration is
a list of SQL statements run in one transaction, so a store is always at a
whole version, even if the kernel dies half-way.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from .errors import StoreError, StoreReadOnlyError

SCHEMA_V1 = (
    """CREATE TABLE schema_version (
        version    INTEGER PRIMARY KEY,
        applied_at TEXT NOT NULL,
        alwidgets  TEXT NOT NULL)""",
    # pool_fingerprint, n_items, created_at
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    # every pool ever attached (audit of attach_pool)
    """CREATE TABLE pools (
        pool_id     INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        n_items     INTEGER NOT NULL,
        match       TEXT NOT NULL CHECK (match IN ('fingerprint', 'ids')),
        attached_at TEXT NOT NULL)""",
    # union of the ids of all attached pools; in_pool marks the current one
    """CREATE TABLE items (
        item_id TEXT PRIMARY KEY CHECK (length(item_id) > 0),
        in_pool INTEGER NOT NULL DEFAULT 1 CHECK (in_pool IN (0, 1))
    ) WITHOUT ROWID""",
    # class_id order is the class order; names are never renamed or removed
    """CREATE TABLE classes (
        class_id INTEGER PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0))""",
    """CREATE TABLE rounds (
        round_id    INTEGER PRIMARY KEY,
        strategy    TEXT NOT NULL,
        params      TEXT NOT NULL,
        model       TEXT NOT NULL,
        metrics     TEXT,
        timings     TEXT,
        annotator   TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT)""",
    # append-only: a relabel or an undo adds a row and points the previous head at it
    """CREATE TABLE labels (
        label_id      INTEGER PRIMARY KEY,
        item_id       TEXT NOT NULL REFERENCES items(item_id),
        class_id      INTEGER REFERENCES classes(class_id),
        annotator     TEXT NOT NULL CHECK (length(annotator) > 0),
        created_at    TEXT NOT NULL,
        seconds       REAL CHECK (seconds IS NULL OR seconds >= 0),
        round_id      INTEGER REFERENCES rounds(round_id),
        source        TEXT NOT NULL CHECK (source IN ('human', 'accepted', 'imported', 'undo')),
        superseded_by INTEGER REFERENCES labels(label_id) DEFERRABLE INITIALLY DEFERRED,
        CHECK ((source = 'undo') = (class_id IS NULL)),
        CHECK (superseded_by IS NULL OR superseded_by > label_id))""",
    # at most one current row (head) per item
    "CREATE UNIQUE INDEX labels_head ON labels(item_id) WHERE superseded_by IS NULL",
    "CREATE INDEX labels_item ON labels(item_id, label_id)",
    "CREATE INDEX labels_annotator ON labels(annotator, item_id)",
    """CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
       BEGIN SELECT RAISE(ABORT, 'labels are append-only: rows are never deleted'); END""",
    """CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels
       WHEN OLD.superseded_by IS NOT NULL
         OR NEW.label_id IS NOT OLD.label_id OR NEW.item_id IS NOT OLD.item_id
         OR NEW.class_id IS NOT OLD.class_id OR NEW.annotator IS NOT OLD.annotator
         OR NEW.created_at IS NOT OLD.created_at OR NEW.seconds IS NOT OLD.seconds
         OR NEW.round_id IS NOT OLD.round_id OR NEW.source IS NOT OLD.source
       BEGIN SELECT RAISE(ABORT, 'labels are append-only: only superseded_by may be set, once'); END""",
    # work handed out to an annotator until expires_at (unix seconds)
    """CREATE TABLE leases (
        item_id    TEXT PRIMARY KEY REFERENCES items(item_id),
        annotator  TEXT NOT NULL,
        expires_at REAL NOT NULL)""",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {1: SCHEMA_V1}
"""version -> statements that take a store from ``version - 1`` to ``version``."""

SCHEMA_VERSION = max(MIGRATIONS)


def _version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, path: str, *, read_only: bool = False) -> int:
    """Bring the store at ``conn`` to :data:`SCHEMA_VERSION`; returns the version found on open."""
    from .. import __version__

    found = _version(conn)
    target = max(MIGRATIONS)
    if found > target:
        raise StoreError(f"{path} has schema version {found}, newer than this alwidgets understands "
                         f"({target}); upgrade alwidgets to open it.", path)
    if found == 0:
        others = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if others:
            raise StoreError(f"{path} is an SQLite file but not an alwidgets label store "
                             f"(it has tables {others[:5]}); choose another file name.", path)
    if found == target:
        return found
    if read_only:
        raise StoreReadOnlyError(f"{path} has schema version {found} and needs upgrading to {target}, "
                                 f"but it was opened read-only; open it once writable.", path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _version(conn)  # another process may have migrated while we waited for the lock
        for version in range(current + 1, target + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version(version, applied_at, alwidgets) VALUES (?, ?, ?)",
                         (version, datetime.now(timezone.utc).isoformat(timespec="microseconds"), __version__))
            conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found
