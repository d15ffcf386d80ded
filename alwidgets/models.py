"""The model behind the selectors: any scikit-learn classifier with ``predict_proba``.

The default is :class:`LinearProbe`, a logistic regression on centred,
rescaled embeddings. Scaling matters: with unit-norm embeddings and a handful
of labels, scikit-learn's default regularisation makes an unscaled probe
predict near chance, which silently ruins every low-budget comparison.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ._validation import UNLABELED, check_embeddings, check_labels


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic regression on centred, isotropically rescaled features, robust to tiny label sets.

    Features are centred on the pool mean and divided by *one* scale, the
    root-mean-square of the centred features, so every embedding reaches the
    regression at the same overall size while keeping its own geometry.
    Per-feature standardisation would instead blow up low-variance directions
    (trailing PCA components, near-constant border pixels, dead CNN
    channels) to the same weight as the informative ones, and with a few
    labels the regression then fits their noise: on Fashion-MNIST pixels ->
    PCA 50 it cost 13 points at 10 labels (25.8 % vs 38.9 %), on digits 2
    points; on MobileNet features the two scalings tie. ``C=10`` (weak
    regularisation) was the best of 0.1-10 at 10-50 labels on all four study
    datasets (``benchmarks/study.py``; see ``docs/benchmarks.md``).

    Parameters
    ----------
    C : float
        Inverse regularisation strength of the logistic regression.
    n_classes : int, optional
        Number of classes of the problem. When given, ``predict_proba`` always
        has ``n_classes`` columns, even if the labelled set lacks some classes.
    max_iter : int
        Solver iterations.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.models import LinearProbe
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1]])
    >>> probe = LinearProbe(n_classes=3).fit(X, [0, 0, 1, 1])
    >>> probe.predict_proba(X).shape      # class 2 has no labels yet, still a column
    (4, 3)
    >>> probe.predict([[1.05]]).tolist()
    [1]
    """

    def __init__(self, C: float = 10.0, n_classes: int | None = None, max_iter: int = 200):
        self.C = C
        self.n_classes = n_classes
        self.max_iter = max_iter

    accepts_unlabeled = True
    """``fit(X, y)`` takes every pool row, ``-1`` marking the unlabelled ones (scikit-learn's semi-supervised convention)."""

    def fit(self, X, y, sample_weight=None):
        """Fit on the labelled rows of ``X``; centre and scale with all of them.

        ``y`` holds a class index per row and ``-1`` for unlabelled rows
        (scikit-learn's semi-supervised convention). Every row of ``X``,
        labelled or not, sets the centring and scale: the statistics of
        thousands of unlabelled rows are far steadier than those of a
        handful of labels (on the CIFAR-10 subset with MobileNet features
        this adds 1-2 points at 10-50 labels). No labels are involved, so
        nothing leaks. The regression is fitted on the labelled rows only.

        ``sample_weight`` (one non-negative weight per row, optional) weights
        the labelled rows in the regression; an integer weight ``k`` counts
        the row ``k`` times (a bootstrap resample), weight 0 leaves it out.
        """
        X = check_embeddings(X, name="X")
        y = check_labels(y, n_items=len(X), name="y")
        keep = y != UNLABELED
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.shape != (len(X),):
                raise ValueError(f"sample_weight must have one value per row of X ({len(X)}), got shape {w.shape}")
            if not np.isfinite(w).all() or np.any(w < 0):
                raise ValueError("sample_weight must be finite and >= 0")
            keep &= w > 0
        if not keep.any():
            raise ValueError("cannot fit on zero labelled items")
        yl = y[keep]
        present = np.unique(yl)
        if self.n_classes is not None and present.max() >= self.n_classes:
            raise ValueError(f"y holds class {present.max()} but n_classes={self.n_classes}")
        self.classes_ = np.arange(self.n_classes) if self.n_classes is not None else present
        self.mean_, self.scale_ = pool_scaling(X)
        if len(present) == 1:
            self.lr_ = None
            self.constant_ = int(present[0])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.lr_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(
                    self.transform(X[keep]), yl, sample_weight=None if w is None else w[keep])
        return self

    def linear_map(self):
        """The fitted probe as one affine map on raw features: ``(W, b, classes)``.

        Centring, scaling and the logistic regression are all affine, so they
        fold into ``logits = X @ W.T + b``. ``classes`` are the class indices of
        the logits' columns. Two classes give one logit row (binary logistic
        regression: ``p(classes[1]) = sigmoid(logit)``); a probe fitted on a
        single class gives ``W`` with zero rows and ``classes`` holding that
        class (it predicts it with certainty). Lets a caller score many probes
        with one matrix product (see :func:`~alwidgets.select.committee.committee_probs`).

        >>> import numpy as np
        >>> X = np.array([[0.0], [0.1], [1.0], [1.1]])
        >>> probe = LinearProbe().fit(X, [0, 0, 1, -1])
        >>> W, b, classes = probe.linear_map()
        >>> p1 = 1 / (1 + np.exp(-(X @ W.T + b)[:, 0]))
        >>> bool(np.allclose(p1, probe.predict_proba(X)[:, 1])), classes.tolist()
        (True, [0, 1])
        """
        if self.lr_ is None:
            return np.zeros((0, len(self.mean_))), np.zeros(0), np.array([self.constant_], dtype=np.int64)
        coef = self.lr_.coef_ / self.scale_
        return coef, self.lr_.intercept_ - coef @ self.mean_, np.asarray(self.lr_.classes_, dtype=np.int64)

    def transform(self, X):
        """Features as the regression sees them: centred on the pool mean, divided by one scale."""
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def predict_proba(self, X):
        X = check_embeddings(X, name="X")
        out = np.zeros((len(X), len(self.classes_)))
        cols = np.searchsorted(self.classes_, self.lr_.classes_ if self.lr_ is not None else [self.constant_])
        if self.lr_ is None:
            out[:, cols[0]] = 1.0
        else:
            for s in range(0, len(X), 16384):  # float64 features one block at a time, not a copy of the pool
                out[s:s + 16384, cols] = self.lr_.predict_proba(self.transform(X[s:s + 16384]))
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def pool_scaling(X, chunk: int = 8192) -> tuple[np.ndarray, float]:
    """``(mean, scale)`` that :class:`LinearProbe` applies: per-feature mean, one RMS scale.

    ``scale`` is the root-mean-square of the centred features (1 if they are
    all constant). Computed in row chunks, so a large pool is never copied.

    >>> import numpy as np
    >>> mean, scale = pool_scaling(np.array([[0.0, 0.0], [2.0, 4.0]]))
    >>> mean.tolist(), round(scale, 4)          # centred rows: +-1, +-2 -> RMS sqrt(2.5)
    ([1.0, 2.0], 1.5811)
    """
    X = np.asarray(X)
    s1 = np.zeros(X.shape[1])
    s2 = np.zeros(X.shape[1])
    for s in range(0, len(X), chunk):
        block = X[s:s + chunk].astype(np.float64)
        s1 += block.sum(axis=0)
        s2 += np.einsum("ij,ij->j", block, block)
    mean = s1 / len(X)
    var = float(np.maximum(s2 / len(X) - mean**2, 0.0).mean())
    return mean, (float(np.sqrt(var)) if var > 1e-24 else 1.0)


def default_model(n_classes: int | None = None) -> LinearProbe:
    """The loop's default model: a :class:`LinearProbe` (the caller chooses it explicitly)."""
    return LinearProbe(n_classes=n_classes)


def accepts_unlabeled(model) -> bool:
    """Whether ``model.fit(X, y)`` takes unlabelled rows marked ``-1`` (scikit-learn's semi-supervised convention).

    True for models that say so with a class attribute ``accepts_unlabeled = True``
    (:class:`LinearProbe`, :class:`~alwidgets.heads.MLPHead`) and for scikit-learn's
    ``sklearn.semi_supervised`` estimators.
    """
    if getattr(model, "accepts_unlabeled", False):
        return True
    return type(model).__module__.startswith("sklearn.semi_supervised")


def fit_model(model, X, labels, n_classes: int):
    """Fit a clone of ``model`` on the labels (``-1`` = unlabelled); return the fitted clone.

    A model that accepts unlabelled rows (:func:`accepts_unlabeled`) is fitted
    on every row of ``X`` with the full ``labels``; any other classifier on the
    labelled rows only. With a single labelled class, a model that does not
    accept unlabelled rows is replaced by a fitted
    :class:`~sklearn.dummy.DummyClassifier` predicting that class (most
    classifiers refuse one class). The fitted model's ``classes_`` are the
    class indices its ``predict_proba`` columns stand for;
    :func:`fit_predict_proba` maps them to ``n_classes`` columns.

    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1], [5.0]])
    >>> fit_model(LinearProbe(), X, [0, 0, 1, 1, -1], n_classes=2).mean_.round(2).tolist()   # all 5 rows
    [1.44]
    """
    with one_blas_thread():
        return _fit_model(model, X, labels, n_classes)


def _fit_model(model, X, labels, n_classes):
    labels = check_labels(labels, n_items=len(X))
    mask = labels != UNLABELED
    if not mask.any():
        raise ValueError("no labelled items to fit the model on")
    if labels.max() >= n_classes:
        raise ValueError(f"labels hold class {labels.max()} but n_classes={n_classes}")
    if accepts_unlabeled(model):
        return clone(model).fit(X, labels)
    y = labels[mask]
    present = np.unique(y)
    if len(present) == 1:
        from sklearn.dummy import DummyClassifier

        return DummyClassifier(strategy="constant", constant=int(present[0])).fit(X[mask][:1], y[:1])
    return clone(model).fit(X[mask], y)


def fit_predict_proba(model, X, labels, n_classes: int, X_eval=None):
    """Fit a clone of ``model`` (see :func:`fit_model`); predict class probabilities.

    Returns ``(fitted_model, probs)`` where ``probs`` has one column per class
    (``n_classes``), for ``X_eval`` if given, else for every row of ``X``.
    Classes missing from the labelled set get probability 0. With a single
    labelled class any model predicts that class with certainty.
    """
    with one_blas_thread():
        fitted = _fit_model(model, X, labels, n_classes)
        X_eval = X if X_eval is None else X_eval
        probs = np.zeros((len(X_eval), n_classes))
        labels = np.asarray(labels)
        present = np.unique(labels[labels != UNLABELED])
        if len(present) == 1:
            probs[:, present[0]] = 1.0
            return fitted, probs
        cols = np.asarray(fitted.classes_, dtype=np.int64)
        probs[:, cols] = fitted.predict_proba(X_eval)
        return fitted, probs


def one_blas_thread():
    """Context manager: run small per-round fits on one BLAS thread.

    Labelled sets are small (hundreds to thousands of rows), so threads buy
    nothing; on a busy 2-core machine spinning BLAS threads made each
    logistic-regression fit up to 50x slower (2 s instead of 40 ms).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
