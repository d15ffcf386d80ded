"""Core-set selection by greedy k-center (Sener & Savarese, 2018)."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED
from ._approx import (
    APPROX_CONSTRAINTS,
    APPROX_REFINE,
    APPROX_SAMPLE,
    APPROX_VERIFY_ROWS,
    Approximable,
    IVFPartition,
    default_nlist,
    allowed_positions,
    index_rows,
    stratified_candidates,
)
from ._faiss import BLOCK_ROWS, nearest_center, sequential_blas, sq_norms, vector_sqdist
from ..embeddings import take_rows
from .base import Selection, Selector
from .registry import register


def farthest_first(X: np.ndarray, n: int, *, start: np.ndarray | None = None, candidates: np.ndarray | None = None,
                   chunk: int = 256, init_sqdist: np.ndarray | None = None):
    """Greedy k-center: ``n`` rows of ``X``, each the farthest from all rows chosen so far.

    ``start`` are rows that already count as centres (labelled items);
    ``candidates`` (default: every other row) are the rows that may be
    picked. Without ``start`` the first pick is the candidate nearest to the
    mean of ``X``. Returns ``(rows, distances)``: each pick's Euclidean
    distance to its nearest earlier centre at the time it was picked.

    Exact, with lazy updates: every row keeps an upper bound on its distance
    to the nearest centre (distances only shrink as centres are added). Each
    pick refreshes only the ``chunk`` rows with the largest bounds against the
    centres added since their last refresh, and stops as soon as the best
    refreshed row beats every other bound; when refreshing gets expensive,
    all rows are brought up to date in one blocked GEMM. So a pick costs at
    most one O(N * d) pass, usually far less; memory is O(N).

    ``init_sqdist`` (instead of ``start``): each row's squared distance to centres that are not
    rows of ``X`` (labelled items read separately, see :class:`UncertaintyDiversity`).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    N = len(X)
    x_sq = sq_norms(X)
    start = np.empty(0, np.int64) if start is None else np.asarray(start, dtype=np.int64)
    if candidates is None:
        allowed = np.ones(N, dtype=bool)
    else:
        allowed = np.zeros(N, dtype=bool)
        allowed[np.asarray(candidates, dtype=np.int64)] = True
    allowed[start] = False
    n_allowed = int(allowed.sum())
    if n_allowed == 0:
        return np.empty(0, np.int64), np.empty(0)
    centers = [int(i) for i in start]
    picks, scores = [], []
    if init_sqdist is not None:
        ub = np.asarray(init_sqdist, dtype=np.float32)
    elif len(start):
        _, ub = nearest_center(X, X[start], x_sq)
    else:
        # first centre: the most central candidate; its score is its distance to the mean
        mean = X.mean(axis=0)
        d = x_sq - 2.0 * (X @ mean) + float(mean @ mean)
        d = np.where(allowed, d, np.inf)
        first = int(np.argmin(d))
        picks.append(first)
        scores.append(float(np.sqrt(max(d[first], 0.0))))
        centers.append(first)
        allowed[first] = False
        n_allowed -= 1
        ub = vector_sqdist(X, x_sq)(None, first)
    ub = ub.astype(np.float32, copy=True)
    ub[centers] = 0.0
    applied = np.full(N, len(centers), dtype=np.int64)  # centres[:applied[i]] are folded into ub[i]

    with sequential_blas():
        _greedy(X, x_sq, n, ub, applied, allowed, n_allowed, centers, picks, scores, chunk)
    return np.asarray(picks, dtype=np.int64), np.asarray(scores)


def _greedy(X, x_sq, n, ub, applied, allowed, n_allowed, centers, picks, scores, chunk):
    N = len(X)

    def refresh(rows, t):
        if not len(rows):
            return
        lo = int(applied[rows].min())
        C = X[centers[lo:t]]
        for s in range(0, len(rows), 16384):
            r = rows[s:s + 16384]
            d = X[r] @ C.T
            d *= -2.0
            d += x_sq[centers[lo:t]][None, :]
            d = d.min(axis=1) + x_sq[r]
            ub[r] = np.minimum(ub[r], np.maximum(d, 0.0))
        applied[rows] = t

    ub[~allowed] = -1.0   # never a candidate again; keeps the scans below free of masking
    while len(picks) < n and n_allowed > 0:
        t = len(centers)
        work = 0
        b = min(chunk, n_allowed)
        while True:
            top = np.argpartition(ub, N - b)[N - b:] if b < N else np.arange(N)
            stale = top[applied[top] < t]
            if len(stale):
                refresh(stale, t)
                work += len(stale)
            vals = ub[top].copy()
            i = int(np.argmax(vals))
            ub[top] = -np.inf
            rest = ub.max()
            ub[top] = vals
            if vals[i] >= rest:
                j = int(top[i])
                break
            if work > N // 4 or (b >= n_allowed and not len(stale)):
                # bounds are too loose here: update everything in one pass. (The second test
                # only fires on NaN bounds, which validated inputs cannot produce; it makes
                # sure the loop ends whatever the input.)
                refresh(np.flatnonzero((applied < t) & (ub >= 0)), t)
                j = int(np.argmax(np.where(allowed, np.nan_to_num(ub, nan=-0.5), -1.0)))
                break
            b = min(2 * b, n_allowed)   # many bounds dropped: look deeper next time
        picks.append(j)
        scores.append(float(np.sqrt(max(ub[j], 0.0))))
        centers.append(j)
        allowed[j] = False
        n_allowed -= 1
        ub[j] = -1.0
        applied[j] = len(centers)


def _merge(a, b) -> np.ndarray:
    """Sorted union of two int arrays (sort-based: faster than a hash for these sizes)."""
    m = np.sort(np.concatenate([np.asarray(a, np.int64), np.asarray(b, np.int64)]))
    return m[np.concatenate([[True], m[1:] != m[:-1]])] if len(m) else m


def _rows_beyond(X, rows: np.ndarray, C: np.ndarray, r2: float):
    """The rows (of ``rows``, ascending) whose squared distance to the nearest row of ``C`` exceeds
    ``r2``, and those distances; read in blocks (contiguous ranges of a memory map)."""
    out, dist = [], []
    for s in range(0, len(rows), BLOCK_ROWS * 4):
        r = rows[s:s + BLOCK_ROWS * 4]
        lo, hi = int(r[0]), int(r[-1]) + 1
        if hi - lo <= 2 * len(r):   # dense: one contiguous read (sequential on a memory map)
            B = np.asarray(X[lo:hi], dtype=np.float32)[r - lo]
        else:
            B = take_rows(X, r)
        _, d = nearest_center(B, C)
        hit = d > r2
        out.append(r[hit])
        dist.append(d[hit])
    if not out:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out), np.concatenate(dist)


@register("kcenter")
class KCenterGreedy(Approximable, Selector):
    """Core-set: repeatedly pick the unlabelled item farthest from everything labelled or picked.

    Minimises the radius within which every pool item has a labelled
    neighbour, so the batch covers the embedding space instead of piling up
    in one region. Seeded by the labelled items; with none, the first pick is
    the item nearest the pool mean. Exact, O(N * d) per pick at most (lazy
    bound updates, see :func:`farthest_first`), O(N) memory, float32.

    ``Selection.scores`` are each pick's distance to the nearest labelled or
    earlier-picked item (non-increasing after the first pick).

    Parameters
    ----------
    approximate : "auto" or bool
        ``"auto"``: exact below ``APPROX_MIN_ROWS`` (4,000,000) items in memory and for
        memory-mapped pools whose float32 copy fits ``MATERIALIZE_LIMIT`` (1 GiB), else the
        IVF path: greedy on the labelled items plus candidates drawn from every
        cell of an IVF partition of the pool (each cell's rows farthest from its
        centroid and a stratified random share), refined by passes over the
        cells that may hold a row farther than the covering radius (see
        :mod:`alwidgets.select._approx` and docs/scaling.md). ``True``/``False``
        force either path.
    approx_sample : int
        Candidate budget of the IVF path before refinement (default 200,000).

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import KCenterGreedy
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0], [4.0]])
    >>> sel = KCenterGreedy().select(2, labels=[0, -1, -1, -1, -1], embeddings=X)
    >>> sel.indices.tolist(), sel.scores.tolist()
    ([3, 4], [10.0, 4.0])
    """

    requires = ("embeddings",)
    _parameter_constraints = {
        **APPROX_CONSTRAINTS,
    }

    def __init__(self, approximate="auto", approx_sample: int = APPROX_SAMPLE):
        self.approximate = approximate
        self.approx_sample = approx_sample

    def _exact(self, n, *, labels, embeddings, probs, model, candidates, rng):
        start = np.flatnonzero(labels != UNLABELED)
        idx, scores = farthest_first(embeddings, n, start=start,
                                     candidates=None if len(candidates) + len(start) == len(labels) else candidates)
        return Selection(idx, scores, {"n_seed_centers": int(len(start))})

    def _ivf(self, n, *, labels, embeddings, probs, candidates, rng):
        """Farthest-first on the labelled items + IVF-drawn candidates, refined until no allowed
        indexed row is farther from the centres than the candidates' covering radius (or
        ``APPROX_REFINE`` passes are spent)."""
        N = len(labels)
        lab = np.flatnonzero(labels != UNLABELED)
        irows = index_rows(N, lab, candidates, rng)
        part = IVFPartition.build(embeddings, default_nlist(len(irows)), rng, rows=irows)
        allowed = allowed_positions(part, candidates, N)
        is_allowed = np.zeros(len(irows), bool)
        is_allowed[allowed] = True
        cand = irows[stratified_candidates(part, allowed, self.approx_sample, rng)]
        passes, added, scanned, unchecked = 0, 0, 0, 0
        rows = _merge(lab, cand)
        Xr = take_rows(embeddings, rows)
        while True:
            start, cpos = np.searchsorted(rows, lab), np.searchsorted(rows, cand)
            idx, scores = farthest_first(Xr, n, start=start, candidates=cpos)
            C = Xr[np.concatenate([start, idx])]
            picked = np.zeros(len(rows), bool)
            picked[idx] = True
            rest = cpos[~picked[cpos]]
            r2 = float(nearest_center(Xr[rest], C)[1].max()) if len(rest) else 0.0
            if passes >= APPROX_REFINE or len(cand) == len(allowed) or unchecked:
                break   # (after a pass that could not check every row: more would not either)
            # a row x of cell j is at most |x - c_j| + |c_j - C| from the centres (triangle inequality;
            # |x - c_j| is in the partition): only rows where that exceeds the candidates' covering
            # radius can be farther, the rest are not read
            dc = np.sqrt(nearest_center(part.centroids, C)[1])
            ub = np.sqrt(part.d2) + dc[part.cell]
            todo = is_allowed & (ub * ub > r2 * (1 + 1e-6))
            todo[part.positions(cand)] = False
            todo = np.flatnonzero(todo)
            if len(todo) > APPROX_VERIFY_ROWS:   # the rows with the largest bounds first
                unchecked += len(todo) - APPROX_VERIFY_ROWS
                todo = np.sort(todo[np.argpartition(-ub[todo], APPROX_VERIFY_ROWS)[:APPROX_VERIFY_ROWS]])
            passes += 1
            scanned += len(todo)
            far, far_d = _rows_beyond(embeddings, irows[todo], C, r2)
            if not len(far):
                break
            keep = np.sort(far[np.argsort(-far_d, kind="stable")[:max(1000, 10 * n)]])   # the farthest
            added += len(keep)
            cand = _merge(cand, keep)
            new_rows = keep[~np.isin(keep, rows, assume_unique=True, kind='sort')]
            at = np.searchsorted(rows, new_rows)
            rows = np.insert(rows, at, new_rows)
            Xr = np.insert(Xr, at, take_rows(embeddings, new_rows), axis=0)
        info = {"n_seed_centers": int(len(lab)),
                "approximate": {"index": "ivf", "nlist": part.nlist, "indexed_rows": int(len(irows)),
                                "candidates": int(len(cand)), "pool_candidates": int(len(candidates)),
                                "refine_passes": passes, "rows_scanned": scanned, "rows_unchecked": unchecked,
                                "rows_added": added, "candidate_radius": float(np.sqrt(r2))}}
        return Selection(rows[idx], scores, info)
