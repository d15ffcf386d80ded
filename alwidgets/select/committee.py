"""Query by committee: ask about the items on which several models disagree.

A committee is either models the user supplies (e.g. a linear probe and a
random forest: "where do my two models disagree?") or bootstrap copies of one
model, fitted internally on the current labels. Disagreement is measured by
vote entropy (hard votes) or by the mean KL divergence of each member from the
consensus (soft probabilities).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import clone

from sklearn.utils.validation import has_fit_parameter

from .._validation import UNLABELED, Interval, Options, check_probs
from ..models import accepts_unlabeled, fit_predict_proba, one_blas_thread
from .base import Selection, Selector, cold_start_batch, n_classes_of, need_model, top_k
from .registry import register
from .uncertainty import uncertainty

MEASURES = ("vote_entropy", "kl")
_EPS = 1e-12


def vote_entropy(member_probs) -> np.ndarray:
    """Entropy (nats) of the members' hard votes per item; 0 when all vote alike.

    ``member_probs`` has shape ``(n_members, n_items, n_classes)``.
    """
    return _vote_entropy(_check_member_probs(member_probs))


def _vote_entropy(p: np.ndarray) -> np.ndarray:
    """:func:`vote_entropy` of an already-checked ``(M, n, C)`` stack."""
    m, n, c = p.shape
    votes = p.argmax(axis=2)
    counts = np.zeros((n, c))
    for row in votes:
        counts[np.arange(n), row] += 1.0
    return uncertainty(counts / m, "entropy")


def kl_to_consensus(member_probs) -> np.ndarray:
    """Mean KL divergence of each member's prediction from the committee mean, per item.

    Zero when all members predict the same distribution, however uncertain
    that distribution is: it measures disagreement, not uncertainty.
    """
    return _kl_to_consensus(_check_member_probs(member_probs))


def _kl_to_consensus(p: np.ndarray) -> np.ndarray:
    """:func:`kl_to_consensus` of an already-checked ``(M, n, C)`` stack."""
    mean = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p > 0, np.log(np.maximum(p, _EPS)) - np.log(np.maximum(mean, _EPS))[None], 0.0)
    return np.maximum((p * ratio).sum(axis=2).mean(axis=0), 0.0)


def _check_member_probs(member_probs, n_items: int | None = None) -> np.ndarray:
    return check_probs(member_probs, n_items=n_items, name="member_probs", stack="n_members")


def committee_probs(model, X, labels, n_classes: int, n_members: int, rng: np.random.Generator,
                    bootstrap: bool = True, X_eval=None) -> np.ndarray:
    """Fit ``n_members`` copies of ``model`` on the labelled rows; return ``(M, n, C)`` probabilities.

    With ``bootstrap`` each copy sees a resample (with replacement) of the
    labelled rows, so members differ where the labels leave the decision open.
    Copies that take a ``random_state`` parameter get a distinct seed each.

    A model that folds into one affine map (it has ``linear_map()``, takes
    unlabelled rows and a ``sample_weight`` in ``fit``, like
    :class:`~alwidgets.models.LinearProbe`) is fitted on the whole pool with
    the bootstrap counts as sample weights, and the whole committee is then
    scored with one matrix product.
    """
    labelled = np.flatnonzero(labels != UNLABELED)
    X_eval = X if X_eval is None else X_eval
    out = np.empty((n_members, len(X_eval), n_classes))
    linear = _foldable(model)
    maps = []
    with one_blas_thread():  # small fits: BLAS threads only contend (see models.one_blas_thread)
        for m in range(n_members):
            member = clone(model)
            if "random_state" in member.get_params():
                member.set_params(random_state=int(rng.integers(2**31 - 1)))
            rows = rng.choice(labelled, len(labelled), replace=True) if bootstrap else labelled
            if linear:
                weight = np.bincount(rows, minlength=len(X)).astype(np.float64)
                maps.append(member.fit(X, labels, sample_weight=weight).linear_map())
            else:
                _, out[m] = fit_predict_proba(member, X[rows], labels[rows], n_classes, X_eval=X_eval)
    if linear:
        _linear_members_proba(maps, X_eval, out)
    return out


def _foldable(model) -> bool:
    """Whether bootstrap copies of ``model`` can be fitted by weight and scored as one affine map each."""
    return (callable(getattr(model, "linear_map", None)) and accepts_unlabeled(model)
            and has_fit_parameter(model, "sample_weight"))


def _seeded(model, rng: np.random.Generator):
    """A clone of ``model`` whose unset ``random_state`` is drawn from ``rng`` (so selections are reproducible)."""
    model = clone(model)
    params = model.get_params()
    if "random_state" in params and params["random_state"] is None:
        model.set_params(random_state=int(rng.integers(2**31 - 1)))
    return model


def _linear_members_proba(maps, X, out, chunk: int = 16384) -> None:
    """Fill ``out`` (M, n, C) with the class probabilities of affine maps ``(W, b, classes)`` (see ``linear_map``)."""
    active = [(m, w, b, cls) for m, (w, b, cls) in enumerate(maps) if len(w)]
    for m, (w, b, cls) in enumerate(maps):
        if not len(w):                          # fitted on one class: predicts it with certainty
            out[m] = 0.0
            out[m, :, cls[0]] = 1.0
    if not active:
        return
    W = np.concatenate([w for _, w, _, _ in active]).astype(np.float32)
    B = np.concatenate([b for _, _, b, _ in active])
    bounds = np.cumsum([0] + [len(w) for _, w, _, _ in active])
    for s in range(0, len(X), chunk):
        logits = (X[s:s + chunk] @ W.T).astype(np.float64) + B
        for (m, _, _, cls), lo, hi in zip(active, bounds[:-1], bounds[1:]):
            z = logits[:, lo:hi]
            out[m, s:s + chunk] = 0.0
            if hi - lo == 1:                       # binary logistic regression: sigmoid
                p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
                out[m, s:s + chunk, cls[0]] = 1.0 - p1
                out[m, s:s + chunk, cls[1]] = p1
            else:
                z = z - z.max(axis=1, keepdims=True)
                e = np.exp(z)
                out[m, s:s + chunk][:, cls] = e / e.sum(axis=1, keepdims=True)


@register("committee")
class Committee(Selector):
    """Query by committee: pick the items the committee members disagree on most.

    Parameters
    ----------
    models : list of classifiers, optional
        A committee of different models (any scikit-learn classifiers with
        ``predict_proba``, unfitted), each fitted on all current labels.
        Default: ``n_members`` bootstrap copies of the ``model`` passed to
        :meth:`select` (the caller's model).
    n_members : int
        Size of the bootstrap committee.
    measure : {"vote_entropy", "kl"}
        ``"vote_entropy"`` (default): entropy of the members' hard votes,
        i.e. disagreement about the predicted class; it takes few distinct
        values with few members, so ties are broken by KL. ``"kl"``: mean KL
        divergence of each member from the consensus, which also counts
        disagreement about how sure to be (with strongly regularised members
        it can peak away from the decision boundary).
    n_classes : int, optional
        Number of classes when no ``probs`` are passed to ``select``
        (default: largest label + 1).

    Notes
    -----
    Per-call inputs of :meth:`select`: ``model`` (copied into the bootstrap
    committee; required unless ``models`` or ``member_probs`` is given) and
    ``member_probs``, an array ``(n_members, n_items, n_classes)`` of
    predictions you already have (e.g. from two of your own models): then
    nothing is fitted and ``embeddings`` are not needed.

    With no labels, or labels of a single class, a fitted committee cannot
    disagree: the batch is random and ``Selection.info`` says why.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Committee
    >>> a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])   # model A
    >>> b = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]])   # model B
    >>> sel = Committee().select(1, labels=[-1, -1, -1], member_probs=[a, b])
    >>> sel.indices.tolist()                                 # they disagree on item 1
    [1]
    """

    accepts = ("member_probs",)
    _parameter_constraints = {
        "models": [None, list, tuple],
        "n_members": [Interval(int, 2, None)],
        "measure": [Options(MEASURES, "measure")],
        "n_classes": [None, Interval(int, 1, None)],
    }

    def __init__(self, models=None, n_members: int = 5, measure: str = "vote_entropy", n_classes: int | None = None):
        self.models = models
        self.n_members = n_members
        self.measure = measure
        self.n_classes = n_classes

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, member_probs=None):
        info = {"measure": self.measure}
        if member_probs is not None:
            p = _check_member_probs(member_probs, n_items=len(labels))
            info["committee"] = f"{p.shape[0]} given predictions"
        else:
            if self.models is None:
                model = need_model(self, model, "to fit its bootstrap committee (or pass member_probs=)")
            elif len(self.models) < 2:
                raise ValueError(f"a committee needs at least 2 models, got {len(self.models)}")
            if embeddings is None:
                raise ValueError("Committee needs `embeddings=` to fit its members (or pass member_probs=)")
            fallback = cold_start_batch(n, labels, candidates, rng)
            if fallback is not None:
                return fallback
            c = n_classes_of(labels, probs, self.n_classes)
            if self.models is not None:
                p = np.stack([fit_predict_proba(_seeded(m, rng), embeddings, labels, c)[1] for m in self.models])
                info["committee"] = f"{len(self.models)} given models"
            else:
                p = committee_probs(model, embeddings, labels, c, int(self.n_members), rng)
                info["committee"] = f"{self.n_members} bootstrap copies of {type(model).__name__}"
        pc = p[:, candidates]
        if member_probs is None:
            pc = _check_member_probs(pc)   # fitted predictions: checked once here (given ones were above)
        kl = _kl_to_consensus(pc)
        if self.measure == "kl":
            idx, s = top_k(kl, candidates, n, rng)
        else:
            # Hard votes tie a lot with few members: break ties by KL, then at random.
            ve = _vote_entropy(pc)
            order = np.lexsort((rng.random(len(candidates)), -kl, -ve))[:n]
            idx, s = candidates[order], ve[order]
        info["max_disagreement"] = float(s[0])
        return Selection(idx, s, info)
