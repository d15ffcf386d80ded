"""Class-targeted selection: spend the labelling budget where the model is worst.

Plain uncertainty sampling spreads labels over whatever the model is unsure
about; when one or two classes are the problem (low recall, low IoU) that
wastes most of the budget. This selector first measures per-class quality
(cross-validated recall on the current labels, or per-class scores you
supply, e.g. IoU or F1 from your own validation), shares the batch among the
classes in proportion to their weakness ``1 - quality``, then takes the most
uncertain items *predicted* to be in each weak class.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold

from .._validation import UNLABELED, Interval, Options
from ..models import fit_predict_proba
from .base import Selection, Selector, cold_start_batch, n_classes_of, need_model, random_batch, top_k
from .registry import register
from .uncertainty import MEASURES, uncertainty


def cv_recall(model, X, labels, n_classes: int, cv: int = 5, random_state=0) -> np.ndarray:
    """Per-class recall of ``model`` by stratified cross-validation on the labelled rows.

    Classes without labels get recall 0 (nothing is known about them), and so
    does a class whose single label sits in a test fold. With one labelled
    class, or no class with two labels, every class gets NaN.
    """
    mask = labels != UNLABELED
    X_lab, y = X[mask], labels[mask]
    counts = np.bincount(y, minlength=n_classes)
    n_splits = min(int(cv), int(counts.max()))
    recall = np.full(n_classes, np.nan)
    if n_splits < 2 or np.count_nonzero(counts) < 2:
        return recall
    pred = np.empty(len(y), dtype=np.int64)
    with warnings.catch_warnings():
        # classes rarer than n_splits are allowed: they just miss some folds
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=random_state).split(X_lab, y)
        for train, test in folds:
            _, p = fit_predict_proba(model, X_lab[train], y[train], n_classes, X_eval=X_lab[test])
            pred[test] = p.argmax(axis=1)
    hits = np.bincount(y[pred == y], minlength=n_classes)
    recall = np.where(counts > 0, hits / np.maximum(counts, 1), 0.0)
    return recall


def allocate(weights, n: int) -> np.ndarray:
    """Split ``n`` items over classes in proportion to ``weights`` (largest remainder)."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    share = n * w / w.sum()
    out = np.floor(share).astype(np.int64)
    rest = n - out.sum()
    if rest:
        out[np.argsort(-(share - out), kind="stable")[:rest]] += 1
    return out


@register("class_targeted")
class ClassTargeted(Selector):
    """Route the batch toward the classes the model does worst on, then pick uncertain items there.

    Parameters
    ----------
    measure : {"margin", "entropy", "least_confidence"}
        Uncertainty used to rank items within a class.
    cv : int
        Folds of the cross-validation.
    n_classes : int, optional
        Number of classes when no ``probs`` are given.

    Notes
    -----
    Per-call inputs of :meth:`select`: ``class_scores``, an array
    ``(n_classes,)`` or dict of your per-class quality in [0, 1], higher =
    better (recall, IoU, F1 on your validation data); without it the quality
    is the cross-validated recall of ``model`` (the caller's model, then
    required) on the current labels. ``model`` also predicts the classes
    when ``select`` gets no ``probs``.

    ``Selection.scores`` are ``weakness(predicted class) * uncertainty``;
    ``info`` holds the per-class quality and how the batch was shared. A
    class's share that its predicted items cannot fill goes to the best
    remaining items. With no labels, or labels of one class (and no
    ``class_scores``), the batch is random; while no class has two labels
    the batch is shared equally across predicted classes.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import ClassTargeted
    >>> probs = np.array([[0.6, 0.4, 0.0], [0.55, 0.45, 0.0], [0.0, 0.9, 0.1], [0.1, 0.0, 0.9]])
    >>> sel = ClassTargeted().select(1, labels=[-1] * 4, probs=probs, class_scores=[0.95, 0.4, 0.9])
    >>> sel.indices.tolist()          # the only item predicted as the weak class 1
    [2]
    """

    accepts = ("class_scores",)
    _parameter_constraints = {
        "measure": [Options(MEASURES, "uncertainty measure")],
        "cv": [Interval(int, 2, None)],
        "n_classes": [None, Interval(int, 1, None)],
    }

    def __init__(self, measure: str = "margin", cv: int = 5, n_classes: int | None = None):
        self.measure = measure
        self.cv = cv
        self.n_classes = n_classes

    @staticmethod
    def _quality(cs, n_classes: int) -> np.ndarray:
        if isinstance(cs, dict):
            bad = [k for k in cs if not (isinstance(k, (int, np.integer)) and 0 <= k < n_classes)]
            if bad:
                raise ValueError(f"class_scores has keys {bad} that are not class indices 0..{n_classes - 1}")
            q = np.full(n_classes, np.nan)
            for k, v in cs.items():
                q[int(k)] = float(v)
            q[np.isnan(q)] = 0.0
        else:
            q = np.asarray(cs, dtype=np.float64)
            if q.shape != (n_classes,):
                raise ValueError(f"class_scores must have one value per class ({n_classes}), got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ValueError(f"class_scores has NaN or inf for classes {np.flatnonzero(~np.isfinite(q)).tolist()}")
        if np.any((q < 0) | (q > 1)):
            raise ValueError(f"class_scores must lie in [0, 1] (e.g. recall, IoU, F1), got {q.tolist()}")
        return q

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, class_scores=None):
        labelled = labels[labels != UNLABELED]
        c = n_classes_of(labels, probs, self.n_classes)
        info: dict = {"measure": self.measure}
        if class_scores is None or probs is None:
            model = need_model(self, model, "to cross-validate per-class recall (or pass class_scores=)"
                               if class_scores is None else "to predict classes (or pass probs=)")
            if embeddings is None:
                raise ValueError("ClassTargeted needs `embeddings=` to fit its model "
                                 "(or pass class_scores= and probs=)")
        if class_scores is not None:
            quality = self._quality(class_scores, c)
            info["quality_source"] = "class_scores"
        else:
            fallback = cold_start_batch(n, labels, candidates, rng)
            if fallback is not None:
                return fallback
            quality = cv_recall(model, embeddings, labels, c, self.cv, int(rng.integers(2**31 - 1)))
            if np.isnan(quality).all():
                quality = np.zeros(c)
                info["quality_source"] = ("none: no class has two labels yet, so the batch is shared "
                                          "equally across classes")
            else:
                folds = min(int(self.cv), int(np.bincount(labelled).max()))
                info["quality_source"] = f"{folds}-fold cross-validated recall"
        if probs is None:
            if len(labelled) == 0:
                return random_batch(n, candidates, rng, "no labels and no probs: nothing to predict classes with")
            _, probs = fit_predict_proba(model, embeddings, labels, c)
        p = probs[candidates]
        pred = p.argmax(axis=1)
        u = uncertainty(p, self.measure)
        weakness = 1.0 - quality
        share = allocate(weakness, n)
        taken = np.zeros(len(candidates), dtype=bool)
        for cls in np.flatnonzero(share):
            pos = np.flatnonzero((pred == cls) & ~taken)
            if len(pos):
                chosen, _ = top_k(u[pos], pos, min(int(share[cls]), len(pos)), rng)
                taken[chosen] = True
        utility = weakness[pred] * u
        short = n - int(taken.sum())
        if short:
            rest = np.flatnonzero(~taken)
            chosen, _ = top_k(utility[rest], rest, short, rng)
            taken[chosen] = True
        pos = np.flatnonzero(taken)
        order = np.lexsort((rng.random(len(pos)), -utility[pos]))
        pos = pos[order]
        info.update({
            "class_quality": quality.round(4).tolist(),
            "planned": {int(k): int(v) for k, v in enumerate(share) if v},
            "picked": {int(k): int(v) for k, v in enumerate(np.bincount(pred[pos], minlength=c)) if v},
        })
        return Selection(candidates[pos], utility[pos], info)
