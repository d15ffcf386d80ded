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

from .._validation import UNLABELED, HasMethods, Interval, Options, check_probs
from ..models import accepts_unlabeled
from .base import Selection, Selector, cold_start_batch, n_classes_of, need_model, top_k
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
    head : "mlp", estimator or None
        Where the T stochastic predictions come from. ``"mlp"`` (default): a
        fresh :class:`~alwidgets.heads.MLPHead` fitted on the current labels,
        sampled with MC dropout. An estimator with
        ``predict_proba_mc(X, n_samples, random_state) -> (T, n, C)`` (and
        optionally ``sample_logits``, the chunked form): that head, cloned
        and fitted. ``None``: a bootstrap ensemble of ``n_samples`` copies
        of the ``model`` passed to :meth:`select` (the caller's model).
    n_samples : int
        T, the number of MC-dropout samples (or ensemble members).
    stochastic : bool
        Sample the batch ∝ ``score ** (1/temperature)`` (Gumbel top-k) instead
        of taking the top scores; reduces redundant batches.
    temperature : float
        Temperature of the stochastic variant; small values approach top-k.
    n_classes : int, optional
        Number of classes when no ``probs`` are passed to ``select``.

    Notes
    -----
    Per-call inputs of :meth:`select`: ``mc_probs``, an array
    ``(T, n_items, n_classes)`` of sampled predictions you computed yourself
    (MC dropout or an ensemble of your models): then nothing is fitted and
    ``embeddings`` are not needed; ``model``, required with ``head=None``.

    With no labels, or a single labelled class, the model has nothing to be
    uncertain about: the batch is random and ``Selection.info`` says why.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import BALD
    >>> mc = np.array([[[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]],
    ...                [[0.5, 0.5], [0.1, 0.9], [0.2, 0.8]]])   # T=2 samples, 3 items
    >>> BALD().select(1, labels=[-1, -1, -1], mc_probs=mc).indices.tolist()
    [1]
    """

    accepts = ("mc_probs",)
    _parameter_constraints = {
        "head": [Options(("mlp",), "head"), None, HasMethods("fit", "predict_proba_mc")],
        "n_samples": [Interval(int, 2, None)],
        "stochastic": ["boolean"],
        "temperature": [Interval(float, 0, None, closed="neither")],
        "n_classes": [None, Interval(int, 1, None)],
    }

    def __init__(self, head="mlp", n_samples: int = 20, stochastic: bool = False, temperature: float = 1.0,
                 n_classes: int | None = None):
        self.head = head
        self.n_samples = n_samples
        self.stochastic = stochastic
        self.temperature = temperature
        self.n_classes = n_classes

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, mc_probs=None):
        info = {"variant": "stochastic" if self.stochastic else "top_k"}
        if mc_probs is not None:
            scores = _bald_scores(_check_mc_probs(mc_probs, n_items=len(labels))[:, candidates])
            info["samples"] = "given mc_probs"
        else:
            if self.head is None:
                model = need_model(self, model, "for its bootstrap ensemble (head=None), or pass mc_probs=")
            if embeddings is None:
                raise ValueError("BALD needs `embeddings=` to fit its model (or pass mc_probs=)")
            fallback = cold_start_batch(n, labels, candidates, rng)
            if fallback is not None:
                return fallback
            c = n_classes_of(labels, probs, self.n_classes)
            scores = self._model_scores(embeddings, labels, candidates, c, model, rng, info)
        if self.stochastic:
            pos = gumbel_top_k(scores, n, float(self.temperature), rng)
            idx, s = candidates[pos], scores[pos]
            info["temperature"] = float(self.temperature)
        else:
            idx, s = top_k(scores, candidates, n, rng)
        return Selection(idx, s, info)

    def _model_scores(self, X, labels, candidates, n_classes, model, rng, info) -> np.ndarray:
        t = int(self.n_samples)
        if self.head is None:
            p = committee_probs(model, X, labels, n_classes, t, rng, X_eval=X[candidates])
            info["samples"] = f"ensemble of {t} bootstrap copies of {type(model).__name__}"
            return bald_scores(p)
        if isinstance(self.head, str):
            from ..heads import MLPHead  # torch is imported only when BALD first fits its head

            head = MLPHead()
        else:
            head = clone(self.head)
        params = head.get_params()
        if "n_classes" in params:
            head.set_params(n_classes=n_classes)
        if "random_state" in params:
            head.set_params(random_state=int(rng.integers(2**31 - 1)))
        if accepts_unlabeled(head):
            head.fit(X, labels)
        else:
            mask = labels != UNLABELED
            head.fit(X[mask], labels[mask])
        seed = int(rng.integers(2**31 - 1))
        info["samples"] = f"{t} MC-dropout samples of {type(head).__name__}"
        if not callable(getattr(head, "sample_logits", None)):
            return bald_scores(head.predict_proba_mc(X[candidates], t, seed))
        scores = np.empty(len(candidates))
        rows = candidates if len(candidates) < len(X) else slice(None)
        for start, logits in head.sample_logits(X[rows], t, seed):
            scores[start:start + logits.shape[2]] = _bald_from_logits(logits)
        return scores
