"""The selector contract: labels with a missing-label marker in, indices and scores out.

A selector is stateless (scikit-activeml style): everything it needs is passed
to :meth:`Selector.select`, so the same object serves a notebook session, the
simulation and a benchmark.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator

from .._validation import (
    UNLABELED,
    check_embeddings,
    check_labels,
    check_positive_int,
    check_probs,
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

    Subclasses set ``requires`` (a tuple drawn from ``"embeddings"``, ``"probs"``)
    and implement ``_select(n, labels=, embeddings=, probs=, rng=)`` returning a
    :class:`Selection` over exactly ``n`` unlabelled items. The base class
    validates inputs, caps ``n`` at the number of unlabelled items and checks
    the output, so every selector honours the contract.
    """

    requires: tuple[str, ...] = ()

    def select(self, n, *, labels, embeddings=None, probs=None, random_state=None) -> Selection:
        """Pick up to ``n`` unlabelled items.

        Parameters
        ----------
        n : int
            Batch size; the selection has ``min(n, #unlabelled)`` items.
        labels : array of int, shape (n_items,)
            Class index per item, ``-1`` for unlabelled.
        embeddings : array, shape (n_items, n_features), optional
        probs : array, shape (n_items, n_classes), optional
            Predicted class probabilities of the current model.
        random_state : int, numpy Generator or None
        """
        n = check_positive_int(n)
        labels = check_labels(labels)
        inputs = {"embeddings": embeddings, "probs": probs}
        for key in self.requires:
            if inputs[key] is None:
                raise ValueError(
                    f"{type(self).__name__} needs `{key}=`"
                    + (" (predicted probabilities of a fitted model)" if key == "probs" else "")
                )
        if embeddings is not None:
            embeddings = check_embeddings(embeddings, n_items=len(labels))
        if probs is not None:
            probs = check_probs(probs, n_items=len(labels))
            if labels.max(initial=-1) >= probs.shape[1]:
                raise ValueError(
                    f"labels hold class {labels.max()} but probs has only {probs.shape[1]} columns"
                )
        rng = np.random.default_rng(random_state)
        n_unlabeled = int(np.count_nonzero(labels == UNLABELED))
        k = min(n, n_unlabeled)
        if k == 0:
            return Selection(np.empty(0, np.int64), np.empty(0), {"strategy": self.name})
        sel = self._select(k, labels=labels, embeddings=embeddings, probs=probs, rng=rng)
        return self._checked(sel, labels, k)

    @property
    def name(self) -> str:
        """Registry name of the strategy (e.g. ``"margin"``)."""
        from . import registry

        return registry.name_of(self)

    @abstractmethod
    def _select(self, n, *, labels, embeddings, probs, rng) -> Selection:
        """Pick exactly ``n`` unlabelled items from validated inputs."""

    def _checked(self, sel: Selection, labels: np.ndarray, k: int) -> Selection:
        idx = np.asarray(sel.indices, dtype=np.int64)
        scores = np.asarray(sel.scores, dtype=np.float64)
        name = type(self).__name__
        if idx.shape != (k,) or scores.shape != (k,):
            raise RuntimeError(f"{name} returned {idx.shape[0]} indices / {scores.shape[0]} scores, expected {k}")
        if np.any((idx < 0) | (idx >= len(labels))):
            raise RuntimeError(f"{name} returned indices outside the pool")
        seen = np.zeros(len(labels), dtype=bool)
        seen[idx] = True
        if np.count_nonzero(seen) != k:  # O(n) duplicate check; np.unique is slow on big batches
            raise RuntimeError(f"{name} returned repeated indices")
        if np.any(labels[idx] != UNLABELED):
            raise RuntimeError(f"{name} returned already-labelled items")
        info = {"strategy": self.name, **sel.info}
        return Selection(idx, scores, info)


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


def random_pick(n: int, labels: np.ndarray, rng: np.random.Generator):
    """``n`` unlabelled pool indices drawn uniformly at random, and the random priorities that ordered them."""
    candidates = unlabeled_indices(labels)
    return top_k(rng.random(len(candidates)), candidates, n, rng)


def random_batch(n: int, labels: np.ndarray, rng: np.random.Generator, reason: str) -> Selection:
    """A uniform random batch, reported as a fallback with ``reason`` (scores are all 0)."""
    idx, _ = random_pick(n, labels, rng)
    return Selection(idx, np.zeros(n), {"fallback": "random", "reason": reason})


def n_classes_of(labels: np.ndarray, probs, n_classes=None) -> int:
    """Number of classes: from ``probs`` if given, else ``n_classes``, else the largest label + 1."""
    if probs is not None:
        return int(probs.shape[1])
    if n_classes is not None:
        return int(n_classes)
    return int(labels.max(initial=0)) + 1
