"""The approximate path of the geometry selectors for big pools: an IVF partition of the pool.

Coverage, k-center and BADGE need the pool in memory as float32 on their
exact paths (10 million x 256 = 10 GB, coverage a second, normalised copy).
With ``approximate="auto"`` they take the approximate path on pools of
``APPROX_MIN_ROWS`` items or more, and on memory-mapped pools whose float32
copy would exceed ``MATERIALIZE_LIMIT``: they work on an IVF partition of the
pool (:class:`IVFPartition`), a coarse quantizer (``nlist`` centroids, faiss
k-means on a sample) and the inverted lists (every indexed row's cell and its
squared distance to the cell's centroid), built in one chunked pass over the
(memory-mapped) embeddings. This is faiss's ``IndexIVFFlat`` without the
stored vectors: the rows stay on disk, and only the rows a step needs are
read back. Pools of up to ``IVF_MAX_ROWS`` rows are indexed whole; bigger
ones through their labelled rows, their candidates (when few) and a uniform
random sample. ``approximate=True`` forces the path (that is how the tests
run it on pools where the exact path runs too); ``False`` forces the exact
one.

What each selector does with it:

- **coverage** (TypiClust): its k-means clusters (``K = #labelled + n``
  centroids on the L2-normalised rows) *are* the cells, so every indexed row
  is assigned, and the rest of the algorithm runs unchanged, reading only the
  rows it ranks (:meth:`Coverage._ivf`).
- **k-center**: greedy farthest-first on the labelled items plus a candidate
  set drawn from every cell (its rows farthest from the centroid, where the
  covering radius is decided, plus a stratified random share of
  ``approx_sample``), then verification passes: a row cannot be farther from
  the chosen centres than its distance to its centroid plus the centroid's
  distance to the centres (triangle inequality), so only rows where that
  bound exceeds the candidates' covering radius are read (at most
  ``APPROX_VERIFY_ROWS`` per pass, largest bounds first); rows found farther
  join the candidates and the greedy runs again, until none is found or
  ``APPROX_REFINE`` passes are spent (:meth:`KCenterGreedy._ivf`).
- **BADGE**: D^2 sampling on a candidate set drawn from every cell (its rows
  with the largest gradient norm, which D^2 sampling favours, plus a
  stratified random share of ``approx_sample``) (:meth:`Badge._ivf`).

Uncertainty + diversity needs none of this: it reads only the ``factor x n``
most uncertain rows (and the labelled ones, in blocks), exact at every size.
"""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval, Options
from ..embeddings import CHUNK_ROWS, MATERIALIZE_LIMIT, ShardedEmbeddings, as_dense, take_rows
from ._faiss import kmeans, l2_normalize, nearest_center, sq_norms

APPROX_MIN_ROWS = 4_000_000
"""In-memory pools of at least this many items take the approximate (IVF) path when
``approximate="auto"``. Below it the exact algorithms run, and they are fast where the pool fits
in memory: k-center's lazy greedy took 2.8 s on 1,000,000 x 256 float32 (the IVF path 13.5 s, for
the same covering radius); memory-mapped pools whose float32 copy would exceed
``MATERIALIZE_LIMIT`` take the IVF path at any size."""

APPROX_SAMPLE = 200_000
"""Default candidate budget on the approximate path (200,000 x 256 float32 = 200 MB)."""

IVF_MAX_ROWS = 1_000_000
"""Pools of up to this many rows are indexed whole; bigger ones through their labelled rows, their
candidates (when fewer) and a uniform random sample of about this many. The pass that assigns rows
to cells costs 6-15 s per million 256-d float16 rows on the 2 busy cores of the benchmark machine
(60-150 s for all of 10 million, beyond the 60 s target; the sample's rows still span every page
of the files, so reading them costs as much as a full read, converting and comparing them a tenth)."""

IVF_NLIST_MAX = 256
"""Most cells of the k-center / BADGE partition: ``nlist = clip(sqrt(N), 16, IVF_NLIST_MAX)``. The
assignment pass costs ``N x nlist x d`` multiply-adds (10M x 256 x 256 = 6.6e11: the bulk of the
approximate path's time on 2 cores)."""

IVF_TRAIN_PER_CELL = 64
"""k-means of the coarse quantizer trains on ``nlist x IVF_TRAIN_PER_CELL`` random rows."""

APPROX_EXTREMES = 0.25
"""Share of ``approx_sample`` given to each cell's extreme rows (farthest from the centroid for
k-center, largest gradient norm for BADGE): ``max(1, 0.25 x approx_sample / nlist)`` per cell."""

APPROX_REFINE = 3
"""Most k-center refinement passes."""

APPROX_VERIFY_ROWS = 250_000
"""Rows a k-center refinement pass reads at most: those whose triangle-inequality bound exceeds the
covering radius, the largest bounds first. Pools where that is too few for a complete check (256-d
pools of a million rows and more: there the bound prunes little) get one such pass, not
``APPROX_REFINE``."""


def use_approximate(setting, embeddings) -> bool:
    """Whether a selector with ``approximate=setting`` takes the IVF path on ``embeddings``."""
    if setting != "auto":
        return bool(setting)
    n, d = embeddings.shape
    return n >= APPROX_MIN_ROWS or (isinstance(embeddings, ShardedEmbeddings) and n * d * 4 > MATERIALIZE_LIMIT)


def iter_float32(X, rows: int = CHUNK_ROWS, copy: bool = False):
    """``(start, float32 block)`` over any embedding matrix: sharded (chunked reads that release their
    pages: always fresh arrays), a memory map or an array (views where possible, unless ``copy``)."""
    if isinstance(X, ShardedEmbeddings):
        yield from X.iter_chunks(rows)
        return
    for s in range(0, len(X), rows):
        B = X[s:s + rows]
        yield s, (np.array(B, dtype=np.float32, order="C", copy=True) if copy
                  else np.ascontiguousarray(B, dtype=np.float32))


class IVFPartition:
    """An IVF index without stored vectors: a coarse quantizer and the inverted lists of a pool.

    Attributes: ``centroids`` ``(nlist, d)``; per row ``cell`` (int32), ``d2`` (squared distance to
    the centroid of its cell) and ``sq`` (squared norm of the row as partitioned); ``sizes`` per cell.

    Built by :meth:`build` in one chunked pass; ``normalize`` partitions the L2-normalised rows
    (coverage's space). With more than ``IVF_TWO_LEVEL`` cells a row is compared with the
    ``sqrt(nlist)`` centroids of a second, coarser k-means first, then with the cells of its
    nearest group only (``2 sqrt(nlist)`` distances instead of ``nlist``): the cell is then
    not always the nearest one, but ``d2`` is always the exact distance to the cell's centroid,
    which is what the triangle-inequality bounds of k-center need. Memory: 12 bytes per row.
    """

    def __init__(self, centroids, rows, cell, d2, sq, normalize: bool):
        self.centroids, self.rows, self.normalize = centroids, rows, normalize
        self.cell, self.d2, self.sq = cell, d2, sq
        self.nlist = len(centroids)
        self.sizes = np.bincount(cell, minlength=self.nlist)

    def positions(self, pool_rows) -> np.ndarray:
        """Positions in ``rows`` of pool rows that are indexed (all of them must be)."""
        return np.searchsorted(self.rows, pool_rows)

    @classmethod
    def build(cls, X, nlist: int, rng: np.random.Generator, *, rows=None, normalize: bool = False,
              train_per_cell: int = IVF_TRAIN_PER_CELL, **kmeans_kw) -> "IVFPartition":
        """Train ``nlist`` centroids (faiss k-means on ``nlist x train_per_cell`` random rows of
        ``rows``), then assign each of ``rows`` (sorted pool rows; default all) in one chunked pass."""
        rows = np.arange(len(X), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        N = len(rows)
        m = min(N, max(nlist * train_per_cell, nlist))
        train = rows[np.sort(rng.choice(N, m, replace=False))] if m < N else rows
        T = take_rows(X, train)
        T = l2_normalize(T) if normalize else T
        C = kmeans(T, int(min(nlist, m)), seed=int(rng.integers(2**31 - 1)), rng=rng,
                   max_points_per_centroid=max(len(T), 1), **kmeans_kw)
        groups = None
        if len(C) > IVF_TWO_LEVEL:
            G = kmeans(C, int(np.ceil(np.sqrt(len(C)))), seed=int(rng.integers(2**31 - 1)), rng=rng)
            owner, _ = nearest_center(C, G)
            groups = (G, [np.flatnonzero(owner == g) for g in range(len(G))])
        cell = np.empty(N, np.int32)
        d2 = np.empty(N, np.float32)
        sq = np.empty(N, np.float32)
        for s, B in iter_rows_float32(X, rows, copy=normalize):
            e = s + len(B)
            sq[s:e] = sq_norms(B)
            if normalize:   # in place, on this pass's own copy of the rows
                norms = np.sqrt(sq[s:e])
                norms[norms == 0] = 1.0
                B /= norms[:, None]
                sq[s:e] = np.where(sq[s:e] > 0, 1.0, 0.0)
            cell[s:e], d2[s:e] = _assign(B, C, sq[s:e], groups)
        return cls(np.ascontiguousarray(C, np.float32), rows, cell, d2, sq, normalize)


def index_rows(n_rows: int, keep, candidates, rng, limit: int | None = None) -> np.ndarray:
    """The sorted pool rows an IVF partition indexes: all of them up to ``limit`` (default
    ``IVF_MAX_ROWS``) rows; else ``keep`` (the labelled rows), the ``candidates`` when there are at
    most ``limit`` of them, and about ``limit`` uniform random rows (of the candidates when there
    are more; Bernoulli sampling, O(n))."""
    limit = IVF_MAX_ROWS if limit is None else limit
    if n_rows <= limit:
        return np.arange(n_rows, dtype=np.int64)
    candidates = np.asarray(candidates, np.int64)
    mask = np.zeros(n_rows, bool)
    mask[np.asarray(keep, np.int64)] = True
    if len(candidates) > limit:
        mask[candidates[rng.random(len(candidates)) < limit / len(candidates)]] = True
    else:
        mask[candidates] = True
        rest = limit - len(candidates)
        if rest > 0:
            mask |= rng.random(n_rows) < rest / n_rows
    return np.flatnonzero(mask)


def allowed_positions(part: "IVFPartition", candidates, n_rows: int) -> np.ndarray:
    """Positions in ``part.rows`` of the indexed rows that are ``candidates``."""
    is_cand = np.zeros(n_rows, bool)
    is_cand[candidates] = True
    return np.flatnonzero(is_cand[part.rows])


def iter_rows_float32(X, rows: np.ndarray, chunk: int = CHUNK_ROWS, copy: bool = False):
    """``(position, float32 block)`` of the sorted pool ``rows`` of ``X``, in order, chunk by chunk:
    a memory map is read sequentially, and only the wanted rows are converted to float32."""
    N = len(X)
    if len(rows) == N:   # every row: plain chunks
        yield from iter_float32(X, chunk, copy=copy)
        return
    if isinstance(X, ShardedEmbeddings):
        for s, raw in X.iter_raw_chunks(chunk):
            lo, hi = np.searchsorted(rows, [s, s + len(raw)])
            if hi > lo:
                yield int(lo), np.asarray(raw[rows[lo:hi] - s], dtype=np.float32)
        return
    for lo in range(0, len(rows), chunk):
        yield lo, np.array(X[rows[lo:lo + chunk]], dtype=np.float32, order="C", copy=True)


IVF_TWO_LEVEL = 32
"""Partitions with more cells than this assign rows through a second, coarser quantizer (see
:class:`IVFPartition`)."""


def _assign(B, C, b_sq, groups):
    """Cell and squared distance to its centroid of each row of ``B``: the nearest of ``C``, or the
    nearest of the cells of the nearest group (two-level)."""
    if groups is None:
        return nearest_center(B, C, b_sq)
    G, members = groups
    gown, _ = nearest_center(B, G, b_sq)
    cell = np.empty(len(B), np.int64)
    d2 = np.empty(len(B), np.float32)
    order = np.argsort(gown, kind="stable")
    bounds = np.searchsorted(gown[order], np.arange(len(G) + 1))
    for g in range(len(G)):
        r = order[bounds[g]:bounds[g + 1]]
        if len(r):
            o, d = nearest_center(B[r], C[members[g]], b_sq[r])
            cell[r] = members[g][o]
            d2[r] = d
    return cell, d2


def default_nlist(n_rows: int) -> int:
    """``clip(sqrt(n_rows), 16, IVF_NLIST_MAX)``, never more than the rows."""
    return int(min(n_rows, max(16, min(IVF_NLIST_MAX, int(np.sqrt(n_rows))))))


def stratified_candidates(part: IVFPartition, allowed: np.ndarray, budget: int, rng, score=None,
                          extremes: float = APPROX_EXTREMES) -> np.ndarray:
    """Sorted positions (in ``part.rows``) of candidates drawn from every cell among the positions
    ``allowed``: the ``score``-largest (default: farthest from the centroid)
    ``max(1, extremes x budget / nlist)`` of each cell, plus a random share of ``budget``
    proportional to the cell's allowed rows. All of ``allowed`` when it fits ``budget``."""
    allowed = np.asarray(allowed, np.int64)
    if len(allowed) <= budget:
        return allowed
    score = part.d2 if score is None else score
    cells = part.cell[allowed]
    order = np.argsort(cells, kind="stable")
    bounds = np.searchsorted(cells[order], np.arange(part.nlist + 1))
    per = max(1, int(extremes * budget / part.nlist))
    top = []
    for j in range(part.nlist):
        m = allowed[order[bounds[j]:bounds[j + 1]]]
        if len(m) > per:
            m = m[np.argpartition(-score[m], per - 1)[:per]]
        top.append(m)
    top = np.concatenate(top)
    k = budget - len(top)
    if k > 0:
        # stratified: each cell's share of the random part follows its number of other allowed rows
        free = np.ones(len(part.cell), bool)
        free[top] = False
        counts = np.bincount(cells, minlength=part.nlist) - np.bincount(part.cell[top], minlength=part.nlist)
        quota = np.floor(counts * (k / max(counts.sum(), 1))).astype(np.int64)
        extra = k - int(quota.sum())
        if extra > 0:
            frac = counts * (k / max(counts.sum(), 1)) - quota
            quota[np.argsort(-frac, kind="stable")[:extra]] += 1
        picked = [top]
        for j in range(part.nlist):
            if quota[j] > 0:
                m = allowed[order[bounds[j]:bounds[j + 1]]]
                m = m[free[m]]
                picked.append(rng.choice(m, min(int(quota[j]), len(m)), replace=False))
        top = np.concatenate(picked)
    return np.sort(top)


APPROX_CONSTRAINTS = {
    "approximate": ["boolean", Options(("auto",), "approximate")],
    "approx_sample": [Interval(int, 1, None)],
}
"""Parameter constraints of the ``approximate`` / ``approx_sample`` hyperparameters."""


class Approximable:
    """Mixin of the selectors with an approximate path for big pools (coverage, k-center, BADGE).

    ``_select`` runs the subclass's ``_exact`` on the whole pool in memory, or, from
    :data:`APPROX_MIN_ROWS` rows on with ``approximate="auto"`` (or with ``approximate=True``),
    its ``_ivf`` on an IVF partition of the pool; ``info["approximate"]`` then says what was used.
    """

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        if use_approximate(self.approximate, embeddings):
            return self._ivf(n, labels=labels, embeddings=embeddings,
                             probs=probs if "probs" in self.requires else None, candidates=candidates, rng=rng)
        return self._exact(n, labels=labels, embeddings=as_dense(embeddings), probs=probs, model=model,
                           candidates=candidates, rng=rng)


def labelled_rows(labels) -> np.ndarray:
    return np.flatnonzero(labels != UNLABELED)
