"""Selectors: strategies that pick the next batch to label.

All share one contract (see :class:`Selector`)::

    selection = selector.select(n, labels=labels, embeddings=X, probs=P, model=LinearProbe(),
                                candidates=None, random_state=0, **extra)
    selection.indices, selection.scores

Constructors hold hyperparameters only; per-call data (committee predictions,
MC-dropout samples, costs, per-class scores, regression targets) are the
``extra`` inputs each selector lists in its ``accepts``. :func:`cold_start`
is the loop's rule for selectors that need predictions before a model exists.
"""
from .base import Selection, Selector, cold_start
from .random import Random
from .registry import available, make_selector, register
from .uncertainty import Entropy, LeastConfidence, Margin, uncertainty
from .coverage import Coverage
from .explore import Explore
from .kcenter import KCenterGreedy
from .badge import Badge
from .diversity import UncertaintyDiversity
from .auto import Auto
from .committee import Committee, kl_to_consensus, vote_entropy
from .bald import BALD, bald_scores
from .egl import ExpectedGradientLength, expected_gradient_length
from .targeted import ClassTargeted
from .cost import CostAware
from .variance import Variance

__all__ = [
    "Selection",
    "Selector",
    "cold_start",
    "Random",
    "LeastConfidence",
    "Margin",
    "Entropy",
    "uncertainty",
    "Coverage",
    "Explore",
    "KCenterGreedy",
    "Badge",
    "UncertaintyDiversity",
    "Auto",
    "Committee",
    "vote_entropy",
    "kl_to_consensus",
    "BALD",
    "bald_scores",
    "ExpectedGradientLength",
    "expected_gradient_length",
    "ClassTargeted",
    "CostAware",
    "Variance",
    "available",
    "make_selector",
    "register",
]
