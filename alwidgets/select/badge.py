"""BADGE: diverse, uncertain batches via k-means++ on gradient embeddings (Ash et al., 2020)."""
from __future__ import annotations

import numpy as np

from ..embeddings import take_rows
from ._approx import (
    APPROX_CONSTRAINTS,
    APPROX_SAMPLE,
    Approximable,
    IVFPartition,
    default_nlist,
    allowed_positions,
    index_rows,
    stratified_candidates,
)
from ._faiss import sequential_blas, sq_norms
from .base import Selection, Selector
from .registry import register


def gradient_sqdist(Q: np.ndarray, H: np.ndarray, a: np.ndarray | None = None):
    """``sqdist(rows, j)`` between gradient embeddings ``g_i = q_i (x) h_i``, never building them.

    ``|g_i - g_j|^2 = |q_i|^2 |h_i|^2 + |q_j|^2 |h_j|^2 - 2 (q_i . q_j)(h_i . h_j)``,
    so one distance pass costs O(N * (C + d)) instead of O(N * C * d), and the
    N x (C * d) matrix is never materialised. Returns ``(sqdist, a)`` with
    ``a = |g_i|^2``; pass ``a`` when it is already computed.
    """
    if a is None:
        a = sq_norms(Q) * sq_norms(H)

    def sqdist(rows, j):
        if rows is None:
            d = (Q @ Q[j]) * (H @ H[j])
            d *= -2.0
            d += a
        else:
            d = (Q[rows] @ Q[j]) * (H[rows] @ H[j])
            d *= -2.0
            d += a[rows]
        d += a[j]
        np.maximum(d, 0.0, out=d)
        return d

    return sqdist, a


def lazy_d2_sampling(Q: np.ndarray, H: np.ndarray, k: int, rng: np.random.Generator, first: int,
                     max_rejections: int = 16, a: np.ndarray | None = None):
    """k-means++ (D^2) sampling on gradient embeddings, exact, by rejection from stale bounds.

    Every item keeps an upper bound on its squared distance to the nearest
    pick (it only shrinks as picks are added). Each draw proposes an item
    with probability proportional to its bound, brings that one item up to
    date against the picks added since (O(t * (C + d))), and accepts it with
    probability ``true / bound``: exactly D^2 sampling, without touching the
    other N - 1 items. After ``max_rejections`` rejections in a row every
    bound is refreshed in one pass. ``a``: the squared gradient norms, if
    already computed. Returns ``(items, sq_dist_at_pick)``.
    """
    sqdist, a = gradient_sqdist(Q, H, a)
    n = len(Q)
    ub = sqdist(None, first).astype(np.float64)
    picks = [int(first)]
    ub[first] = 0.0
    applied = np.ones(n, dtype=np.int64)     # picks[:applied[i]] are folded into ub[i]
    d2 = [np.inf]

    def exact(rows, t):
        P = np.asarray(picks[:t], dtype=np.int64)
        lo = int(applied[rows].min())
        P = P[lo:]
        d = a[rows][:, None] + a[P][None, :] - 2.0 * (Q[rows] @ Q[P].T) * (H[rows] @ H[P].T)
        ub[rows] = np.minimum(ub[rows], np.maximum(d.min(axis=1), 0.0))
        applied[rows] = t

    while len(picks) < k:
        t = len(picks)
        rejected = 0
        while True:
            total = ub.sum()
            if not total > 0:   # every remaining item duplicates a pick: draw uniformly
                free = np.setdiff1d(np.arange(n), picks)
                i = int(rng.choice(free))
                break
            i = int(np.searchsorted(np.cumsum(ub), rng.random() * total, side="right"))
            i = min(i, n - 1)
            bound = ub[i]
            if applied[i] < t:
                exact(np.array([i]), t)
            if bound > 0 and rng.random() * bound < ub[i]:
                break
            rejected += 1
            if rejected >= max_rejections:
                stale = np.flatnonzero(applied < t)
                for s in range(0, len(stale), 4096):
                    exact(stale[s:s + 4096], t)
                rejected = 0
        d2.append(float(ub[i]))
        picks.append(i)
        ub[i] = 0.0
        applied[i] = len(picks)
    return np.asarray(picks, dtype=np.int64), np.asarray(d2)


@register("badge")
class Badge(Approximable, Selector):
    """Batch Active learning by Diverse Gradient Embeddings.

    Each unlabelled item gets the gradient of the cross-entropy loss, at the
    model's own predicted label, with respect to a linear output layer on the
    embeddings: ``g = (p - onehot(argmax p)) (x) h``. Its length grows with
    the model's uncertainty, its direction with the item's features, so
    k-means++ seeding on these vectors (first the longest, then each next one
    drawn with probability proportional to its squared distance to the
    nearest earlier pick) gives a batch that is both uncertain and spread out.
    Distances use the factorised form, so memory stays O(N * (C + d)), and
    the D^2 sampling is exact but lazy (see :func:`lazy_d2_sampling`).

    ``Selection.scores`` are each pick's distance in gradient space to the
    nearest earlier pick (the first pick: its gradient norm).

    Parameters
    ----------
    approximate : "auto" or bool
        ``"auto"``: exact below ``APPROX_MIN_ROWS`` (4,000,000) items in memory and for
        memory-mapped pools whose float32 copy fits ``MATERIALIZE_LIMIT`` (1 GiB), else the
        IVF path: D^2 sampling on candidates drawn from every cell of an IVF
        partition of the embeddings (each cell's items with the largest gradient
        norm, plus a stratified random share), see docs/scaling.md.
        ``True``/``False`` force either path.
    approx_sample : int
        Candidate budget of the IVF path (default 200,000).

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Badge
    >>> X = np.array([[0.0, 1.0], [0.0, 1.1], [1.0, 0.0], [5.0, 5.0]])
    >>> P = np.array([[0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
    >>> sel = Badge().select(2, labels=[-1, -1, -1, -1], embeddings=X, probs=P, random_state=0)
    >>> len(set(sel.indices.tolist()))
    2
    """

    requires = ("embeddings", "probs")
    _parameter_constraints = {
        **APPROX_CONSTRAINTS,
    }

    def __init__(self, approximate="auto", approx_sample: int = APPROX_SAMPLE):
        self.approximate = approximate
        self.approx_sample = approx_sample

    def _exact(self, n, *, labels, embeddings, probs, model, candidates, rng):
        unl = candidates
        all_free = len(unl) == len(labels)
        H = embeddings if all_free else embeddings[unl]
        Q = np.array(probs if all_free else probs[unl], dtype=np.float32)
        Q[np.arange(len(Q)), np.argmax(Q, axis=1)] -= 1.0
        a = sq_norms(Q) * sq_norms(H)
        top = np.flatnonzero(a == a.max())
        first = int(top[0] if len(top) == 1 else rng.choice(top))
        with sequential_blas():
            rows, d2 = lazy_d2_sampling(Q, H, n, rng, first, a=a)
        d2[0] = a[first]
        info = {"mean_gradient_norm": float(np.sqrt(a).mean())}
        return Selection(unl[rows], np.sqrt(d2), info)

    def _ivf(self, n, *, labels, embeddings, probs, candidates, rng):
        """D^2 sampling on IVF-drawn candidates: from every cell, its largest gradient norms and a
        stratified random share of ``approx_sample``."""
        irows = index_rows(len(labels), np.empty(0, np.int64), candidates, rng)
        part = IVFPartition.build(embeddings, default_nlist(len(irows)), rng, rows=irows)
        allowed = allowed_positions(part, candidates, len(labels))
        # |g|^2 = |p - onehot(argmax p)|^2 |h|^2 = (sum p^2 - 2 max p + 1) |h|^2, in row chunks
        a = np.zeros(len(irows), np.float32)
        for s in range(0, len(allowed), 1 << 18):
            pos = allowed[s:s + (1 << 18)]
            P = np.asarray(probs[irows[pos]], dtype=np.float32)
            a[pos] = (np.einsum("ij,ij->i", P, P) - 2.0 * P.max(axis=1) + 1.0) * part.sq[pos]
        cand = irows[stratified_candidates(part, allowed, self.approx_sample, rng, score=a)]
        sel = self._exact(n, labels=labels[cand], embeddings=take_rows(embeddings, cand), probs=probs[cand],
                          model=None, candidates=np.arange(len(cand)), rng=rng)
        info = {**sel.info, "approximate": {"index": "ivf", "nlist": part.nlist, "indexed_rows": int(len(irows)),
                                            "candidates": int(len(cand)), "pool_candidates": int(len(candidates))}}
        return Selection(cand[sel.indices], sel.scores, info)
