"""BALD: ask about the items whose label would tell the model the most about its own weights.

Bayesian Active Learning by Disagreement (Houlsby et al., 2011; Gal et al.,
2017) scores an item by the mutual information between its label and the
model parameters, estimated from T stochastic predictions (MC dropout or an
ensemble): ``H(mean_t p_t) - mean_t H(p_t)``. Items the model is unsure about
*because it has seen too little* score high; items that are inherently
ambiguous (every sample agrees on 50/50) score zero. The stochastic batch
variant (Kirsch et al., 2023) samples items with probability proportional to
``score ** (1 / temperature)`` instead of taking the top k, which avoids
filling a batch with near-copies of one uncertain item.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import clone

from .._validation import UNLABELED, check_probs
from .base import Selection, Selector, n_classes_of, random_batch, top_k, unlabeled_indices
from .committee import committee_probs
from .registry import register

_EPS = 1e-12


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.maximum(p, _EPS))).sum(axis=axis)


def bald_scores(mc_probs) -> np.ndarray:
    """Mutual information ``H(mean) - mean(H)`` per item from ``(T, n, C)`` sampled probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import bald_scores
    >>> agree = [[[0.5, 0.5]], [[0.5, 0.5]]]       # two samples, both 50/50
    >>> disagree = [[[1.0, 0.0]], [[0.0, 1.0]]]    # two confident, opposite samples
    >>> float(bald_scores(agree)[0]), round(float(bald_scores(disagree)[0]), 4)
    (0.0, 0.6931)
    """
    return _bald_scores(_check_mc_probs(mc_probs))


def _bald_scores(p: np.ndarray) -> np.ndarray:
    """:func:`bald_scores` of an already-checked ``(T, n, C)`` stack."""
    return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)


def _bald_from_logits(logits: np.ndarray) -> np.ndarray:
    """BALD scores from logits laid out ``(T, C, rows)``, without a separate log of the probabilities."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    total = e.sum(axis=1, keepdims=True)
    p = e / total
    mean_h = -(p * (z - np.log(total))).sum(axis=1).mean(axis=0)
    pm = p.mean(axis=0)
    h_mean = _entropy(pm, axis=0)
    return np.maximum(h_mean - mean_h, 0.0).astype(np.float64)


def _check_mc_probs(mc_probs, n_items: int | None = None) -> np.ndarray:
    return check_probs(mc_probs, n_items=n_items, name="mc_probs", stack="n_samples")


def gumbel_top_k(scores, k: int, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` items sampled without replacement with probability ∝ ``scores ** (1/temperature)``.

    Gumbel top-k trick: ``argtop_k(log(score) / temperature + Gumbel noise)``.
    Items with zero score are drawn only once every positive-score item is taken.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore"):
        keys = np.log(np.maximum(scores, 0.0)) / temperature
    keys = keys + rng.gumbel(size=len(scores))
    # Zero scores: -inf keys; order them randomly behind every positive score.
    zero = ~np.isfinite(keys)
    keys[zero] = -1e300 + rng.random(int(zero.sum()))
    pos, _ = top_k(keys, np.arange(len(scores)), k, rng)
    return pos


@register("bald")
class BALD(Selector):
    """Pick items with the highest mutual information between label and model (BALD).

    Parameters
    ----------
    model : classifier, optional
        Model fitted on the current labels. One with a
        ``predict_proba_mc(X, n_samples, random_state) -> (T, n, C)`` method
        (like the default :class:`~alwidgets.heads.MLPHead`) gives MC-dropout
        samples; any other scikit-learn classifier is turned into a bootstrap
        ensemble of ``n_samples`` copies.
    n_samples : int
        T, the number of MC-dropout samples (or ensemble members).
    stochastic : bool
        Sample the batch ∝ ``score ** (1/temperature)`` (Gumbel top-k) instead
        of taking the top scores; reduces redundant batches.
    temperature : float
        Temperature of the stochastic variant; small values approach top-k.
    mc_probs : array (T, n_items, n_classes), optional
        Sampled predictions you computed yourself (MC dropout or an ensemble
        of your models); then nothing is fitted and ``embeddings`` are not needed.
    n_classes : int, optional
        Number of classes when no ``probs`` are passed to ``select``.

    Notes
    -----
    With no labels, or a single labelled class, the model has nothing to be
    uncertain about: the batch is random and ``Selection.info`` says why.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import BALD
    >>> mc = np.array([[[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]],
    ...                [[0.5, 0.5], [0.1, 0.9], [0.2, 0.8]]])   # T=2 samples, 3 items
    >>> BALD(mc_probs=mc).select(1, labels=[-1, -1, -1]).indices.tolist()
    [1]
    """

    def __init__(self, model=None, n_samples: int = 20, stochastic: bool = False, temperature: float = 1.0,
                 mc_probs=None, n_classes: int | None = None):
        self.model = model
        self.n_samples = n_samples
        self.stochastic = stochastic
        self.temperature = temperature
        self.mc_probs = mc_probs
        self.n_classes = n_classes

    @property
    def requires(self) -> tuple[str, ...]:
        return () if self.mc_probs is not None else ("embeddings",)

    @classmethod
    def from_mc_probs(cls, mc_probs, **params) -> "BALD":
        """A BALD selector scoring your own ``(T, n_items, n_classes)`` sampled predictions."""
        return cls(mc_probs=mc_probs, **params)

    def _select(self, n, *, labels, embeddings, probs, rng):
        if isinstance(self.n_samples, bool) or int(self.n_samples) != self.n_samples or self.n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2, got {self.n_samples!r}")
        candidates = unlabeled_indices(labels)
        info = {"variant": "stochastic" if self.stochastic else "top_k"}
        if self.mc_probs is not None:
            scores = _bald_scores(_check_mc_probs(self.mc_probs, n_items=len(labels))[:, candidates])
            info["samples"] = "given mc_probs"
        else:
            labelled = labels[labels != UNLABELED]
            if len(labelled) == 0:
                return random_batch(n, labels, rng, "no labels yet: BALD needs a fitted model")
            if len(np.unique(labelled)) < 2:
                return random_batch(n, labels, rng, "all labels are one class: the model cannot disagree with itself")
            c = n_classes_of(labels, probs, self.n_classes)
            scores = self._model_scores(embeddings, labels, candidates, c, rng, info)
        if self.stochastic:
            pos = gumbel_top_k(scores, n, float(self.temperature), rng)
            idx, s = candidates[pos], scores[pos]
            info["temperature"] = float(self.temperature)
        else:
            idx, s = top_k(scores, candidates, n, rng)
        return Selection(idx, s, info)

    def _model_scores(self, X, labels, candidates, n_classes, rng, info) -> np.ndarray:
        t = int(self.n_samples)
        if self.model is None:
            from ..heads import MLPHead  # torch is imported only when BALD first fits its head

            model = MLPHead()
        else:
            model = self.model
        if hasattr(model, "predict_proba_mc"):
            model = clone(model)
            params = model.get_params()
            if "n_classes" in params:
                model.set_params(n_classes=n_classes)
            if "random_state" in params:
                model.set_params(random_state=int(rng.integers(2**31 - 1)))
            mask = labels != UNLABELED
            model.fit(X[mask], labels[mask])
            seed = int(rng.integers(2**31 - 1))
            info["samples"] = f"{t} MC-dropout samples of {type(model).__name__}"
            if not hasattr(model, "_iter_logits_mc"):
                return bald_scores(model.predict_proba_mc(X[candidates], t, seed))
            scores = np.empty(len(candidates))
            rows = candidates if len(candidates) < len(X) else slice(None)
            for start, logits in model._iter_logits_mc(X[rows], t, seed):
                scores[start:start + logits.shape[2]] = _bald_from_logits(logits)
            return scores
        p = committee_probs(model, X, labels, n_classes, t, rng, X_eval=X[candidates])
        info["samples"] = f"ensemble of {t} bootstrap copies of {type(model).__name__}"
        return bald_scores(p)
