"""Auto: the session default: coverage while labels are scarce, then uncertainty + diversity."""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval
from .base import Selection, Selector, cold_start
from .coverage import Coverage
from .diversity import UncertaintyDiversity
from .registry import register


@register("auto")
class Auto(Selector):
    """Coverage until there are ``labels_per_class`` labels per class, then uncertainty + diversity.

    With a handful of labels a model's uncertainty is noise, and typical
    items from uncovered clusters teach it more (the cold-start phase of
    Hacohen et al., 2022); once each class has a few examples, the model's
    own doubts become the better guide. The default switch, 5 labels per
    class, comes from the label-efficiency study (``benchmarks/study.py``, 4
    datasets x cold / warm start): switching at 3 per class cost 1.3-2.3
    points at 5 per class in 7 of the 8 cases and was no better later
    (-0.1 and -0.2 points on average at 10 and 20 per class); switching at
    10 was 0.6 points worse at 20 per class. The switch happens when the
    number of labelled items reaches ``labels_per_class x n_classes`` (``n_classes``
    = columns of ``probs``); without ``probs`` (no model yet), or while fewer
    than two classes are labelled, it stays on coverage. ``Selection.info`` reports ``strategy`` (the one actually used),
    ``reason``, ``switch_at`` (labels at which it switches) and ``n_labelled``.
    A ``cold`` strategy that needs ``probs`` runs as random until there are
    some (:func:`~alwidgets.select.base.cold_start`). Extra per-call inputs
    are passed to whichever of ``cold`` and ``warm`` accepts them.

    Parameters
    ----------
    labels_per_class : float
        Average labels per class before switching.
    cold : Selector, optional
        Strategy before the switch; default :class:`Coverage`.
    warm : Selector, optional
        Strategy after it; default :class:`UncertaintyDiversity` (margin, k-means).

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Auto
    >>> X = np.random.default_rng(0).normal(size=(40, 3))
    >>> sel = Auto().select(4, labels=np.full(40, -1), embeddings=X, random_state=0)
    >>> sel.info["strategy"], sel.info["reason"]
    ('coverage', 'no model predictions yet')
    """

    requires = ("embeddings",)
    _parameter_constraints = {
        "labels_per_class": [Interval(float, 0, None)],
        "cold": [None, Selector],
        "warm": [None, Selector],
    }

    def __init__(self, labels_per_class: float = 5, cold: Selector | None = None, warm: Selector | None = None):
        self.labels_per_class = labels_per_class
        self.cold = cold
        self.warm = warm

    def _strategies(self):
        return (self.cold if self.cold is not None else Coverage(),
                self.warm if self.warm is not None else UncertaintyDiversity())

    @property
    def accepts(self) -> tuple[str, ...]:
        cold, warm = self._strategies()
        return tuple(dict.fromkeys((*cold.accepts, *warm.accepts)))

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, **extra):
        cold, warm = self._strategies()
        n_labelled = int(np.count_nonzero(labels != UNLABELED))
        n_seen = len(np.unique(labels[labels != UNLABELED]))
        if probs is None:
            chosen, reason, switch_at = cold, "no model predictions yet", None
        else:
            n_classes = probs.shape[1]
            switch_at = int(np.ceil(self.labels_per_class * n_classes))
            if n_seen < 2:
                chosen = cold
                reason = f"only {n_seen} class labelled so far; the model cannot be uncertain between classes"
            elif n_labelled < switch_at:
                chosen = cold
                reason = (f"{n_labelled} labels < {self.labels_per_class} per class x {n_classes} classes; "
                          "uncertainty is not yet reliable")
            else:
                chosen = warm
                reason = f"{n_labelled} labels >= {self.labels_per_class} per class x {n_classes} classes"
        chosen, fallback = cold_start(chosen, labels, probs)
        if fallback is not None:
            reason = fallback
        # Inputs are already validated and n capped (Selector.select did both for Auto, and
        # default_rng(rng) would hand back this same generator): check the inner strategy's
        # parameters, run it and its output check directly.
        chosen._validate_params()
        sub = {k: v for k, v in extra.items() if k in chosen.accepts}
        sel = chosen._checked(chosen._select(n, labels=labels, embeddings=embeddings, probs=probs, model=model,
                                             candidates=candidates, rng=rng, **sub), labels, n, candidates)
        info = {**sel.info, "strategy": chosen.name, "selector": "auto", "reason": reason,
                "switch_at": switch_at, "n_labelled": n_labelled}
        return Selection(sel.indices, sel.scores, info)
