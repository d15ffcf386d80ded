"""BADGE: diverse, uncertain batches via k-means++ on gradient embeddings (Ash et al., 2020)."""
from __future__ import annotations

import numpy as np

from ._faiss import NearestCenter, d2_sampling, sq_norms
from .base import Selection, Selector, unlabeled_indices
from .registry import register


def gradient_sqdist(Q: np.ndarray, H: np.ndarray):
    """``sqdist(rows, j)`` between gradient embeddings ``g_i = q_i (x) h_i``, never building them.

    ``|g_i - g_j|^2 = |q_i|^2 |h_i|^2 + |q_j|^2 |h_j|^2 - 2 (q_i . q_j)(h_i . h_j)``,
    so one distance pass costs O(N * (C + d)) instead of O(N * C * d), and the
    N x (C * d) matrix is never materialised.
    """
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


@register("badge")
class Badge(Selector):
    """Batch Active learning by Diverse Gradient Embeddings.

    Each unlabelled item gets the gradient of the cross-entropy loss, at the
    model's own predicted label, with respect to a linear output layer on the
    embeddings: ``g = (p - onehot(argmax p)) (x) h``. Its length grows with
    the model's uncertainty, its direction with the item's features, so
    k-means++ seeding on these vectors (first the longest, then each next one
    drawn with probability proportional to its squared distance to the
    nearest earlier pick) gives a batch that is both uncertain and spread out.
    Distances use the factorised form, so memory stays O(N * (C + d)).

    ``Selection.scores`` are each pick's distance in gradient space to the
    nearest earlier pick (the first pick: its gradient norm).

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

    def _select(self, n, *, labels, embeddings, probs, rng):
        unl = unlabeled_indices(labels)
        all_free = len(unl) == len(labels)
        H = embeddings if all_free else embeddings[unl]
        Q = np.array(probs if all_free else probs[unl], dtype=np.float32)
        Q[np.arange(len(Q)), np.argmax(Q, axis=1)] -= 1.0
        sqdist, a = gradient_sqdist(Q, H)
        tracker = NearestCenter(len(unl), sqdist, slack=1e-5 * float(a.max(initial=0.0)) + 1e-12)
        top = np.flatnonzero(a == a.max())
        first = int(top[0] if len(top) == 1 else rng.choice(top))
        rows, d2 = d2_sampling(tracker, n, rng, first)
        d2[0] = a[first]
        info = {"mean_gradient_norm": float(np.sqrt(a).mean())}
        return Selection(unl[rows], np.sqrt(d2), info)
