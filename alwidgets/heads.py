"""A small torch MLP head with dropout: a classifier on embeddings that can say what it does not know.

Monte-Carlo dropout (Gal & Ghahramani, 2016) keeps dropout switched on at
prediction time; the spread of the sampled predictions is the model's
epistemic uncertainty, which :class:`~alwidgets.select.BALD` turns into a
selection score. Dropout sits after the hidden layer only, so the first layer
is computed once and each MC sample costs one small ``(hidden x classes)``
product. Each MC sample draws one dropout mask shared by every item (one
draw of the weights, as in the variational reading of dropout), so all T
samples fold into a single matrix product.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from ._validation import UNLABELED, check_embeddings, check_labels

_CHUNK = 16384


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run a block with ``n`` torch threads, restoring the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (numpy: faster than torch for a handful of classes)."""
    z = z - z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def _torch_seed(random_state) -> int:
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    return int(np.random.default_rng(random_state).integers(2**63 - 1))


class MLPHead(ClassifierMixin, BaseEstimator):
    """One-hidden-layer MLP with dropout, trained full-batch on standardised embeddings.

    Parameters
    ----------
    hidden : int
        Width of the hidden layer.
    dropout : float
        Dropout rate after the hidden layer, used in training and in
        :meth:`predict_proba_mc`.
    epochs : int
        Full-batch Adam steps. Enough for a few thousand labelled items.
    lr, weight_decay : float
        Adam learning rate and L2 penalty.
    n_classes : int, optional
        Number of classes; ``predict_proba`` always has that many columns even
        when some classes have no labels yet.
    random_state : int or None
        Seeds initialisation and dropout masks; fitting is deterministic given it.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.heads import MLPHead
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
    >>> head = MLPHead(n_classes=3, random_state=0).fit(X, [0, 0, 1, 1])
    >>> head.predict(X).tolist()
    [0, 0, 1, 1]
    >>> head.predict_proba_mc(X, n_samples=5, random_state=0).shape   # (T, n, C)
    (5, 4, 3)
    """

    def __init__(self, hidden: int = 64, dropout: float = 0.3, epochs: int = 100, lr: float = 1e-2,
                 weight_decay: float = 1e-4, n_classes: int | None = None, random_state=0):
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_classes = n_classes
        self.random_state = random_state

    accepts_unlabeled = True
    """``fit(X, y)`` takes every pool row, ``-1`` marking the unlabelled ones (they are dropped)."""

    def fit(self, X, y):
        """Train on the labelled rows of ``X`` (``y == -1`` marks unlabelled rows, which are dropped).

        The standardisation statistics come from the labelled rows, the
        ones the network is trained on.
        """
        X = check_embeddings(X, name="X")
        y = check_labels(y, n_items=len(X), name="y")
        mask = y != UNLABELED
        if not mask.all():
            X, y = X[mask], y[mask]
        if len(y) == 0:
            raise ValueError("cannot fit on zero labelled items")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        n_classes = int(y.max()) + 1 if self.n_classes is None else int(self.n_classes)
        if y.max() >= n_classes:
            raise ValueError(f"y holds class {y.max()} but n_classes={n_classes}")
        self.classes_ = np.arange(n_classes)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        gen = torch.Generator().manual_seed(_torch_seed(self.random_state))
        d, h = X.shape[1], int(self.hidden)
        # Kaiming-uniform style initialisation drawn from our own generator (no global seed).
        w1 = ((torch.rand(d, h, generator=gen) * 2 - 1) * np.sqrt(6.0 / d)).requires_grad_()
        b1 = torch.zeros(h, requires_grad=True)
        w2 = ((torch.rand(h, n_classes, generator=gen) * 2 - 1) * np.sqrt(1.0 / h)).requires_grad_()
        b2 = torch.zeros(n_classes, requires_grad=True)
        params = [w1, b1, w2, b2]
        xt = torch.from_numpy(self._standardise(X))
        yt = torch.from_numpy(y)
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        keep = 1.0 - self.dropout
        # Small full-batch problems run faster on one thread than on several
        # (threading overhead dominates, and other processes share the CPU).
        with _torch_threads(1 if len(X) * d <= 2_000_000 else torch.get_num_threads()):
            loss = self._train(xt, yt, params, opt, gen, keep)
        self.params_ = [p.detach() for p in params]
        self.loss_ = float(loss)
        return self

    def _train(self, xt, yt, params, opt, gen, keep):
        w1, b1, w2, b2 = params
        for _ in range(int(self.epochs)):
            opt.zero_grad()
            hid = torch.relu(xt @ w1 + b1)
            if self.dropout > 0:
                hid = hid * (torch.rand(hid.shape, generator=gen) < keep) / keep
            loss = torch.nn.functional.cross_entropy(hid @ w2 + b2, yt)
            loss.backward()
            opt.step()
        return loss.detach()

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((X - self.mean_) / self.scale_, dtype=np.float32)

    def _hidden(self, X: np.ndarray) -> torch.Tensor:
        # Standardisation folded into the first layer: no standardised copy of X.
        w1, b1, _, _ = self.params_
        scale = torch.from_numpy(self.scale_)[:, None]
        w = w1 / scale
        b = b1 - torch.from_numpy(np.ascontiguousarray(self.mean_, dtype=np.float32)) @ w
        return torch.relu(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)) @ w + b)

    def predict_proba(self, X):
        """Deterministic class probabilities (dropout off), shape ``(n, n_classes)``."""
        X = check_embeddings(X, name="X")
        _, _, w2, b2 = self.params_
        out = np.empty((len(X), len(self.classes_)))
        with torch.no_grad():
            for s in range(0, len(X), _CHUNK):
                out[s:s + _CHUNK] = _softmax((self._hidden(X[s:s + _CHUNK]) @ w2 + b2).numpy())
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def sample_logits(self, X, n_samples: int = 20, random_state=None, chunk: int = _CHUNK):
        """Yield ``(start, logits)``: MC-dropout logits laid out ``(T, C, rows)``, one chunk of rows at a time.

        Each of the ``n_samples`` (T) samples is one dropout mask shared by
        every item (one draw of the thinned network); rows come last so
        reductions over classes or samples vectorise along rows. This is what
        :class:`~alwidgets.select.BALD` scores a pool with, chunk by chunk.

        >>> import numpy as np
        >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
        >>> head = MLPHead(epochs=20, random_state=0).fit(X, [0, 0, 1, -1])
        >>> for start, z in head.sample_logits(X, n_samples=3, random_state=0, chunk=3):
        ...     print(start, z.shape)
        0 (3, 2, 3)
        3 (3, 2, 1)
        """
        X = check_embeddings(X, name="X")
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        _, _, w2, b2 = self.params_
        gen = torch.Generator().manual_seed(_torch_seed(random_state))
        keep = 1.0 - self.dropout
        t, c = int(n_samples), w2.shape[1]
        # One mask per MC sample, shared by all items: each sample is one thinned
        # network (a draw of the weights), and all T heads fold into one matmul.
        masks = (torch.rand(t, w2.shape[0], generator=gen) < keep).float() / keep
        w_all = (masks[:, :, None] * w2[None]).permute(0, 2, 1).reshape(t * c, w2.shape[0])
        b_all = b2.repeat(t)[:, None]
        with torch.no_grad():
            for s in range(0, len(X), chunk):
                hid = self._hidden(X[s:s + chunk])
                yield s, (w_all @ hid.T + b_all).numpy().reshape(t, c, -1)

    def iter_proba_mc(self, X, n_samples: int = 20, random_state=None, chunk: int = _CHUNK):
        """Yield ``(start, probs)``: MC-dropout ``probs`` of shape ``(T, rows, C)`` per chunk of rows.

        Lets a caller reduce a large pool chunk by chunk instead of holding
        the whole ``(T, n, C)`` array.
        """
        for s, logits in self.sample_logits(X, n_samples, random_state, chunk):
            yield s, _softmax(logits, axis=1).transpose(0, 2, 1)   # (T, C, rows) -> (T, rows, C)

    def predict_proba_mc(self, X, n_samples: int = 20, random_state=None):
        """MC-dropout class probabilities, shape ``(n_samples, n, n_classes)`` (float32)."""
        parts = [p for _, p in self.iter_proba_mc(X, n_samples, random_state)]
        if not parts:
            return np.empty((n_samples, 0, len(self.classes_)), np.float32)
        return np.concatenate(parts, axis=1)
