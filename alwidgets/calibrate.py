"""Calibration: make predicted probabilities mean what they say.

Uncertainty selectors and stopping rules read probabilities literally; an
over-confident model (most deep models, and any probe trained to zero loss)
makes them see certainty that is not there. Temperature scaling (Guo et al.,
2017) fixes the commonest case with a single parameter fitted on labelled
validation data, leaves the predicted class unchanged, and works on top of any
classifier's probabilities or logits.

>>> import numpy as np
>>> from alwidgets.calibrate import TemperatureScaling, expected_calibration_error
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 3, 2000)
>>> logits = rng.normal(size=(2000, 3)); logits[np.arange(2000), y] += 1.0
>>> overconfident = TemperatureScaling.softmax(3 * logits)        # too sharp
>>> ts = TemperatureScaling().fit(overconfident, y)
>>> bool(expected_calibration_error(ts.transform(overconfident), y)
...      < expected_calibration_error(overconfident, y))
True
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator

from ._validation import UNLABELED, Options, check_labels, check_positive_int, validate_params

INPUTS = ("auto", "probs", "logits")
_EPS = 1e-12


def _as_scores(X, name: str = "X") -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be a 2-d array (n_items, n_classes >= 2), got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} has NaN or inf values in rows {np.flatnonzero(bad)[:10].tolist()}")
    return arr


def _looks_like_probs(arr: np.ndarray) -> bool:
    return bool(np.all(arr >= 0) and np.all(arr <= 1) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3))


def _check_targets(y, n: int, n_classes: int) -> np.ndarray:
    y = check_labels(y, n_items=n, name="y")
    if y.max(initial=-1) >= n_classes:
        bad = np.flatnonzero(y >= n_classes)
        raise ValueError(f"y holds class {y.max()} but there are only {n_classes} columns (rows {bad[:10].tolist()})")
    return y


class TemperatureScaling(BaseEstimator):
    """Rescale logits by one temperature ``T`` fitted to minimise the negative log-likelihood.

    ``T > 1`` softens over-confident predictions, ``T < 1`` sharpens
    under-confident ones; the arg-max class never changes.

    Parameters
    ----------
    input : {"auto", "probs", "logits"}
        What ``fit``/``transform`` receive. ``"auto"`` treats non-negative
        rows that sum to 1 as probabilities (their logs are the logits) and
        anything else as logits.

    Attributes
    ----------
    temperature_ : float
    nll_before_, nll_after_ : float
        Mean negative log-likelihood on the fitting data at ``T = 1`` and at ``temperature_``.
    """

    _parameter_constraints = {"input": [Options(INPUTS, "input kind")]}

    def __init__(self, input: str = "auto"):
        self.input = input

    @staticmethod
    def softmax(logits) -> np.ndarray:
        """Row-wise softmax, numerically stable."""
        z = np.asarray(logits, dtype=np.float64)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def _logits(self, X, name: str = "X") -> np.ndarray:
        validate_params(type(self).__name__, self.get_params(deep=False), self._parameter_constraints)
        arr = _as_scores(X, name)
        is_probs = _looks_like_probs(arr) if self.input == "auto" else self.input == "probs"
        if is_probs:
            if np.any(arr < -1e-6):
                raise ValueError(f"{name} was declared probabilities but has negative values")
            return np.log(np.maximum(arr, _EPS))
        return arr

    def fit(self, X, y):
        """Fit ``T`` on validation predictions ``X`` (probs or logits) and true classes ``y``.

        Rows with ``y == -1`` (unlabelled) are ignored.
        """
        logits = self._logits(X)
        y = _check_targets(y, len(logits), logits.shape[1])
        keep = y != UNLABELED
        if not keep.any():
            raise ValueError("y has no labelled rows (all -1); temperature scaling needs labelled validation data")
        z, t = logits[keep], y[keep]
        z = z - z.max(axis=1, keepdims=True)   # row max 0, so z / T has row max 0 too: no shift inside nll

        def nll(log_t: float) -> float:
            s = z / np.exp(log_t)
            return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(t)), t]))

        res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        self.temperature_ = float(np.exp(res.x))
        self.nll_before_ = nll(0.0)
        self.nll_after_ = float(res.fun)
        self.n_classes_ = logits.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """Calibrated probabilities ``softmax(logits / T)``, shape ``(n, n_classes)``."""
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaling is not fitted yet; call fit(X_val, y_val) first")
        logits = self._logits(X)
        if logits.shape[1] != self.n_classes_:
            raise ValueError(f"X has {logits.shape[1]} columns but the scaler was fitted on {self.n_classes_}")
        return self.softmax(logits / self.temperature_)

    def fit_transform(self, X, y) -> np.ndarray:
        return self.fit(X, y).transform(X)


def _confidence_hits(probs, y):
    p = _as_scores(probs, "probs")
    y = _check_targets(y, len(p), p.shape[1])
    keep = y != UNLABELED
    if not keep.any():
        raise ValueError("y has no labelled rows (all -1)")
    p, y = p[keep], y[keep]
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def reliability_data(probs, y, n_bins: int = 15) -> pd.DataFrame:
    """Data for a reliability diagram: per equal-width confidence bin, mean confidence vs accuracy.

    Returns a DataFrame with one row per bin: ``bin``, ``lower``, ``upper``,
    ``confidence`` (mean max-probability), ``accuracy`` and ``count``; empty
    bins have NaN confidence and accuracy. Rows with ``y == -1`` are ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.calibrate import reliability_data
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> table = reliability_data(probs, [0, 1, 1], n_bins=2)
    >>> table[["bin", "confidence", "accuracy", "count"]].round(3).to_dict("list")
    {'bin': [0, 1], 'confidence': [nan, 0.8], 'accuracy': [nan, 0.667], 'count': [0, 3]}
    """
    check_positive_int(n_bins, "n_bins")
    conf, hit = _confidence_hits(probs, y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)   # bins (lo, hi]
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        acc = np.bincount(which, weights=hit, minlength=n_bins) / count
    return pd.DataFrame({
        "bin": np.arange(n_bins),
        "lower": edges[:-1],
        "upper": edges[1:],
        "confidence": np.where(count > 0, mean_conf, np.nan),
        "accuracy": np.where(count > 0, acc, np.nan),
        "count": count,
    })


def expected_calibration_error(probs, y, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean gap ``|accuracy - confidence|`` over equal-width confidence bins.

    0 is perfectly calibrated. Rows with ``y == -1`` are ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.calibrate import expected_calibration_error
    >>> probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> round(expected_calibration_error(probs, [0, 0, 0, 1], n_bins=10), 4)    # |1-.9|/2 + |.5-.6|/2
    0.1
    """
    table = reliability_data(probs, y, n_bins)
    full = table[table["count"] > 0]
    gap = (full["accuracy"] - full["confidence"]).abs()
    return float((gap * full["count"]).sum() / full["count"].sum())
