"""Core-set selection by greedy k-center (Sener & Savarese, 2018)."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED
from ._faiss import NearestCenter, nearest_center, sq_norms, vector_sqdist
from .base import Selection, Selector
from .registry import register


def farthest_first(X: np.ndarray, n: int, *, start: np.ndarray | None = None,
                   candidates: np.ndarray | None = None):
    """Greedy k-center: ``n`` rows of ``X``, each the farthest from all rows chosen so far.

    ``start`` are rows that already count as centres (labelled items);
    ``candidates`` restricts which rows may be picked (default: all not in
    ``start``). Without ``start`` the first pick is the candidate nearest to the
    mean of ``X``. Returns ``(rows, distances)``: each pick's Euclidean
    distance to its nearest earlier centre at the time it was picked.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    N = len(X)
    x_sq = sq_norms(X)
    tracker = NearestCenter(N, vector_sqdist(X, x_sq), slack=1e-5 * float(x_sq.max(initial=0.0)) + 1e-12)
    allowed = np.ones(N, dtype=bool)
    if candidates is not None:
        allowed[:] = False
        allowed[candidates] = True
    start = np.empty(0, np.int64) if start is None else np.asarray(start, dtype=np.int64)
    allowed[start] = False
    if not allowed.any():
        return np.empty(0, np.int64), np.empty(0)
    picks, scores = [], []
    if len(start):
        owner, dist = nearest_center(X, X[start], x_sq)
        tracker.seed(start, dist, owner)
    else:
        # first centre: the most central candidate; its score is its distance to the mean
        mean = X.mean(axis=0)
        d = x_sq - 2.0 * (X @ mean) + float(mean @ mean)
        d = np.where(allowed, d, np.inf)
        first = int(np.argmin(d))
        picks.append(first)
        scores.append(float(np.sqrt(max(d[first], 0.0))))
        tracker.add(first)
        allowed[first] = False
    while len(picks) < n and allowed.any():
        masked = np.where(allowed, tracker.dist, -1.0)
        j = int(np.argmax(masked))
        picks.append(j)
        scores.append(float(np.sqrt(max(masked[j], 0.0))))
        tracker.add(j)
        allowed[j] = False
    return np.asarray(picks, dtype=np.int64), np.asarray(scores)


@register("kcenter")
class KCenterGreedy(Selector):
    """Core-set: repeatedly pick the unlabelled item farthest from everything labelled or picked.

    Minimises the radius within which every pool item has a labelled
    neighbour, so the batch covers the embedding space instead of piling up
    in one region. Seeded by the labelled items; with none, the first pick is
    the item nearest the pool mean. Exact, O(N * d) per pick at most (pruned
    with the triangle inequality), O(N) memory, float32.

    ``Selection.scores`` are each pick's distance to the nearest labelled or
    earlier-picked item (non-increasing after the first pick).

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

    def _select(self, n, *, labels, embeddings, probs, rng):
        start = np.flatnonzero(labels != UNLABELED)
        idx, scores = farthest_first(embeddings, n, start=start)
        return Selection(idx, scores, {"n_seed_centers": int(len(start))})
