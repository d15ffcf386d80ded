"""Uncertainty + diversity: the most uncertain items, thinned to a spread-out batch."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval, Options
from ._faiss import kmeans, sq_norms
from .base import Selection, Selector, top_k
from .kcenter import farthest_first
from .registry import register
from .uncertainty import MEASURES, uncertainty

METHODS = ("kmeans", "kcenter")


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
        u = uncertainty(probs[unl], self.measure)
        m = min(self.factor * n, len(unl))
        cand, cu = top_k(u, unl, m, rng)
        info = {"measure": self.measure, "method": self.method, "n_candidates": int(m)}
        if m == n:
            return Selection(cand, cu, info)
        if self.method == "kcenter":
            lab = np.flatnonzero(labels != UNLABELED)
            X = np.concatenate([embeddings[lab], embeddings[cand]])
            rows, _ = farthest_first(X, n, start=np.arange(len(lab)))
            pos = rows - len(lab)
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
