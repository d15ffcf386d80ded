"""The task contract: what one kind of label (a class, a number, a mask) needs from the loop.

The loop (:mod:`alwidgets.loop`) fits, predicts and selects without knowing what
a label is; a :class:`Task` tells it. A new task (segmentation, multi-label, ...)
is a new module beside this one: nothing in the loop, the Session or the store
changes.

What a task decides:

- how labels live in the loop (``empty_labels``, ``is_labelled``) and in the
  store (``encode`` to a store record, ``decode`` back);
- how a model is fitted and what its predictions look like
  (``default_model``, ``fit_predict``, ``check_predictions``);
- how a selector sees the labels (``selector_labels``, ``selector_inputs``):
  selectors take an integer array with ``-1`` for unlabelled items plus
  task-specific extra inputs (numeric targets, per-pixel maps);
- how quality is measured (``score``, ``cross_validate``) and named
  (``score_name``: accuracy, RMSE, mIoU).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .._validation import UNLABELED


class Task(ABC):
    """Base class of tasks. Subclasses set ``name`` and ``score_name`` and implement the methods.

    Labels in the loop are whatever suits the task (class indices with -1, floats
    with NaN, a list of masks with None); predictions likewise (``(n, C)``
    probabilities, ``(n,)`` values, ``(n, C, H, W)`` maps or a per-item list).
    """

    name: str = "task"
    score_name: str = "score"
    higher_is_better: bool = True

    # ---------------------------------------------------------------- labels
    @abstractmethod
    def empty_labels(self, n_items: int):
        """Labels of ``n_items`` items none of which is labelled."""

    @abstractmethod
    def is_labelled(self, labels) -> np.ndarray:
        """Boolean mask of labelled items."""

    @abstractmethod
    def set_label(self, labels, index: int, value) -> None:
        """Write one decoded label into ``labels`` in place."""

    @abstractmethod
    def encode(self, value) -> dict:
        """A label as given by a person (class name, number, mask) → store fields
        ``{"label": str, "payload": bytes or None, "media_type": str or None}``; raises
        ``ValueError`` naming the value when it is not a valid label."""

    @abstractmethod
    def decode(self, label: str, payload: bytes | None = None, media_type: str | None = None):
        """Store fields → the label as the loop holds it (None when it is not valid any more,
        e.g. a class that was removed)."""

    def selector_labels(self, labels) -> np.ndarray:
        """The integer ``labels`` array selectors take (``-1`` = unlabelled)."""
        return np.where(self.is_labelled(labels), 0, UNLABELED).astype(np.int64)

    def selector_inputs(self, labels) -> dict:
        """Extra per-call inputs the task's selectors need (e.g. numeric ``targets``)."""
        return {}

    # ---------------------------------------------------------------- model
    @abstractmethod
    def default_model(self):
        """The model used when none is given."""

    @abstractmethod
    def fit_predict(self, model, X, labels, X_eval=None):
        """Fit a clone of ``model`` on the labelled items; return ``(fitted, predictions)`` for
        ``X_eval`` (default: every row of ``X``)."""

    def check_predictions(self, pred, n_items: int):
        """Validated predictions for ``n_items`` items (shape and values), or a clear error."""
        return pred

    def selector_probs(self, pred):
        """What selectors receive as ``probs=`` (class probabilities; None for a task without them)."""
        return pred

    # ---------------------------------------------------------------- metrics
    @abstractmethod
    def score(self, y_true, pred) -> dict:
        """Metrics of ``pred`` against ``y_true``: ``{"score": float, ...}`` plus task extras."""

    @abstractmethod
    def cross_validate(self, model, X, labels, *, cv: int = 5, random_state=0) -> dict | None:
        """Metrics cross-validated on the labelled items (seeded folds), with ``score_std``
        over the folds; None when there are too few labels."""
