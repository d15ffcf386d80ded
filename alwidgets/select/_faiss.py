"""Geometry shared by the embedding-based selectors: k-means, nearest centres, kNN.

Everything works in float32, in row blocks, and never builds an N x N matrix:
k-means and kNN come from faiss, nearest-centre assignment is a blocked GEMM,
and :class:`NearestCenter` keeps the distance of every item to its closest
chosen centre up to date in O(N) memory (k-means++ seeding).
"""
from __future__ import annotations

from contextlib import contextmanager

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

BLOCK_ROWS = 16384
"""Rows per block in blocked distance computations (bounds temporary memory)."""


SMALL_WORK = 1_000_000_000
"""Below this many multiply-adds per iteration, faiss runs single-threaded: OpenMP start-up and
spin-waiting cost more than they save, badly so on a busy machine."""


@contextmanager
def single_thread_if(small: bool):
    """Run faiss on one thread inside the block when ``small`` is true."""
    if not small:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextmanager
def sequential_blas():
    """Single-threaded BLAS inside the block: for loops of many small products.

    Greedy selection issues one small matrix-vector product per pick; with
    a multi-threaded BLAS each one pays thread wake-up and synchronisation,
    which on a busy 2-core machine costs more than the product itself.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Unit-length copy of the rows of ``X`` (float32); all-zero rows stay zero."""
    X = np.array(X, dtype=np.float32, order="C", copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    norms[norms == 0] = 1.0
    X /= norms[:, None]
    return X


def sq_norms(X: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row, float32."""
    return np.einsum("ij,ij->i", X, X)


def nearest_center(X: np.ndarray, C: np.ndarray, x_sq: np.ndarray | None = None):
    """Index of and squared distance to the nearest row of ``C`` for each row of ``X``.

    Blocked GEMM (``|x|^2 - 2 x.c + |c|^2``): memory is ``BLOCK_ROWS x len(C)``.
    Squared distances are clipped at 0 (float32 rounding).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    C = np.ascontiguousarray(C, dtype=np.float32)
    if x_sq is None:
        x_sq = sq_norms(X)
    c_sq = sq_norms(C)
    n = len(X)
    owner = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for s in range(0, n, BLOCK_ROWS):
        e = min(s + BLOCK_ROWS, n)
        d = X[s:e] @ C.T
        d *= -2.0
        d += c_sq[None, :]
        j = np.argmin(d, axis=1)
        owner[s:e] = j
        dist[s:e] = d[np.arange(e - s), j] + x_sq[s:e]
    np.maximum(dist, 0.0, out=dist)
    return owner, dist


def kmeans(X: np.ndarray, k: int, *, seed: int, niter: int = 20, max_points_per_centroid: int = 64,
           weights: np.ndarray | None = None, rng: np.random.Generator | None = None, n_init: int = 1,
           n_local_trials: int = 1) -> np.ndarray:
    """Centroids ``(k, d)`` of faiss k-means on ``X``.

    For big pools the centroids are trained on a random subset of
    ``k * max_points_per_centroid`` rows (the standard faiss practice), then the
    caller assigns every row with :func:`nearest_center`. ``k`` must be at most
    ``len(X)``.

    Seeds are k-means++ (D^2 sampling) on at most ``8 k`` of the training
    rows. With ``n_local_trials > 1`` each seed is the best of that many D^2
    draws (the one that lowers the seeding potential most: "greedy"
    k-means++, scikit-learn's default). With ``n_init > 1`` k-means runs from
    that many seedings and the centroids with the lowest final objective
    (sum of squared distances on the training rows) are kept.
    """
    n, d = X.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n_items, got k={k}, n_items={n}")
    cap = k * max_points_per_centroid
    if n > cap:
        rng = rng if rng is not None else np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, cap, replace=False))
        X = X[rows]
        weights = None if weights is None else weights[rows]
    X = np.ascontiguousarray(X, dtype=np.float32)
    rng = rng if rng is not None else np.random.default_rng(seed)
    w32 = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    best, best_obj = None, np.inf
    for _ in range(max(1, int(n_init))):
        # k-means++ seeds (drawn from at most 8 rows per centroid: seeding costs k passes over them)
        seed_rows = np.arange(len(X)) if len(X) <= 8 * k else np.sort(rng.choice(len(X), 8 * k, replace=False))
        sw = None if weights is None else weights[seed_rows]
        if n_local_trials > 1:
            picked = greedy_kmeans_plus_plus(X[seed_rows], k, rng, n_local_trials, weights=sw)
        else:
            picked = kmeans_plus_plus(X[seed_rows], k, rng, weights=sw)
        init = X[seed_rows[picked]]
        km = faiss.Kmeans(d, k, niter=niter, seed=int(seed), verbose=False,
                          max_points_per_centroid=max(len(X), 1), min_points_per_centroid=1)
        with single_thread_if(len(X) * k * d < SMALL_WORK):
            obj = km.train(X, weights=w32, init_centroids=init)
        if n_init <= 1:
            return np.ascontiguousarray(km.centroids, dtype=np.float32)
        if obj < best_obj or best is None:
            best, best_obj = np.array(km.centroids, dtype=np.float32), obj
    return best


def greedy_kmeans_plus_plus(X: np.ndarray, k: int, rng: np.random.Generator, n_trials: int,
                            weights: np.ndarray | None = None) -> np.ndarray:
    """Row indices of ``k`` greedy k-means++ seeds of ``X``.

    Each next seed is the best of ``n_trials`` D^2 draws: the one whose
    addition lowers the (weighted) sum of squared distances to the nearest
    seed most (Arthur & Vassilvitskii, 2007, sec. 6; scikit-learn's default
    uses ``2 + log k`` trials). Far less likely than plain k-means++ to put
    two seeds in one well-separated cluster and none in another. Costs
    ``k x n_trials`` distance passes over ``X``: use it on a small seeding sample.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    m = len(X)
    x_sq = sq_norms(X).astype(np.float64)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)

    def sqdist(cols):
        d = x_sq[:, None] - 2.0 * (X @ X[cols].T).astype(np.float64) + x_sq[cols][None, :]
        return np.maximum(d, 0.0)

    first = int(rng.choice(m, p=None if weights is None or w.sum() <= 0 else w / w.sum()))
    picks = [first]
    D = sqdist([first])[:, 0]
    used = np.zeros(m, dtype=bool)
    used[first] = True
    with sequential_blas():
        while len(picks) < k:
            p = D * w
            p[used] = 0.0
            total = p.sum()
            if total > 0 and np.isfinite(total):
                cand = rng.choice(m, size=n_trials, p=p / total)
            else:   # every remaining row duplicates a seed
                cand = rng.choice(np.flatnonzero(~used), size=1)
            Dc = np.minimum(D[:, None], sqdist(cand))
            j = int(np.argmin((Dc * w[:, None]).sum(axis=0)))
            picks.append(int(cand[j]))
            used[cand[j]] = True
            D = Dc[:, j]
    return np.asarray(picks, dtype=np.int64)


def kmeans_plus_plus(X: np.ndarray, k: int, rng: np.random.Generator, weights: np.ndarray | None = None,
                     first: int | None = None) -> np.ndarray:
    """Row indices of ``k`` k-means++ seeds of ``X`` (D^2 sampling; Arthur & Vassilvitskii, 2007)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    x_sq = sq_norms(X)
    tracker = NearestCenter(len(X), vector_sqdist(X, x_sq), slack=1e-5 * float(x_sq.max(initial=0.0)) + 1e-12)
    if first is None:
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        first = int(rng.choice(len(X), p=None if w is None or w.sum() <= 0 else w / w.sum()))
    with sequential_blas():
        return d2_sampling(tracker, k, rng, first, weights=weights)[0]


def d2_sampling(tracker: "NearestCenter", k: int, rng: np.random.Generator, first: int,
                weights: np.ndarray | None = None):
    """k-means++ seeding on a :class:`NearestCenter`: each next item drawn with p ~ D^2 (x weight).

    Returns ``(items, sq_dist)``: the ``k`` distinct items in pick order and each
    one's squared distance to the nearest earlier pick when drawn (the first:
    ``inf``). Once every remaining item coincides with a pick (all D^2 = 0,
    duplicates), the rest are drawn uniformly from the unused items.
    """
    n = tracker.n
    used = np.zeros(n, dtype=bool)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    out, d2 = [int(first)], [np.inf]
    used[first] = True
    tracker.add(int(first))
    while len(out) < k:
        p = tracker.dist.astype(np.float64)
        if w is not None:
            p *= w
        p[used] = 0.0
        total = p.sum()
        if total > 0 and np.isfinite(total):
            j = int(rng.choice(n, p=p / total))
        else:
            j = int(rng.choice(np.flatnonzero(~used)))
        out.append(j)
        d2.append(float(tracker.dist[j]))
        used[j] = True
        if len(out) < k:
            tracker.add(j)
    return np.asarray(out, dtype=np.int64), np.asarray(d2)


def knn_distances(queries: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distances ``(len(queries), k)`` to the ``k`` nearest rows of ``reference``, ascending.

    Exact. Small problems (the per-cluster and shortlist searches of the
    selectors) use a blocked NumPy GEMM + partial sort, which avoids faiss's
    per-call thread start-up; large ones use faiss ``IndexFlatL2``.
    ``k`` is capped at ``len(reference)``.
    """
    k = int(min(k, len(reference)))
    Q = np.ascontiguousarray(queries, dtype=np.float32)
    R = np.ascontiguousarray(reference, dtype=np.float32)
    if len(Q) * len(R) > 50_000_000:
        index = faiss.IndexFlatL2(R.shape[1])
        index.add(R)
        D, _ = index.search(Q, k)  # large: faiss's own threading pays off
        return np.sqrt(np.maximum(D, 0.0))
    r_sq = sq_norms(R)
    q_sq = sq_norms(Q)
    out = np.empty((len(Q), k), dtype=np.float32)
    step = max(1, 4_000_000 // max(len(R), 1))
    for s in range(0, len(Q), step):
        D = Q[s:s + step] @ R.T
        D *= -2.0
        D += r_sq[None, :]
        D += q_sq[s:s + step, None]
        if k < D.shape[1]:
            D = np.partition(D, k - 1, axis=1)[:, :k]
        out[s:s + step] = np.sort(D, axis=1)
    return np.sqrt(np.maximum(out, 0.0))


def mean_knn_distance(queries: np.ndarray, reference: np.ndarray, k: int, *,
                      query_rows: np.ndarray, reference_rows: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance of each query to its ``k`` nearest reference rows, the item itself excluded.

    ``query_rows`` and ``reference_rows`` are the pool indices of ``queries``
    and ``reference``. ``k + 1`` neighbours are searched (capped at
    ``len(reference)``); a query that is itself in the reference set drops
    the first one (itself, at distance 0), any other query the last. With a
    single neighbour found nothing is dropped. Returns float32, like
    :func:`knn_distances`.
    """
    kk = min(k + 1, len(reference))
    D = knn_distances(queries, reference, kk)
    if kk > 1:
        in_ref = np.isin(query_rows, reference_rows)
        D = np.where(in_ref[:, None], D[:, 1:], D[:, :-1])
    return D.mean(axis=1)


class NearestCenter:
    """Squared distance of every item to its nearest chosen centre, updated per new centre.

    ``sqdist(rows, j)`` must return the float32 squared distances of the items
    ``rows`` (an index array, or ``None`` for all items) to item ``j``:
    :func:`vector_sqdist` gives it for raw vectors (k-means++ seeding), and
    :func:`~alwidgets.select.badge.gradient_sqdist` for factorised gradient
    embeddings. (k-center and BADGE themselves use their own lazy-bound
    loops, see :func:`~alwidgets.select.kcenter.farthest_first` and
    :func:`~alwidgets.select.badge.lazy_d2_sampling`.)

    Adding a centre costs at most one O(N * d) pass, and usually much less:
    by the triangle inequality an item whose current centre ``a`` satisfies
    ``|c - a| >= 2 |x - a|`` cannot be closer to the new centre ``c``, so only the
    other items are recomputed (exact, not an approximation).
    """

    def __init__(self, n_items: int, sqdist, slack: float = 0.0):
        self.n = int(n_items)
        self.sqdist = sqdist
        self.dist = np.full(self.n, np.inf, dtype=np.float32)
        self.owner = np.full(self.n, -1, dtype=np.int64)
        self.centers: list[int] = []
        self.slack = float(slack)  # absolute tolerance for float32 rounding in the pruning test

    def add(self, j: int) -> None:
        """Make item ``j`` a centre and lower the distances it is now closest for."""
        t = len(self.centers)
        if t == 0:
            self.dist = np.asarray(self.sqdist(None, j), dtype=np.float32).copy()
            self.owner[:] = 0
        else:
            cc = np.asarray(self.sqdist(np.asarray(self.centers, dtype=np.int64), j), dtype=np.float32)
            need = cc[self.owner] < 4.0 * self.dist + self.slack
            rows = np.flatnonzero(need)
            if len(rows) > 0.5 * self.n:
                d = np.asarray(self.sqdist(None, j), dtype=np.float32)
                closer = d < self.dist
                self.dist[closer] = d[closer]
                self.owner[closer] = t
            elif len(rows):
                d = np.asarray(self.sqdist(rows, j), dtype=np.float32)
                closer = d < self.dist[rows]
                upd = rows[closer]
                self.dist[upd] = d[closer]
                self.owner[upd] = t
        self.dist[j] = 0.0
        self.owner[j] = t
        self.centers.append(int(j))


def vector_sqdist(X: np.ndarray, x_sq: np.ndarray):
    """``sqdist(rows, j)`` for :class:`NearestCenter` on the rows of ``X``."""

    def sqdist(rows, j):
        xj = X[j]
        if rows is None:
            d = X @ xj
            d *= -2.0
            d += x_sq
        else:
            d = X[rows] @ xj
            d *= -2.0
            d += x_sq[rows]
        d += x_sq[j]
        np.maximum(d, 0.0, out=d)
        return d

    return sqdist
