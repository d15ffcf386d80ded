"""Cold-start coverage: label the most typical item of each uncovered cluster (TypiClust)."""
from __future__ import annotations

import heapq

import numpy as np

from .._validation import UNLABELED, Interval
from ..embeddings import take_rows
from ._approx import APPROX_CONSTRAINTS, APPROX_SAMPLE, Approximable, IVFPartition, allowed_positions, index_rows
from ._faiss import kmeans, l2_normalize, mean_knn_distance, nearest_center, sequential_blas
from .base import Selection, Selector
from .registry import register

_DUP_SQ = 1e-10  # squared distance under which two unit vectors count as the same point


@register("coverage")
class Coverage(Approximable, Selector):
    """Pick typical items from the clusters that have the fewest labels (TypiClust).

    With few labels the best items to ask about are typical examples of every
    region of the data, not the uncertain or unusual ones (Hacohen et al.,
    2022, "Active learning on a budget"). The pool's L2-normalised embeddings
    are clustered by faiss k-means into ``#labelled + n`` clusters (at most
    ``max_clusters``); clusters are visited round-robin, those with the fewest
    labelled (or already picked) items and the most members first, and from
    each the unlabelled item of highest typicality is taken: the inverse mean
    distance to its ``n_neighbors`` nearest neighbours inside the cluster.
    Clusters smaller than ``min_cluster_size`` are used only when the others
    are exhausted. Needs embeddings only, so it works from zero labels.

    Parameters
    ----------
    max_clusters : int
        Cap on the number of k-means clusters.
    min_cluster_size : int
        Clusters with fewer members are left until last (they are usually outliers).
    n_neighbors : int
        Neighbours in the typicality estimate (capped at half the cluster size).
    max_candidates, max_reference : int
        In clusters larger than this, typicality is computed for at most
        ``max_candidates`` unlabelled members (half the nearest to the centroid,
        half at random) against a random subset of ``max_reference`` members,
        which keeps big pools fast; small clusters are computed exactly.
    kmeans_iter : int
        k-means iterations.
    max_points_per_centroid : int
        k-means trains on at most ``clusters x max_points_per_centroid`` random
        items (but never fewer than ``min_train`` or the whole pool), then
        assigns every item.
    min_train : int
        Floor on the k-means training sample. With few clusters (the cold
        start: 10 clusters x 40 = 400 items) a small sample gives poor
        centroids; on digits raising it from 400 to every item lifted
        accuracy at 1 label per class from 60.6% to 65.6% (5 splits).
    n_init, n_local_trials : int
        While the batch is at least as large as the labelled set
        (``n >= #labelled``: the cold start, where most clusters hold no
        label and two blobs merged into one cluster leave a region with no
        label at all), k-means is seeded by greedy k-means++ (each seed the
        best of ``n_local_trials`` D^2 draws; None = ``2 + ln K``, as in
        scikit-learn) and run ``n_init`` times, keeping the lowest objective.
        Later rounds use one plain k-means++ seeding. On 10 well-separated
        Gaussian blobs (5,000 x 32, centres N(0, 3^2)) 10 picks from zero
        labels hit all 10 blobs in 60 of 60 random pools (one plain seeding:
        11 of 60); on the study's digits / Fashion
        pixels cold starts (20 splits) accuracy at 1 label per class rose
        2.5 / 0.4 points, at 2-5 per class it moved by -0.6 to +0.5 points
        (noise level). Restarting in every round, as TypiClust's KMeans does,
        had cost 0.6-1.6 points at 5 per class. ``n_init=1,
        n_local_trials=1`` gives the earlier behaviour.
    approximate : "auto" or bool
        ``"auto"``: exact below ``APPROX_MIN_ROWS`` (4,000,000) items in memory and for
        memory-mapped pools whose float32 copy fits ``MATERIALIZE_LIMIT`` (1 GiB), else the
        IVF path: the k-means clusters become the cells of an IVF partition of
        the pool, every item is assigned in one chunked pass over the
        (memory-mapped) embeddings, and only the rows that are ranked are read
        back; the picks are those of the exact algorithm up to the k-means
        training sample (see docs/scaling.md). ``True``/``False`` force either path.
    approx_sample : int
        Cap on the k-means training rows of the IVF path (default 200,000).

    Notes
    -----
    ``Selection.scores`` are the typicality of each pick; ``info["clusters"]``
    the cluster each pick came from.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Coverage
    >>> rng = np.random.default_rng(0)
    >>> centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> X = np.repeat(centres, 20, axis=0) + 0.05 * rng.standard_normal((60, 3))
    >>> sel = Coverage().select(3, labels=np.full(60, -1), embeddings=X, random_state=0)
    >>> sorted(int(i) // 20 for i in sel.indices)   # one item from each blob
    [0, 1, 2]
    """

    requires = ("embeddings",)
    _parameter_constraints = {
        **{key: [Interval(int, 1, None)] for key in (
            "max_clusters", "min_cluster_size", "n_neighbors", "max_reference", "kmeans_iter",
            "max_points_per_centroid", "min_train")},
        "max_candidates": [Interval(int, 2, None)],
        "n_init": [Interval(int, 1, None)],
        "n_local_trials": [None, Interval(int, 1, None)],
        **APPROX_CONSTRAINTS,
    }

    def __init__(self, max_clusters: int = 500, min_cluster_size: int = 5, n_neighbors: int = 20,
                 max_candidates: int = 128, max_reference: int = 512, kmeans_iter: int = 10,
                 max_points_per_centroid: int = 40, min_train: int = 4096, n_init: int = 3,
                 n_local_trials: int | None = None, approximate="auto", approx_sample: int = APPROX_SAMPLE):
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.max_candidates = max_candidates
        self.max_reference = max_reference
        self.kmeans_iter = kmeans_iter
        self.max_points_per_centroid = max_points_per_centroid
        self.min_train = min_train
        self.approximate = approximate
        self.approx_sample = approx_sample
        self.n_init = n_init
        self.n_local_trials = n_local_trials

    def _exact(self, n, *, labels, embeddings, probs, model, candidates, rng):
        X = l2_normalize(embeddings)
        N = len(X)
        labelled = labels != UNLABELED
        K = int(min(int(labelled.sum()) + n, self.max_clusters, N))
        C = kmeans(X, K, seed=int(rng.integers(2**31 - 1)), niter=self.kmeans_iter,
                   max_points_per_centroid=max(self.max_points_per_centroid, -(-self.min_train // K)), rng=rng,
                   **self._seeding(int(labelled.sum()), n, K))
        owner, d2 = nearest_center(X, C)
        return self._pick(n, X, owner, d2, K, labelled, candidates, rng, {})

    def _ivf(self, n, *, labels, embeddings, probs, candidates, rng):
        """The exact algorithm with the clusters as the cells of an IVF partition of the pool: k-means
        on a random sample of the normalised rows, every indexed row assigned in one chunked pass, the
        rows that are ranked read back (normalised) when needed."""
        N = len(labels)
        lab = np.flatnonzero(labels != UNLABELED)
        irows = index_rows(N, lab, candidates, rng)
        labelled = labels[irows] != UNLABELED
        K = int(min(len(lab) + n, self.max_clusters, len(irows)))
        per = max(self.max_points_per_centroid, -(-self.min_train // K))
        per = max(1, min(per, self.approx_sample // K))
        part = IVFPartition.build(embeddings, K, rng, rows=irows, normalize=True, train_per_cell=per,
                                  niter=self.kmeans_iter, **self._seeding(len(lab), n, K))
        cand = allowed_positions(part, candidates, N)
        info = {"approximate": {"index": "ivf", "nlist": part.nlist, "indexed_rows": int(len(irows)),
                                "train_rows": int(min(len(irows), part.nlist * per))}}
        sel = self._pick(n, _NormalizedRows(embeddings, irows), part.cell, part.d2, part.nlist,
                         labelled, cand, rng, info)
        return Selection(irows[sel.indices], sel.scores, sel.info)

    def _pick(self, n, X, owner, d2, K, labelled, candidates, rng, info):
        """Round-robin over the clusters (fewest labels first), the most typical free item of each."""
        N = len(owner)
        sizes = np.bincount(owner, minlength=K)
        counts = np.bincount(owner[labelled], minlength=K)
        taken = np.ones(N, dtype=bool)   # labelled, or not a candidate: never picked
        taken[candidates] = False
        open_ = np.bincount(owner[~taken], minlength=K) > 0
        order = np.argsort(owner, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])

        # heap key: (tier, labelled-or-picked count, -size, cluster); tier 0 = big enough,
        # 1 = tiny cluster, 2 = only duplicates of earlier picks left
        heap = [(0 if sizes[c] >= self.min_cluster_size else 1, int(counts[c]), -int(sizes[c]), int(c))
                for c in np.flatnonzero(open_)]
        heapq.heapify(heap)
        ranked: dict[int, tuple] = {}  # cluster -> (candidates by typicality desc, typicalities, all free ranked?)
        picked_in: dict[int, list] = {}
        picks, scores, clusters = [], [], []
        with sequential_blas():   # many small per-cluster searches: threads cost more than they save
            while len(picks) < n and heap:
                tier, cnt, neg_size, c = heapq.heappop(heap)
                members = order[bounds[c]:bounds[c + 1]]
                item = self._next_item(c, members, X, d2, taken, ranked, picked_in, rng, allow_dup=tier == 2)
                if item is None:
                    if tier < 2 and (~taken[members]).any():
                        heapq.heappush(heap, (2, cnt, neg_size, c))  # only duplicates remain
                    continue
                j, typ = item
                taken[j] = True
                picks.append(j)
                scores.append(typ)
                clusters.append(c)
                picked_in.setdefault(c, []).append(j)
                if (~taken[members]).any():
                    heapq.heappush(heap, (tier, cnt + 1, neg_size, c))
        info = {"n_clusters": K, "n_small_clusters": int(np.sum(open_ & (sizes < self.min_cluster_size))),
                "clusters": clusters, **info}
        return Selection(np.asarray(picks, np.int64), np.asarray(scores), info)

    def _seeding(self, n_labelled: int, n: int, K: int) -> dict:
        """k-means seeding for this call: robust (greedy, restarts) only while the batch outnumbers the labels."""
        if n < n_labelled:
            return {"n_init": 1, "n_local_trials": 1}
        trials = 2 + int(np.log(K)) if self.n_local_trials is None else self.n_local_trials
        return {"n_init": self.n_init, "n_local_trials": trials}

    def _next_item(self, c, members, X, d2, taken, ranked, picked_in, rng, allow_dup):
        """Most typical untaken member of cluster ``c`` (not a duplicate of a pick there, unless allowed)."""
        for _ in range(2):
            if c not in ranked:
                free = members[~taken[members]]
                if len(free) == 0:
                    return None
                ranked[c] = self._rank(members, free, X, d2, rng) + (len(free) <= self.max_candidates,)
            cand, typ, complete = ranked[c]
            ok = ~taken[cand]
            if not allow_dup and c in picked_in and ok.any():
                P = X[np.asarray(picked_in[c])]
                Q = X[cand[ok]]
                sq = (Q * Q).sum(1)[:, None] - 2.0 * Q @ P.T + (P * P).sum(1)[None, :]
                ok[np.flatnonzero(ok)[sq.min(axis=1) < _DUP_SQ]] = False
            if ok.any():
                i = int(np.flatnonzero(ok)[0])
                return int(cand[i]), float(typ[i])
            del ranked[c]
            if complete:
                return None  # every free member was ranked: what is left duplicates earlier picks
        return None

    def _rank(self, members, free, X, d2, rng):
        """Candidates of a cluster sorted by typicality (highest first) and their typicality."""
        m = self.max_candidates
        if len(free) > m:
            near = free[np.argsort(d2[free], kind="stable")[: m // 2]]
            rest = np.setdiff1d(free, near, assume_unique=True)
            cand = np.concatenate([near, rng.choice(rest, m - len(near), replace=False)])
        else:
            cand = free
        ref = members if len(members) <= self.max_reference else np.sort(
            rng.choice(members, self.max_reference, replace=False))
        k = min(self.n_neighbors, len(members) // 2)
        if k < 1:
            typ = np.zeros(len(cand))
        else:
            typ = 1.0 / (mean_knn_distance(X[cand], X[ref], k, query_rows=cand, reference_rows=ref) + 1e-6)
        o = np.lexsort((cand, -typ))
        return cand[o], typ[o]


class _NormalizedRows:
    """``X[pos]``: the L2-normalised float32 rows ``rows[pos]`` of (memory-mapped) embeddings, read
    on demand."""

    def __init__(self, embeddings, rows):
        self.embeddings, self.rows = embeddings, rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, pos):
        return l2_normalize(take_rows(self.embeddings, self.rows[np.asarray(pos, np.int64)]))
