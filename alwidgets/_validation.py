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


MAX_NORM = 1e18
"""Largest L2 norm accepted for an embedding row.

Selectors compute squared distances in float32 (faiss, blocked GEMM); a row
with norm ``>= 1e18`` has a squared norm ``>= 1e36``, within a factor of 300
of float32's largest value, so sums and cross terms overflow to inf and
faiss's k-means aborts the process ("invalid cluster assignment"). Such rows
are refused by :func:`check_embeddings`, naming them.
"""


def check_embeddings(embeddings, n_items: int | None = None, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a finite 2-d float32 array of shape (n, d), d >= 1.

    The one validation path for feature matrices (selectors, models, the
    session). Refused, with the rows named: NaN or inf values, values too
    large for float32, and rows whose L2 norm is ``>= MAX_NORM`` (their
    squared distances overflow float32). Zero-width arrays (``d == 0``) are
    refused too: there is nothing to measure distances or fit a model on.

    >>> check_embeddings([[1.0, 2.0], [3.0, 4.0]]).dtype
    dtype('float32')
    >>> check_embeddings(np.zeros((3, 0)))
    Traceback (most recent call last):
    ...
    ValueError: embeddings has zero width (shape (3, 0)): each item needs at least one feature
    """
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n_items, n_features), got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if n_items is not None and arr.shape[0] != n_items:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the pool has {n_items} items")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero width (shape {arr.shape}): each item needs at least one feature")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        # finite float64 values beyond float32's range would silently become inf below
        finite64 = np.isfinite(arr).all(axis=1)
        if not finite64.all():
            raise ValueError(f"{name} has NaN or inf values in rows {_row_list(np.flatnonzero(~finite64))}")
        big = (np.abs(arr) > np.finfo(np.float32).max).any(axis=1)
        if big.any():
            raise ValueError(f"{name} has values too large for float32 in rows {_row_list(np.flatnonzero(big))}; "
                             "rescale the embeddings")
    arr = np.ascontiguousarray(arr, dtype=np.float32)   # no copy for C-ordered float32 (memory maps too)
    bad, big = _scan_rows(arr)
    if len(bad):
        raise ValueError(f"{name} has NaN or inf values in rows {_row_list(bad)}")
    if len(big):
        raise ValueError(f"{name} has rows with an L2 norm >= {MAX_NORM:g} (rows {_row_list(big)}): their "
                         "squared distances overflow float32; rescale the embeddings (e.g. divide by the "
                         "largest norm)")
    return arr


def _scan_rows(arr: np.ndarray, chunk: int = 65536):
    """Rows with NaN/inf values and rows with an L2 norm >= MAX_NORM, in one chunked pass.

    Squared norms are accumulated in float64 (no overflow for float32 values),
    so a non-finite squared norm means a NaN or inf in the row. Temporary
    memory is one chunk of rows, not a copy of the array.
    """
    bad, big = [], []
    for s in range(0, len(arr), chunk):
        sq = np.einsum("ij,ij->i", arr[s:s + chunk], arr[s:s + chunk], dtype=np.float64)
        fin = np.isfinite(sq)
        if not fin.all():
            bad.append(s + np.flatnonzero(~fin))
        over = fin & (sq >= MAX_NORM ** 2)
        if over.any():
            big.append(s + np.flatnonzero(over))
    cat = lambda parts: np.concatenate(parts) if parts else np.empty(0, np.int64)  # noqa: E731
    return cat(bad), cat(big)


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



def check_candidates(candidates, labels: np.ndarray, name: str = "candidates") -> np.ndarray:
    """Sorted pool indices that may be picked: unlabelled items, restricted to ``candidates`` if given.

    ``candidates`` is ``None`` (every unlabelled item), an array of pool
    indices, or a boolean mask with one entry per pool item (scikit-activeml's
    ``candidates=``). Labelled items among the candidates are simply not pickable.

    >>> check_candidates([4, 1, 2], np.array([-1, -1, 0, -1, -1])).tolist()
    [1, 4]
    >>> check_candidates([True, False, True], np.array([-1, -1, -1])).tolist()
    [0, 2]
    """
    unl = labels == UNLABELED
    if candidates is None:
        return np.flatnonzero(unl)
    arr = np.asarray(candidates)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of pool indices or a boolean mask, got shape {arr.shape}")
    n = len(labels)
    if arr.dtype.kind == "b":
        if len(arr) != n:
            raise ValueError(f"{name} is a boolean mask of length {len(arr)} but the pool has {n} items")
        return np.flatnonzero(arr & unl)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer pool indices or booleans, got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if len(bad):
        raise ValueError(f"{name} holds indices outside the pool of {n} items: {arr[bad][:10].tolist()}")
    mask = np.zeros(n, dtype=bool)
    mask[arr] = True
    return np.flatnonzero(mask & unl)


# ------------------------------------------------------------------ hyperparameters
class Interval:
    """Constraint: a number of ``kind`` (``int`` or ``float``; never a bool) in a range.

    >>> str(Interval(int, 2, None)), str(Interval(float, 0, 1, closed="right"))
    ('an integer >= 2', 'a number > 0 and <= 1')
    """

    def __init__(self, kind, low=None, high=None, closed: str = "both"):
        if kind not in (int, float):
            raise ValueError(f"Interval kind must be int or float, got {kind!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def is_satisfied_by(self, v) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return False
        if not isinstance(v, numbers.Integral if self.kind is int else numbers.Real):
            return False
        if self.kind is float and not np.isfinite(v):
            return False
        lo_closed = self.closed in ("both", "left")
        hi_closed = self.closed in ("both", "right")
        if self.low is not None and (v < self.low or (v == self.low and not lo_closed)):
            return False
        if self.high is not None and (v > self.high or (v == self.high and not hi_closed)):
            return False
        return True

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo = "" if self.low is None else f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        hi = "" if self.high is None else f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        if self.kind is int and self.low == 1 and self.high is None and self.closed in ("both", "left"):
            return "a positive integer"
        return " ".join(x for x in (what, lo, "and" if lo and hi else "", hi) if x)


class Options:
    """Constraint: one of a fixed set of values (``what`` names them in the error, e.g. "measure")."""

    def __init__(self, values, what: str | None = None):
        self.values, self.what = tuple(values), what

    def is_satisfied_by(self, v) -> bool:
        return any((isinstance(v, str) and v == x) if isinstance(x, str) else v is x for x in self.values)

    def __str__(self) -> str:
        return f"one of {', '.join(map(repr, self.values))}"


class HasMethods:
    """Constraint: an object with the given methods (e.g. an unfitted estimator with ``fit`` and ``predict_proba``)."""

    def __init__(self, *methods):
        self.methods = methods

    def is_satisfied_by(self, v) -> bool:
        return all(callable(getattr(v, m, None)) for m in self.methods)

    def __str__(self) -> str:
        return f"an object with {' and '.join(self.methods)} methods"


def _satisfied(c, v) -> bool:
    if c is None:
        return v is None
    if c == "boolean":
        return isinstance(v, (bool, np.bool_))
    if isinstance(c, type):
        return isinstance(v, c)
    return c.is_satisfied_by(v)


def _describe(c) -> str:
    if c is None:
        return "None"
    if c == "boolean":
        return "a bool"
    if isinstance(c, type):
        return f"a {c.__name__}"
    return str(c)


def validate_params(owner: str, params: dict, constraints: dict) -> None:
    """Check ``params`` against ``constraints`` (scikit-learn's ``_parameter_constraints`` style).

    ``constraints`` maps a parameter name to a list of allowed forms: ``None``,
    ``"boolean"``, a type, an :class:`Interval`, :class:`Options` or
    :class:`HasMethods`. The first parameter that satisfies none raises
    ``ValueError`` naming ``owner``, the parameter, what was allowed and the value.

    >>> validate_params("Coverage", {"max_clusters": 0}, {"max_clusters": [Interval(int, 1, None)]})
    Traceback (most recent call last):
    ...
    ValueError: Coverage: max_clusters must be a positive integer, got 0
    >>> validate_params("Margin", {"measure": "bogus"}, {"measure": [Options(("margin", "entropy"), "measure")]})
    Traceback (most recent call last):
    ...
    ValueError: Margin: unknown measure 'bogus'; choose from margin, entropy
    """
    for key, allowed in constraints.items():
        if key not in params:
            continue
        v = params[key]
        if any(_satisfied(c, v) for c in allowed):
            continue
        opts = [c for c in allowed if isinstance(c, Options)]
        if opts and isinstance(v, str):
            what = opts[0].what or key
            raise ValueError(f"{owner}: unknown {what} {v!r}; choose from {', '.join(map(str, opts[0].values))}")
        raise ValueError(f"{owner}: {key} must be {' or '.join(_describe(c) for c in allowed)}, got {v!r}")
