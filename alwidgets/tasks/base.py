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
  (``score_name``: accuracy, RMSE, mIoU);
- what the loop's features are (``check_features``; a 2-d array by default,
  :class:`~alwidgets.segmentation.DenseFeatures` for masks), how the pool and
  held-out rows are predicted together (``fit_predict_eval``), what selectors see
  of them (``selector_embeddings``) and which selectors exist (``make_selector``).

Methods with a default implement the classification-like case, so a task
overrides only what differs.
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
    payload_labels: bool = False
    """True when a label lives in the store's payload (a PNG mask), not in its label text:
    the Session then reads the payloads back to decode labels."""
    metric_keys: tuple = ()
    """Extra metrics of :meth:`score` that ``Session.history`` shows as columns (besides the score)."""
    default_cv: int = 5
    """Folds of :meth:`cross_validate` when the Session is not told (``Session(cv=None)``)."""
    slow_fit: bool = False
    """True when a refit takes seconds (a dense decoder): a Session in a notebook then refits in the
    background (``Session(refit="auto")``) so the labeller never waits for it."""

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

    def encode_item(self, value, *, item_id: str, pool=None, index: int | None = None) -> dict:
        """:meth:`encode` for one pool item (``pool[index]``), where the item can matter (a mask must
        have its image's size); errors name ``item_id``. Default: :meth:`encode`."""
        return self.encode(value)

    def selector_labels(self, labels) -> np.ndarray:
        """The integer ``labels`` array selectors take (``-1`` = unlabelled)."""
        return np.where(self.is_labelled(labels), 0, UNLABELED).astype(np.int64)

    def selector_inputs(self, labels) -> dict:
        """Extra per-call inputs the task's selectors need (e.g. numeric ``targets``)."""
        return {}

    def selector_embeddings(self, X):
        """What selectors receive as ``embeddings=`` (the features themselves by default)."""
        return X

    def make_selector(self, spec):
        """A selector of this task by name (``"auto"``, ``"margin"``, ...) or passed through.
        Default: the :mod:`alwidgets.select` registry."""
        from ..select.registry import make_selector

        return make_selector(spec)

    def label_counts(self, labels) -> np.ndarray:
        """What the "labels per class" panel shows: labelled items per class by default."""
        labels = np.asarray(labels)
        n = len(getattr(self, "classes", ()))
        return np.bincount(labels[labels != UNLABELED].astype(np.int64), minlength=n)

    def suggest(self, pred):
        """``(suggestion, confidence)`` shown with one item of a batch, from its prediction
        (``selector_probs`` row); ``(None, None)`` when the task has none."""
        return None, None

    # ---------------------------------------------------------------- features
    def check_features(self, X, *, n_items: int | None = None, like=None, name: str = "embeddings"):
        """``X`` validated as this task's features (``n_items`` rows; comparable with ``like``, the
        pool's features, when given). Default: a finite 2-d float array."""
        from .._validation import check_embeddings

        X = check_embeddings(X, n_items=n_items, name=name)
        if like is not None and X.shape[1] != like.shape[1]:
            raise ValueError(f"{name} has {X.shape[1]} features but the pool's embeddings have {like.shape[1]}")
        return X

    def subset_features(self, X, rows):
        """The features of pool rows ``rows``."""
        return X[np.asarray(rows, dtype=np.int64)]

    # ---------------------------------------------------------------- model
    @abstractmethod
    def default_model(self):
        """The model used when none is given."""

    @abstractmethod
    def fit_predict(self, model, X, labels, X_eval=None):
        """Fit a clone of ``model`` on the labelled items; return ``(fitted, predictions)`` for
        ``X_eval`` (default: every row of ``X``)."""

    def fork_model(self, model):
        """A model a background refit may fit while ``model`` (the last fit) keeps predicting.

        Default: ``model`` itself (:meth:`fit_predict` fits a clone). A task that fits in place (a
        warm-started decoder) returns a copy sharing only what a fit never changes."""
        return model

    def fit_predict_eval(self, model, X, labels, X_eval=None, on_fit=None):
        """Fit on the labelled items of ``X``; predict every row of ``X`` and of ``X_eval`` (held-out
        rows, e.g. a test set). Returns ``(fitted, pool predictions, eval predictions or None)``.
        ``on_fit(fitted)``, if given, is called once the model is fitted, before the predictions (a
        background refit hands the painter the new model while the pool is still being predicted);
        this default calls it after them.

        Default: one :meth:`fit_predict` call on the pool and the held-out rows joined (one
        prediction pass; a memory-mapped pool gets the rows appended as a shard, no copy).
        """
        if X_eval is None:
            fitted, pred = self.fit_predict(model, X, labels, X_eval=X)
            if on_fit is not None:
                on_fit(fitted)
            return fitted, pred, None
        from ..embeddings import ShardedEmbeddings

        if isinstance(X, ShardedEmbeddings):
            rows = ShardedEmbeddings(X.shards + [np.ascontiguousarray(X_eval, dtype=np.float32)],
                                     paths=None if X.paths is None else X.paths + [None])
        else:
            rows = np.concatenate([X, X_eval])
        fitted, pred = self.fit_predict(model, X, labels, X_eval=rows)
        if on_fit is not None:
            on_fit(fitted)
        return fitted, pred[: len(X)], pred[len(X):]

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
