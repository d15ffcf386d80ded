"""LabelStore: every label, undo, round and lease in one SQLite file that survives a dead kernel.

Why SQLite: a single file next to the notebook, transactions (a label is
acknowledged only after COMMIT), durability against a killed process (WAL
journal, ``synchronous=FULL``), safe sharing by several kernels on one machine,
and readable by any tool. History is append-only: a relabel or an undo adds a
row and marks the previous one ``superseded_by`` it; triggers refuse anything else.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import math
import numbers
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.request import pathname2url

from .._validation import duplicates
from .errors import StoreError, StoreMismatchError, translate
from .schema import migrate

SOURCES = ("human", "accepted", "imported")
"""Where a label came from: typed by a person, an accepted model suggestion, or an import."""

LABEL_COLUMNS = ["item_id", "label", "annotator", "created_at", "seconds", "round", "source"]
"""Columns of :meth:`LabelStore.labels_df` (``history=True`` adds ``label_id`` and ``superseded_by``)."""

_RECORD_KEYS = {"item_id", "label", "seconds", "round", "source", "annotator"}
_CHUNK = 900  # bound parameters per IN (...) query


def _chunks(ids):
    """``(chunk, "?,?,...")`` for slices of ``ids`` short enough for one ``IN (...)`` query."""
    for k in range(0, len(ids), _CHUNK):
        chunk = ids[k:k + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


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


@dataclass
class ImportReport:
    """Outcome of :meth:`LabelStore.import_labels`.

    ``accepted`` rows were written (``replaced`` of them changed an existing
    label); ``unchanged`` rows equalled the current label and were skipped, so
    importing the same file twice adds nothing; ``rejected`` is a DataFrame with
    columns ``row, item_id, label, reason`` (``row`` = 0-based data row; CSV line = row + 2).
    """

    accepted: int
    replaced: int
    unchanged: int
    rejected: object
    label_ids: list

    def __str__(self) -> str:
        text = (f"imported {self.accepted} labels ({self.replaced} replaced an earlier label), "
                f"{self.unchanged} unchanged, {len(self.rejected)} rejected")
        if len(self.rejected):
            shown = self.rejected.head(10)
            text += ":\n" + "\n".join(f"  row {r.row}: {r.item_id!r} -> {r.label!r}: {r.reason}"
                                      for r in shown.itertuples())
            if len(self.rejected) > len(shown):
                text += f"\n  ... and {len(self.rejected) - len(shown)} more"
        return text


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _default_annotator() -> str:
    try:
        return getpass.getuser() or "anonymous"
    except Exception:  # no user database entry (containers)
        return "anonymous"


def _check_name(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _listing(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _check_ids(ids) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a list of item id strings, not a single string")
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty: a pool needs at least one item")
    bad = [k for k, i in enumerate(ids) if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"item ids must be non-empty strings; positions {_listing(bad)} are not "
                         f"(first: {ids[bad[0]]!r})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate item ids {_listing(duplicates(ids))}")
    return ids


def check_classes(classes) -> list[str]:
    """Return ``classes`` as a list of unique, non-empty class names (ValueError naming the bad ones)."""
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a list of names, not the single string {classes!r}")
    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty: give at least one class name")
    bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"class names must be non-empty strings; got {_listing(bad)}")
    dups = sorted({c for c in classes if classes.count(c) > 1})
    if dups:
        raise ValueError(f"duplicate class names {_listing(dups)}")
    return classes


def _seconds(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: seconds must be a number or None, got {value!r}")
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
        return json.dumps(dict(obj), default=default, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None


def _cell(value):
    """A table cell as a string, or None when missing (None, NaN, empty)."""
    if value is None:
        return None
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        value = float(value)
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    text = str(value)
    return text if text.strip() else None


class LabelStore:
    """Append-only label history of one pool, in an SQLite file.

    Parameters
    ----------
    path : str or Path
        The store's file (created if missing; its folder must exist).
        ``":memory:"`` gives a throw-away store and must be asked for explicitly.
    annotator : str, optional
        Name recorded with labels, rounds and leases; defaults to the OS user.
    timeout : float
        Seconds to wait for another writer's lock before :class:`StoreLockedError`.
    read_only : bool
        Open without ever writing (e.g. to export a store another kernel is using).

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
    """

    def __init__(self, path, *, annotator=None, timeout: float = 10.0, read_only: bool = False):
        if path is None:
            raise TypeError("path is required: a file such as 'labels.db' (or ':memory:' for a throw-away store)")
        self.annotator = _check_name(_default_annotator() if annotator is None else annotator, "annotator")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn = None
        self._memory = isinstance(path, str) and path == ":memory:"
        if self._memory:
            self.path, target = ":memory:", ":memory:"
        else:
            p = Path(os.fspath(path)).expanduser().absolute()
            if p.is_dir():
                raise StoreError(f"{p} is a folder; give a file name such as {p / 'labels.db'}", str(p))
            if not p.parent.is_dir():
                raise StoreError(f"cannot create the label store {p}: folder {p.parent} does not exist", str(p))
            if read_only and not p.exists():
                raise StoreError(f"no label store at {p} (read_only=True never creates one)", str(p))
            self.path = str(p)
            target = f"file:{pathname2url(self.path)}?mode={'ro' if read_only else 'rwc'}"
        try:
            conn = sqlite3.connect(target, uri=not self._memory, timeout=self.timeout,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise translate(e, self.path, "opening", self.timeout) from e
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._memory and not read_only:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: could not switch the journal to WAL (got {mode!r}); "
                                     f"is the file on a network filesystem?", self.path)
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn, self.path, read_only=read_only)
        except sqlite3.Error as e:
            conn.close()
            raise translate(e, self.path, "opening", self.timeout) from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ------------------------------------------------------------------ plumbing
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); every acknowledged label is already on disk."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        if self._conn is None:
            return f"LabelStore({self.path!r}, closed)"
        n_items = self._scalar("SELECT COUNT(*) FROM items WHERE in_pool = 1")
        n_labelled = self._scalar(
            "SELECT COUNT(*) FROM labels l JOIN items i USING (item_id) "
            "WHERE l.superseded_by IS NULL AND l.class_id IS NOT NULL AND i.in_pool = 1")
        return (f"LabelStore({self.path!r}, items={n_items}, labelled={n_labelled}, "
                f"classes={len(self.classes)}, annotator={self.annotator!r})")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the label store {self.path} is closed", self.path)
        return self._conn

    @contextmanager
    def _transaction(self, action: str):
        """One write transaction: BEGIN IMMEDIATE (take the write lock first), COMMIT or roll back."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise translate(e, self.path, action, self.timeout) from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(e, sqlite3.Error):
                    raise translate(e, self.path, action, self.timeout) from e
                raise

    def _query(self, sql: str, params=(), action: str = "reading"):
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise translate(e, self.path, action, self.timeout) from e

    def _scalar(self, sql: str, params=()):
        return self._query(sql, params)[0][0]

    @staticmethod
    def _known_ids(conn, ids) -> set[str]:
        """The subset of ``ids`` that are items of the attached pool."""
        ids = list(dict.fromkeys(ids))
        found = set()
        for chunk, marks in _chunks(ids):
            found.update(r[0] for r in conn.execute(
                f"SELECT item_id FROM items WHERE in_pool = 1 AND item_id IN ({marks})", chunk))
        return found

    @staticmethod
    def _class_ids(conn) -> dict[str, int]:
        return {name: cid for cid, name in conn.execute("SELECT class_id, name FROM classes ORDER BY class_id")}

    @staticmethod
    def _meta(conn, key: str):
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(conn, key: str, value) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, str(value)))

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
        classes = None if classes is None else check_classes(classes)
        fp = pool_fingerprint(ids)
        with self._transaction("attaching the pool") as conn:
            stored_fp = self._meta(conn, "pool_fingerprint")
            if stored_fp is None:
                if classes is None:
                    raise ValueError("classes are needed the first time a pool is attached to a store")
            elif stored_fp != fp:
                n_stored = conn.execute("SELECT COUNT(*) FROM items WHERE in_pool = 1").fetchone()[0]
                if match == "fingerprint":
                    common = len(self._known_ids(conn, ids))
                    raise StoreMismatchError(
                        f"the label store {self.path} belongs to a different pool: it has {n_stored} items "
                        f"(fingerprint {stored_fp[:12]}), this pool has {len(ids)} items (fingerprint {fp[:12]}), "
                        f"{common} ids in common. Use another store file for this pool, or attach by matching "
                        f"item ids with match='ids' (labels of ids missing from this pool are kept and reported).",
                        self.path)
                conn.execute("UPDATE items SET in_pool = 0 WHERE in_pool = 1")
            if stored_fp != fp:  # a new pool, or another one attached by ids
                conn.executemany("INSERT INTO items(item_id, in_pool) VALUES (?, 1) "
                                 "ON CONFLICT(item_id) DO UPDATE SET in_pool = 1", ((i,) for i in ids))
            new_classes = self._extend_classes(conn, classes)
            if stored_fp != fp:
                self._set_meta(conn, "pool_fingerprint", fp)
                self._set_meta(conn, "n_items", len(ids))
                conn.execute("INSERT INTO pools(fingerprint, n_items, match, attached_at) VALUES (?, ?, ?, ?)",
                             (fp, len(ids), "fingerprint" if stored_fp is None else match, _now_iso()))
            heads = conn.execute(
                "SELECT l.item_id, i.in_pool FROM labels l JOIN items i USING (item_id) "
                "WHERE l.superseded_by IS NULL AND l.class_id IS NOT NULL ORDER BY l.item_id").fetchall()
        orphaned = [i for i, in_pool in heads if not in_pool]
        report = AttachReport(fingerprint=fp, n_items=len(ids), n_labelled=len(heads) - len(orphaned),
                              new_classes=new_classes, orphaned=orphaned,
                              matched_by=match if stored_fp not in (None, fp) else "fingerprint")
        if orphaned:
            warnings.warn(f"{len(orphaned)} labelled items of {self.path} are not in this pool "
                          f"({_listing(orphaned, 5)}); their labels are kept in the store but not used.",
                          UserWarning, stacklevel=2)
        return report

    def _extend_classes(self, conn, classes) -> list[str]:
        if classes is None:
            return []
        stored = list(self._class_ids(conn))
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
        conn.executemany("INSERT INTO classes(name) VALUES (?)", ((c,) for c in new))
        return new

    # ------------------------------------------------------------------ labels
    def add_labels(self, records) -> list[int]:
        """Save labels in one transaction; returns their row ids only after COMMIT.

        ``records`` is an iterable of dicts ``{item_id, label, seconds=None,
        round=None, source="human"|"accepted"|"imported", annotator=None}``
        (``label`` is a class name). Everything is validated first: unknown ids,
        classes or rounds raise ValueError naming them, and nothing is written.
        """
        if isinstance(records, Mapping):
            records = [records]
        elif hasattr(records, "to_dict") and hasattr(records, "columns"):
            records = records.to_dict("records")
        rows, problems = [], []
        for k, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                problems.append(f"record {k} is not a dict: {rec!r}")
                continue
            extra = set(rec) - _RECORD_KEYS
            if extra:
                problems.append(f"record {k} has unknown keys {sorted(extra)} (allowed: {sorted(_RECORD_KEYS)})")
            item_id, label = rec.get("item_id"), rec.get("label")
            if not isinstance(item_id, str) or not item_id:
                problems.append(f"record {k}: item_id must be a non-empty string, got {item_id!r}")
            if not isinstance(label, str) or not label.strip():
                problems.append(f"record {k}: label must be a class name, got {label!r}")
            source = rec.get("source") or "human"
            if source not in SOURCES:
                problems.append(f"record {k}: source must be one of {SOURCES}, got {source!r}")
            annotator = rec.get("annotator") or self.annotator
            if not isinstance(annotator, str) or not annotator.strip():
                problems.append(f"record {k}: annotator must be a non-empty string, got {annotator!r}")
            rnd = rec.get("round")
            if rnd is not None and (isinstance(rnd, bool) or not isinstance(rnd, numbers.Integral)):
                problems.append(f"record {k}: round must be an int from start_round() or None, got {rnd!r}")
            try:
                seconds = _seconds(rec.get("seconds"), f"record {k}")
            except ValueError as e:
                problems.append(str(e))
                seconds = None
            rows.append((item_id, label, seconds, None if rnd is None else int(rnd), source, annotator))
        if problems:
            raise ValueError("cannot save labels, nothing was written:\n  " + "\n  ".join(problems[:20])
                             + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""))
        if not rows:
            return []
        with self._transaction("saving labels") as conn:
            class_ids = self._validate(conn, rows)
            return self._insert(conn, [(i, class_ids[lab], s, r, src, a) for i, lab, s, r, src, a in rows])

    def _validate(self, conn, rows) -> dict[str, int]:
        """Raise ValueError naming unknown ids, classes or rounds of ``rows``; returns the class ids by name."""
        problems = []
        ids = [r[0] for r in rows]
        known = self._known_ids(conn, ids)
        unknown = [i for i in dict.fromkeys(ids) if i not in known]
        if unknown:
            problems.append(f"item ids not in the pool: {_listing(unknown)}")
        class_ids = self._class_ids(conn)
        bad = [c for c in dict.fromkeys(r[1] for r in rows) if c not in class_ids]
        if bad:
            problems.append(f"unknown classes {_listing(bad)} (known: {list(class_ids)})")
        rounds = {r[3] for r in rows if r[3] is not None}
        if rounds:
            marks = ",".join("?" * len(rounds))
            have = {r[0] for r in conn.execute(f"SELECT round_id FROM rounds WHERE round_id IN ({marks})",
                                               sorted(rounds))}
            if rounds - have:
                problems.append(f"unknown rounds {sorted(rounds - have)} (start them with start_round())")
        if problems:
            raise ValueError("cannot save labels, nothing was written: " + "; ".join(problems))
        return class_ids

    @staticmethod
    def _insert(conn, rows) -> list[int]:
        """Append rows ``(item_id, class_id or None, seconds, round, source, annotator)``; caller holds the lock."""
        next_id = conn.execute("SELECT COALESCE(MAX(label_id), 0) + 1 FROM labels").fetchone()[0]
        now, out = _now_iso(), []
        for item_id, class_id, seconds, rnd, source, annotator in rows:
            conn.execute("UPDATE labels SET superseded_by = ? WHERE item_id = ? AND superseded_by IS NULL",
                         (next_id, item_id))
            conn.execute(
                "INSERT INTO labels(label_id, item_id, class_id, annotator, created_at, seconds, round_id, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (next_id, item_id, class_id, annotator, now, seconds, rnd, "undo" if class_id is None else source))
            out.append(next_id)
            next_id += 1
        conn.executemany("DELETE FROM leases WHERE item_id = ?", ((r[0],) for r in rows if r[1] is not None))
        return out

    def undo(self, item_id: str, annotator: str | None = None) -> int:
        """Retract the current label of ``item_id`` by appending an undo row; returns its row id."""
        annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        with self._transaction("undoing a label") as conn:
            if not self._known_ids(conn, [item_id]):
                raise ValueError(f"item id {item_id!r} is not in the pool")
            head = conn.execute("SELECT class_id FROM labels WHERE item_id = ? AND superseded_by IS NULL",
                                (item_id,)).fetchone()
            if head is None or head[0] is None:
                raise ValueError(f"item {item_id!r} has no label to undo")
            return self._insert(conn, [(item_id, None, None, None, "undo", annotator)])[0]

    def current_labels(self) -> dict[str, str]:
        """``item_id -> class name``: the latest label of every labelled item of the attached pool."""
        rows = self._query(
            "SELECT l.item_id, c.name FROM labels l JOIN classes c USING (class_id) JOIN items i USING (item_id) "
            "WHERE l.superseded_by IS NULL AND i.in_pool = 1 ORDER BY l.label_id")
        return dict(rows)

    def labels_df(self, history: bool = False):
        """Labels as a DataFrame with columns ``item_id, label, annotator, created_at, seconds, round, source``.

        ``history=False``: one row per labelled item of the pool (its current
        label). ``history=True``: every row ever written, undos included
        (``label`` None, ``source`` "undo"), plus ``label_id`` and ``superseded_by``.
        """
        import pandas as pd

        where = "" if history else "WHERE l.superseded_by IS NULL AND l.class_id IS NOT NULL AND i.in_pool = 1"
        rows = self._query(
            "SELECT l.item_id, c.name, l.annotator, l.created_at, l.seconds, l.round_id, l.source, "
            "l.label_id, l.superseded_by FROM labels l LEFT JOIN classes c USING (class_id) "
            f"JOIN items i USING (item_id) {where} ORDER BY l.label_id")
        df = pd.DataFrame.from_records(rows, columns=LABEL_COLUMNS + ["label_id", "superseded_by"])
        df["label"] = pd.Series([r[1] for r in rows], dtype=object)  # None (not NaN) for undo rows
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
        with self._transaction("starting a round") as conn:
            cur = conn.execute("INSERT INTO rounds(strategy, params, model, annotator, started_at) "
                               "VALUES (?, ?, ?, ?, ?)", (strategy, params_json, model, self.annotator, _now_iso()))
            return cur.lastrowid

    def finish_round(self, round_id: int, metrics: dict | None = None, timings: dict | None = None) -> None:
        """Record a round's metrics (e.g. accuracy) and timings (seconds per step); once per round."""
        metrics_json, timings_json = _json(metrics, "metrics"), _json(timings, "timings")
        with self._transaction("finishing a round") as conn:
            row = conn.execute("SELECT finished_at FROM rounds WHERE round_id = ?", (round_id,)).fetchone()
            if row is None:
                raise ValueError(f"unknown round {round_id!r} (start it with start_round())")
            if row[0] is not None:
                raise ValueError(f"round {round_id} was already finished at {row[0]}")
            conn.execute("UPDATE rounds SET metrics = ?, timings = ?, finished_at = ? WHERE round_id = ?",
                         (metrics_json, timings_json, _now_iso(), round_id))

    def rounds_df(self):
        """One row per round: ``round, strategy, params, model, metrics, timings, annotator,
        started_at, finished_at, n_labels`` (dict columns; ``metrics`` None while running)."""
        import pandas as pd

        rows = self._query(
            "SELECT r.round_id, r.strategy, r.params, r.model, r.metrics, r.timings, r.annotator, r.started_at, "
            "r.finished_at, (SELECT COUNT(*) FROM labels l WHERE l.round_id = r.round_id AND l.class_id IS NOT NULL) "
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

    # ------------------------------------------------------------------ several annotators
    def lease(self, item_ids, annotator: str | None = None, ttl: float = 600) -> list[str]:
        """Hand items to ``annotator`` for ``ttl`` seconds; returns the ids now leased to them.

        Skips items already labelled or leased by someone else (until their
        lease expires), so two kernels on one store never label the same item
        by accident. Leasing again renews; labelling an item ends its lease.
        """
        annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        if isinstance(ttl, bool) or not isinstance(ttl, numbers.Real) or not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return []
        with self._transaction("leasing items") as conn:
            known = self._known_ids(conn, ids)
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise ValueError(f"item ids not in the pool: {_listing(unknown)}")
            now = time.time()
            conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            got = []
            for item_id in ids:
                labelled = conn.execute("SELECT 1 FROM labels WHERE item_id = ? AND superseded_by IS NULL "
                                        "AND class_id IS NOT NULL", (item_id,)).fetchone()
                holder = conn.execute("SELECT annotator FROM leases WHERE item_id = ?", (item_id,)).fetchone()
                if labelled or (holder is not None and holder[0] != annotator):
                    continue
                conn.execute("INSERT INTO leases(item_id, annotator, expires_at) VALUES (?, ?, ?) "
                             "ON CONFLICT(item_id) DO UPDATE SET expires_at = excluded.expires_at",
                             (item_id, annotator, now + float(ttl)))
                got.append(item_id)
            return got

    def release(self, item_ids, annotator: str | None = None) -> int:
        """End ``annotator``'s leases on ``item_ids`` (others' leases are untouched); returns how many ended."""
        annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        ids = list(dict.fromkeys(item_ids))
        with self._transaction("releasing items") as conn:
            n = 0
            for chunk, marks in _chunks(ids):
                n += conn.execute(f"DELETE FROM leases WHERE annotator = ? AND item_id IN ({marks})",
                                  [annotator, *chunk]).rowcount
            return n

    def _latest_by_annotator(self):
        """DataFrame of every annotator's latest label per item (undone ones dropped)."""
        import pandas as pd

        rows = self._query(
            "SELECT l.annotator, l.item_id, c.name FROM labels l LEFT JOIN classes c USING (class_id) "
            "WHERE l.label_id IN (SELECT MAX(label_id) FROM labels GROUP BY annotator, item_id)")
        df = pd.DataFrame.from_records(rows, columns=["annotator", "item_id", "label"])
        return df[df["label"].notna()]

    def agreement(self):
        """Pairwise agreement: ``annotator_a, annotator_b, n_items`` (labelled by both), ``agreement``
        (fraction equal) and Cohen's ``kappa`` (NaN when undefined, e.g. one class only)."""
        return self._agreement(self._latest_by_annotator())

    def _agreement(self, latest):
        """:meth:`agreement` from ``latest`` (:meth:`_latest_by_annotator`)."""
        import numpy as np
        import pandas as pd
        from sklearn.metrics import cohen_kappa_score

        names = sorted(set(self._query("SELECT DISTINCT annotator FROM labels")), key=lambda r: r[0])
        names = [r[0] for r in names]
        out = []
        for a_i, a in enumerate(names):
            la = latest[latest.annotator == a].set_index("item_id")["label"]
            for b in names[a_i + 1:]:
                lb = latest[latest.annotator == b].set_index("item_id")["label"]
                both = la.index.intersection(lb.index)
                ya, yb = la.loc[both].to_numpy(), lb.loc[both].to_numpy()
                kappa = np.nan
                if len(both) and len(set(ya) | set(yb)) > 1:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        kappa = float(cohen_kappa_score(ya, yb))
                out.append((a, b, len(both), float(np.mean(ya == yb)) if len(both) else np.nan, kappa))
        return pd.DataFrame(out, columns=["annotator_a", "annotator_b", "n_items", "agreement", "kappa"])

    def annotators(self):
        """Per annotator: ``n_labels`` (label rows written), ``n_items`` (items they currently label),
        ``seconds_per_label``, ``total_seconds`` and one ``kappa_<other>`` column per other annotator
        (Cohen's kappa on items both labelled; see :meth:`agreement`)."""
        import pandas as pd

        rows = self._query("SELECT annotator, COUNT(class_id), AVG(seconds), TOTAL(seconds) "
                           "FROM labels GROUP BY annotator ORDER BY annotator")
        df = pd.DataFrame.from_records(rows, columns=["annotator", "n_labels", "seconds_per_label",
                                                      "total_seconds"]).set_index("annotator")
        latest = self._latest_by_annotator()
        df.insert(1, "n_items", latest.groupby("annotator").size().reindex(df.index, fill_value=0))
        df["n_labels"] = df["n_labels"].astype("int64")
        df["n_items"] = df["n_items"].astype("int64")
        df["seconds_per_label"] = df["seconds_per_label"].astype("float64")
        pairs = self._agreement(latest)
        for name in df.index:
            col = pd.Series(float("nan"), index=df.index)
            for r in pairs.itertuples():
                if r.annotator_a == name:
                    col[r.annotator_b] = r.kappa
                elif r.annotator_b == name:
                    col[r.annotator_a] = r.kappa
            df[f"kappa_{name}"] = col
        return df

    # ------------------------------------------------------------------ import / export
    def import_labels(self, df_or_path, *, source: str = "imported", annotator: str | None = None) -> ImportReport:
        """Import labels from a DataFrame or a CSV / Parquet / JSON-lines file.

        Needs columns ``item_id`` and ``label`` (a class name); optional
        ``annotator`` and ``seconds``. Valid rows are written in one
        transaction; bad rows (unknown id or class, missing values, duplicate
        ids) are returned in the report's ``rejected`` table with a reason.
        """
        import pandas as pd

        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        default_annotator = self.annotator if annotator is None else _check_name(annotator, "annotator")
        table, name = _read_table(df_or_path)
        missing = [c for c in ("item_id", "label") if c not in table.columns]
        if missing:
            raise ValueError(f"{name}: needs columns item_id and label; missing {missing} "
                             f"(found {list(table.columns)})")
        with self._transaction("importing labels") as conn:
            ids = [_cell(v) for v in table["item_id"]]
            labels = [_cell(v) for v in table["label"]]
            annotators = [_cell(v) for v in table["annotator"]] if "annotator" in table else [None] * len(table)
            seconds = list(table["seconds"]) if "seconds" in table else [None] * len(table)
            known = self._known_ids(conn, [i for i in ids if i is not None])
            class_ids = self._class_ids(conn)
            current = dict(conn.execute("SELECT item_id, class_id FROM labels WHERE superseded_by IS NULL"))
            rejected, accepted, first_row = [], [], {}
            replaced = unchanged = 0
            for k, (item_id, label) in enumerate(zip(ids, labels)):
                reason = None
                if item_id is None:
                    reason = "missing item_id"
                elif label is None:
                    reason = "missing label"
                elif item_id not in known:
                    reason = "item id not in the pool"
                elif label not in class_ids:
                    reason = f"unknown class (known: {list(class_ids)})"
                elif item_id in first_row:
                    reason = f"duplicate item id (first at row {first_row[item_id]})"
                else:
                    try:
                        secs = _seconds(_number(seconds[k]), "seconds")
                    except ValueError:
                        reason = f"seconds must be a number >= 0, got {seconds[k]!r}"
                if reason is not None:
                    rejected.append((table.index[k], item_id, label, reason))
                    continue
                first_row[item_id] = table.index[k]
                if current.get(item_id) == class_ids[label]:
                    unchanged += 1
                    continue
                replaced += current.get(item_id) is not None
                accepted.append((item_id, class_ids[label], secs, None, source, annotators[k] or default_annotator))
            label_ids = self._insert(conn, accepted) if accepted else []
        rej = pd.DataFrame(rejected, columns=["row", "item_id", "label", "reason"])
        return ImportReport(accepted=len(accepted), replaced=replaced, unchanged=unchanged, rejected=rej,
                            label_ids=label_ids)

    def export_csv(self, path, *, history: bool = False) -> Path:
        """Write :meth:`labels_df` to a CSV file (atomically: a crash never leaves half a file)."""
        df = self.labels_df(history=history)
        return _atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))

    def export_parquet(self, path, *, history: bool = False) -> Path:
        """Write :meth:`labels_df` to a Parquet file (needs ``pyarrow``)."""
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("export_parquet needs pyarrow: pip install pyarrow") from None
        df = self.labels_df(history=history)
        return _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))

    def export_jsonl(self, path, *, history: bool = False) -> Path:
        """Write one JSON object per label (``item_id, label, annotator, created_at, ...``) per line,
        the interchange format labelling tools read."""
        df = self.labels_df(history=history)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in df.to_dict("records"):
                    rec = {k: (None if _missing(v) else v) for k, v in rec.items()}
                    rec["created_at"] = rec["created_at"].isoformat()
                    for k in ("round", "label_id", "superseded_by"):
                        if rec.get(k) is not None:
                            rec[k] = int(rec[k])
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")

        return _atomic_write(path, write)

    def backup(self, path) -> Path:
        """Copy the whole store to ``path`` consistently, even while other kernels write to it."""
        dest = Path(path).expanduser().absolute()
        if not self._memory and dest == Path(self.path):
            raise ValueError("backup path is the store itself; choose another file")

        def write(tmp):
            target = sqlite3.connect(tmp)
            try:
                with self._lock:
                    self._connection().backup(target)
            finally:
                target.close()

        try:
            return _atomic_write(dest, write)
        except sqlite3.Error as e:
            raise translate(e, self.path, f"backing up to {dest}", self.timeout) from e

    def check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks and the history invariants ([] = healthy)."""
        problems = [r[0] for r in self._query("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r}" for r in self._query("PRAGMA foreign_key_check")]
        bad = self._scalar("SELECT COUNT(*) FROM labels a JOIN labels b ON a.superseded_by = b.label_id "
                           "WHERE a.item_id != b.item_id OR b.label_id <= a.label_id")
        if bad:
            problems.append(f"{bad} label rows are superseded by a row of another item")
        orphan = self._scalar("SELECT COUNT(*) FROM (SELECT item_id FROM labels GROUP BY item_id "
                              "HAVING SUM(superseded_by IS NULL) != 1)")
        if orphan:
            problems.append(f"{orphan} items do not have exactly one current label row")
        return problems


def _missing(v) -> bool:
    try:
        import pandas as pd

        return v is None or (not isinstance(v, str) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def _number(v):
    """A table cell meant as a number: None when missing, float when numeric text."""
    if _missing(v):
        return None
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _read_table(src):
    """``(DataFrame, name for messages)`` from a DataFrame or a CSV / Parquet / JSON-lines path."""
    import pandas as pd

    if isinstance(src, pd.DataFrame):
        return src, "the DataFrame"
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"expected a DataFrame or a file path, got {type(src).__name__}")
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            raise ValueError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .parquet or .jsonl)")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path}: cannot read labels: {e}") from e
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read labels: {e}") from e
    return df, str(path)


def _atomic_write(path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path).expanduser().absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
