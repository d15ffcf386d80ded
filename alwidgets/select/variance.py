"""Variance sampling for regression: ask about the items whose value the model can least pin down.

For numeric targets (a count, an age, a quality score) there are no class
probabilities; the uncertainty is the predictive variance, from a bootstrap
ensemble of regressors (their spread) or from a Gaussian process (its
posterior variance). Both grow away from the labelled data.

Numeric targets do not fit the selector's integer ``labels`` contract, so
they are passed as the extra input ``targets`` (float, NaN = unlabelled) and
``labels`` only mark which items are labelled (any class index, e.g. 0)::

    labels = np.where(np.isnan(y), -1, 0)
    Variance().select(10, labels=labels, embeddings=X, targets=y)

Without ``targets`` the integer labels themselves are regressed on
(meaningful for ordinal labels such as 1-5 ratings).
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import BayesianRidge, ElasticNet, HuberRegressor, Lasso, LinearRegression, Ridge, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .._validation import UNLABELED, Interval, Options
from .base import Selection, Selector, cold_start_batch, random_batch, top_k
from .registry import register

KINDS = ("ensemble", "gp")
# regressors whose predict() is exactly X @ coef_ + intercept_ (GLMs with a link are not)
_LINEAR = (LinearRegression, Ridge, RidgeCV, Lasso, ElasticNet, BayesianRidge, HuberRegressor)
_CHUNK = 8192


def default_regressor():
    """Ridge regression on standardised features: fast, and its bootstrap spread grows with distance."""
    return make_pipeline(StandardScaler(), Ridge(alpha=1.0))


def ensemble_variance(model, X, y, labelled, X_eval, n_members: int, rng: np.random.Generator) -> np.ndarray:
    """Variance across ``n_members`` bootstrap fits of ``model``, per row of ``X_eval``.

    Linear members (a linear model, optionally after a StandardScaler) are
    folded into one affine map each and evaluated with a single matrix product.
    """
    members = []
    for _ in range(n_members):
        rows = rng.choice(labelled, len(labelled), replace=True)
        member = clone(model)
        if "random_state" in member.get_params():
            member.set_params(random_state=int(rng.integers(2**31 - 1)))
        members.append(member.fit(X[rows], y[rows]))
    maps = [_affine(m) for m in members]
    preds = np.empty((n_members, len(X_eval)))
    if all(a is not None for a in maps):
        W = np.stack([w for w, _ in maps], axis=1).astype(np.float32)
        b = np.array([c for _, c in maps])
        for s in range(0, len(X_eval), _CHUNK):
            preds[:, s:s + _CHUNK] = ((X_eval[s:s + _CHUNK] @ W).astype(np.float64) + b).T
    else:
        for m, member in enumerate(members):
            preds[m] = np.asarray(member.predict(X_eval), dtype=np.float64).reshape(len(X_eval))
    return preds.var(axis=0)


def _affine(fitted):
    """``(w, b)`` with ``predict(X) == X @ w + b`` for a fitted linear regressor (after a scaler), else None."""
    scaler = None
    if isinstance(fitted, Pipeline):
        steps = [est for _, est in fitted.steps]
        if len(steps) == 2 and isinstance(steps[0], StandardScaler):
            scaler, fitted = steps
        elif len(steps) != 1:
            return None
        else:
            fitted = steps[0]
    coef = getattr(fitted, "coef_", None)
    if coef is None or np.ndim(coef) != 1 or type(fitted) not in _LINEAR:
        return None
    w = np.asarray(coef, dtype=np.float64)
    b = float(np.asarray(fitted.intercept_).reshape(-1)[0]) if np.size(fitted.intercept_) else 0.0
    if scaler is not None:
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones_like(w)
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros_like(w)
        w = w / scale
        b = b - float(w @ mean)
    return w, b


def gp_variance(X, y, labelled, X_eval, rng: np.random.Generator) -> np.ndarray:
    """Posterior predictive variance of a GP (scaled RBF + white noise, hyper-parameters fitted)."""
    scaler = StandardScaler().fit(X[labelled])
    d = X.shape[1]
    kernel = ConstantKernel(1.0) * RBF(length_scale=np.sqrt(d)) + WhiteKernel(1e-2)
    gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(scaler.transform(X[labelled]), y[labelled])
    out = np.empty(len(X_eval))
    for s in range(0, len(X_eval), _CHUNK):
        _, std = gp.predict(scaler.transform(X_eval[s:s + _CHUNK]), return_std=True)
        out[s:s + _CHUNK] = std ** 2
    return out


@register("variance")
class Variance(Selector):
    """Pick the items with the largest predictive variance of a regression model.

    Parameters
    ----------
    kind : {"ensemble", "gp"}
        ``"ensemble"``: variance across bootstrap copies of the regressor.
        ``"gp"``: posterior variance of a Gaussian process (exact; best up
        to a few thousand labelled items; its kernel evaluation makes it
        slower on big pools, about 10 s for 100k x 512 items on 2 cores).
    n_members : int
        Ensemble size.

    Notes
    -----
    Per-call inputs of :meth:`select`: ``targets``, an array ``(n_items,)``
    of floats, the numeric target per item (NaN for unlabelled ones; default:
    the integer ``labels`` read as numbers); ``model``, the caller's
    unfitted *regressor*, copied into the ensemble (without one, or when it
    is a classifier, as in a classification loop with ordinal labels:
    :func:`default_regressor`, Ridge on standardised features, named in
    ``info["ensemble"]``).

    With fewer than two labelled items (or, for the ensemble, all labelled
    targets equal) there is no spread to measure: the batch is random and
    ``Selection.info`` says why.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import Variance
    >>> X = np.linspace(0, 10, 21)[:, None]
    >>> y = np.full(21, np.nan)
    >>> y[[0, 1, 2, 3]] = [0.0, 0.4, 1.1, 1.4]           # labels only near x = 0
    >>> labels = np.where(np.isnan(y), -1, 0)
    >>> sel = Variance(kind="gp").select(1, labels=labels, embeddings=X, targets=y, random_state=0)
    >>> float(X[sel.indices[0], 0]) >= 9.0               # the far end is least pinned down
    True
    """

    requires = ("embeddings",)
    accepts = ("targets",)
    _parameter_constraints = {
        "kind": [Options(KINDS, "kind")],
        "n_members": [Interval(int, 2, None)],
    }

    def __init__(self, kind: str = "ensemble", n_members: int = 10):
        self.kind = kind
        self.n_members = n_members

    @staticmethod
    def _check_targets(targets, n_items) -> np.ndarray:
        t = np.asarray(targets)
        if t.ndim != 1 or t.dtype.kind not in "fiub":
            raise ValueError(f"targets must be a 1-d numeric array (NaN = unlabelled), got shape {t.shape} "
                             f"and dtype {t.dtype}")
        t = t.astype(np.float64)
        if n_items is not None and len(t) != n_items:
            raise ValueError(f"targets has {len(t)} rows but the pool has {n_items} items")
        inf = np.isinf(t)
        if inf.any():
            raise ValueError(f"targets has inf values in rows {np.flatnonzero(inf)[:10].tolist()}")
        return t

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng, targets=None):
        note = None
        if model is not None and is_classifier(model):
            # a classification loop's model (e.g. ordinal labels read as numbers): not a regressor
            note = f"`model` {type(model).__name__} is a classifier; the default regressor is used"
            model = None
        labelled = np.flatnonzero(labels != UNLABELED)
        if targets is None:
            y = labels.astype(np.float64)
            info = {"kind": self.kind, "targets": "integer labels read as numbers"}
        else:
            y = self._check_targets(targets, len(labels))
            missing = labelled[np.isnan(y[labelled])]
            if len(missing):
                raise ValueError(f"labelled rows {missing[:10].tolist()} have NaN targets")
            info = {"kind": self.kind, "targets": "numeric targets"}
        fallback = cold_start_batch(n, labels, candidates, rng, min_labels=2, min_classes=1)
        if fallback is not None:
            return fallback
        X = embeddings   # validated by Selector.select
        if self.kind == "gp":
            var = gp_variance(X, y, labelled, X[candidates], rng)
        else:
            if np.ptp(y[labelled]) == 0:
                return random_batch(n, candidates, rng, "all labelled targets are equal: the ensemble cannot spread")
            model = default_regressor() if model is None else model
            var = ensemble_variance(model, X, y, labelled, X[candidates], int(self.n_members), rng)
            info["ensemble"] = f"{self.n_members} bootstrap copies of {type(model).__name__}"
            if note:
                info["note"] = note
        idx, s = top_k(var, candidates, n, rng)
        return Selection(idx, s, info)
