"""The label store's schema and its migrations, for SQLite and PostgreSQL.

The schema version lives in the ``schema_version`` table (when each migration
ran) and, for SQLite, also in ``PRAGMA user_version`` (checked on every open).
A migration is a list of SQL statements run in one transaction, so a store is
always at a whole version, even if the process dies half-way.

- v1: labels (append-only, supersede/undo), rounds, leases per annotator name.
- v2: every label row may carry an annotation payload (bytes + media type, e.g. a
  PNG mask), versioned with the row; the session that wrote it; source
  ``"simulated"``; leases belong to a session (a v1 lease is kept, held by the
  session ``"v1:<annotator>"``, so it still blocks everyone until it expires);
  a change counter. PostgreSQL stores start at v2.
- v3: PostgreSQL: the function ``alwidgets_submit``, which saves a whole
  ``add_labels`` call in one statement (one round trip to the server instead of
  two); SQLite: nothing changes (the version is recorded, so both back ends
  keep one numbering, and a v2 file still opens read-only).
"""
from __future__ import annotations

from datetime import datetime, timezone

from .backends import LOCK_KEY
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


_LABELS_V2_SQLITE = """CREATE TABLE labels_v2 (
        label_id      INTEGER PRIMARY KEY,
        item_id       TEXT NOT NULL REFERENCES items(item_id),
        class_id      INTEGER REFERENCES classes(class_id),
        annotator     TEXT NOT NULL CHECK (length(annotator) > 0),
        session       TEXT,
        created_at    TEXT NOT NULL,
        seconds       REAL CHECK (seconds IS NULL OR seconds >= 0),
        round_id      INTEGER REFERENCES rounds(round_id),
        source        TEXT NOT NULL CHECK (source IN ('human', 'accepted', 'imported', 'simulated', 'undo')),
        payload       BLOB,
        media_type    TEXT,
        superseded_by INTEGER REFERENCES labels_v2(label_id) DEFERRABLE INITIALLY DEFERRED,
        CHECK (source != 'undo' OR (class_id IS NULL AND payload IS NULL)),
        CHECK (source = 'undo' OR class_id IS NOT NULL OR payload IS NOT NULL),
        CHECK ((payload IS NULL) = (media_type IS NULL)),
        CHECK (superseded_by IS NULL OR superseded_by > label_id))"""

_LABEL_TRIGGERS_SQLITE = (
    """CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
       BEGIN SELECT RAISE(ABORT, 'labels are append-only: rows are never deleted'); END""",
    """CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels
       WHEN OLD.superseded_by IS NOT NULL
         OR NEW.label_id IS NOT OLD.label_id OR NEW.item_id IS NOT OLD.item_id
         OR NEW.class_id IS NOT OLD.class_id OR NEW.annotator IS NOT OLD.annotator
         OR NEW.session IS NOT OLD.session OR NEW.created_at IS NOT OLD.created_at
         OR NEW.seconds IS NOT OLD.seconds OR NEW.round_id IS NOT OLD.round_id
         OR NEW.source IS NOT OLD.source OR NEW.payload IS NOT OLD.payload
         OR NEW.media_type IS NOT OLD.media_type
       BEGIN SELECT RAISE(ABORT, 'labels are append-only: only superseded_by may be set, once'); END""",
)

# SQLite cannot change a CHECK constraint in place: the labels and leases tables are
# rebuilt (https://www.sqlite.org/lang_altertable.html#otheralter); foreign keys are
# switched off around the migration and checked before it commits.
SQLITE_V2 = (
    "DROP TRIGGER labels_no_delete",
    "DROP TRIGGER labels_no_update",
    _LABELS_V2_SQLITE,
    """INSERT INTO labels_v2(label_id, item_id, class_id, annotator, session, created_at, seconds, round_id,
                             source, payload, media_type, superseded_by)
       SELECT label_id, item_id, class_id, annotator, NULL, created_at, seconds, round_id, source, NULL, NULL,
              superseded_by FROM labels ORDER BY label_id""",
    "DROP TABLE labels",
    "ALTER TABLE labels_v2 RENAME TO labels",
    "CREATE UNIQUE INDEX labels_head ON labels(item_id) WHERE superseded_by IS NULL",
    "CREATE INDEX labels_item ON labels(item_id, label_id)",
    "CREATE INDEX labels_annotator ON labels(annotator, item_id)",
    *_LABEL_TRIGGERS_SQLITE,
    # a lease is held by a session; after_label is the newest label row when it was granted,
    # so "relabelled by someone else since shown" is label_id > after_label (no clocks compared)
    """CREATE TABLE leases_v2 (
        item_id     TEXT NOT NULL REFERENCES items(item_id),
        session     TEXT NOT NULL CHECK (length(session) > 0),
        annotator   TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        after_label INTEGER NOT NULL,
        PRIMARY KEY (item_id, session))""",
    """INSERT INTO leases_v2(item_id, session, annotator, expires_at, after_label)
       SELECT item_id, 'v1:' || annotator, annotator, expires_at,
              (SELECT COALESCE(MAX(label_id), 0) FROM labels) FROM leases""",
    "DROP TABLE leases",
    "ALTER TABLE leases_v2 RENAME TO leases",
    "CREATE INDEX leases_session ON leases(session)",
    "CREATE TABLE changes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
    "INSERT INTO changes(id, n) VALUES (1, 0)",
)

# PostgreSQL: the same tables and rules at v2 (DOUBLE PRECISION where SQLite has REAL,
# BYTEA for BLOB, a PL/pgSQL trigger for append-only history).
POSTGRES_V2 = (
    """CREATE TABLE schema_version (
        version    INTEGER PRIMARY KEY,
        applied_at TEXT NOT NULL,
        alwidgets  TEXT NOT NULL)""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE pools (
        pool_id     BIGINT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        n_items     BIGINT NOT NULL,
        match       TEXT NOT NULL CHECK (match IN ('fingerprint', 'ids')),
        attached_at TEXT NOT NULL)""",
    """CREATE TABLE items (
        item_id TEXT PRIMARY KEY CHECK (length(item_id) > 0),
        in_pool INTEGER NOT NULL DEFAULT 1 CHECK (in_pool IN (0, 1)))""",
    """CREATE TABLE classes (
        class_id BIGINT PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0))""",
    """CREATE TABLE rounds (
        round_id    BIGINT PRIMARY KEY,
        strategy    TEXT NOT NULL,
        params      TEXT NOT NULL,
        model       TEXT NOT NULL,
        metrics     TEXT,
        timings     TEXT,
        annotator   TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT)""",
    """CREATE TABLE labels (
        label_id      BIGINT PRIMARY KEY,
        item_id       TEXT NOT NULL REFERENCES items(item_id),
        class_id      BIGINT REFERENCES classes(class_id),
        annotator     TEXT NOT NULL CHECK (length(annotator) > 0),
        session       TEXT,
        created_at    TEXT NOT NULL,
        seconds       DOUBLE PRECISION CHECK (seconds IS NULL OR seconds >= 0),
        round_id      BIGINT REFERENCES rounds(round_id),
        source        TEXT NOT NULL CHECK (source IN ('human', 'accepted', 'imported', 'simulated', 'undo')),
        payload       BYTEA,
        media_type    TEXT,
        superseded_by BIGINT REFERENCES labels(label_id) DEFERRABLE INITIALLY DEFERRED,
        CHECK (source <> 'undo' OR (class_id IS NULL AND payload IS NULL)),
        CHECK (source = 'undo' OR class_id IS NOT NULL OR payload IS NOT NULL),
        CHECK ((payload IS NULL) = (media_type IS NULL)),
        CHECK (superseded_by IS NULL OR superseded_by > label_id))""",
    "CREATE UNIQUE INDEX labels_head ON labels(item_id) WHERE superseded_by IS NULL",
    "CREATE INDEX labels_item ON labels(item_id, label_id)",
    "CREATE INDEX labels_annotator ON labels(annotator, item_id)",
    """CREATE FUNCTION alwidgets_labels_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'labels are append-only: rows are never deleted';
      END IF;
      IF OLD.superseded_by IS NOT NULL
         OR NEW.label_id IS DISTINCT FROM OLD.label_id OR NEW.item_id IS DISTINCT FROM OLD.item_id
         OR NEW.class_id IS DISTINCT FROM OLD.class_id OR NEW.annotator IS DISTINCT FROM OLD.annotator
         OR NEW.session IS DISTINCT FROM OLD.session OR NEW.created_at IS DISTINCT FROM OLD.created_at
         OR NEW.seconds IS DISTINCT FROM OLD.seconds OR NEW.round_id IS DISTINCT FROM OLD.round_id
         OR NEW.source IS DISTINCT FROM OLD.source OR NEW.payload IS DISTINCT FROM OLD.payload
         OR NEW.media_type IS DISTINCT FROM OLD.media_type THEN
        RAISE EXCEPTION 'labels are append-only: only superseded_by may be set, once';
      END IF;
      RETURN NEW;
    END $$""",
    """CREATE TRIGGER labels_append_only BEFORE UPDATE OR DELETE ON labels
       FOR EACH ROW EXECUTE FUNCTION alwidgets_labels_append_only()""",
    """CREATE TRIGGER labels_no_truncate BEFORE TRUNCATE ON labels
       FOR EACH STATEMENT EXECUTE FUNCTION alwidgets_labels_append_only()""",
    """CREATE TABLE leases (
        item_id     TEXT NOT NULL REFERENCES items(item_id),
        session     TEXT NOT NULL CHECK (length(session) > 0),
        annotator   TEXT NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL,
        after_label BIGINT NOT NULL,
        PRIMARY KEY (item_id, session))""",
    "CREATE INDEX leases_session ON leases(session)",
    "CREATE TABLE changes (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL)",
    "INSERT INTO changes(id, n) VALUES (1, 0)",
)

# PostgreSQL v3: one add_labels() call as one statement, in the common case where every record becomes a
# new row: the items are in the pool, the classes and rounds exist, no lease of another session and no
# relabelling since shown stands in the way, and no record equals its item's current label in a way that
# add_labels answers without writing (skip_unchanged, or a session's own resubmit). Anything else returns
# NULL having written nothing, and LabelStore takes its general path (which decides and words every error).
# When it writes, it writes exactly what the general path would: the same write lock, clock, label ids
# (consecutive, in the order given), supersede pointers, ended leases and change counter. Autocommit runs
# the call as its own transaction: the server answers only after COMMIT.
POSTGRES_V3 = (
    f"""CREATE FUNCTION alwidgets_submit(
        p_session TEXT, p_skip_unchanged BOOLEAN, p_items TEXT[], p_labels TEXT[], p_seconds DOUBLE PRECISION[],
        p_rounds BIGINT[], p_sources TEXT[], p_annotators TEXT[], p_payloads BYTEA[], p_media_types TEXT[])
    RETURNS BIGINT LANGUAGE plpgsql AS $$
    DECLARE
      v_now  DOUBLE PRECISION;
      v_last BIGINT;
    BEGIN
      PERFORM pg_advisory_xact_lock({int(LOCK_KEY)});  -- the write lock of every write transaction
      v_now := EXTRACT(EPOCH FROM clock_timestamp())::float8;
      IF cardinality(p_items) IS DISTINCT FROM (SELECT count(DISTINCT x) FROM unnest(p_items) x)
         OR EXISTS (
           SELECT 1
             FROM unnest(p_items, p_labels, p_rounds, p_payloads) AS r(item_id, label, round_id, payload)
             LEFT JOIN items i ON i.item_id = r.item_id AND i.in_pool = 1 AND i.item_id = ANY(p_items)
             LEFT JOIN classes c ON c.name = r.label
             LEFT JOIN rounds o ON o.round_id = r.round_id AND o.round_id = ANY(p_rounds)
             LEFT JOIN labels h ON h.item_id = r.item_id AND h.superseded_by IS NULL AND h.item_id = ANY(p_items)
            WHERE i.item_id IS NULL                                  -- not in the pool
               OR (r.label IS NULL AND r.payload IS NULL)            -- not a label
               OR (r.label IS NOT NULL AND c.class_id IS NULL)       -- an unknown class
               OR (r.round_id IS NOT NULL AND o.round_id IS NULL)    -- an unknown round
               OR (h.source <> 'undo' AND h.class_id IS NOT DISTINCT FROM c.class_id
                   AND h.payload IS NOT DISTINCT FROM r.payload      -- equal to the current label, and
                   AND (p_skip_unchanged OR h.session = p_session))  -- skipped or answered with its id
               OR EXISTS (SELECT 1 FROM leases l
                           WHERE p_session IS NOT NULL AND l.item_id = r.item_id
                             AND ((l.session <> p_session AND l.expires_at > v_now)  -- leased to another session
                                  OR (l.session = p_session AND h.label_id > l.after_label
                                      AND h.session IS DISTINCT FROM p_session))))   -- relabelled since shown
      THEN
        RETURN NULL;
      END IF;
      SELECT COALESCE(MAX(label_id), 0) INTO v_last FROM labels;
      UPDATE labels AS h SET superseded_by = v_last + r.k
        FROM unnest(p_items) WITH ORDINALITY AS r(item_id, k)
       WHERE h.item_id = r.item_id AND h.superseded_by IS NULL AND h.item_id = ANY(p_items);
      INSERT INTO labels(label_id, item_id, class_id, annotator, session, created_at, seconds, round_id, source,
                         payload, media_type)
      SELECT v_last + r.k, r.item_id, c.class_id, r.annotator, p_session,
             to_char(to_timestamp(v_now) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
             r.seconds, r.round_id, r.source, r.payload, r.media_type
        FROM unnest(p_items, p_labels, p_seconds, p_rounds, p_sources, p_annotators, p_payloads, p_media_types)
             WITH ORDINALITY AS r(item_id, label, seconds, round_id, source, annotator, payload, media_type, k)
        LEFT JOIN classes c ON c.name = r.label;
      UPDATE leases SET expires_at = v_now WHERE expires_at > v_now AND item_id = ANY(p_items);
      UPDATE changes SET n = n + 1 WHERE id = 1;
      RETURN v_last + 1;
    END $$""",
)
# (each join is also restricted by "= ANY(the call's ids)": an index lookup per id, whatever plan the
# function's cached statements get from statistics that may predate most of the table's rows)

MIGRATIONS: dict[int, tuple[str, ...]] = {1: SCHEMA_V1, 2: SQLITE_V2, 3: ()}
"""SQLite: version -> statements that take a store from ``version - 1`` to ``version``."""

POSTGRES_MIGRATIONS: dict[int, tuple[str, ...]] = {2: POSTGRES_V2, 3: POSTGRES_V3}
"""PostgreSQL: the same; a new database is created at version 2 directly, then upgraded."""

SCHEMA_VERSION = max(MIGRATIONS)
assert SCHEMA_VERSION == max(POSTGRES_MIGRATIONS)


def migrate(db, *, read_only: bool = False) -> int:
    """Bring the store behind ``db`` (a back end of :mod:`.backends`) to the newest version.

    Returns the version found on open. Refuses a newer store, a foreign database,
    and a store that needs upgrading but was opened read-only.
    """
    from .. import __version__

    migrations = MIGRATIONS if db.kind == "sqlite" else POSTGRES_MIGRATIONS
    target = max(migrations)
    found = db.schema_version()
    if found > target:
        raise StoreError(f"{db.path} has schema version {found}, newer than this alwidgets understands "
                         f"({target}); upgrade alwidgets to open it.", db.path)
    if found == 0:
        others = db.table_names()
        if others:
            raise StoreError(f"{db.path} is {db.describe} but not an alwidgets label store "
                             f"(it has tables {others[:5]}); choose another {db.noun}.", db.path)
    if found == target:
        return found
    if read_only and not any(migrations.get(v) for v in range(found + 1, target + 1)):
        return found  # the newer versions change nothing on this back end: readable as it is
    if read_only:
        raise StoreReadOnlyError(f"{db.path} has schema version {found} and needs upgrading to {target}, "
                                 f"but it was opened read-only; open it once writable.", db.path)
    db.begin_migration()
    try:
        current = db.schema_version()  # another process may have migrated while we waited for the lock
        for version in sorted(v for v in migrations if current < v <= target):
            for statement in migrations[version]:
                db.execute(statement)
            db.execute("INSERT INTO schema_version(version, applied_at, alwidgets) VALUES (?, ?, ?)",
                       (version, datetime.now(timezone.utc).isoformat(timespec="microseconds"), __version__))
            db.set_schema_version(version)
        db.end_migration()
    except BaseException:
        db.abort_migration()
        raise
    return found
