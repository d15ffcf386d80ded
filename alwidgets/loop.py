"""The one learning loop: fit → predict → select, shared by Session, simulate and recommend.

Each round the model is fitted on the labelled items, predicts the pool (and any
held-out rows in the same call), and the selector picks the next batch among
the *candidates*: unlabelled items minus whatever the caller excludes (skipped,
leased to another session, unreadable, held out for testing). What a label is
— a class, a number, a mask — is the :class:`~alwidgets.tasks.Task`'s business.

Examples
--------
>>> import numpy as np
>>> from sklearn.datasets import load_digits
>>> from alwidgets.loop import Loop
>>> from alwidgets.tasks import Classification
>>> X, y = load_digits(return_X_y=True)
>>> loop = Loop(Classification([str(d) for d in range(10)]), selector="margin")
>>> labels = loop.task.empty_labels(len(X))
>>> labels[:20] = y[:20]
>>> fitted = loop.fit(X, labels)
>>> sel = loop.select(5, X, labels, fitted, candidates=np.arange(100), random_state=0)
>>> len(sel), bool(np.all(sel.indices < 100)), sel.info["strategy"]
(5, True, 'margin')
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .select.base import Selection, cold_start


@dataclass
class Fitted:
    """One fit of the loop's model.

    Attributes
    ----------
    model : fitted estimator or None
        None while nothing is labelled.
    predictions : array or None
        Predictions for every pool item (class probabilities for classification).
    eval_predictions : array or None
        Predictions for the extra rows given as ``X_eval`` (a test set).
    n_labels : int
    seconds : float
        Time spent fitting and predicting.
    """

    model: object
    predictions: object
    eval_predictions: object
    n_labels: int
    seconds: float


class Loop:
    """fit → predict → select for one task, one model and one strategy.

    Parameters
    ----------
    task : Task
        What a label is (:class:`~alwidgets.tasks.Classification`, ...).
    model : estimator, optional
        Refitted each round (from scratch, or warm-started where the task says so, as
        segmentation's decoder is); default ``task.default_model()``.
    selector : str or Selector
        The strategy (``"auto"``, ``"margin"``, ...), by the task's names (``task.make_selector``).

    Notes
    -----
    ``X`` is whatever the task's features are: an ``(n, d)`` array for classes and
    numbers, :class:`~alwidgets.segmentation.DenseFeatures` for masks. The loop never
    looks inside it; the task joins pool and held-out rows (``fit_predict_eval``) and
    says what selectors see (``selector_embeddings``).
    """

    def __init__(self, task, model=None, selector="auto"):
        self.task = task
        self.model = task.default_model() if model is None else model
        self.selector = task.make_selector(selector)

    def __repr__(self) -> str:
        return f"Loop({self.task!r}, model={type(self.model).__name__}, selector={self.selector.name!r})"

    def fit(self, X, labels, X_eval=None, *, model=None, on_fit=None) -> Fitted:
        """Fit on the labelled items; predict the pool and ``X_eval`` in one call.

        ``model``: fit this one instead of the loop's (a background refit fits a fork of it);
        ``on_fit(fitted model)``: called as soon as the task can (see ``Task.fit_predict_eval``)."""
        t0 = time.perf_counter()
        n = int(np.count_nonzero(self.task.is_labelled(labels)))
        if n == 0:
            return Fitted(None, None, None, 0, time.perf_counter() - t0)
        model, pred, eval_pred = self.task.fit_predict_eval(self.model if model is None else model, X, labels,
                                                            X_eval=X_eval, on_fit=on_fit)
        return Fitted(model, pred, eval_pred, n, time.perf_counter() - t0)

    def select(self, n: int, X, labels, fitted: Fitted | None = None, *, candidates=None,
               random_state=None, **inputs) -> Selection:
        """Pick up to ``n`` items among ``candidates`` (default: every unlabelled item).

        ``inputs`` are extra per-call selector inputs (``costs=``, ``member_probs=``, ...).
        ``Selection.info["picked_by"]`` names the strategy that actually picked.
        """
        pred = None if fitted is None else fitted.predictions
        probs = None if pred is None else self.task.selector_probs(pred)
        sel_labels = self.task.selector_labels(labels)
        chooser, reason = cold_start(self.selector, sel_labels, probs)
        if reason:  # the task's own random selector (the rule itself is the same for every task)
            chooser = self.task.make_selector("random")
        sel = chooser.select(n, labels=sel_labels, embeddings=self.task.selector_embeddings(X), probs=probs,
                             model=self.model, candidates=candidates, random_state=random_state,
                             **self.task.selector_inputs(labels), **inputs)
        info = dict(sel.info)
        info["picked_by"] = info.get("strategy", chooser.name)
        if reason:
            info["cold_start"] = reason
        return Selection(sel.indices, sel.scores, info)
