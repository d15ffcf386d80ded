"""Uniform random sampling: the baseline every strategy is measured against."""
from __future__ import annotations

from .base import Selection, Selector, random_pick
from .registry import register


@register("random")
class Random(Selector):
    """Pick unlabelled items uniformly at random.

    Scores are the random priorities drawn for the pick, so they carry no meaning
    beyond the order.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Random
    >>> labels = np.array([0, -1, -1, 1, -1])
    >>> sorted(Random().select(2, labels=labels, random_state=0).indices.tolist())
    [1, 2]
    """

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        idx, scores = random_pick(n, candidates, rng)
        return Selection(idx, scores)
