"""Expected gradient length: ask about the items that would change the model most.

For a softmax linear head ``p = softmax(W x + b)`` trained with cross-entropy,
the gradient for an item labelled ``y`` is ``(p - e_y) ⊗ [x, 1]``, whose norm
factorises as ``||p - e_y|| * ||[x, 1]||``. Taking the expectation over the
model's own belief about ``y`` gives a closed form, so no gradients are
computed (Settles et al., 2008):

    EGL(x) = ||[x, 1]|| * sum_y p_y * sqrt(||p||^2 - 2 p_y + 1)

It mixes uncertainty (the sum) with how far the item lies from the feature
origin (the norm), so outlying uncertain items come first.
"""
from __future__ import annotations

import numpy as np

from .base import Selection, Selector, top_k, unlabeled_indices
from .registry import register


def expected_gradient_length(probs, embeddings, bias: bool = True) -> np.ndarray:
    """Closed-form expected norm of the cross-entropy gradient of a softmax linear head, per item.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import expected_gradient_length
    >>> probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> X = np.array([[3.0, 4.0], [3.0, 4.0]])
    >>> expected_gradient_length(probs, X, bias=False).round(4).tolist()   # sure -> 0
    [0.0, 3.5355]
    """
    p = np.asarray(probs, dtype=np.float64)
    X = np.asarray(embeddings)
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if p.ndim != 2 or X.ndim != 2 or len(p) != len(X):
        raise ValueError(f"probs (n, C) and embeddings (n, d) must have the same rows, got {p.shape} and {X.shape}")
    sq = np.einsum("ij,ij->i", X, X).astype(np.float64)
    return _label_factor(p) * np.sqrt(sq + (1.0 if bias else 0.0))


def _label_factor(p: np.ndarray) -> np.ndarray:
    """``E_y ||p - e_y||`` under ``y ~ p``: the probability part of the expected gradient norm."""
    sq = (p * p).sum(axis=1, keepdims=True)
    return (p * np.sqrt(np.maximum(sq - 2.0 * p + 1.0, 0.0))).sum(axis=1)


@register("egl")
class ExpectedGradientLength(Selector):
    """Pick items whose expected training gradient (softmax linear head) is largest.

    Parameters
    ----------
    standardize : bool
        Measure feature norms on embeddings standardised with the pool's mean
        and standard deviation, close to what the default
        :class:`~alwidgets.models.LinearProbe` sees. Turn off when ``probs``
        come from a linear head on the raw embeddings.
    bias : bool
        The head has a bias term (adds 1 to the squared feature norm).

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import ExpectedGradientLength
    >>> probs = np.array([[0.99, 0.01], [0.6, 0.4], [0.6, 0.4]])
    >>> X = np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> sel = ExpectedGradientLength(standardize=False).select(1, labels=[-1, -1, -1], embeddings=X, probs=probs)
    >>> sel.indices.tolist()     # as unsure as item 1, but a larger feature norm
    [2]
    """

    requires = ("embeddings", "probs")

    def __init__(self, standardize: bool = True, bias: bool = True):
        self.standardize = standardize
        self.bias = bias

    def _select(self, n, *, labels, embeddings, probs, rng):
        candidates = unlabeled_indices(labels)
        sq = _sq_norms(embeddings, self.standardize)[candidates]
        scores = _label_factor(probs[candidates]) * np.sqrt(sq + (1.0 if self.bias else 0.0))
        idx, s = top_k(scores, candidates, n, rng)
        return Selection(idx, s, {"standardize": bool(self.standardize)})


def _sq_norms(X: np.ndarray, standardize: bool, chunk: int = 8192) -> np.ndarray:
    """Squared row norms of ``X``, or of ``(X - mean) / std`` with pool statistics; chunked, float32."""
    mean = np.zeros(X.shape[1], np.float32)
    inv = np.ones(X.shape[1], np.float32)
    if standardize:
        s1 = np.zeros(X.shape[1])
        s2 = np.zeros(X.shape[1])
        for s in range(0, len(X), chunk):
            block = X[s:s + chunk]
            s1 += block.sum(axis=0)
            s2 += np.einsum("ij,ij->j", block, block)
        m = s1 / len(X)
        var = np.maximum(s2 / len(X) - m**2, 0.0)
        inv = np.where(var > 1e-24, 1.0 / np.sqrt(np.maximum(var, 1e-24)), 1.0).astype(np.float32)
        mean = m.astype(np.float32)
    out = np.empty(len(X))
    for s in range(0, len(X), chunk):
        z = X[s:s + chunk]
        if standardize:
            z = (z - mean) * inv
        out[s:s + chunk] = np.einsum("ij,ij->i", z, z)
    return out
