"""Uncertainty + diversity: the most uncertain items, thinned to a spread-out batch."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval, Options
from ..embeddings import take_rows
from ._faiss import kmeans, nearest_center, sq_norms
from .base import Selection, Selector, top_k
from .kcenter import farthest_first
from .registry import register
from .uncertainty import MEASURES, uncertainty

METHODS = ("kmeans", "kcenter")

LABELLED_IN_ONE_GO = 100_000
"""``method="kcenter"`` reads up to this many labelled rows at once; more are read in blocks of it
(100,000 x 256 float32 = 100 MB), so a big labelled set never has to fit in memory."""


@register("uncertainty_diversity")
class UncertaintyDiversity(Selector):
    """Take the ``factor x n`` most uncertain items, then a diverse batch of ``n`` among them.

    Plain top-n uncertainty fills a batch with near-copies of the same hard
    case; filtering first and diversifying second keeps the uncertainty gain
    and removes the redundancy. ``method="kmeans"`` clusters the candidates
    into ``n`` groups with uncertainty-weighted faiss k-means and takes the
    candidate nearest each centre (Zhdanov, 2019, "Diverse mini-batch active
    learning"); ``method="kcenter"`` runs greedy k-center on the candidates,
    seeded by the labelled items.

    Parameters
    ----------
    measure : {"margin", "least_confidence", "entropy"}
        Uncertainty used for the pre-filter (see :func:`uncertainty`).
    factor : int
        Candidates per batch slot.
    method : {"kmeans", "kcenter"}
        How the diverse batch is drawn from the candidates.

    Notes
    -----
    ``Selection.scores`` are the uncertainty of each pick.

    Exact at any pool size: the uncertainty pass is chunked and only the
    ``factor x n`` candidates (and the labelled items, for ``"kcenter"``, in
    blocks of ``LABELLED_IN_ONE_GO``) are read from the embeddings, so
    memory-mapped :class:`~alwidgets.embeddings.ShardedEmbeddings` are never
    loaded whole. It needs no IVF index (unlike coverage, k-center and BADGE
    on big pools): its geometry runs on ``factor x n`` rows, and an index over
    the pool would cost a pass over every row that it never needs.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import UncertaintyDiversity
    >>> X = np.array([[0.0], [0.01], [5.0], [9.0]])
    >>> P = np.array([[0.5, 0.5], [0.5, 0.5], [0.6, 0.4], [0.9, 0.1]])
    >>> sel = UncertaintyDiversity(factor=3, method="kcenter").select(2, labels=[-1] * 4, embeddings=X, probs=P)
    >>> sorted(sel.indices.tolist())   # one of the twin items, then the far uncertain one
    [0, 2]
    """

    requires = ("embeddings", "probs")
    _parameter_constraints = {
        "measure": [Options(MEASURES, "uncertainty measure")],
        "factor": [Interval(int, 1, None)],
        "method": [Options(METHODS, "method")],
    }

    def __init__(self, measure: str = "margin", factor: int = 10, method: str = "kmeans"):
        self.measure = measure
        self.factor = factor
        self.method = method

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        unl = candidates
        u = uncertainty(probs if len(unl) == len(probs) else probs[unl], self.measure)
        m = min(self.factor * n, len(unl))
        cand, cu = top_k(u, unl, m, rng)
        info = {"measure": self.measure, "method": self.method, "n_candidates": int(m)}
        if m == n:
            return Selection(cand, cu, info)
        if self.method == "kcenter":
            lab = np.flatnonzero(labels != UNLABELED)
            if len(lab) <= LABELLED_IN_ONE_GO:
                X = np.concatenate([embeddings[lab], embeddings[cand]])
                rows, _ = farthest_first(X, n, start=np.arange(len(lab)))
                pos = rows - len(lab)
            else:   # many labelled items: their distances to the candidates, reading them in blocks
                Xc = np.asarray(embeddings[cand], dtype=np.float32)
                init = np.full(len(Xc), np.inf, np.float32)
                for s in range(0, len(lab), LABELLED_IN_ONE_GO):
                    np.minimum(init, nearest_center(Xc, take_rows(embeddings, lab[s:s + LABELLED_IN_ONE_GO]))[1],
                               out=init)
                pos, _ = farthest_first(Xc, n, init_sqdist=init)
        else:
            Xc = embeddings[cand]
            w = cu - cu.min() + 1e-6
            C = kmeans(Xc, n, seed=int(rng.integers(2**31 - 1)), weights=w, rng=rng)
            pos = _nearest_distinct(Xc, C)
            pos = pos[np.argsort(-cu[pos], kind="stable")]  # show the most uncertain first
        return Selection(cand[pos], cu[pos], info)


def _nearest_distinct(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """For each centre, the nearest row of ``X`` not already taken by an earlier centre.

    Centres are served in order of how tight their nearest match is, so a
    crowded region cannot push a centre onto a far-away row first.
    """
    D = sq_norms(X)[:, None] - 2.0 * (X @ C.T) + sq_norms(C)[None, :]
    taken = np.zeros(len(X), dtype=bool)
    out = np.empty(len(C), dtype=np.int64)
    for c in np.argsort(D.min(axis=0), kind="stable"):
        col = np.where(taken, np.inf, D[:, c])
        i = int(np.argmin(col))
        out[c] = i
        taken[i] = True
    return out
