"""Uncertainty sampling: ask about the items the model is least sure of."""
from __future__ import annotations

import numpy as np

from .base import Selection, Selector, top_k
from .registry import register

MEASURES = ("least_confidence", "margin", "entropy")


def uncertainty(probs: np.ndarray, measure: str = "margin") -> np.ndarray:
    """Per-row uncertainty of class probabilities; higher = less sure.

    ``least_confidence``: 1 - max p. ``margin``: 1 - (p1 - p2), the gap between
    the two most likely classes. ``entropy``: -sum p log p (nats).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if measure == "least_confidence":
        return 1.0 - probs.max(axis=1)
    if measure == "margin":
        if probs.shape[1] < 2:
            return np.zeros(len(probs))
        top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.where(probs > 0, np.log(probs), 0.0)
        return -(probs * logp).sum(axis=1)
    raise ValueError(f"unknown uncertainty measure {measure!r}; choose from {', '.join(MEASURES)}")


class _Uncertainty(Selector):
    requires = ("probs",)
    measure: str

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        idx, scores = top_k(uncertainty(probs[candidates], self.measure), candidates, n, rng)
        return Selection(idx, scores)


@register("least_confidence")
class LeastConfidence(_Uncertainty):
    """Pick items whose most likely class has the lowest probability.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import LeastConfidence
    >>> probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    >>> LeastConfidence().select(1, labels=[-1, -1, -1], probs=probs).indices.tolist()
    [1]
    """

    measure = "least_confidence"


@register("margin")
class Margin(_Uncertainty):
    """Pick items with the smallest gap between the two most likely classes.

    Usually the strongest plain uncertainty measure with many classes: it looks
    at the decision the model actually has to make.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Margin
    >>> probs = np.array([[0.5, 0.4, 0.1], [0.4, 0.3, 0.3], [0.8, 0.1, 0.1]])
    >>> Margin().select(1, labels=[-1, -1, -1], probs=probs).indices.tolist()
    [0]
    """

    measure = "margin"


@register("entropy")
class Entropy(_Uncertainty):
    """Pick items whose predicted distribution has the highest entropy.

    With many classes entropy favours items spread over many unlikely classes,
    which is often not where the decision is hard; margin tends to do better.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Entropy
    >>> probs = np.array([[0.5, 0.5, 0.0], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    >>> Entropy().select(1, labels=[-1, -1, -1], probs=probs).indices.tolist()
    [1]
    """

    measure = "entropy"
