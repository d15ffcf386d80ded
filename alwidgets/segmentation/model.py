"""Segmentation models on frozen dense features: a linear probe and a decoder that keeps learning.

Both follow one convention: ``fit(features, masks)`` where ``masks`` has one
entry per row of ``features`` -- an ``(H, W)`` class-index array for a
labelled image, ``None`` for an unlabelled one (scikit-learn's semi-supervised
``-1``, per image). The ignore index never trains and never scores. Both give
per-pixel probabilities ``(n, C, h, w)`` on the finest feature grid
(``size=None``, what the selectors read) or at image resolution
(``size="image"``), logits upsampled bilinearly.

* :class:`DenseLinearProbe` -- per-position logistic regression on the
  stride-8 and stride-16 maps with class-balanced sampling of labelled
  positions. Fits in seconds, but its learning curve is flat: on CamVid it
  gains about 4 mIoU between 10 masks and all 367.
* :class:`DenseDecoder` -- a small convolutional decoder over every scale
  (1x1 projections, a 3x3 context block at stride 16, a depthwise 3x3 + MLP
  head at stride 8) trained in torch with median-frequency class weights,
  flips and random crops, warm-started from its previous fit. The default
  model for segmentation.

>>> from alwidgets.segmentation import make_shapes, DenseDecoder
>>> from alwidgets.segmentation.features import DenseFeatures
>>> import numpy as np
>>> data = make_shapes(n_images=6, size=(32, 32), random_state=0)
>>> feats = DenseFeatures.from_pixels(data.pool, strides=(4, 8))   # colour features, for the example
>>> model = DenseDecoder(n_classes=4, ignore_index=4, n_components=(6, 6), max_steps=60, random_state=0)
>>> model = model.fit(feats, data.masks[:4] + [None, None])
>>> model.predict_proba(feats, [4, 5]).shape
(2, 4, 8, 8)
>>> model.score(feats, data.masks, indices=[4, 5]).miou > 0.5
True
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np
from sklearn.base import BaseEstimator

from .metrics import SegmentationScores, confusion_matrix

THREADS_VAR = "ALWIDGETS_NUM_THREADS"
"""Environment variable that caps the torch threads of fitting and prediction (default: every core)."""
CLASS_WEIGHTS = ("median_frequency", "sqrt_median_frequency", "balanced", None)


def _check_masks(features, masks, n_classes, ignore_index):
    if len(masks) != len(features):
        raise ValueError(f"masks has {len(masks)} entries but features has {len(features)} rows "
                         "(one per pool item, None for unlabelled)")
    labelled = [i for i, m in enumerate(masks) if m is not None]
    H, W = features.image_size
    for i in labelled:
        m = masks[i]
        if np.ndim(m) != 2:
            raise ValueError(f"mask of row {i} ({features.ids[i]!r}) must be 2-d, got shape {np.shape(m)}")
        if m.shape != (H, W):
            raise ValueError(f"mask of row {i} ({features.ids[i]!r}) is {m.shape[1]}x{m.shape[0]} but the features "
                             f"were computed at {W}x{H}; compute them at the masks' size (image_size=)")
    return labelled


def _mask_grid(mask, shape, ignore):
    """Nearest-sample a mask onto a ``shape`` grid (cell centres); values outside the classes -> ``ignore``."""
    H, W = mask.shape
    h, w = shape
    ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return mask[np.ix_(ys, xs)]


def class_weights_from_counts(counts, kind="median_frequency", max_weight: float = 50.0) -> np.ndarray:
    """Loss weight per class from labelled pixel counts; 0 for classes with no pixels.

    ``median_frequency`` (SegNet): ``median(freq) / freq_c``; ``sqrt_`` its
    square root; ``balanced``: ``1 / freq_c`` normalised to mean 1. Capped at
    ``max_weight`` so a class seen on a handful of pixels cannot dominate.

    >>> class_weights_from_counts([100, 10, 0, 1]).round(2).tolist()
    [0.1, 1.0, 0.0, 10.0]
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if not present.any():
        return w
    freq = counts[present] / counts[present].sum()
    if kind in ("median_frequency", "sqrt_median_frequency"):
        v = np.median(freq) / freq
        if kind == "sqrt_median_frequency":
            v = np.sqrt(v)
    elif kind == "balanced":
        v = 1.0 / freq
        v = v / v.mean()
    else:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS} or an array, got {kind!r}")
    w[present] = np.minimum(v, max_weight)
    return w


class _DenseModel(BaseEstimator):
    """Prediction shared by the dense models: logits on the finest grid, upsampled on demand."""

    temperature_: float = 1.0

    def _logits_grid(self, maps):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self):
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(features, masks) first")

    def _batches(self, features, indices, batch_size):
        import torch

        self._check_fitted()
        if tuple(features.channels) != tuple(self.n_features_in_):
            raise ValueError(f"features have channels {features.channels} but the model was fitted on "
                             f"{tuple(self.n_features_in_)}")
        idx = np.arange(len(features)) if indices is None else np.asarray(indices, dtype=np.int64)
        for k in range(0, len(idx), batch_size):
            rows = idx[k:k + batch_size]
            maps = [torch.from_numpy(np.asarray(m[rows], dtype=np.float32)) for m in features.maps]
            yield rows, maps

    def predict_logits(self, features, indices=None, *, size=None, batch_size: int = 16):
        """Yield ``(rows, logits)`` batches; logits ``(b, C, h, w)`` float32 CPU tensors at ``size``."""
        for rows, z in self._device_logits(features, indices, size=size, batch_size=batch_size):
            yield rows, z.cpu()

    def _device_logits(self, features, indices=None, *, size=None, batch_size: int = 16):
        """As :meth:`predict_logits`, the logits left on the model's device."""
        import torch
        import torch.nn.functional as F

        out_size = self._out_size(features, size)
        with torch.inference_mode(), _threads():
            for rows, maps in self._batches(features, indices, batch_size):
                z = self._logits_grid(maps)
                if out_size is not None and tuple(z.shape[-2:]) != out_size:
                    z = F.interpolate(z, size=out_size, mode="bilinear", align_corners=False)
                yield rows, z

    @staticmethod
    def _out_size(features, size):
        if size is None:
            return None
        if isinstance(size, str):
            if size != "image":
                raise ValueError(f"size must be None (feature grid), 'image' or (H, W), got {size!r}")
            return tuple(features.image_size)
        return (int(size[0]), int(size[1]))

    def predict_proba(self, features, indices=None, *, size=None, batch_size: int = 16) -> np.ndarray:
        """Per-pixel class probabilities ``(n, C, h, w)`` float32 (temperature ``temperature_`` applied).

        ``size=None`` gives the finest feature grid (cheap; what selectors read),
        ``"image"`` the image resolution, or an explicit ``(H, W)``.
        """
        parts = [torch_softmax(z / self.temperature_) for _, z in
                 self._device_logits(features, indices, size=size, batch_size=batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_classes, 0, 0), np.float32)

    def predict(self, features, indices=None, *, size="image", batch_size: int = 16) -> np.ndarray:
        """Arg-max class maps ``(n, h, w)`` uint8, by default at image resolution."""
        parts = [_argmax_classes(z) for _, z in
                 self._device_logits(features, indices, size=size, batch_size=batch_size)]
        return np.concatenate(parts)

    def confusion(self, features, masks, indices=None, batch_size: int = 16, scale: int = 1) -> np.ndarray:
        """Confusion matrix over the rows with a mask (``indices`` limits them).

        ``scale=1`` scores every pixel at image resolution; ``scale=2`` scores
        every second pixel in each direction (logits upsampled to half
        resolution, masks sampled at the same pixel centres): 4x cheaper, for
        benchmarks that score many models.
        """
        idx = np.arange(len(features)) if indices is None else np.asarray(indices, dtype=np.int64)
        idx = np.array([i for i in idx if masks[i] is not None], dtype=np.int64)
        cm = np.zeros((self.n_classes, self.n_classes), np.int64)
        if len(idx) == 0:
            return cm
        H, W = features.image_size
        size = "image" if scale == 1 else (H // int(scale), W // int(scale))
        for rows, z in self._device_logits(features, idx, size=size, batch_size=batch_size):
            for r, p in zip(rows, _argmax_classes(z)):
                m = masks[r] if scale == 1 else _mask_grid(masks[r], p.shape, self.ignore_index)
                cm += confusion_matrix(m, p, self.n_classes, self.ignore_index)
        return cm

    def score(self, features, masks, indices=None, scale: int = 1) -> SegmentationScores:
        """mIoU, per-class IoU and pixel accuracy on the rows that have a mask (``scale``: see :meth:`confusion`)."""
        return SegmentationScores.from_confusion(self.confusion(features, masks, indices, scale=scale))


def _argmax_classes(z) -> np.ndarray:
    """``z.argmax(1)`` as uint8, by a running maximum over the class planes (several times faster on CPU
    than an arg-max across the strided class axis of a large NCHW tensor)."""
    import torch

    if z.device.type != "cpu":
        return z.argmax(1).to(torch.uint8).cpu().numpy()
    best = z[:, 0].clone()
    idx = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, z.shape[1]):
        better = z[:, c] > best
        best = torch.where(better, z[:, c], best)
        idx[better] = c
    return idx.numpy()


def torch_softmax(z):
    return z.softmax(1).cpu().numpy().astype(np.float32, copy=False)


@contextlib.contextmanager
def _threads():
    """Use every core this process may run on for torch, then restore the setting."""
    import torch

    from ..embed.timm import _cores

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(_cores(), int(os.environ.get(THREADS_VAR) or _cores()))))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------ linear probe
class DenseLinearProbe(_DenseModel):
    """Per-position logistic regression on the two finest feature maps (the fast baseline).

    Positions of the finest grid (stride 8) are the samples: their stride-8
    features joined with the stride-16 features upsampled there (768-d for
    MobileNet V1). Up to ``positions_per_class`` labelled positions are drawn
    per class (class-balanced), standardised, and fitted with scikit-learn's
    ``LogisticRegression``.

    Parameters
    ----------
    n_classes : int
    ignore_index : int or None
    positions_per_class : int
    C : float
        Inverse L2 strength of the logistic regression.
    n_maps : int
        How many of the finest maps to use (2 = strides 8 and 16).
    random_state : int or None
    """

    def __init__(self, n_classes: int, ignore_index: int | None = None, positions_per_class: int = 3000,
                 C: float = 1.0, n_maps: int = 2, max_iter: int = 300, random_state=None):
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.positions_per_class = positions_per_class
        self.C = C
        self.n_maps = n_maps
        self.max_iter = max_iter
        self.random_state = random_state

    def _stack(self, maps):
        import torch
        import torch.nn.functional as F

        size = maps[0].shape[-2:]
        parts = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                             for m in maps[1:self.n_maps]]
        return torch.cat(parts, 1)

    def fit(self, features, masks):
        import torch
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        labelled = _check_masks(features, masks, self.n_classes, self.ignore_index)
        if not labelled:
            raise ValueError("no labelled mask to fit on (every entry of masks is None)")
        rng = np.random.default_rng(self.random_state)
        grid = features.maps[0].shape[-2:]
        X, y = [], []
        with _threads(), torch.inference_mode():
            for k in range(0, len(labelled), 16):
                rows = labelled[k:k + 16]
                maps = [torch.from_numpy(np.asarray(m[rows], dtype=np.float32)) for m in features.maps]
                F_ = self._stack(maps).permute(0, 2, 3, 1).reshape(-1, sum(features.channels[:self.n_maps])).numpy()
                t = np.stack([_mask_grid(masks[r], grid, self.ignore_index) for r in rows]).ravel().astype(np.int64)
                keep = t < self.n_classes
                if self.ignore_index is not None:
                    keep &= t != self.ignore_index
                X.append(F_[keep].astype(np.float16))
                y.append(t[keep])
        X, y = np.concatenate(X), np.concatenate(y)
        take = []
        for c in range(self.n_classes):
            pos = np.flatnonzero(y == c)
            if len(pos) > self.positions_per_class:
                pos = rng.choice(pos, self.positions_per_class, replace=False)
            take.append(pos)
        take = np.concatenate(take)
        Xs, ys = X[take].astype(np.float32), y[take]
        self.mean_ = Xs.mean(0)
        self.scale_ = Xs.std(0) + 1e-6
        present = np.unique(ys)
        if len(present) < 2:
            raise ValueError(f"the labelled masks hold only class {present.tolist()}; a probe needs two classes")
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        clf.fit((Xs - self.mean_) / self.scale_, ys)
        W = np.zeros((self.n_classes, Xs.shape[1]), np.float32)
        b = np.full(self.n_classes, -1e4, np.float32)   # classes never labelled are never predicted
        if len(present) == 2:
            W[present[1]], b[present[1]] = clf.coef_[0], clf.intercept_[0]
            b[present[0]] = 0.0
        else:
            W[present], b[present] = clf.coef_, clf.intercept_
        # fold the standardisation into the weights: W (x - m) / s + b
        self.coef_ = W / self.scale_
        self.intercept_ = b - (W / self.scale_) @ self.mean_
        self.n_features_in_ = tuple(features.channels)
        self.n_positions_ = int(len(take))
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _logits_grid(self, maps):
        import torch

        x = self._stack(maps)
        W = torch.from_numpy(self.coef_)
        return torch.einsum("bdhw,cd->bchw", x, W) + torch.from_numpy(self.intercept_).view(1, -1, 1, 1)


# ------------------------------------------------------------------------------ decoder
class PCAProjection:
    """A fixed, whitened per-scale PCA of dense features (fitted on a sample of pool positions, no labels).

    Projecting the frozen maps to a few dozen channels first makes every
    training step and prediction of the decoder cheaper; the first trainable
    layer then works on the projected maps (a low-rank 1x1 convolution of the
    raw maps). Not the default: the whitening gives trailing, noisy components
    the weight of the leading ones, which cost 3-6 mIoU at 5-40 CamVid masks.
    :class:`DenseDecoder` fits one itself (``n_components=``) and caches the
    projected maps per feature set; a benchmark that fits many models on the
    same pool projects once with :meth:`transform` and passes
    ``n_components=None``.

    >>> from alwidgets.segmentation import make_shapes
    >>> from alwidgets.segmentation.features import DenseFeatures
    >>> f = DenseFeatures.from_pixels(make_shapes(n_images=4, size=(16, 16)).pool)
    >>> [m.shape for m in PCAProjection(f, (3, 2), random_state=0).transform(f).maps]
    [(4, 3, 4, 4), (4, 2, 2, 2)]
    """

    def __init__(self, features, n_components, random_state=None, sample_images: int = 48,
                 sample_positions: int = 20000):
        rng = np.random.default_rng(random_state)
        if len(n_components) != len(features.maps):
            raise ValueError(f"n_components has {len(n_components)} entries for {len(features.maps)} maps")
        rows = np.sort(rng.choice(len(features), min(sample_images, len(features)), replace=False))
        self.mean, self.components = [], []
        for m, k in zip(features.maps, n_components):
            a = np.asarray(m[rows], dtype=np.float32).transpose(0, 2, 3, 1).reshape(-1, m.shape[1])
            if len(a) > sample_positions:
                a = a[rng.choice(len(a), sample_positions, replace=False)]
            mu = a.mean(0)
            k = int(min(k, m.shape[1]))
            _, sv, vt = np.linalg.svd(a - mu, full_matrices=False)
            comp = vt[:k].T / (sv[:k, None].T / np.sqrt(len(a)) + 1e-6)   # whitened: unit variance per component
            self.mean.append(mu.astype(np.float32))
            self.components.append(comp.astype(np.float32))
        self._cache: dict = {}

    @property
    def channels(self):
        return tuple(c.shape[1] for c in self.components)

    def transform(self, features):
        """``features`` with every map projected (float16, in memory); same strides, pooled embedding and ids."""
        from .features import DenseFeatures

        return DenseFeatures(self.transform_maps(features), features.strides, features.pooled,
                             features.image_size, features.ids, features.errors)

    def transform_maps(self, features):
        """The projected maps of ``features`` (float16, in memory), computed once per feature set."""
        import torch

        key = (id(features), len(features), features.ids[0] if len(features) else None)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is features:
            return hit[1]
        out = []
        with torch.inference_mode(), _threads():
            for m, mu, comp in zip(features.maps, self.mean, self.components):
                res = np.empty((len(features), comp.shape[1], *m.shape[-2:]), np.float16)
                W = torch.from_numpy(comp)
                b = torch.from_numpy(mu @ comp)
                for k in range(0, len(features), 32):
                    x = torch.from_numpy(np.asarray(m[k:k + 32], dtype=np.float32))
                    y = torch.einsum("bchw,ck->bkhw", x, W) - b.view(1, -1, 1, 1)
                    res[k:k + 32] = y.numpy().astype(np.float16)
                out.append(res)
        if len(self._cache) >= 4:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (features, out)
        return out

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = {}


def _build_decoder(channels, n_classes, width, fine, dropout):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Decoder(nn.Module):
        """Coarse scales -> 1x1 + sum at stride 16 -> 3x3 context; stride 8 -> 1x1; fused by DW 3x3 + MLP."""

        def __init__(self):
            super().__init__()
            self.coarse = nn.ModuleList([nn.Conv2d(c, width, 1) for c in channels[1:]])
            self.context = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
            self.fine = nn.Conv2d(channels[0], fine, 1)
            d = (width if len(channels) > 1 else 0) + fine
            self.spatial = nn.Conv2d(d, d, 3, padding=1, groups=d)
            self.head = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(d, width, 1), nn.ReLU(inplace=True),
                                      nn.Dropout2d(dropout), nn.Conv2d(width, n_classes, 1))

        def forward(self, maps):
            f0 = maps[0]
            if len(maps) > 1:
                size1 = maps[1].shape[-2:]
                y = self.coarse[0](maps[1])
                for proj, m in zip(self.coarse[1:], maps[2:]):
                    y = y + F.interpolate(proj(m), size=size1, mode="bilinear", align_corners=False)
                y = self.context(F.relu(y))
                y = F.interpolate(y, size=f0.shape[-2:], mode="bilinear", align_corners=False)
                x = torch.cat([y, self.fine(f0)], 1)
            else:
                x = self.fine(f0)
            return self.head(self.spatial(x) + x)

    return Decoder()


class DenseDecoder(_DenseModel):
    """A small decoder over frozen multi-scale features, trained in torch; keeps learning as masks are added.

    The frozen maps are standardised per channel. Every coarse map (stride 16,
    32) goes through a 1x1 convolution to ``width`` channels, they are summed
    at stride 16 and passed through a 3x3 convolution (context); the result is
    upsampled to stride 8 and joined with a 1x1 projection of the stride-8 map
    (``fine`` channels); a depthwise 3x3 convolution (with a skip) and a
    two-layer 1x1 MLP give the class logits. Training: AdamW with a warm-up +
    cosine schedule, class weights from the labelled pixels (``class_weight``),
    cross-entropy on logits upsampled to ``loss_stride``, random horizontal
    flips and random crops of ``crop`` stride-8 cells. A refit starts from the
    previous weights (``warm_start``) and runs ``steps_per_mask * n_masks``
    steps between ``min_steps`` and ``max_steps`` (``warm_fraction`` of that
    when warm-started, and at most ``steps_per_new_mask`` per mask added since
    the last fit: the painter's refit after each mask is short, a batch of
    masks gets the whole schedule, and a batch painted mask by mask costs about
    what one refit after it would).

    Parameters
    ----------
    n_classes : int
    ignore_index : int or None
    n_components : tuple of int or None
        None (default): the decoder reads the raw maps. A tuple (finest first, e.g. ``(48, 64, 64)``)
        first projects each map by a fixed, whitened PCA fitted on the pool (:class:`PCAProjection`):
        a step is cheaper, but on CamVid it cost 3 to 6 mIoU at 5-40 masks (``docs/segmentation.md``).
    width, fine : int
        Channels of the coarse path and of the stride-8 projection.
    dropout : float
    class_weight : str, array or None
        ``"sqrt_median_frequency"`` (default), ``"median_frequency"``, ``"balanced"``, an array, or None.
    lr, weight_decay : float
    batch_size : int
        Images (crops) per step.
    crop : int or None
        Side of the random square crop in stride-8 cells (multiple of 4; 32 = 256 pixels at any finest
        stride), None for whole maps.
    min_steps, max_steps, steps_per_mask : int
    warm_start : bool
    warm_fraction : float
    steps_per_new_mask : int or None
        Cap of a warm-started refit: this many steps per mask added since the last fit (None: no cap).
    loss_stride : int
        Pixel stride of the grid the loss is computed on (2 = every second pixel).
    max_seconds : float or None
        Stop a fit after this many seconds of training (an interactive refit after each mask;
        ``n_steps_`` says how many steps ran). None: run every scheduled step.
    device : str
        Where the decoder trains and predicts: ``"cpu"`` (default), ``"cuda"`` (or ``"cuda:N"``), or
        ``"auto"`` (CUDA when available). The features stay in host memory; the labelled maps are
        copied to the device for a fit. Results match the CPU's up to floating-point noise.
    random_state : int or None

    Attributes
    ----------
    fit_seconds_ : float (wall), fit_cpu_seconds_ : float (CPU time of this process), n_steps_ : int,
    class_weight_ : array, loss_ : float (last 20 steps' mean)
    """

    def __init__(self, n_classes: int, ignore_index: int | None = None, n_components=None, width: int = 64,
                 fine: int = 32, dropout: float = 0.1, class_weight="sqrt_median_frequency",
                 lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 8, crop: int | None = 32,
                 min_steps: int = 300, max_steps: int = 400, steps_per_mask: int = 4, warm_start: bool = True,
                 warm_fraction: float = 0.5, steps_per_new_mask: int | None = 20, loss_stride: int = 2,
                 max_seconds: float | None = None, device: str = "cpu", random_state=None):
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.n_components = n_components
        self.width = width
        self.fine = fine
        self.dropout = dropout
        self.class_weight = class_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.crop = crop
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.steps_per_mask = steps_per_mask
        self.warm_start = warm_start
        self.warm_fraction = warm_fraction
        self.steps_per_new_mask = steps_per_new_mask
        self.loss_stride = loss_stride
        self.max_seconds = max_seconds
        self.device = device
        self.random_state = random_state

    def _device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={self.device!r} but CUDA is not available; use device='auto' or 'cpu'")
        return dev

    def n_steps_for(self, n_masks: int, warm: bool = False, n_new: int | None = None) -> int:
        """Training steps of a fit on ``n_masks`` masks (cold, or warm-started with ``n_new`` of them
        added since the last fit: None counts them all)."""
        steps = min(self.max_steps, max(self.min_steps, self.steps_per_mask * n_masks))
        steps = max(1, int(round(steps * (self.warm_fraction if warm else 1.0))))
        if warm and n_new is not None and self.steps_per_new_mask is not None:
            steps = min(steps, max(1, int(self.steps_per_new_mask) * max(1, n_new)))
        return steps

    def _inputs(self, features):
        """The maps the network reads: projected (cached) or raw."""
        if self.projection_ is None:
            return features.maps
        return self.projection_.transform_maps(features)

    def _norm_stats(self, maps, rng):
        """Per-channel mean and std of every map over a sample of up to 64 images."""
        rows = np.sort(rng.choice(len(maps[0]), min(64, len(maps[0])), replace=False))
        stats = []
        for m in maps:
            a = np.asarray(m[rows], dtype=np.float32)
            stats.append((a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3)) + 1e-3))
        return stats

    def fit(self, features, masks):
        import torch
        import torch.nn.functional as F

        t0, c0 = time.perf_counter(), time.process_time()
        labelled = _check_masks(features, masks, self.n_classes, self.ignore_index)
        if not labelled:
            raise ValueError("no labelled mask to fit on (every entry of masks is None)")
        if self.crop is not None and (int(self.crop) != self.crop or self.crop < 4 or self.crop % 4):
            raise ValueError(f"crop must be a multiple of 4 stride-8 cells (or None), got {self.crop!r}")
        if self.n_components is not None and len(self.n_components) != len(features.maps):
            raise ValueError(f"n_components has {len(self.n_components)} entries for {len(features.maps)} maps")
        rng = np.random.default_rng(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        warm = bool(self.warm_start and hasattr(self, "net_") and tuple(features.channels) == self.n_features_in_)
        if not warm:
            torch.manual_seed(seed)
            self.projection_ = (None if self.n_components is None
                                else PCAProjection(features, self.n_components, rng))
            inputs = self._inputs(features)
            self.norm_ = self._norm_stats(inputs, rng)
            self.net_ = self._build_net(inputs)
            self.n_features_in_ = tuple(features.channels)
        else:
            torch.manual_seed(seed)
            inputs = self._inputs(features)
        dev = self._device()
        net = self.net_.to(dev)
        ign = 255 if self.ignore_index is None else int(self.ignore_index)
        H, W = features.image_size
        ls = int(self.loss_stride)
        grid = (H // ls, W // ls)
        targets = torch.from_numpy(np.stack([_mask_grid(masks[i], grid, ign) for i in labelled]).astype(np.int64))
        targets[(targets >= self.n_classes) & (targets != ign)] = ign
        counts = np.bincount(targets[targets != ign].numpy().ravel(), minlength=self.n_classes)[:self.n_classes]
        if isinstance(self.class_weight, str) or self.class_weight is None:
            cw = (np.ones(self.n_classes) if self.class_weight is None
                  else class_weights_from_counts(counts, self.class_weight))
        else:
            cw = np.asarray(self.class_weight, np.float64)
            if cw.shape != (self.n_classes,):
                raise ValueError(f"class_weight must have {self.n_classes} entries, got shape {cw.shape}")
        self.class_weight_ = cw
        targets = targets.to(dev)
        maps = [torch.from_numpy(np.ascontiguousarray(np.asarray(m)[labelled])).to(dev) for m in inputs]  # float16
        norm = [(torch.from_numpy(mu).view(1, -1, 1, 1).to(dev), torch.from_numpy(sd).view(1, -1, 1, 1).to(dev))
                for mu, sd in self.norm_]
        steps = self.n_steps_for(len(labelled), warm, len(labelled) - getattr(self, "n_masks_", 0) if warm else None)
        opt = torch.optim.AdamW(self._param_groups(net), lr=self.lr, weight_decay=self.weight_decay)
        ramp = max(1, int((0.1 if warm else 0.2) * steps))   # linear warm-up, then cosine decay to 0
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: min(1.0, (i + 1) / ramp) * 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps)))
        weight = torch.tensor(cw, dtype=torch.float32, device=dev)
        strides = [H / m.shape[-2] for m in maps]   # pixels per cell of each map
        bs = min(int(self.batch_size), len(labelled))
        losses = []
        net.train()
        done = 0
        with _threads():
            for _ in range(steps):
                if self.max_seconds is not None and time.perf_counter() - t0 > self.max_seconds and done:
                    break
                done += 1
                rows = torch.from_numpy(rng.choice(len(labelled), bs, replace=False)).to(dev)
                xs, t = self._crop([m[rows] for m in maps], targets[rows], strides, ls, rng)
                xs = [(x.float() - mu) / sd for x, (mu, sd) in zip(xs, norm)]
                if rng.random() < 0.5:
                    xs = [x.flip(-1) for x in xs]
                    t = t.flip(-1)
                z = net(xs)
                z = F.interpolate(z, size=t.shape[-2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(z, t, weight=weight, ignore_index=ign)
                opt.zero_grad(set_to_none=True)
                if torch.isfinite(loss) and (t != ign).any():
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                sched.step()
        net.eval()
        self.n_steps_ = done
        self.warm_started_ = warm
        self.loss_ = float(np.mean(losses[-20:])) if losses else float("nan")
        self.n_masks_ = len(labelled)
        self.fit_seconds_ = time.perf_counter() - t0
        self.fit_cpu_seconds_ = time.process_time() - c0
        return self

    def _build_net(self, inputs):
        """The network a cold fit trains on ``inputs`` (the maps it reads, normalised); a subclass may put
        trainable backbone layers in front of the decoder."""
        return _build_decoder([m.shape[1] for m in inputs], self.n_classes, self.width, self.fine, self.dropout)

    def _param_groups(self, net):
        """What the optimiser trains, as torch parameter groups (one learning rate for the whole decoder)."""
        return net.parameters()

    def _crop(self, xs, t, strides, ls, rng):
        """The same random window on every map and on the targets (whole maps when ``crop`` is None)."""
        if self.crop is None:
            return xs, t
        h0, w0 = xs[0].shape[-2:]
        c = int(round(self.crop * 8 / strides[0]))   # crop is in stride-8 cells: the same pixels at any finest stride
        if c >= h0 and c >= w0:
            return xs, t
        ch, cw = min(c, h0 - h0 % 4), min(c, w0 - w0 % 4)
        y0 = 4 * int(rng.integers(0, (h0 - ch) // 4 + 1))
        x0 = 4 * int(rng.integers(0, (w0 - cw) // 4 + 1))
        s0 = strides[0]
        out = []
        for x, s in zip(xs, strides):
            r = s / s0     # cells of the finest map per cell of this one
            ys, xs_ = int(round(y0 / r)), int(round(x0 / r))
            hh, ww = max(1, int(round(ch / r))), max(1, int(round(cw / r)))
            out.append(x[..., ys:ys + hh, xs_:xs_ + ww])
        py, px = int(round(y0 * s0 / ls)), int(round(x0 * s0 / ls))
        th, tw = int(round(ch * s0 / ls)), int(round(cw * s0 / ls))
        return out, t[:, py:py + th, px:px + tw]

    def _batches(self, features, indices, batch_size):
        import torch

        self._check_fitted()
        if tuple(features.channels) != tuple(self.n_features_in_):
            raise ValueError(f"features have channels {features.channels} but the model was fitted on "
                             f"{tuple(self.n_features_in_)}")
        inputs = self._inputs(features)
        dev = next(self.net_.parameters()).device
        idx = np.arange(len(features)) if indices is None else np.asarray(indices, dtype=np.int64)
        for k in range(0, len(idx), batch_size):
            rows = idx[k:k + batch_size]
            yield rows, [torch.from_numpy(np.asarray(m[rows], dtype=np.float32)).to(dev) for m in inputs]

    def _logits_grid(self, maps):
        xs = [(m - _t(mu, m.device)) / _t(sd, m.device) for m, (mu, sd) in zip(maps, self.norm_)]
        return self.net_(xs)


def _t(a, device=None):
    import torch

    return torch.from_numpy(np.asarray(a, np.float32)).view(1, -1, 1, 1).to(device)
