"""Regression: one number per item; selectors see numeric ``targets`` (NaN = unlabelled)."""
from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import clone

from .base import Task


class Regression(Task):
    """One number per item. Labels in the loop: float per item, ``NaN`` = unlabelled.

    The default selector for it is :class:`~alwidgets.select.Variance`, which
    receives the numbers as ``targets=`` through :meth:`selector_inputs`.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.tasks import Regression
    >>> from alwidgets.select import Variance
    >>> task = Regression()
    >>> X = np.linspace(0, 10, 21)[:, None]
    >>> y = task.empty_labels(21)
    >>> for i, v in zip([0, 1, 2, 3], [0.0, 0.4, 1.1, 1.4]):
    ...     task.set_label(y, i, v)
    >>> sel = Variance(kind="gp").select(1, labels=task.selector_labels(y), embeddings=X,
    ...                                  random_state=0, **task.selector_inputs(y))
    >>> float(X[sel.indices[0], 0]) >= 9.0        # the far end is least pinned down
    True
    """

    name = "regression"
    score_name = "rmse"
    higher_is_better = False

    def __repr__(self) -> str:
        return "Regression()"

    def empty_labels(self, n_items: int) -> np.ndarray:
        return np.full(n_items, np.nan)

    def is_labelled(self, labels) -> np.ndarray:
        return ~np.isnan(np.asarray(labels, dtype=np.float64))

    def set_label(self, labels, index: int, value) -> None:
        labels[index] = np.nan if value is None else float(value)

    def encode(self, value) -> dict:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{value[:60]!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"a regression label must be a finite number, got {value!r}")
        return {"label": repr(float(value)), "payload": None, "media_type": None}

    def decode(self, label, payload=None, media_type=None):
        try:
            v = float(label)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def selector_inputs(self, labels) -> dict:
        return {"targets": np.asarray(labels, dtype=np.float64)}

    def selector_probs(self, pred):
        return None

    def default_model(self):
        from ..select.variance import default_regressor

        return default_regressor()

    def fit_predict(self, model, X, labels, X_eval=None):
        labels = np.asarray(labels, dtype=np.float64)
        mask = self.is_labelled(labels)
        if not mask.any():
            raise ValueError("no labelled items to fit the model on")
        fitted = clone(model).fit(X[mask], labels[mask])
        return fitted, np.asarray(fitted.predict(X if X_eval is None else X_eval), dtype=np.float64)

    def check_predictions(self, pred, n_items: int):
        pred = np.asarray(pred, dtype=np.float64)
        if pred.shape != (n_items,):
            raise ValueError(f"predictions must have shape ({n_items},), got {pred.shape}")
        if not np.isfinite(pred).all():
            raise ValueError(f"predictions hold NaN or inf at rows {np.flatnonzero(~np.isfinite(pred))[:10].tolist()}")
        return pred

    def score(self, y_true, pred) -> dict:
        err = np.asarray(pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
        rmse = float(np.sqrt(np.mean(err ** 2)))
        return {"score": rmse, "rmse": rmse, "mae": float(np.mean(np.abs(err)))}

    def cross_validate(self, model, X, labels, *, cv: int = 5, random_state=0) -> dict | None:
        from sklearn.model_selection import KFold

        labels = np.asarray(labels, dtype=np.float64)
        lab = np.flatnonzero(self.is_labelled(labels))
        if len(lab) < 3:
            return None
        y, Xl = labels[lab], X[lab]
        out = np.zeros(len(lab))
        fold_scores = []
        for tr, te in KFold(n_splits=min(cv, len(lab)), shuffle=True, random_state=random_state).split(Xl):
            _, out[te] = self.fit_predict(model, Xl[tr], y[tr], X_eval=Xl[te])
            fold_scores.append(float(np.sqrt(np.mean((out[te] - y[te]) ** 2))))
        m = self.score(y, out)
        m["score_std"] = float(np.std(fold_scores))
        m["n_folds"] = len(fold_scores)
        return m
