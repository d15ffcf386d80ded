"""Input checks shared by selectors, models, the simulation and the session.

Every check raises ``ValueError`` (or ``TypeError``) with a message that names
the argument, the expected shape and, for bad rows, which rows.
"""
from __future__ import annotations

import numbers

import numpy as np

UNLABELED = -1
"""Marker for an unlabelled item in a label array."""


def _row_list(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"[{shown}{more}]"


def check_labels(labels, n_items: int | None = None, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-d int64 array; -1 marks unlabelled items."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of class indices, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
            raise ValueError(f"{name} must hold integers (-1 = unlabelled); rows {_row_list(bad)} do not")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer array (-1 = unlabelled), got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if np.any(arr < UNLABELED):
        bad = np.flatnonzero(arr < UNLABELED)
        raise ValueError(f"{name} has negative values other than -1 at rows {_row_list(bad)}")
    if n_items is not None and arr.shape[0] != n_items:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the pool has {n_items} items")
    return arr


def check_embeddings(embeddings, n_items: int | None = None, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a finite 2-d float32 array of shape (n, d)."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n_items, n_features), got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if n_items is not None and arr.shape[0] != n_items:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the pool has {n_items} items")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} has NaN or inf values in rows {_row_list(np.flatnonzero(~finite))}")
    return arr


def check_probs(probs, n_items: int | None = None, name: str = "probs", stack: str | None = None) -> np.ndarray:
    """Return ``probs`` as a float64 array of probability rows that sum to one.

    ``probs`` is ``(n_items, n_classes)``; with ``stack`` (the name of a leading
    axis, e.g. ``"n_members"`` for a committee or ``"n_samples"`` for MC
    dropout) it is ``(stack, n_items, n_classes)`` and bad items are named once
    whichever member or sample is at fault.
    """
    arr = np.asarray(probs, dtype=np.float64)
    if stack is None and arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n_items, n_classes), got shape {arr.shape}")
    if stack is not None and arr.ndim != 3:
        raise ValueError(f"{name} must have shape ({stack}, n_items, n_classes), got {arr.shape}")
    per_item = arr if stack is None else np.moveaxis(arr, 0, 1)     # (n_items, ..., n_classes)
    n = per_item.shape[0]
    where = "in rows" if stack is None else "for items"
    if n_items is not None and n != n_items:
        raise ValueError(f"{name} has {n} rows but the pool has {n_items} items" if stack is None
                         else f"{name} covers {n} items but labels has {n_items}")
    flat = per_item.reshape(n, -1, arr.shape[-1])
    bad = ~np.isfinite(flat).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name} has NaN or inf values {where} {_row_list(np.flatnonzero(bad))}")
    neg = (flat < -1e-6).any(axis=(1, 2))
    if neg.any():
        raise ValueError(f"{name} has negative probabilities {where} {_row_list(np.flatnonzero(neg))}")
    off = (np.abs(flat.sum(axis=2) - 1.0) > 1e-3).any(axis=1)
    if off.any():
        raise ValueError(f"{name} rows must sum to 1{'' if stack is None else ' for every ' + stack[2:].rstrip('s')}; "
                         f"{'rows' if stack is None else 'items'} {_row_list(np.flatnonzero(off))} do not")
    return np.clip(arr, 0.0, 1.0)


def duplicates(values) -> list:
    """The values that occur more than once, each listed once, in order of their second occurrence."""
    seen, dups = set(), []
    for v in values:
        if v in seen and v not in dups:
            dups.append(v)
        seen.add(v)
    return dups


def check_positive_int(value, name: str = "n") -> int:
    """Return ``value`` as a positive int; raise ``ValueError`` naming ``name`` otherwise (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


check_batch_size = check_positive_int
"""Alias of :func:`check_positive_int` (batch sizes, budgets and other counts)."""
