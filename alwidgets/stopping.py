"""Stopping rules: when is more labelling (with this strategy) no longer worth it?

Each rule is a small stateless object whose ``check(...)`` takes the history
it needs and returns a :class:`StoppingDecision`: the action, a sentence
saying why, and the numbers behind it, so a session can show the evidence
rather than a bare verdict.

- :class:`StabilizingPredictions`: predictions on a fixed, unlabelled *stop
  set* no longer change between rounds (Cohen's kappa between consecutive
  rounds stays above 0.99; Bloodgood & Vijay-Shanker, 2009).
- :class:`LowUncertainty`: the model is sure about the remaining pool.
- :class:`AccuracyLift`: the last round bought less than one accuracy point;
  suggests switching strategy rather than stopping.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from ._validation import UNLABELED, check_labels, check_positive_int, check_probs
from .select.uncertainty import MEASURES, uncertainty
from .store.agreement import cohen_kappa

ACTIONS = ("stop", "continue", "switch_strategy")


@dataclass(frozen=True)
class StoppingDecision:
    """What a stopping rule advises, and why.

    Attributes
    ----------
    action : {"stop", "continue", "switch_strategy"}
    rule : str
        Name of the rule that decided.
    reason : str
        One sentence for the user.
    evidence : dict
        The numbers behind the decision (kappas, uncertainty, lift, thresholds).
    """

    action: str
    rule: str
    reason: str
    evidence: dict = field(default_factory=dict)

    @property
    def stop(self) -> bool:
        """True when the rule advises to stop labelling."""
        return self.action == "stop"


def agreement_kappa(a, b) -> float:
    """Cohen's kappa between two label vectors; 1.0 when they are identical (even if constant)."""
    a, b = np.asarray(a), np.asarray(b)
    if np.array_equal(a, b):
        return 1.0
    k = cohen_kappa(a, b)
    return 0.0 if not np.isfinite(k) else float(k)


class StabilizingPredictions(BaseEstimator):
    """Stop when predictions on a stop set have stopped changing between rounds.

    The stop set is a fixed random sample of the pool (a few hundred to a
    few thousand items, labelled or not) drawn once; record the model's
    predictions on it after every round and pass the history to :meth:`check`.

    Parameters
    ----------
    threshold : float
        Kappa between consecutive rounds regarded as "no change".
    window : int
        How many consecutive comparisons must all reach ``threshold``.

    Examples
    --------
    >>> from alwidgets.stopping import StabilizingPredictions
    >>> rounds = [[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    >>> d = StabilizingPredictions(window=3).check(rounds)
    >>> d.action, d.evidence["kappas"]
    ('stop', [0.5, 1.0, 1.0, 1.0])
    """

    def __init__(self, threshold: float = 0.99, window: int = 3):
        self.threshold = threshold
        self.window = window

    def check(self, predictions) -> StoppingDecision:
        """Decide from the history of predictions on the stop set, one entry per round (oldest first).

        Each entry is a 1-d array of predicted classes, or a 2-d array of
        class probabilities (its arg-max is used); all cover the same items.
        """
        if not (-1.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be a kappa in [-1, 1], got {self.threshold}")
        check_positive_int(self.window, "window")
        rounds = []
        for r, p in enumerate(predictions):
            arr = np.asarray(p)
            if arr.ndim == 2:
                arr = check_probs(arr, name=f"predictions[{r}]").argmax(axis=1)
            elif arr.ndim != 1:
                raise ValueError(f"predictions[{r}] must be 1-d classes or 2-d probabilities, got shape {arr.shape}")
            if rounds and len(arr) != len(rounds[0]):
                raise ValueError(f"predictions[{r}] covers {len(arr)} items but predictions[0] covers {len(rounds[0])}:"
                                 " use the same stop set every round")
            rounds.append(arr)
        kappas = [round(agreement_kappa(a, b), 6) for a, b in zip(rounds, rounds[1:])]
        evidence = {"kappas": kappas, "threshold": self.threshold, "window": int(self.window), "rounds": len(rounds)}
        if len(kappas) < self.window:
            return StoppingDecision("continue", "stabilizing_predictions",
                                    f"need {self.window + 1} rounds of stop-set predictions, have {len(rounds)}",
                                    evidence)
        recent = kappas[-self.window:]
        if min(recent) >= self.threshold:
            return StoppingDecision("stop", "stabilizing_predictions",
                                    f"predictions on the stop set agree with kappa >= {self.threshold} "
                                    f"over the last {self.window} rounds (lowest {min(recent):.3f})", evidence)
        return StoppingDecision("continue", "stabilizing_predictions",
                                f"predictions still change: kappa {min(recent):.3f} < {self.threshold} "
                                f"within the last {self.window} rounds", evidence)


class LowUncertainty(BaseEstimator):
    """Stop when the model is confident about the unlabelled pool.

    Parameters
    ----------
    threshold : float
        Stop when the statistic of the uncertainty is at or below this.
        The default (mean margin uncertainty 0.2) means the top two classes
        are on average at least 0.8 apart.
    measure : {"margin", "entropy", "least_confidence"}
        See :func:`alwidgets.select.uncertainty`.
    statistic : {"mean", "max"}
        ``"max"`` is stricter: stop only when *no* item is uncertain.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.stopping import LowUncertainty
    >>> sure = np.array([[0.97, 0.03], [0.05, 0.95]])
    >>> LowUncertainty().check(sure).action
    'stop'
    """

    def __init__(self, threshold: float = 0.2, measure: str = "margin", statistic: str = "mean"):
        self.threshold = threshold
        self.measure = measure
        self.statistic = statistic

    def check(self, probs, labels=None) -> StoppingDecision:
        """Decide from predicted ``probs`` of the pool; rows with a label (``labels != -1``) are skipped.

        Calibrate the probabilities first (see :mod:`alwidgets.calibrate`):
        an over-confident model would stop too early.
        """
        if self.measure not in MEASURES:
            raise ValueError(f"unknown measure {self.measure!r}; choose from {', '.join(MEASURES)}")
        if self.statistic not in ("mean", "max"):
            raise ValueError(f"statistic must be 'mean' or 'max', got {self.statistic!r}")
        probs = check_probs(probs)
        if labels is not None:
            labels = check_labels(labels, n_items=len(probs))
            probs = probs[labels == UNLABELED]
        if len(probs) == 0:
            return StoppingDecision("stop", "low_uncertainty", "no unlabelled items are left",
                                    {"n_items": 0, "threshold": self.threshold})
        u = uncertainty(probs, self.measure)
        value = float(u.mean() if self.statistic == "mean" else u.max())
        evidence = {"mean": float(u.mean()), "max": float(u.max()), "statistic": self.statistic,
                    "measure": self.measure, "threshold": self.threshold, "n_items": int(len(u))}
        if value <= self.threshold:
            return StoppingDecision("stop", "low_uncertainty",
                                    f"{self.statistic} {self.measure} uncertainty {value:.3f} <= {self.threshold}",
                                    evidence)
        return StoppingDecision("continue", "low_uncertainty",
                                f"{self.statistic} {self.measure} uncertainty {value:.3f} > {self.threshold}",
                                evidence)


class AccuracyLift(BaseEstimator):
    """Suggest switching strategy when the last round lifted accuracy by less than ``min_lift``.

    Parameters
    ----------
    min_lift : float
        Smallest worthwhile gain per round, as a fraction (0.01 = 1 point).

    Examples
    --------
    >>> from alwidgets.stopping import AccuracyLift
    >>> d = AccuracyLift().check([0.70, 0.78, 0.784])
    >>> d.action, d.evidence["lift_points"]
    ('switch_strategy', 0.4)
    """

    def __init__(self, min_lift: float = 0.01):
        self.min_lift = min_lift

    def check(self, accuracies, n_labels=None) -> StoppingDecision:
        """Decide from accuracy per round (oldest first, fractions in [0, 1]); ``n_labels`` optional."""
        acc = np.asarray(accuracies, dtype=np.float64)
        if acc.ndim != 1:
            raise ValueError(f"accuracies must be 1-d (one value per round), got shape {acc.shape}")
        bad = ~np.isfinite(acc) | (acc < 0) | (acc > 1)
        if bad.any():
            raise ValueError(f"accuracies must be fractions in [0, 1]; rounds {np.flatnonzero(bad).tolist()} are not")
        evidence = {"min_lift_points": round(100 * self.min_lift, 6), "rounds": int(len(acc))}
        if n_labels is not None:
            n_labels = np.asarray(n_labels)
            if n_labels.shape != acc.shape:
                raise ValueError(f"n_labels has shape {n_labels.shape} but accuracies has {acc.shape}")
        if len(acc) < 2:
            return StoppingDecision("continue", "accuracy_lift", "need accuracy from at least two rounds", evidence)
        lift = float(acc[-1] - acc[-2])
        evidence.update({"previous": float(acc[-2]), "last": float(acc[-1]), "lift": round(lift, 6),
                         "lift_points": round(100 * lift, 6)})
        if n_labels is not None:
            evidence["labels_added"] = int(n_labels[-1] - n_labels[-2])
        change = f"accuracy {'rose' if lift >= 0 else 'fell'} {abs(100 * lift):.1f} points over the last round"
        if lift < self.min_lift:
            return StoppingDecision("switch_strategy", "accuracy_lift",
                                    f"{change} (lift < {100 * self.min_lift:g}): try another strategy", evidence)
        return StoppingDecision("continue", "accuracy_lift", change, evidence)
