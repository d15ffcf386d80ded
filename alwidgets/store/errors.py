"""Store errors: every failure names the store's path and says whether anything was written.

SQLite reports low-level codes (BUSY, READONLY, FULL, ...); :func:`translate`
turns them into :class:`StoreError` subclasses a notebook user can act on.
"""
from __future__ import annotations

import sqlite3

# Primary SQLite result codes (https://www.sqlite.org/rescode.html).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26

_NOTHING_LOST = "nothing from this call was written and earlier labels are intact"


class StoreError(RuntimeError):
    """Base class of label-store failures; ``path`` is the store's file."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class StoreMismatchError(StoreError):
    """The store was made for another pool (or other classes) than the one attached."""


class StoreLockedError(StoreError):
    """Another connection held the write lock for longer than the store's timeout."""


class StoreReadOnlyError(StoreError):
    """The store cannot be written (permissions, read-only mount or ``read_only=True``)."""


class StoreFullError(StoreError):
    """The disk (or the store's page limit) is full; the transaction was rolled back."""


class StoreCorruptError(StoreError):
    """The file is not a readable SQLite label store."""


class StoreConnectionError(StoreError):
    """The database server could not be reached, or the connection was lost during a call.

    Nothing from that call was acknowledged; the next call opens a new connection.
    """


class LeaseConflictError(StoreError):
    """Items of a write belong to another session; nothing from the call was written.

    ``conflicts`` maps each refused item id to the reason: leased to another live
    session, relabelled by another session since this session was shown it, or (for
    :meth:`~alwidgets.store.LabelStore.undo`) its current label was written by another
    session. Retry without those items.
    """

    def __init__(self, message: str, path: str | None = None, conflicts: dict | None = None):
        super().__init__(message, path)
        self.conflicts = dict(conflicts or {})


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if isinstance(code, int):
        return code & 0xFF
    msg = str(exc).lower()
    for needle, c in (("locked", _BUSY), ("busy", _BUSY), ("readonly", _READONLY), ("read-only", _READONLY),
                      ("disk is full", _FULL), ("database or disk is full", _FULL), ("malformed", _CORRUPT),
                      ("not a database", _NOTADB), ("unable to open", _CANTOPEN), ("disk i/o", _IOERR)):
        if needle in msg:
            return c
    return None


def translate(exc: sqlite3.Error, path: str, action: str, timeout: float | None = None) -> StoreError:
    """Map a ``sqlite3`` exception raised while doing ``action`` on ``path`` to a StoreError."""
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        waited = f" after waiting {timeout:g} s" if timeout is not None else ""
        return StoreLockedError(
            f"{action}: the label store {path} is locked by another writer (a second kernel or tool){waited}; "
            f"{_NOTHING_LOST}. Retry, or close the other writer. ({exc})", path)
    if code in (_READONLY, _PERM):
        return StoreReadOnlyError(
            f"{action}: the label store {path} is read-only (file or folder permissions, a read-only mount, "
            f"or read_only=True); {_NOTHING_LOST}. Make it writable, or copy it with LabelStore.backup. ({exc})", path)
    if code == _FULL:
        return StoreFullError(
            f"{action}: the disk holding the label store {path} is full (or the store hit its size limit); "
            f"the transaction was rolled back, so {_NOTHING_LOST}. Free some space and retry. ({exc})", path)
    if code in (_CORRUPT, _NOTADB):
        return StoreCorruptError(
            f"{action}: {path} is not a readable SQLite label store ({exc}); restore it from a backup "
            f"(see docs/labels.md).", path)
    if code == _CANTOPEN:
        return StoreError(f"{action}: cannot open the label store {path}: does its folder exist and is it "
                          f"writable? ({exc})", path)
    if code == _IOERR:
        return StoreError(f"{action}: disk I/O error on the label store {path}; {_NOTHING_LOST}. ({exc})", path)
    return StoreError(f"{action}: label store {path}: {exc}", path)
