"""The selector contract (v2): labels with a missing-label marker in, indices and scores out.

A selector is stateless (scikit-activeml style): its constructor holds
hyperparameters only, and everything that changes from call to call (labels,
embeddings, predictions, the caller's model, the candidate items, per-item
costs, committee predictions ...) is passed to :meth:`Selector.select`, so the
same object serves a notebook session, the simulation and a benchmark.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from .._validation import (
    UNLABELED,
    check_candidates,
    check_embeddings,
    check_labels,
    check_positive_int,
    check_probs,
    validate_params,
)


@dataclass(frozen=True)
class Selection:
    """The outcome of one selection.

    Attributes
    ----------
    indices : ndarray of int
        Unique pool indices of unlabelled items, in the order they should be shown.
    scores : ndarray of float
        Utility of each selected item (same order); higher means more wanted.
    info : dict
        Why these items: e.g. the strategy actually used and the reason.
    """

    indices: np.ndarray
    scores: np.ndarray
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices.tolist())


class Selector(BaseEstimator, metaclass=ABCMeta):
    """Base class of all selectors.

    Subclasses declare their inputs and implement ``_select``:

    - ``requires``: inputs ``select`` must get, drawn from ``"embeddings"``
      and ``"probs"``;
    - ``accepts``: the names of the extra per-call inputs the selector takes
      through ``select(..., **extra)`` (e.g. ``("costs",)``); any other extra
      input is a ``TypeError`` naming what the selector accepts;
    - ``_parameter_constraints``: allowed values of the constructor's
      hyperparameters (see :func:`alwidgets._validation.validate_params`),
      checked at every ``select``;
    - ``_select(n, *, labels, embeddings, probs, model, candidates, rng, **extra)``
      returns a :class:`Selection` of exactly ``n`` items drawn from
      ``candidates`` (sorted pool indices of the unlabelled items that may be
      picked; ``n`` is already capped at their number).

    The base class validates every input once (one path for embeddings and
    probabilities: :func:`~alwidgets._validation.check_embeddings`,
    :func:`~alwidgets._validation.check_probs`), and checks the output: unique,
    candidate, finite-scored items, so every selector honours the contract.
    """

    requires: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    _parameter_constraints: dict = {}
    _exact_size = True   # the selection always holds min(n, #candidates) items (CostAware: at most that)

    def select(self, n, *, labels, embeddings=None, probs=None, model=None, candidates=None, random_state=None,
               **extra) -> Selection:
        """Pick up to ``n`` unlabelled items.

        Parameters
        ----------
        n : int
            Batch size; the selection has ``min(n, #candidates)`` items.
        labels : array of int, shape (n_items,)
            Class index per item, ``-1`` for unlabelled.
        embeddings : array, shape (n_items, n_features), optional
        probs : array, shape (n_items, n_classes), optional
            Predicted class probabilities of the current model.
        model : estimator, optional
            The caller's (unfitted) model. Selectors that fit models
            (committee, class-targeted cross-validation, BALD's bootstrap
            ensemble) fit copies of this one; they raise ``ValueError`` if
            they need it and it is missing. Others ignore it.
        candidates : array of int or bool, optional
            Pool indices, or a boolean mask over the pool, of the items that
            may be picked (scikit-activeml's ``candidates=``); the pickable
            items are the unlabelled ones among them. Labelled items still
            count (as covered regions, as training data); candidates only
            restrict the picks. Default: every unlabelled item.
        random_state : int, numpy Generator or None
        **extra
            Per-call inputs of this selector, named in its ``accepts``.
        """
        self._validate_params()
        n = check_positive_int(n, "n")
        labels = check_labels(labels)
        self._check_extra(extra)
        inputs = {"embeddings": embeddings, "probs": probs}
        for key in self.requires:
            if inputs[key] is None:
                raise ValueError(
                    f"{type(self).__name__} needs `{key}=`"
                    + (" (predicted probabilities of a fitted model)" if key == "probs" else "")
                )
        _check_lengths(labels, embeddings=embeddings, probs=probs)
        if embeddings is not None:
            embeddings = check_embeddings(embeddings, n_items=len(labels))
        if probs is not None:
            probs = check_probs(probs, n_items=len(labels))
            if labels.max(initial=-1) >= probs.shape[1]:
                raise ValueError(
                    f"labels hold class {labels.max()} but probs has only {probs.shape[1]} columns"
                )
        cand = check_candidates(candidates, labels)
        rng = np.random.default_rng(random_state)
        k = min(n, len(cand))
        if k == 0:
            return Selection(np.empty(0, np.int64), np.empty(0), {"strategy": self.name})
        sel = self._select(k, labels=labels, embeddings=embeddings, probs=probs, model=model, candidates=cand,
                           rng=rng, **extra)
        return self._checked(sel, labels, k, cand)

    @property
    def name(self) -> str:
        """Registry name of the strategy (e.g. ``"margin"``)."""
        from . import registry

        return registry.name_of(self)

    @abstractmethod
    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, **extra) -> Selection:
        """Pick exactly ``n`` items of ``candidates`` from validated inputs."""

    def _validate_params(self) -> None:
        validate_params(type(self).__name__, self.get_params(deep=False), self._parameter_constraints)

    def _check_extra(self, extra: dict) -> None:
        unknown = [k for k in extra if k not in self.accepts]
        if unknown:
            what = (f"it accepts {', '.join(f'`{a}=`' for a in self.accepts)}" if self.accepts
                    else "it takes no extra inputs")
            raise TypeError(f"{type(self).__name__}.select() got unexpected input(s) "
                            f"{', '.join(f'`{k}=`' for k in unknown)}; {what}")

    def _checked(self, sel: Selection, labels: np.ndarray, k: int, candidates: np.ndarray | None = None) -> Selection:
        idx = np.asarray(sel.indices, dtype=np.int64)
        scores = np.asarray(sel.scores, dtype=np.float64)
        name = type(self).__name__
        if idx.ndim != 1 or scores.shape != idx.shape or (idx.shape[0] != k if self._exact_size else idx.shape[0] > k):
            raise RuntimeError(f"{name} returned {idx.shape[0]} indices / {scores.shape[0]} scores, expected {k}")
        if np.any((idx < 0) | (idx >= len(labels))):
            raise RuntimeError(f"{name} returned indices outside the pool")
        seen = np.zeros(len(labels), dtype=bool)
        seen[idx] = True
        if np.count_nonzero(seen) != len(idx):  # O(n) duplicate check; np.unique is slow on big batches
            raise RuntimeError(f"{name} returned repeated indices")
        if np.any(labels[idx] != UNLABELED):
            raise RuntimeError(f"{name} returned already-labelled items")
        if candidates is not None and len(candidates) < len(labels):
            allowed = np.zeros(len(labels), dtype=bool)
            allowed[candidates] = True
            if not allowed[idx].all():
                raise RuntimeError(f"{name} returned items outside the candidates")
        if not np.isfinite(scores).all():
            raise RuntimeError(f"{name} returned non-finite scores for items {idx[~np.isfinite(scores)][:10].tolist()}")
        info = {"strategy": self.name, **sel.info}
        return Selection(idx, scores, info)


def _check_lengths(labels: np.ndarray, **arrays) -> None:
    """Name the culprit of a row-count mismatch: ``labels`` when every given array agrees on the count."""
    rows = {k: np.shape(v)[0] for k, v in arrays.items() if v is not None and np.ndim(v) >= 1}
    if not rows or len(set(rows.values())) > 1 or len(labels) in rows.values():
        return
    m = next(iter(rows.values()))
    if len(rows) == 1:
        raise ValueError(f"labels has {len(labels)} rows but {next(iter(rows))} has {m}: both need one row "
                         "per pool item")
    raise ValueError(f"labels has {len(labels)} rows but {' and '.join(rows)} have {m}: give one label "
                     "(-1 = unlabelled) per pool item")


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int, rng: np.random.Generator):
    """Indices (into ``candidates``) of the ``k`` highest scores, highest first.

    Ties at the cut-off are broken at random with ``rng`` so that equal scores do
    not always favour low pool indices. O(n) selection plus O(k log k) sort.
    """
    scores = np.asarray(scores, dtype=np.float64)
    m = len(scores)
    if k >= m:
        order = np.lexsort((rng.random(m), -scores))
        return candidates[order], scores[order]
    kth = np.partition(scores, m - k)[m - k]
    above = np.flatnonzero(scores > kth)
    at = np.flatnonzero(scores == kth)
    chosen = np.concatenate([above, rng.choice(at, k - len(above), replace=False)])
    order = np.lexsort((rng.random(k), -scores[chosen]))
    chosen = chosen[order]
    return candidates[chosen], scores[chosen]


def unlabeled_indices(labels: np.ndarray) -> np.ndarray:
    """Pool indices of unlabelled items."""
    return np.flatnonzero(labels == UNLABELED)


def random_pick(n: int, candidates: np.ndarray, rng: np.random.Generator):
    """``n`` of ``candidates`` (pool indices) drawn uniformly at random, and the random priorities that ordered them."""
    return top_k(rng.random(len(candidates)), candidates, n, rng)


def random_batch(n: int, candidates: np.ndarray, rng: np.random.Generator, reason: str) -> Selection:
    """A uniform random batch from ``candidates``, reported as a fallback with ``reason`` (scores are all 0)."""
    idx, _ = random_pick(n, candidates, rng)
    return Selection(idx, np.zeros(n), {"fallback": "random", "reason": reason})


def too_few_labels(labels: np.ndarray, *, min_labels: int = 1, min_classes: int = 2) -> str | None:
    """Why a model-fitting selector cannot work yet, or None: the cold-start rule, written once.

    A model fitted on no labels predicts nothing, and one fitted on a single
    class cannot be uncertain or disagree with itself. Regression
    (:class:`~alwidgets.select.Variance`) asks for two labelled items and no
    classes (``min_labels=2, min_classes=1``).
    """
    lab = labels[labels != UNLABELED]
    if len(lab) == 0:
        return "no labels yet: nothing to fit a model on"
    if len(lab) < min_labels:
        return f"only {len(lab)} labelled item(s): at least {min_labels} are needed"
    if min_classes > 1 and len(np.unique(lab)) < min_classes:
        return "all labels are one class: a model fitted on them predicts it everywhere"
    return None


def cold_start_batch(n: int, labels: np.ndarray, candidates: np.ndarray, rng: np.random.Generator, *,
                     min_labels: int = 1, min_classes: int = 2) -> Selection | None:
    """A random batch with the reason in ``info`` while :func:`too_few_labels` says so, else None."""
    reason = too_few_labels(labels, min_labels=min_labels, min_classes=min_classes)
    return None if reason is None else random_batch(n, candidates, rng, reason)


def cold_start(selector: "Selector", labels, probs):
    """The loop's cold-start rule: ``(selector_to_use, reason or None)``.

    A selector that requires ``probs`` cannot run before a model has been
    fitted: while there are no ``probs`` it is replaced by
    :class:`~alwidgets.select.Random`, and ``reason`` says why. Selectors that
    fit their own models (committee, BALD, class-targeted, variance) handle
    too few labels themselves (see :func:`too_few_labels`).
    ``labels`` is part of the signature so the loop's call does not change if
    the rule comes to depend on them; today it does not.

    >>> import numpy as np
    >>> from alwidgets.select import Margin, Coverage
    >>> chooser, why = cold_start(Margin(), np.full(5, -1), None)
    >>> type(chooser).__name__, why
    ('Random', 'no model predictions yet: margin needs probs')
    >>> cold_start(Coverage(), np.full(5, -1), None)[1] is None
    True
    """
    if probs is None and "probs" in selector.requires:
        from .random import Random

        return Random(), f"no model predictions yet: {selector.name} needs probs"
    return selector, None


def n_classes_of(labels: np.ndarray, probs, n_classes=None) -> int:
    """Number of classes: from ``probs`` if given, else ``n_classes``, else the largest label + 1."""
    if probs is not None:
        return int(probs.shape[1])
    if n_classes is not None:
        return int(n_classes)
    return int(labels.max(initial=0)) + 1


def need_model(selector: "Selector", model, why: str):
    """``model`` if given, else a ``ValueError`` saying ``selector`` needs ``model=`` for ``why``."""
    if model is None:
        raise ValueError(f"{type(selector).__name__} needs `model=` (the unfitted classifier of your loop, "
                         f"e.g. LinearProbe()) {why}")
    return model
