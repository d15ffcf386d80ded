"""The model behind the selectors: any scikit-learn classifier with ``predict_proba``.

The default is :class:`LinearProbe`, a logistic regression on standardised
embeddings. Standardising matters: with unit-norm embeddings and a handful of
labels, scikit-learn's default regularisation makes an unscaled probe predict
near chance, which silently ruins every low-budget comparison.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ._validation import UNLABELED, check_embeddings, check_labels


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic regression on standardised features, robust to tiny label sets.

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

    def __init__(self, C: float = 1.0, n_classes: int | None = None, max_iter: int = 200):
        self.C = C
        self.n_classes = n_classes
        self.max_iter = max_iter

    def fit(self, X, y, X_pool=None):
        """Fit on labelled rows ``X, y``.

        ``X_pool``, the features of the whole pool (labelled and unlabelled),
        sets the standardisation when given: the mean and scale of thousands
        of unlabelled rows are far steadier than those of a handful of labels
        (on the CIFAR-10 subset with MobileNet features this adds 1-2 points
        at 10-50 labels). No labels are involved, so nothing leaks.
        """
        X = check_embeddings(X, name="X")
        y = check_labels(y, n_items=len(X), name="y")
        if np.any(y == UNLABELED):
            raise ValueError("y holds -1 (unlabelled); fit on labelled rows only")
        if len(y) == 0:
            raise ValueError("cannot fit on zero labelled items")
        present = np.unique(y)
        if self.n_classes is not None and present.max() >= self.n_classes:
            raise ValueError(f"y holds class {present.max()} but n_classes={self.n_classes}")
        self.classes_ = np.arange(self.n_classes) if self.n_classes is not None else present
        self.scaler_ = StandardScaler().fit(X if X_pool is None else check_embeddings(X_pool, name="X_pool"))
        if len(present) == 1:
            self.lr_ = None
            self.constant_ = int(present[0])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.lr_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(self.scaler_.transform(X), y)
        return self

    def predict_proba(self, X):
        X = check_embeddings(X, name="X")
        out = np.zeros((len(X), len(self.classes_)))
        cols = np.searchsorted(self.classes_, self.lr_.classes_ if self.lr_ is not None else [self.constant_])
        if self.lr_ is None:
            out[:, cols[0]] = 1.0
        else:
            out[:, cols] = self.lr_.predict_proba(self.scaler_.transform(X))
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def default_model(n_classes: int | None = None) -> LinearProbe:
    """The model used when none is given: a :class:`LinearProbe`."""
    return LinearProbe(n_classes=n_classes)


def fit_predict_proba(model, X, labels, n_classes: int, X_eval=None):
    """Fit a clone of ``model`` on the labelled rows of ``X``; predict class probabilities.

    Returns ``(fitted_model, probs)`` where ``probs`` has one column per class
    (``n_classes``), for ``X_eval`` if given, else for every row of ``X``.
    Classes missing from the labelled set get probability 0. With a single
    labelled class any model predicts that class with certainty.
    """
    with one_blas_thread():
        return _fit_predict_proba(model, X, labels, n_classes, X_eval)


def one_blas_thread():
    """Context manager: run small per-round fits on one BLAS thread.

    Labelled sets are small (hundreds to thousands of rows), so threads buy
    nothing; on a busy 2-core machine spinning BLAS threads made each
    logistic-regression fit up to 50x slower (2 s instead of 40 ms).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _fit_predict_proba(model, X, labels, n_classes, X_eval):
    labels = check_labels(labels, n_items=len(X))
    mask = labels != UNLABELED
    if not mask.any():
        raise ValueError("no labelled items to fit the model on")
    X_eval = X if X_eval is None else X_eval
    y = labels[mask]
    present = np.unique(y)
    if isinstance(model, LinearProbe):
        fitted = clone(model).set_params(n_classes=n_classes).fit(X[mask], y, X_pool=X)
        return fitted, fitted.predict_proba(X_eval)
    probs = np.zeros((len(X_eval), n_classes))
    if len(present) == 1:
        probs[:, present[0]] = 1.0
        return None, probs
    fitted = clone(model).fit(X[mask], y)
    cols = np.asarray(fitted.classes_, dtype=np.int64)
    probs[:, cols] = fitted.predict_proba(X_eval)
    return fitted, probs
