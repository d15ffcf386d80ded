"""Explore: deliberately unusual items, for edge-case hunting and dataset QA."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval
from ._faiss import kmeans, mean_knn_distance, nearest_center, sequential_blas, sq_norms
from .base import Selection, Selector, top_k
from .registry import register


@register("explore")
class Explore(Selector):
    """Pick items in sparse regions, far from anything labelled, and not near each other.

    Outlierness is the mean Euclidean distance to an item's ``n_neighbors``
    nearest pool neighbours (large = low density: odd, corrupt or rare
    items). An item's utility is ``min(outlierness, distance to the nearest
    labelled or already-picked item)``: a rare item next to a labelled one is
    not news, and once an item is picked its near-duplicates drop to ~0, so
    the batch never holds two copies of the same oddity.

    Pools up to ``max_exact`` items use exact kNN over the whole pool. Larger
    pools first shortlist ``max(shortlist_factor x n, 512)`` candidates by
    their distance to the nearest of ``n_clusters`` k-means centroids (ignoring
    tiny clusters, which outliers tend to form), then
    score them by kNN distance to a random reference sample of
    ``n_reference`` pool items (a kNN density estimate on a subsample).

    ``Selection.scores`` are the utility of each pick at the time it was made.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Explore
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 0.1, (50, 2)), [[5.0, 5.0], [-4.0, 6.0]]])
    >>> sorted(Explore().select(2, labels=np.full(52, -1), embeddings=X).indices.tolist())
    [50, 51]
    """

    requires = ("embeddings",)
    _parameter_constraints = {key: [Interval(int, 1, None)] for key in (
        "n_neighbors", "max_exact", "n_clusters", "n_reference", "shortlist_factor")}

    def __init__(self, n_neighbors: int = 10, max_exact: int = 5000, n_clusters: int = 64,
                 n_reference: int = 4096, shortlist_factor: int = 8):
        self.n_neighbors = n_neighbors
        self.max_exact = max_exact
        self.n_clusters = n_clusters
        self.n_reference = n_reference
        self.shortlist_factor = shortlist_factor

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        X = embeddings
        N = len(X)
        unl = candidates
        lab = np.flatnonzero(labels != UNLABELED)
        if N <= self.max_exact:
            cand = unl
            outl = self._knn_mean(X[cand], X, reference_rows=np.arange(N), query_rows=cand)
            mode = "exact"
        else:
            m = min(max(self.shortlist_factor * n, 512), len(unl))
            K = min(self.n_clusters, N)
            C = kmeans(X, K, seed=int(rng.integers(2**31 - 1)), rng=rng)
            owner, d2 = nearest_center(X, C)
            # outliers tend to grab a k-means centroid of their own; measure items of tiny
            # clusters against the substantial clusters instead
            sizes = np.bincount(owner, minlength=K)
            big = sizes >= max(5, 0.1 * N / K)
            if big.any() and not big.all():
                small = np.flatnonzero(~big[owner])
                d2[small] = nearest_center(X[small], C[big])[1]
            d2 = d2[unl]
            cand, _ = top_k(d2, unl, m, rng)
            ref = np.sort(rng.choice(N, min(self.n_reference, N), replace=False))
            outl = self._knn_mean(X[cand], X[ref], reference_rows=ref, query_rows=cand)
            mode = "shortlist"
        Xc = np.ascontiguousarray(X[cand])
        c_sq = sq_norms(Xc)
        if len(lab):
            _, d2l = nearest_center(Xc, X[lab], c_sq)
            near = np.sqrt(d2l).astype(np.float64)
        else:
            near = np.full(len(cand), np.inf)
        picks, scores = [], []
        util = np.minimum(outl, near)
        with sequential_blas():
            for _ in range(n):
                util[picks] = -np.inf
                i = int(np.argmax(util))
                picks.append(i)
                scores.append(float(util[i]))
                d = np.sqrt(np.maximum(c_sq - 2.0 * (Xc @ Xc[i]) + c_sq[i], 0.0))
                near = np.minimum(near, d)
                util = np.minimum(outl, near)
        picks = np.asarray(picks, dtype=np.int64)
        return Selection(cand[picks], np.asarray(scores), {"mode": mode, "outlierness": outl[picks].tolist()})

    def _knn_mean(self, Q, R, *, reference_rows, query_rows):
        """Mean distance to the ``n_neighbors`` nearest reference rows, excluding the item itself."""
        k = min(self.n_neighbors, len(R) - 1)
        if k < 1:
            return np.zeros(len(Q))
        return mean_knn_distance(Q, R, k, query_rows=query_rows, reference_rows=reference_rows).astype(np.float64)
