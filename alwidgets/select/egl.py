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

from ..models import pool_scaling
from .base import Selection, Selector, top_k
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
    return _egl(p, sq, bias)


def _egl(p: np.ndarray, sq: np.ndarray, bias: bool) -> np.ndarray:
    """Expected gradient length from probabilities ``p`` and squared feature norms ``sq`` (without the bias)."""
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
    rescale : bool
        Measure feature norms on embeddings centred and rescaled as the
        default :class:`~alwidgets.models.LinearProbe` sees them (pool mean,
        one RMS scale). Turn off when ``probs`` come from a linear head on
        the raw embeddings.
    bias : bool
        The head has a bias term (adds 1 to the squared feature norm).

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.select import ExpectedGradientLength
    >>> probs = np.array([[0.99, 0.01], [0.6, 0.4], [0.6, 0.4]])
    >>> X = np.array([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> sel = ExpectedGradientLength(rescale=False).select(1, labels=[-1, -1, -1], embeddings=X, probs=probs)
    >>> sel.indices.tolist()     # as unsure as item 1, but a larger feature norm
    [2]
    """

    requires = ("embeddings", "probs")
    _parameter_constraints = {"rescale": ["boolean"], "bias": ["boolean"]}

    def __init__(self, rescale: bool = True, bias: bool = True):
        self.rescale = rescale
        self.bias = bias

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        sq = _sq_norms(embeddings, self.rescale)[candidates]
        scores = _egl(probs[candidates], sq, self.bias)
        idx, s = top_k(scores, candidates, n, rng)
        return Selection(idx, s, {"rescale": bool(self.rescale)})


def _sq_norms(X: np.ndarray, rescale: bool, chunk: int = 8192) -> np.ndarray:
    """Squared row norms of ``X``, or of ``(X - mean) / scale`` with the probe's pool statistics; chunked."""
    mean, scale = pool_scaling(X, chunk) if rescale else (np.zeros(X.shape[1]), 1.0)
    mean = mean.astype(np.float32)
    out = np.empty(len(X))
    for s in range(0, len(X), chunk):
        z = X[s:s + chunk] - mean
        out[s:s + chunk] = np.einsum("ij,ij->i", z, z)
    return out / scale**2
