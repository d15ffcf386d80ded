"""Selectors: strategies that pick the next batch to label.

All share one contract (see :class:`Selector`)::

    selection = selector.select(n, labels=labels, embeddings=X, probs=P, random_state=0)
    selection.indices, selection.scores
"""
from .base import Selection, Selector
from .random import Random
from .registry import available, make_selector, register
from .uncertainty import Entropy, LeastConfidence, Margin, uncertainty

__all__ = [
    "Selection",
    "Selector",
    "Random",
    "LeastConfidence",
    "Margin",
    "Entropy",
    "uncertainty",
    "available",
    "make_selector",
    "register",
]
