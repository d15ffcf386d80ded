"""LabelStore: every label, undo, payload, round and lease of one pool, in SQLite or PostgreSQL.

Why SQLite by default: a single file next to the notebook, transactions (a
label is acknowledged only after COMMIT), durability against a killed process
(WAL journal, ``synchronous=FULL``), safe sharing by several kernels on one
machine, and readable by any tool. A team on several machines points every
session at one PostgreSQL database instead (``"postgresql://..."``): the same
tables, rules and guarantees (see :mod:`.backends` and ``docs/labels.md``).

History is append-only: a relabel or an undo adds a row and marks the previous
one ``superseded_by`` it; triggers refuse anything else. Leases belong to a
*session* (one per :class:`~alwidgets.Session`), not to an annotator name.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import math
import numbers
import threading
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .._files import atomic_write
from .._validation import duplicates
from .backends import open_backend
from .errors import LeaseConflictError, StoreError, StoreMismatchError
from .schema import migrate

SOURCES = ("human", "accepted", "imported", "simulated")
"""Where a label came from: typed by a person, an accepted model suggestion, an import, or a simulated oracle."""

LABEL_COLUMNS = ["item_id", "label", "annotator", "created_at", "seconds", "round", "source"]
"""Columns of :meth:`LabelStore.labels_df`; ``history=True`` adds ``label_id, superseded_by, session, media_type``."""

HISTORY_COLUMNS = LABEL_COLUMNS + ["label_id", "superseded_by", "session", "media_type"]

MAX_PAYLOAD_BYTES = 64 * 2**20
"""Largest annotation payload one label row may carry (a PNG mask is a few kB)."""

_RECORD_KEYS = {"item_id", "label", "seconds", "round", "source", "annotator", "payload", "media_type"}

# Columns written in bulk, with their PostgreSQL types (each is sent as one array there; see backends.py)
_LABEL_ROW = (("label_id", "bigint"), ("item_id", "text"), ("class_id", "bigint"), ("annotator", "text"),
              ("session", "text"), ("created_at", "text"), ("seconds", "float8"), ("round_id", "bigint"),
              ("source", "text"), ("payload", "bytea"), ("media_type", "text"), ("superseded_by", "bigint"))
_LEASE_ROW = (("item_id", "text"), ("session", "text"), ("annotator", "text"), ("expires_at", "float8"),
              ("after_label", "bigint"))


def pool_fingerprint(ids) -> str:
    """SHA-256 of the sorted item ids: the same set of ids gives the same pool, in any order."""
    h = hashlib.sha256()
    for item_id in sorted(ids):
        h.update(item_id.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class AttachReport:
    """What :meth:`LabelStore.attach_pool` found.

    ``orphaned`` lists labelled ids that are not in the attached pool: their
    labels are kept in the store (and in ``labels_df(history=True)``) but not
    returned by ``current_labels()``.
    """

    fingerprint: str
    n_items: int
    n_labelled: int
    new_classes: list = field(default_factory=list)
    orphaned: list = field(default_factory=list)
    matched_by: str = "fingerprint"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def _default_annotator() -> str:
    try:
        return getpass.getuser() or "anonymous"
    except Exception:  # no user database entry (containers)
        return "anonymous"


def _text_problem(value, *, blank_ok: bool = False) -> str | None:
    """Why ``value`` cannot be a name in the store (None when it can); item ids may be blank (``blank_ok``)."""
    if not isinstance(value, str) or not (value if blank_ok else value.strip()):
        return "must be a non-empty string"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_name(value, what: str) -> str:
    problem = _text_problem(value)
    if problem:
        raise ValueError(f"{what} {problem}, got {_short(value)}")
    return value


def _listing(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(_short(v, 60) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _check_ids(ids, *, allow_empty: bool = False, what: str = "ids") -> list[str]:
    """``ids`` as a list of valid item id strings (ValueError naming the bad ones)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a list of item id strings, not the single string {_short(ids)}")
    if isinstance(ids, Mapping):
        raise TypeError(f"{what} must be a list of item id strings, not a {type(ids).__name__}")
    try:
        ids = list(ids)
    except TypeError:
        raise TypeError(f"{what} must be a list of item id strings, got {type(ids).__name__}") from None
    if not ids and not allow_empty:
        raise ValueError(f"{what} is empty: a pool needs at least one item")
    bad = [k for k, i in enumerate(ids) if _text_problem(i, blank_ok=True)]
    if bad:
        raise ValueError(f"item ids must be non-empty strings; positions {_listing(bad)} are not "
                         f"(first: {_short(ids[bad[0]])}: {_text_problem(ids[bad[0]], blank_ok=True)})")
    return ids


def check_classes(classes) -> list[str]:
    """Return ``classes`` as a list of unique, non-empty class names (ValueError naming the bad ones)."""
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a list of names, not the single string {_short(classes)}")
    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty: give at least one class name")
    bad = [c for c in classes if _text_problem(c)]
    if bad:
        raise ValueError(f"class names must be non-empty strings; got {_listing(bad)} "
                         f"({_short(bad[0], 40)} {_text_problem(bad[0])})")
    dups = sorted({c for c in classes if classes.count(c) > 1})
    if dups:
        raise ValueError(f"duplicate class names {_listing(dups)}")
    return classes


def _seconds(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: seconds must be a number or None, got {_short(value)}")
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value) or value < 0:
        raise ValueError(f"{where}: seconds must be finite and >= 0, got {value!r}")
    return value


def _json(obj, what: str) -> str:
    def default(o):
        if hasattr(o, "dtype") and hasattr(o, "tolist"):  # numpy scalars and arrays
            return o.tolist()
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=repr)
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        text = json.dumps(dict(obj), default=default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None
    return text


class LabelStore:
    """Append-only label history of one pool, in an SQLite file or a PostgreSQL database.

    Sessions and leases: every :class:`~alwidgets.Session` passes its own id
    (``session=``) to :meth:`lease`, :meth:`release`, :meth:`add_labels` and
    :meth:`undo`; items leased to one session are never handed to another
    while the lease lives, and a session's write is refused with
    :class:`LeaseConflictError` for items another session holds or relabelled
    since this one was shown them.

    Parameters
    ----------
    path : str or Path
        The store's file (created if missing; its folder must exist),
        ``":memory:"`` for a throw-away store (asked for explicitly), or a
        PostgreSQL connection string ``"postgresql://user@host:port/db"``
        (needs ``pip install 'alwidgets[postgres]'``).
    annotator : str, optional
        Name recorded with labels, rounds and leases; defaults to the OS user.
    timeout : float
        Seconds to wait for another writer's lock before :class:`StoreLockedError`
        (and, on PostgreSQL, to connect).
    read_only : bool
        Open without ever writing (e.g. to export a store another kernel is
        using, or a backup in a read-only folder).

    Examples
    --------
    >>> from alwidgets import LabelStore
    >>> with LabelStore(":memory:", annotator="ana") as store:
    ...     _ = store.attach_pool(["a", "b", "c"], ["cat", "dog"])
    ...     _ = store.add_labels([{"item_id": "a", "label": "cat", "seconds": 2.5}])
    ...     _ = store.add_labels([{"item_id": "a", "label": "dog"}])   # a correction adds a row
    ...     _ = store.undo("a")                                          # so does an undo
    ...     _ = store.add_labels([{"item_id": "b", "label": "dog"}])
    ...     store.current_labels(), len(store.labels_df(history=True))
    ({'b': 'dog'}, 4)

    Two sessions on one store:

    >>> with LabelStore(":memory:") as store:
    ...     _ = store.attach_pool(["a", "b", "c"], ["cat", "dog"])
    ...     store.lease(["a", "b"], session="kernel-1"), store.lease(["b", "c"], session="kernel-2")
    (['a', 'b'], ['c'])
    """

    def __init__(self, path, *, annotator=None, timeout: float = 10.0, read_only: bool = False):
        if path is None:
            raise TypeError("path is required: a file such as 'labels.db' (or ':memory:' for a throw-away store)")
        self.annotator = _check_name(_default_annotator() if annotator is None else annotator, "annotator")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0 <= timeout < math.inf:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._db = None
        db = open_backend(path, timeout=self.timeout, read_only=self.read_only)
        self.path, self.backend = db.path, db.kind
        try:
            migrate(db, read_only=self.read_only)
        except db.errors as e:
            err = db.translate(e, "opening")
            db.close()
            raise err from e
        except BaseException:
            db.close()
            raise
        self._db = db

    # ------------------------------------------------------------------ plumbing
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); every acknowledged label is already committed."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        if self._db is None:
            return f"LabelStore({self.path!r}, closed)"
        n_items = self._scalar("SELECT COUNT(*) FROM items WHERE in_pool = 1")
        n_labelled = self._scalar(
            "SELECT COUNT(*) FROM labels l JOIN items i USING (item_id) "
            "WHERE l.superseded_by IS NULL AND l.source <> 'undo' AND i.in_pool = 1")
        return (f"LabelStore({self.path!r}, items={n_items}, labelled={n_labelled}, "
                f"classes={len(self.classes)}, annotator={self.annotator!r})")

    def _backend(self):
        if self._db is None:
            raise StoreError(f"the label store {self.path} is closed", self.path)
        return self._db

    def _connection(self):
        """The raw driver connection (sqlite3 or psycopg), for tests and diagnostics."""
        db = self._backend()
        db.ensure()
        return db.conn

    @contextmanager
    def _transaction(self, action: str):
        """One write transaction holding the store's write lock: COMMIT, or roll back and raise."""
        with self._lock:
            db = self._backend()
            self._start_write(db, action, db.begin)
            db.deferred = []  # (method of db, args): the writes, run with COMMIT
            try:
                yield db
                with db.pipeline():  # the writes, the change counter and COMMIT: one round trip on PostgreSQL
                    for method, args in db.deferred:
                        method(*args)
                    db.execute("UPDATE changes SET n = n + 1 WHERE id = 1")
                    db.commit()
            except BaseException as e:
                db.rollback()
                if isinstance(e, db.errors):
                    raise db.translate(e, action) from e
                raise

    @staticmethod
    def _start_write(db, action: str, start) -> None:
        """``db.ensure()`` then ``start()``; a connection that died while idle (nothing was sent) is
        re-opened once."""
        for attempt in (0, 1):
            try:
                db.ensure()
                start()
                return
            except db.errors as e:
                if attempt == 0 and db.is_disconnect(e):
                    db.translate(e, action)  # closes it; ensure() opens a new one
                    continue
                db.rollback()
                raise db.translate(e, action) from e

    def _query(self, sql: str, params=(), action: str = "reading"):
        """Run a read; on PostgreSQL a lost connection is re-opened and the read retried once."""
        with self._lock:
            db = self._backend()
            for attempt in (0, 1):
                try:
                    db.ensure()
                    return db.execute(sql, params).fetchall()
                except db.errors as e:
                    if attempt == 0 and db.is_disconnect(e):
                        db.translate(e, action)  # closes the dead connection; ensure() opens a new one
                        continue
                    raise db.translate(e, action) from e

    def _scalar(self, sql: str, params=()):
        return self._query(sql, params)[0][0]

    @staticmethod
    def _known_ids(db, ids) -> set[str]:
        """The subset of ``ids`` that are items of the attached pool."""
        ids = list(dict.fromkeys(ids))
        found = set()
        for cond, params in db.in_list("item_id", ids):
            found.update(r[0] for r in db.execute(f"SELECT item_id FROM items WHERE in_pool = 1 AND {cond}", params))
        return found

    @staticmethod
    def _require_known(ids, snap, doing: str) -> None:
        unknown = [i for i in dict.fromkeys(ids) if i not in snap["known"]]
        if unknown:
            raise ValueError(f"{doing}: item ids not in the pool: {_listing(unknown)}; nothing was written")

    @staticmethod
    def _class_ids(db) -> dict[str, int]:
        return {name: cid for cid, name in db.execute("SELECT class_id, name FROM classes ORDER BY class_id")}

    @staticmethod
    def _meta(db, key: str):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(db, key: str, value) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, str(value)))

    @staticmethod
    def _snapshot(db, items, *, leases=False, rounds=()) -> dict:
        """Everything a write needs to decide, read in one pipeline (one round trip on PostgreSQL):
        ``known`` ids of ``items`` in the pool, ``class_ids``, the ``rounds`` that exist, the items'
        current rows (``heads``: label_id, class_id, session, payload, media_type, source), with
        ``leases=True`` every lease row of the items, live or not (item, session, annotator,
        expires_at, after_label), and ``last``, the newest label row id."""
        items = list(dict.fromkeys(items))
        queries = [("SELECT class_id, name FROM classes ORDER BY class_id", ()),
                   ("SELECT COALESCE(MAX(label_id), 0) FROM labels", ())]
        rounds = sorted(set(rounds))
        if rounds:
            queries += [(f"SELECT round_id FROM rounds WHERE {cond}", params)
                        for cond, params in db.in_list("round_id", rounds, "bigint")]
        k = len(queries)
        chunks = list(db.in_list("item_id", items))
        for cond, params in chunks:
            queries.append((f"SELECT item_id FROM items WHERE in_pool = 1 AND {cond}", params))
            queries.append(("SELECT item_id, label_id, class_id, session, payload, media_type, source FROM labels "
                            f"WHERE superseded_by IS NULL AND {cond}", params))
            if leases:
                queries.append((f"SELECT item_id, session, annotator, expires_at, after_label FROM leases WHERE {cond}",
                                params))
        with db.pipeline():  # results are read after the block: fetching inside it would cost a round trip more
            cursors = [db.execute(sql, params) for sql, params in queries]
        results = [c.fetchall() for c in cursors]
        snap = {"class_ids": {name: cid for cid, name in results[0]}, "last": int(results[1][0][0]),
                "rounds": {r[0] for rows in results[2:k] for r in rows}, "known": set(), "heads": {},
                "leases": []}
        per = 3 if leases else 2
        for c in range(len(chunks)):
            block = results[k + per * c: k + per * (c + 1)]
            snap["known"].update(r[0] for r in block[0])
            for row in block[1]:
                snap["heads"][row[0]] = (row[1], row[2], row[3], None if row[4] is None else bytes(row[4]),
                                         row[5], row[6])
            if leases:
                snap["leases"] += [tuple(r) for r in block[2]]
        return snap

    # ------------------------------------------------------------------ pool and classes
    @property
    def classes(self) -> list[str]:
        """Class names in their stored order (indices used by the session)."""
        return [r[0] for r in self._query("SELECT name FROM classes ORDER BY class_id")]

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the attached pool, or None before the first :meth:`attach_pool`."""
        rows = self._query("SELECT value FROM meta WHERE key = 'pool_fingerprint'")
        return rows[0][0] if rows else None

    @property
    def item_ids(self) -> list[str]:
        """Ids of the attached pool's items (sorted)."""
        return sorted(r[0] for r in self._query("SELECT item_id FROM items WHERE in_pool = 1"))

    @property
    def changes(self) -> int:
        """A counter that grows with every committed write, by any process or connection.

        Cheap to read (one tiny query): cache :meth:`current_labels` and read it
        again only when ``changes`` moved.

        >>> with LabelStore(":memory:") as s:
        ...     _ = s.attach_pool(["a"], ["x"]); before = s.changes
        ...     _ = s.add_labels([{"item_id": "a", "label": "x"}])
        ...     s.changes > before
        True
        """
        return int(self._scalar("SELECT n FROM changes WHERE id = 1"))

    def attach_pool(self, ids, classes=None, *, match: str = "fingerprint") -> AttachReport:
        """Bind the store to a pool: record its ids and classes the first time, check them later.

        A store opened against a different set of ids raises
        :class:`StoreMismatchError`; ``match="ids"`` attaches anyway by matching
        item ids (labels of ids missing from the pool are kept and reported in
        ``orphaned``). ``classes`` may append new names, never rename, drop or
        reorder stored ones; ``None`` keeps the stored classes.
        """
        if match not in ("fingerprint", "ids"):
            raise ValueError(f"match must be 'fingerprint' or 'ids', got {match!r}")
        ids = _check_ids(ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate item ids {_listing(duplicates(ids))}")
        classes = None if classes is None else check_classes(classes)
        fp = pool_fingerprint(ids)
        if self.fingerprint == fp and (classes is None or classes == self.classes):
            heads = self._query("SELECT l.item_id, i.in_pool FROM labels l JOIN items i USING (item_id) "
                                "WHERE l.superseded_by IS NULL AND l.source <> 'undo'")
            return self._attach_report(fp, ids, heads, [], "fingerprint")  # attached already: nothing to write
        with self._transaction("attaching the pool") as db:
            stored_fp = self._meta(db, "pool_fingerprint")
            if stored_fp is None:
                if classes is None:
                    raise ValueError("classes are needed the first time a pool is attached to a store")
            elif stored_fp != fp:
                n_stored = db.execute("SELECT COUNT(*) FROM items WHERE in_pool = 1").fetchone()[0]
                if match == "fingerprint":
                    common = len(self._known_ids(db, ids))
                    raise StoreMismatchError(
                        f"the label store {self.path} belongs to a different pool: it has {n_stored} items "
                        f"(fingerprint {stored_fp[:12]}), this pool has {len(ids)} items (fingerprint {fp[:12]}), "
                        f"{common} ids in common. Use another store file for this pool, or attach by matching "
                        f"item ids with match='ids' (labels of ids missing from this pool are kept and reported).",
                        self.path)
                db.execute("UPDATE items SET in_pool = 0 WHERE in_pool = 1")
            if stored_fp != fp:  # a new pool, or another one attached by ids
                db.insert_rows("items", (("item_id", "text"), ("in_pool", "integer")), [(i, 1) for i in ids],
                               "ON CONFLICT(item_id) DO UPDATE SET in_pool = 1")
            new_classes = self._extend_classes(db, classes)
            if stored_fp != fp:
                self._set_meta(db, "pool_fingerprint", fp)
                self._set_meta(db, "n_items", len(ids))
                db.execute("INSERT INTO pools(pool_id, fingerprint, n_items, match, attached_at) "
                           "VALUES ((SELECT COALESCE(MAX(pool_id), 0) + 1 FROM pools), ?, ?, ?, ?)",
                           (fp, len(ids), "fingerprint" if stored_fp is None else match, _iso(db.now())))
            heads = db.execute(
                "SELECT l.item_id, i.in_pool FROM labels l JOIN items i USING (item_id) "
                "WHERE l.superseded_by IS NULL AND l.source <> 'undo'").fetchall()
        return self._attach_report(fp, ids, heads, new_classes,
                                   match if stored_fp not in (None, fp) else "fingerprint")

    def _attach_report(self, fp, ids, heads, new_classes, matched_by) -> AttachReport:
        orphaned = sorted(i for i, in_pool in heads if not in_pool)
        report = AttachReport(fingerprint=fp, n_items=len(ids), n_labelled=len(heads) - len(orphaned),
                              new_classes=new_classes, orphaned=orphaned, matched_by=matched_by)
        if orphaned:
            warnings.warn(f"{len(orphaned)} labelled items of {self.path} are not in this pool "
                          f"({_listing(orphaned, 5)}); their labels are kept in the store but not used.",
                          UserWarning, stacklevel=3)
        return report

    def _extend_classes(self, db, classes) -> list[str]:
        if classes is None:
            return []
        stored = list(self._class_ids(db))
        if classes[:len(stored)] != stored:
            missing = [c for c in stored if c not in classes]
            if missing:
                raise StoreMismatchError(
                    f"the label store {self.path} has classes {_listing(missing)} that are not in classes=; "
                    f"classes can only be appended, never renamed or removed (labels refer to them). "
                    f"Stored classes: {stored}.", self.path)
            raise StoreMismatchError(
                f"classes are in a different order than in the label store {self.path}: stored {stored}, "
                f"given {classes}; keep the stored order and append new classes at the end.", self.path)
        new = classes[len(stored):]
        for name in new:
            db.execute("INSERT INTO classes(class_id, name) "
                       "VALUES ((SELECT COALESCE(MAX(class_id), 0) + 1 FROM classes), ?)", (name,))
        return new

    # ------------------------------------------------------------------ labels
    def _records(self, records) -> list[tuple]:
        """Validate ``records`` (no database needed); ValueError listing every problem."""
        if isinstance(records, Mapping):
            records = [records]
        elif hasattr(records, "to_dict") and hasattr(records, "columns"):
            records = records.to_dict("records")
        elif isinstance(records, (str, bytes)) or not hasattr(records, "__iter__"):
            raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
        rows, problems = [], []
        for k, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                problems.append(f"record {k} is not a dict: {_short(rec)}")
                continue
            extra = set(rec) - _RECORD_KEYS
            if extra:
                problems.append(f"record {k} has unknown keys {_listing(sorted(map(str, extra)))} "
                                f"(allowed: {sorted(_RECORD_KEYS)})")
            item_id, label = rec.get("item_id"), rec.get("label")
            payload, media_type = rec.get("payload"), rec.get("media_type")
            if _text_problem(item_id, blank_ok=True):
                problems.append(f"record {k}: item_id {_text_problem(item_id, blank_ok=True)}, got {_short(item_id)}")
            if payload is not None:
                if not isinstance(payload, (bytes, bytearray, memoryview)):
                    problems.append(f"record {k}: payload must be bytes, got {type(payload).__name__}")
                    payload = None
                else:
                    payload = bytes(payload)
                    if len(payload) > MAX_PAYLOAD_BYTES:
                        problems.append(f"record {k}: payload of {len(payload)} bytes is larger than "
                                        f"{MAX_PAYLOAD_BYTES} bytes")
                if _text_problem(media_type) or "/" not in str(media_type):
                    problems.append(f"record {k}: a payload needs a media_type such as 'image/png', "
                                    f"got {_short(media_type)}")
            elif media_type is not None:
                problems.append(f"record {k}: media_type {_short(media_type)} given without a payload")
            if label is None and payload is None:
                problems.append(f"record {k}: label must be a class name (or give a payload), got None")
            elif label is not None and _text_problem(label):
                problems.append(f"record {k}: label must be a class name, got {_short(label)} "
                                f"(it {_text_problem(label).replace('must be', 'is not')})")
            source = rec.get("source") or "human"
            if source not in SOURCES:
                problems.append(f"record {k}: source must be one of {SOURCES}, got {_short(source)}")
            annotator = rec.get("annotator") or self.annotator
            if _text_problem(annotator):
                problems.append(f"record {k}: annotator {_text_problem(annotator)}, got {_short(annotator)}")
            rnd = rec.get("round")
            if rnd is not None and (isinstance(rnd, bool) or not isinstance(rnd, numbers.Integral)):
                problems.append(f"record {k}: round must be an int from start_round() or None, got {_short(rnd)}")
            try:
                seconds = _seconds(rec.get("seconds"), f"record {k}")
            except ValueError as e:
                problems.append(str(e))
                seconds = None
            rows.append((item_id, label, seconds, None if rnd is None else int(rnd), source, annotator,
                         payload, media_type if payload is not None else None))
        if problems:
            raise ValueError("cannot save labels, nothing was written:\n  " + "\n  ".join(problems[:20])
                             + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""))
        return rows

    def add_labels(self, records, *, session: str | None = None, skip_unchanged: bool = False) -> list:
        """Save labels in one transaction; returns their row ids only after COMMIT.

        ``records`` is an iterable of dicts ``{item_id, label, seconds=None,
        round=None, source="human"|"accepted"|"imported"|"simulated",
        annotator=None, payload=None, media_type=None}`` (``label`` is a class
        name; ``payload`` optional bytes such as a PNG mask, with its
        ``media_type``; a record may carry a payload and ``label=None``).
        Everything is validated first: unknown ids, classes or rounds raise
        ValueError naming them, and nothing is written.

        ``session`` (the writing session's id) is recorded on each row and
        enforces the leases: if any item is leased to another live session, or
        its current label was written by another session after this session's
        lease on it was granted (relabelled since shown), :class:`LeaseConflictError`
        is raised *before* anything is written; its ``conflicts`` maps those
        ids to the reason, so the caller can retry without them. A record equal
        to the current label written by the same session is not stored again
        (its existing row id is returned): resubmitting after a lost
        acknowledgement is safe.

        ``skip_unchanged=True`` skips records equal to the item's current label
        (their id is ``None``), as imports do.
        """
        rows = self._records(records)
        if session is not None:
            session = _check_name(session, "session")
        if not rows:
            return []
        ids = self._submit_in_one_statement(rows, session, skip_unchanged)
        if ids is not None:
            return ids
        with self._transaction("saving labels") as db:
            items = [r[0] for r in rows]
            snap = self._snapshot(db, items, leases=session is not None,
                                  rounds=[r[3] for r in rows if r[3] is not None])
            now = db.now()  # read with the write lock, in the snapshot's round trip
            class_ids = self._validate(rows, snap)
            heads = dict(snap["heads"])
            if session is not None:
                conflicts = self._conflicts(items, session, snap, now)
                if conflicts:
                    raise LeaseConflictError(
                        f"not saved: {len(conflicts)} of {len(set(items))} items belong to another session "
                        f"({'; '.join(f'{_short(i, 40)}: {why}' for i, why in list(conflicts.items())[:5])}"
                        f"{' ...' if len(conflicts) > 5 else ''}); nothing from this call was written. "
                        f"Save the others again without them.", self.path, conflicts)
            out, write = [], []  # out: ("new", index into write) or ("old", existing id or None)
            for item_id, label, seconds, rnd, source, annotator, payload, media_type in rows:
                cid = None if label is None else class_ids[label]
                head = heads.get(item_id)
                same = head is not None and head[5] != "undo" and head[1] == cid and head[3] == payload
                if same and skip_unchanged:
                    out.append(("old", None))
                elif same and session is not None and head[2] == session:
                    out.append(head[0] if isinstance(head[0], tuple) else ("old", head[0]))
                else:
                    out.append(("new", len(write)))
                    write.append((item_id, cid, seconds, rnd, source, annotator, session, payload, media_type))
                    heads[item_id] = (out[-1], cid, session, payload, media_type, source)  # a repeat in this call
            new_ids = self._insert(db, write, now, snap) if write else []
        return [new_ids[v] if kind == "new" else v for kind, v in out]

    def _submit_in_one_statement(self, rows, session, skip_unchanged) -> list[int] | None:
        """PostgreSQL: save ``rows`` with one statement (one round trip, see ``alwidgets_submit`` in
        schema.py) when every record becomes a new row; None when the general path must decide
        (a repeated item, an error, a conflict, an unchanged label: nothing was written then)."""
        if len({r[0] for r in rows}) != len(rows):
            return None
        with self._lock:
            db = self._backend()
            if not db.submits_in_one_statement:
                return None
            self._start_write(db, "saving labels", db.probe)
            try:
                first = db.submit(session, skip_unchanged, rows)
            except db.errors as e:
                db.rollback()
                raise db.translate(e, "saving labels") from e
        return None if first is None else list(range(int(first), int(first) + len(rows)))

    @staticmethod
    def _validate(rows, snap) -> dict[str, int]:
        """Raise ValueError naming unknown ids, classes or rounds of ``rows``; returns the class ids by name."""
        problems = []
        unknown = [i for i in dict.fromkeys(r[0] for r in rows) if i not in snap["known"]]
        if unknown:
            problems.append(f"item ids not in the pool: {_listing(unknown)}")
        class_ids = snap["class_ids"]
        bad = [c for c in dict.fromkeys(r[1] for r in rows) if c is not None and c not in class_ids]
        if bad:
            problems.append(f"unknown classes {_listing(bad)} (known: {list(class_ids)})")
        missing = sorted({r[3] for r in rows if r[3] is not None} - snap["rounds"])
        if missing:
            problems.append(f"unknown rounds {missing} (start them with start_round())")
        if problems:
            raise ValueError("cannot save labels, nothing was written: " + "; ".join(problems))
        return class_ids

    @staticmethod
    def _conflicts(items, session, snap, now) -> dict[str, str]:
        """Why ``session`` may not write each of ``items`` (absent = it may)."""
        held, mine = {}, {}
        for item_id, holder, annotator, expires_at, after in snap["leases"]:
            if holder == session:
                mine[item_id] = after
            elif expires_at > now:
                held[item_id] = (annotator, expires_at)
        out = {}
        for item_id in dict.fromkeys(items):
            if item_id in held:
                annotator, expires_at = held[item_id]
                out[item_id] = (f"leased to another session (annotator {annotator!r}) for "
                                f"{max(0.0, expires_at - now):.0f} more s")
                continue
            head = snap["heads"].get(item_id)
            if head is not None and item_id in mine and head[2] != session and head[0] > mine[item_id]:
                out[item_id] = ("relabelled by another session since this session was shown it"
                                if head[5] != "undo" else "its label was retracted by another session since "
                                                           "this session was shown it")
        return out

    @staticmethod
    def _insert(db, rows, now: float, snap: dict) -> list[int]:
        """Append rows ``(item_id, class_id, seconds, round, source, annotator, session, payload, media_type)``
        (``class_id`` and ``payload`` None = an undo) after ``snap`` (:meth:`_snapshot` of their items);
        ends the leases on labelled items. Returns the new row ids; the writes run at COMMIT.

        Three set-based statements whatever the number of rows: the items' current rows are pointed at
        their first new row, the new rows are inserted with ``superseded_by`` already set where a later
        row of this call replaces them, and the labelled items' live leases end.
        """
        ids = list(range(snap["last"] + 1, snap["last"] + 1 + len(rows)))
        first, after, last_row = {}, [None] * len(rows), {}
        for k, r in enumerate(rows):
            first.setdefault(r[0], ids[k])
            if r[0] in last_row:
                after[last_row[r[0]]] = ids[k]
            last_row[r[0]] = k
        supersede = [(first[i], snap["heads"][i][0]) for i in first if i in snap["heads"]]
        if supersede:
            db.deferred.append((db.update_rows, ("labels", (("superseded_by", "bigint"),), (("label_id", "bigint"),),
                                                 supersede)))
        created = _iso(now)
        db.deferred.append((db.insert_rows, ("labels", _LABEL_ROW, [
            (ids[k], item_id, class_id, annotator, session, created, seconds, rnd,
             "undo" if class_id is None and payload is None else source, payload, media_type, after[k])
            for k, (item_id, class_id, seconds, rnd, source, annotator, session, payload, media_type)
            in enumerate(rows)])))
        labelled = list(dict.fromkeys(r[0] for r in rows if r[1] is not None or r[7] is not None))
        for cond, params in db.in_list("item_id", labelled):  # labelling ends every live lease; rows stay as evidence
            db.deferred.append((db.execute, (f"UPDATE leases SET expires_at = ? WHERE expires_at > ? AND {cond}",
                                             [now, now, *params])))
        return ids

    def undo(self, item_id: str, *, session: str | None = None, annotator: str | None = None) -> int:
        """Retract the current label of ``item_id`` by appending an undo row; returns its row id.

        With ``session``, only a label that session wrote can be retracted: if the
        current label was written by another session (or without one),
        :class:`LeaseConflictError` is raised and nothing is written. Without
        ``session`` (tools, scripts) the current label is retracted whoever wrote it.
        ValueError when the item has no label.
        """
        _check_ids([item_id], what="item_id")
        annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        if session is not None:
            session = _check_name(session, "session")
        with self._transaction("undoing a label") as db:
            snap = self._snapshot(db, [item_id])
            now = db.now()
            if item_id not in snap["known"]:
                raise ValueError(f"item id {_short(item_id)} is not in the pool")
            head = snap["heads"].get(item_id)
            if head is None or head[5] == "undo":
                raise ValueError(f"item {_short(item_id)} has no label to undo")
            if session is not None and head[2] != session:
                why = "its current label was written by another session" if head[2] else \
                    "its current label was written outside any session (an import or a script)"
                raise LeaseConflictError(f"cannot undo {_short(item_id)}: {why}; this session can only retract "
                                         f"its own labels. Nothing was written.", self.path, {item_id: why})
            return self._insert(db, [(item_id, None, None, None, "undo", annotator, session, None, None)],
                                now, snap)[0]

    def current_labels(self) -> dict:
        """``item_id -> class name``: the latest label of every labelled item of the attached pool.

        An item whose latest record carries only a payload maps to ``None``;
        see :meth:`payload`. Check :attr:`changes` to know when to read again.
        """
        rows = self._query(
            "SELECT l.item_id, c.name FROM labels l LEFT JOIN classes c USING (class_id) "
            "JOIN items i USING (item_id) WHERE l.superseded_by IS NULL AND l.source <> 'undo' AND i.in_pool = 1 "
            "ORDER BY l.label_id")
        return dict(rows)

    def current_payloads(self) -> dict:
        """``item_id -> (bytes, media_type)``: the payload of the current label of every labelled item of
        the attached pool that carries one (a PNG mask), read in one query. Check :attr:`changes` to know
        when to read again."""
        rows = self._query(
            "SELECT l.item_id, l.payload, l.media_type FROM labels l JOIN items i USING (item_id) "
            "WHERE l.superseded_by IS NULL AND l.source <> 'undo' AND l.payload IS NOT NULL AND i.in_pool = 1 "
            "ORDER BY l.label_id")
        return {item_id: (bytes(payload), media_type) for item_id, payload, media_type in rows}

    def payload(self, item_id: str, *, label_id: int | None = None):
        """``(bytes, media_type)`` of the current label of ``item_id`` (or of history row ``label_id``);
        ``None`` when it carries no payload or the item has no label.

        >>> with LabelStore(":memory:") as s:
        ...     _ = s.attach_pool(["a"], ["road", "sky"])
        ...     _ = s.add_labels([{"item_id": "a", "label": "road", "payload": b"PNG..", "media_type": "image/png"}])
        ...     s.payload("a")
        (b'PNG..', 'image/png')
        """
        _check_ids([item_id], what="item_id")
        if label_id is None:
            rows = self._query("SELECT payload, media_type, source FROM labels "
                               "WHERE item_id = ? AND superseded_by IS NULL", (item_id,))
        else:
            if isinstance(label_id, bool) or not isinstance(label_id, numbers.Integral):
                raise TypeError(f"label_id must be an int from labels_df(history=True), got {_short(label_id)}")
            rows = self._query("SELECT payload, media_type, source FROM labels WHERE item_id = ? AND label_id = ?",
                               (item_id, int(label_id)))
            if not rows:
                raise ValueError(f"no label row {label_id} for item {_short(item_id)}")
        if not rows or rows[0][0] is None:
            return None
        return bytes(rows[0][0]), rows[0][1]

    def labels_df(self, history: bool = False):
        """Labels as a DataFrame with columns ``item_id, label, annotator, created_at, seconds, round, source``.

        ``history=False``: one row per labelled item of the pool (its current
        label). ``history=True``: every row ever written, undos included
        (``label`` None, ``source`` "undo"), plus ``label_id``,
        ``superseded_by``, ``session`` (who wrote it; None before schema v2 or
        outside a session) and ``media_type`` (of its payload, if any).
        """
        import pandas as pd

        where = "" if history else "WHERE l.superseded_by IS NULL AND l.source <> 'undo' AND i.in_pool = 1"
        rows = self._query(
            "SELECT l.item_id, c.name, l.annotator, l.created_at, l.seconds, l.round_id, l.source, "
            "l.label_id, l.superseded_by, l.session, l.media_type FROM labels l LEFT JOIN classes c USING (class_id) "
            f"JOIN items i USING (item_id) {where} ORDER BY l.label_id")
        df = pd.DataFrame.from_records(rows, columns=HISTORY_COLUMNS)
        for col, k in (("label", 1), ("session", 9), ("media_type", 10)):
            df[col] = pd.Series([r[k] for r in rows], dtype=object)  # None (not NaN) when missing
        df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
        df["seconds"] = df["seconds"].astype("float64")
        df["round"] = df["round"].astype("Int64")
        df["label_id"] = df["label_id"].astype("int64")
        df["superseded_by"] = df["superseded_by"].astype("Int64")
        return df if history else df[LABEL_COLUMNS]

    # ------------------------------------------------------------------ rounds
    def start_round(self, strategy: str, params: dict | None = None, model: str = "") -> int:
        """Record the start of a selection/training round; returns its id (1, 2, ...)."""
        strategy = _check_name(strategy, "strategy")
        if not isinstance(model, str):
            raise TypeError(f"model must be a string describing the model, got {type(model).__name__}")
        params_json = _json(params, "params")
        with self._transaction("starting a round") as db:
            rid = db.execute("SELECT COALESCE(MAX(round_id), 0) + 1 FROM rounds").fetchone()[0]
            db.execute("INSERT INTO rounds(round_id, strategy, params, model, annotator, started_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (rid, strategy, params_json, model, self.annotator,
                                                     _iso(db.now())))
            return int(rid)

    def finish_round(self, round_id: int, metrics: dict | None = None, timings: dict | None = None) -> None:
        """Record a round's metrics (e.g. accuracy) and timings (seconds per step); once per round."""
        metrics_json, timings_json = _json(metrics, "metrics"), _json(timings, "timings")
        if isinstance(round_id, bool) or not isinstance(round_id, numbers.Integral):
            raise ValueError(f"unknown round {round_id!r} (start it with start_round())")
        with self._transaction("finishing a round") as db:
            row = db.execute("SELECT finished_at FROM rounds WHERE round_id = ?", (int(round_id),)).fetchone()
            if row is None:
                raise ValueError(f"unknown round {round_id!r} (start it with start_round())")
            if row[0] is not None:
                raise ValueError(f"round {round_id} was already finished at {row[0]}")
            db.execute("UPDATE rounds SET metrics = ?, timings = ?, finished_at = ? WHERE round_id = ?",
                       (metrics_json, timings_json, _iso(db.now()), int(round_id)))

    def rounds_df(self):
        """One row per round: ``round, strategy, params, model, metrics, timings, annotator,
        started_at, finished_at, n_labels`` (dict columns; ``metrics`` None while running)."""
        import pandas as pd

        rows = self._query(
            "SELECT r.round_id, r.strategy, r.params, r.model, r.metrics, r.timings, r.annotator, r.started_at, "
            "r.finished_at, (SELECT COUNT(*) FROM labels l WHERE l.round_id = r.round_id AND l.source <> 'undo') "
            "FROM rounds r ORDER BY r.round_id")
        cols = ["round", "strategy", "params", "model", "metrics", "timings", "annotator", "started_at",
                "finished_at", "n_labels"]
        df = pd.DataFrame.from_records(rows, columns=cols)
        for c in ("params", "metrics", "timings"):
            df[c] = [json.loads(v) if isinstance(v, str) else None for v in df[c]]  # pandas 3: None -> NaN
        for c in ("started_at", "finished_at"):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
        df["round"] = df["round"].astype("int64")
        df["n_labels"] = df["n_labels"].astype("int64")
        return df

    # ------------------------------------------------------------------ sessions and leases
    def lease(self, item_ids, *, session: str, annotator: str | None = None, ttl: float = 600) -> list[str]:
        """Hand items to ``session`` for ``ttl`` seconds; returns the ids now leased to it (in the given order).

        Skips items already labelled and items leased to another session until
        that lease expires, so two sessions (two kernels of one user, or two
        people sharing a login) are never shown the same item while a lease
        lives. Leasing again renews. Labelling an item ends its lease.
        ``annotator`` (default the store's) is recorded to say who holds it.
        Unknown or malformed ids raise ValueError and nothing is leased.
        """
        session = _check_name(session, "session")
        annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real) or not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        ids = list(dict.fromkeys(_check_ids(item_ids, allow_empty=True, what="item_ids")))
        if not ids:
            return []
        with self._transaction("leasing items") as db:
            snap = self._snapshot(db, ids, leases=True)
            now = db.now()
            self._require_known(ids, snap, "leasing")
            busy = {i for i, h in snap["heads"].items() if h[5] != "undo"}  # labelled
            busy |= {i for i, holder, _, expires_at, _ in snap["leases"] if holder != session and expires_at > now}
            live_mine = {i for i, holder, _, expires_at, _ in snap["leases"] if holder == session and expires_at > now}
            got = [i for i in ids if i not in busy]
            renew = [(now + float(ttl), i, session) for i in got if i in live_mine]
            grant = [(i, session, annotator, now + float(ttl), snap["last"]) for i in got if i not in live_mine]
            if renew:
                db.deferred.append((db.update_rows, ("leases", (("expires_at", "float8"),),
                                                     (("item_id", "text"), ("session", "text")), renew)))
            if grant:
                db.deferred.append((db.insert_rows, ("leases", _LEASE_ROW, grant,
                                                     "ON CONFLICT(item_id, session) DO UPDATE SET "
                                                     "annotator = excluded.annotator, expires_at = excluded.expires_at, "
                                                     "after_label = excluded.after_label")))
            return got

    def release(self, item_ids, *, session: str) -> int:
        """End ``session``'s live leases on ``item_ids`` (other sessions' are untouched); returns how many ended.

        The released items can be leased by any session again. Unknown or
        malformed ids raise ValueError and nothing is released.
        """
        session = _check_name(session, "session")
        ids = list(dict.fromkeys(_check_ids(item_ids, allow_empty=True, what="item_ids")))
        if not ids:
            return 0
        with self._transaction("releasing items") as db:
            snap = self._snapshot(db, ids, leases=True)
            now = db.now()
            self._require_known(ids, snap, "releasing")
            mine = [i for i, holder, _, expires_at, _ in snap["leases"] if holder == session and expires_at > now]
            for cond, params in db.in_list("item_id", mine):
                db.deferred.append((db.execute, (f"UPDATE leases SET expires_at = ? WHERE session = ? AND {cond}",
                                                 [now, session, *params])))
            return len(mine)

    def leases_df(self):
        """Live leases: ``item_id, session, annotator, expires_at`` (UTC), soonest to expire first."""
        import pandas as pd

        with self._lock:
            db = self._backend()
            db.ensure()
            now = db.now()
        rows = self._query("SELECT item_id, session, annotator, expires_at FROM leases WHERE expires_at > ? "
                           "ORDER BY expires_at, item_id", (now,))
        df = pd.DataFrame.from_records(rows, columns=["item_id", "session", "annotator", "expires_at"])
        df["expires_at"] = pd.to_datetime(df["expires_at"].astype("float64"), unit="s", utc=True)
        return df

    # ------------------------------------------------------------------ copies and checks
    def backup(self, path) -> Path:
        """Copy the whole store to the SQLite file ``path`` consistently, even while others write to it.

        The copy uses a rollback journal, so it opens (``read_only=True``) in a
        read-only folder too. A PostgreSQL store is copied row by row in one
        snapshot into an SQLite store of the same schema version.
        """
        dest = Path(path).expanduser().absolute()
        if self.backend == "sqlite" and self.path != ":memory:" and dest == Path(self.path):
            raise ValueError("backup path is the store itself; choose another file")
        with self._lock:
            db = self._backend()
            db.ensure()
            try:
                if db.kind == "sqlite":
                    return atomic_write(dest, db.backup_to)
                return atomic_write(dest, lambda tmp: _copy_to_sqlite(db, tmp, self.annotator))
            except db.errors as e:
                db.rollback()
                raise db.translate(e, f"backing up to {dest}") from e

    def check(self) -> list[str]:
        """Problems found by the database's integrity checks and the history invariants ([] = healthy)."""
        with self._lock:
            db = self._backend()
            try:
                db.ensure()
                problems = db.integrity()
            except db.errors as e:
                raise db.translate(e, "checking") from e
        bad = self._scalar("SELECT COUNT(*) FROM labels a JOIN labels b ON a.superseded_by = b.label_id "
                           "WHERE a.item_id <> b.item_id OR b.label_id <= a.label_id")
        if bad:
            problems.append(f"{bad} label rows are superseded by a row of another item")
        orphan = self._scalar("SELECT COUNT(*) FROM (SELECT item_id FROM labels GROUP BY item_id "
                              "HAVING SUM(CASE WHEN superseded_by IS NULL THEN 1 ELSE 0 END) <> 1) t")
        if orphan:
            problems.append(f"{orphan} items do not have exactly one current label row")
        return problems


_TABLES = {  # copied by backup() from PostgreSQL, in an order that satisfies the foreign keys
    "meta": "key, value",
    "pools": "pool_id, fingerprint, n_items, match, attached_at",
    "items": "item_id, in_pool",
    "classes": "class_id, name",
    "rounds": "round_id, strategy, params, model, metrics, timings, annotator, started_at, finished_at",
    "labels": "label_id, item_id, class_id, annotator, session, created_at, seconds, round_id, source, payload, "
              "media_type, superseded_by",
    "leases": "item_id, session, annotator, expires_at, after_label",
}


def _copy_to_sqlite(src, tmp: str, annotator: str) -> None:
    """Copy every table of the PostgreSQL back end ``src`` into a new SQLite store at ``tmp`` (one snapshot)."""
    import os

    os.unlink(tmp)  # LabelStore creates the schema in a fresh file
    dst = LabelStore(tmp, annotator=annotator)
    try:
        conn = dst._connection()
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table, cols in _TABLES.items():
                marks = ",".join("?" * len(cols.split(",")))
                key = cols.split(",")[0]
                rows = src.execute(f"SELECT {cols} FROM {table} ORDER BY {key}").fetchall()
                conn.executemany(f"INSERT INTO {table}({cols}) VALUES ({marks})",
                                 [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows])
            n = src.execute("SELECT n FROM changes WHERE id = 1").fetchone()[0]
            conn.execute("UPDATE changes SET n = ? WHERE id = 1", (n,))
            conn.execute("COMMIT")
        finally:
            src.rollback()
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
