"""Image-level selectors for segmentation: which images to mask next.

Every selector follows the contract of :mod:`alwidgets.select` (v2 form)::

    selection = selector.select(n, labels=masks, embeddings=pooled, probs=probs,
                                candidates=None, random_state=0)

* ``labels`` -- one entry per pool image: its ``(H, W)`` mask, or ``None`` when
  unlabelled (a 1-d int array with ``-1`` for unlabelled also works for the
  selectors that do not read masks).
* ``probs`` -- per-pixel class probabilities ``(n_items, C, h, w)`` (any grid,
  e.g. the model's stride-8 grid), or a sequence of ``(C, h, w)`` arrays.
* ``embeddings`` -- one global embedding per image (``DenseFeatures.pooled``).
* ``candidates`` -- the pool indices (or a boolean mask) that may be picked
  (default: every unlabelled image); skipped, leased or errored images are
  simply left out.
* ``masks=`` -- with ``labels`` given as an int array (the loop's
  ``Task.selector_labels``), the masks themselves (``Task.selector_inputs``).

Hyper-parameters go to ``__init__``; per-call data to ``select``. The result
is an :class:`alwidgets.select.Selection` whose ``info`` says why (class
weights, the reduction used, the phase of ``auto``).

>>> import numpy as np
>>> from alwidgets.segmentation.select import PixelUncertainty
>>> probs = np.full((3, 2, 4, 4), 0.5); probs[0] = [[[0.99]], [[0.01]]]   # image 0 is certain
>>> sorted(PixelUncertainty(measure="entropy").select(2, labels=[None] * 3, probs=probs).indices.tolist())
[1, 2]
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from ..select import Selection
from ..select.base import top_k

MEASURES = ("entropy", "margin", "least_confidence")
REDUCTIONS = ("mean", "topk", "regions")
_EPS = 1e-12


# ------------------------------------------------------------------------------ pixel maths
def pixel_uncertainty(probs, measure: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty of ``(..., C, h, w)`` probabilities; higher = less sure.

    ``entropy`` is normalised by ``log C`` (0..1); ``margin`` is ``1 - (p1 - p2)``;
    ``least_confidence`` is ``1 - p1``.

    >>> p = np.array([[[0.5]], [[0.5]]])
    >>> round(float(pixel_uncertainty(p, "entropy")[0, 0]), 6), float(pixel_uncertainty(p, "margin")[0, 0])
    (1.0, 1.0)
    """
    p = np.asarray(probs, dtype=np.float32)
    C = p.shape[-3]
    if measure == "entropy":
        return -(p * np.log(np.maximum(p, _EPS))).sum(axis=-3) / np.log(C)
    if measure == "least_confidence":
        return 1.0 - p.max(axis=-3)
    if measure == "margin":
        part = -np.partition(-p, 1, axis=-3)
        return 1.0 - (np.take(part, 0, axis=-3) - np.take(part, 1, axis=-3))
    raise ValueError(f"unknown measure {measure!r}; choose from {', '.join(MEASURES)}")


def reduce_image(u, reduction: str = "mean", top_fraction: float = 0.1, region: int = 4) -> float:
    """One score per image from a ``(h, w)`` map.

    ``mean``: the mean over pixels; ``topk``: the mean of the ``top_fraction``
    highest pixels (an image with one very uncertain object is not averaged
    away by sky and road); ``regions``: the map is average-pooled into
    ``region x region`` cells (baal's region pooling) and the mean of the top
    ``top_fraction`` of cells is taken, so the score rewards coherent
    uncertain areas rather than scattered boundary pixels.

    >>> u = np.zeros((8, 8)); u[:2, :2] = 1.0
    >>> reduce_image(u, "mean"), reduce_image(u, "topk", 0.0625), reduce_image(u, "regions", 1 / 16, region=2)
    (0.0625, 1.0, 1.0)
    """
    u = np.asarray(u, dtype=np.float64)
    if reduction == "mean":
        return float(u.mean())
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if reduction == "topk":
        flat = u.ravel()
        k = max(1, int(round(top_fraction * flat.size)))
        return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())
    if reduction == "regions":
        h, w = u.shape
        r = int(region)
        if r < 1:
            raise ValueError(f"region must be a positive number of cells, got {region}")
        hh, ww = -(-h // r), -(-w // r)
        pad = np.full((hh * r, ww * r), np.nan)
        pad[:h, :w] = u
        cells = np.nanmean(pad.reshape(hh, r, ww, r), axis=(1, 3)).ravel()
        k = max(1, int(round(top_fraction * cells.size)))
        return float(np.partition(cells, cells.size - k)[cells.size - k:].mean())
    raise ValueError(f"unknown reduction {reduction!r}; choose from {', '.join(REDUCTIONS)}")


def _grid_mask(mask, shape):
    H, W = mask.shape
    h, w = shape
    ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return mask[np.ix_(ys, xs)]


def labelled_class_iou(probs, masks, rows, n_classes: int, ignore_index=None) -> np.ndarray:
    """Per-class IoU of the arg-max of ``probs`` against the masks of ``rows`` on the probability grid.

    NaN for a class absent from both. Masks are sampled at the grid's cell
    centres, so no full-resolution prediction is needed.
    """
    return iou_from_confusion(grid_confusion(probs, masks, rows, n_classes, ignore_index))


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU of a confusion matrix (rows = truth); NaN for a class absent from both."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def grid_confusion(probs, masks, rows, n_classes: int, ignore_index=None) -> np.ndarray:
    """Confusion matrix of the arg-max of ``probs[r]`` against ``masks[r]`` sampled on the probability grid."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    for r in rows:
        p = np.asarray(probs[r])
        t = _grid_mask(np.asarray(masks[r]), p.shape[-2:]).ravel().astype(np.int64)
        pred = p.argmax(axis=0).ravel()
        keep = t < n_classes
        if ignore_index is not None:
            keep &= t != ignore_index
        cm += np.bincount(t[keep] * n_classes + pred[keep], minlength=n_classes ** 2).reshape(n_classes, n_classes)
    return cm


def class_weakness(class_iou, power: float = 1.0, floor: float = 0.05) -> np.ndarray:
    """Weight per class that grows as its IoU falls: ``max(1 - IoU, floor) ** power``, mean 1.

    A class with no IoU yet (never labelled nor predicted) counts as IoU 0 --
    the weakest. ``power > 1`` concentrates the weight on the weakest classes.

    >>> class_weakness([0.9, 0.5, np.nan]).round(2).tolist()
    [0.19, 0.94, 1.88]
    """
    iou = np.nan_to_num(np.asarray(class_iou, np.float64), nan=0.0)
    w = np.maximum(1.0 - iou, floor) ** power
    return w / w.mean()


# ------------------------------------------------------------------------------ contract
class SegmentationSelector(BaseEstimator):
    """Base class: validates the per-call data, applies ``candidates``, checks the result.

    Subclasses set ``requires`` (from ``"embeddings"``, ``"probs"``, ``"masks"``)
    and implement ``_select(n, *, labelled, masks, embeddings, probs, candidates, rng, extra)``
    returning a :class:`Selection` of exactly ``n`` candidates.
    """

    requires: tuple = ()

    def select(self, n, *, labels, embeddings=None, probs=None, candidates=None, random_state=None,
               **extra) -> Selection:
        """Pick up to ``n`` images among ``candidates`` (default: all unlabelled)."""
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        n = int(n)
        labelled, masks = _labels(labels)
        if masks is None and extra.get("masks") is not None:   # the loop: int labels + masks= (Task.selector_inputs)
            masks = list(extra["masks"])
            if len(masks) != len(labelled):
                raise ValueError(f"masks has {len(masks)} entries but labels has {len(labelled)}")
        extra = {k: v for k, v in extra.items() if k not in ("masks", "model")}
        N = len(labelled)
        for key, val in (("embeddings", embeddings), ("probs", probs)):
            if key in self.requires and val is None:
                raise ValueError(f"{type(self).__name__} needs `{key}=`"
                                 + (" (per-pixel probabilities of a fitted model)" if key == "probs" else ""))
        if "masks" in self.requires and masks is None:
            raise ValueError(f"{type(self).__name__} needs the labelled masks: pass labels as a list of "
                             "masks (None for unlabelled), not label flags")
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != N:
                raise ValueError(f"embeddings must have shape ({N}, d), got {embeddings.shape}")
            if not np.isfinite(embeddings).all():
                raise ValueError("embeddings have NaN or inf values")
        if probs is not None:
            if len(probs) != N:
                raise ValueError(f"probs has {len(probs)} items but labels has {N}")
        if candidates is None:
            cand = np.flatnonzero(~labelled)
        else:
            cand = np.asarray(candidates)
            if cand.dtype == bool:
                if cand.shape != (N,):
                    raise ValueError(f"a boolean candidates mask must have {N} entries, got {cand.shape}")
                cand = np.flatnonzero(cand)
            cand = np.unique(cand.astype(np.int64))
            if cand.size and (cand.min() < 0 or cand.max() >= N):
                raise ValueError(f"candidates hold indices outside the pool of {N} items")
            cand = cand[~labelled[cand]]   # as in alwidgets.select: the pickable ones are the unlabelled candidates
        rng = np.random.default_rng(random_state)
        k = min(n, len(cand))
        if k == 0:
            return Selection(np.empty(0, np.int64), np.empty(0), {"strategy": self.name})
        if probs is not None:
            C = np.shape(probs[int(cand[0])])
            if len(C) != 3:
                raise ValueError(f"probs items must be (C, h, w) maps, got shape {C}")
        sel = self._select(k, labelled=labelled, masks=masks, embeddings=embeddings, probs=probs,
                           candidates=cand, rng=rng, extra=extra)
        idx = np.asarray(sel.indices, np.int64)
        if idx.shape != (k,) or len(set(idx.tolist())) != k or not np.isin(idx, cand).all():
            raise RuntimeError(f"{type(self).__name__} returned an invalid selection {idx[:10].tolist()}")
        return Selection(idx, np.asarray(sel.scores, np.float64), {"strategy": self.name, **sel.info})

    @property
    def name(self) -> str:
        return getattr(type(self), "strategy_name", type(self).__name__.lower())

    def _select(self, n, **kw):  # pragma: no cover - abstract
        raise NotImplementedError


def _labels(labels):
    """``(labelled flags, masks or None)`` from a list of masks/None or a 1-d int array with -1."""
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        if np.any(labels < -1):
            raise ValueError("labels as an int array must hold -1 (unlabelled) or a value >= 0")
        return labels != -1, None
    seq = list(labels)
    flags = np.array([m is not None for m in seq], dtype=bool)
    for i, m in enumerate(seq):
        if m is not None and np.ndim(m) != 2:
            if np.ndim(m) == 0 and int(m) == -1:
                flags[i] = False
                continue
            raise ValueError(f"labels[{i}] must be a 2-d mask or None, got shape {np.shape(m)}")
    return flags, seq


def _scores(probs, rows, fn):
    return np.array([fn(np.asarray(probs[int(r)], dtype=np.float32)) for r in rows], dtype=np.float64)


# ------------------------------------------------------------------------------ selectors
class RandomImages(SegmentationSelector):
    """Uniformly random images: the baseline.

    >>> sorted(RandomImages().select(2, labels=[None, None, np.zeros((2, 2))]).indices.tolist())
    [0, 1]
    """

    strategy_name = "random"

    def _select(self, n, *, candidates, rng, **kw):
        idx, s = top_k(rng.random(len(candidates)), candidates, n, rng)
        return Selection(idx, s, {})


class CoverageImages(SegmentationSelector):
    """Typical images of the least-covered clusters of global embeddings (TypiClust, via
    :class:`alwidgets.select.Coverage`); works from zero masks. Parameters go to ``Coverage``."""

    strategy_name = "coverage"
    requires = ("embeddings",)

    def __init__(self, max_clusters: int = 500, min_cluster_size: int = 5, n_neighbors: int = 20):
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors

    def _select(self, n, *, labelled, embeddings, candidates, rng, **kw):
        from ..select import Coverage

        rows = np.concatenate([np.flatnonzero(labelled), candidates])   # labelled items shape the clusters
        lab = np.where(labelled[rows], 0, -1)
        sel = Coverage(max_clusters=self.max_clusters, min_cluster_size=self.min_cluster_size,
                       n_neighbors=self.n_neighbors).select(n, labels=lab, embeddings=embeddings[rows],
                                                            random_state=rng)
        return Selection(rows[sel.indices], sel.scores,
                         {"n_clusters": sel.info.get("n_clusters"), "reason": "typical images of the clusters "
                          "with the fewest masks (global embeddings)"})


class PixelUncertainty(SegmentationSelector):
    """Images whose pixels the model is least sure of, reduced per image.

    Parameters
    ----------
    measure : {"entropy", "margin", "least_confidence"}
    reduction : {"mean", "topk", "regions"}
        See :func:`reduce_image`.
    top_fraction : float
    region : int
        Region side in probability-grid cells for ``reduction="regions"``.
    """

    strategy_name = "entropy"
    requires = ("probs",)

    def __init__(self, measure: str = "entropy", reduction: str = "mean", top_fraction: float = 0.1,
                 region: int = 4):
        self.measure = measure
        self.reduction = reduction
        self.top_fraction = top_fraction
        self.region = region

    @property
    def name(self):
        return self.measure if self.reduction == "mean" else f"{self.measure}_{self.reduction}"

    def image_scores(self, probs, rows) -> np.ndarray:
        return _scores(probs, rows, lambda p: reduce_image(pixel_uncertainty(p, self.measure), self.reduction,
                                                           self.top_fraction, self.region))

    def _select(self, n, *, probs, candidates, rng, **kw):
        s = self.image_scores(probs, candidates)
        idx, sc = top_k(s, candidates, n, rng)
        return Selection(idx, sc, {"measure": self.measure, "reduction": self.reduction})


def _weights_from(self, labelled, masks, probs, n_classes, extra):
    """Class weakness weights and the IoUs they came from (``class_iou=`` in ``extra`` overrides)."""
    if extra.get("class_iou") is not None:
        iou = np.asarray(extra["class_iou"], np.float64)
        if iou.shape != (n_classes,):
            raise ValueError(f"class_iou must have {n_classes} entries, got shape {iou.shape}")
        source = "given"
    else:
        rows = np.flatnonzero(labelled)
        iou = (labelled_class_iou(probs, masks, rows, n_classes, extra.get("ignore_index"))
               if len(rows) else np.full(n_classes, np.nan))
        source = f"model vs its {len(rows)} labelled masks"
    return class_weakness(iou, self.power), iou, source


class ClassWeightedUncertainty(SegmentationSelector):
    """Pixel uncertainty weighted by how weak each pixel's (predicted) class is.

    Each pixel's uncertainty is multiplied by ``sum_c p_c(x) w_c``, where ``w_c``
    (:func:`class_weakness`) grows as the class's IoU falls. By default the
    IoU is measured on the labelled masks (the model's predictions there);
    pass ``class_iou=`` (e.g. from a validation set or cross-validation) to
    use a better estimate. Feed it calibrated probabilities (the model's
    ``temperature_`` fitted by :func:`~alwidgets.segmentation.calibrate.fit_pixel_temperature`);
    ``temperature=`` in the call is reported in ``info``.

    Parameters
    ----------
    measure, reduction, top_fraction, region : see :class:`PixelUncertainty`
    power : float
        Sharpens the class weights (:func:`class_weakness`).
    """

    strategy_name = "class_weighted"
    requires = ("probs", "masks")

    def __init__(self, measure: str = "entropy", reduction: str = "mean", top_fraction: float = 0.1,
                 region: int = 4, power: float = 2.0):
        self.measure = measure
        self.reduction = reduction
        self.top_fraction = top_fraction
        self.region = region
        self.power = power

    def image_scores(self, probs, rows, w) -> np.ndarray:
        def score(p):
            u = pixel_uncertainty(p, self.measure) * np.tensordot(w, p, axes=(0, 0))
            return reduce_image(u, self.reduction, self.top_fraction, self.region)
        return _scores(probs, rows, score)

    def _select(self, n, *, labelled, masks, probs, candidates, rng, extra, **kw):
        C = np.shape(probs[int(candidates[0])])[0]
        w, iou, source = _weights_from(self, labelled, masks, probs, C, extra)
        s = self.image_scores(probs, candidates, w)
        idx, sc = top_k(s, candidates, n, rng)
        return Selection(idx, sc, {"class_weights": w.round(3).tolist(), "class_iou": np.round(iou, 3).tolist(),
                                   "iou_source": source, "measure": self.measure, "reduction": self.reduction,
                                   "temperature": extra.get("temperature")})


class ClassTargeted(SegmentationSelector):
    """Images whose predicted maps hold the most area of the weakest classes.

    The ``n_weak`` classes of lowest IoU (on the labelled masks, or ``class_iou=``)
    are the targets; an image's score is the mean over pixels of
    ``sum_{c weak} w_c p_c(x)`` -- the expected area of weak classes, weighted
    by their weakness. Rare classes (poles, signs, cyclists) get masked
    where the model already suspects them.
    """

    strategy_name = "class_targeted"
    requires = ("probs", "masks")

    def __init__(self, n_weak: int = 4, power: float = 1.0):
        self.n_weak = n_weak
        self.power = power

    def _select(self, n, *, labelled, masks, probs, candidates, rng, extra, **kw):
        C = np.shape(probs[int(candidates[0])])[0]
        w, iou, source = _weights_from(self, labelled, masks, probs, C, extra)
        weak = np.argsort(np.nan_to_num(iou, nan=-1.0), kind="stable")[: min(self.n_weak, C)]
        wt = np.zeros(C)
        wt[weak] = w[weak]
        s = _scores(probs, candidates, lambda p: float(np.tensordot(wt, p, axes=(0, 0)).mean()))
        idx, sc = top_k(s, candidates, n, rng)
        return Selection(idx, sc, {"weak_classes": weak.tolist(), "class_iou": np.round(iou, 3).tolist(),
                                   "class_weights": wt.round(3).tolist(), "iou_source": source})


class UncertaintyDiversityImages(SegmentationSelector):
    """The ``factor x n`` best images by an uncertainty scorer, thinned to ``n`` spread-out ones.

    The candidates are clustered (faiss k-means on the global embeddings,
    weighted by score) into ``n`` groups and the candidate nearest each
    centre is taken, as :class:`alwidgets.select.UncertaintyDiversity` does
    for classification. ``base`` is a :class:`PixelUncertainty` or
    :class:`ClassWeightedUncertainty` (default class-weighted entropy).
    """

    strategy_name = "uncertainty_diversity"
    requires = ("probs", "embeddings")

    def __init__(self, base=None, factor: int = 4):
        self.base = base
        self.factor = factor

    def _select(self, n, *, labelled, masks, embeddings, probs, candidates, rng, extra, **kw):
        from ..select._faiss import kmeans
        from ..select.diversity import _nearest_distinct

        base = self.base if self.base is not None else ClassWeightedUncertainty()
        inner = base.select(min(len(candidates), self.factor * n), labels=masks if masks is not None else
                            np.where(labelled, 0, -1), probs=probs, embeddings=embeddings, candidates=candidates,
                            random_state=rng, **extra)
        cand, cs = inner.indices, inner.scores
        info = {"base": base.name, "n_candidates": int(len(cand)),
                **{k: v for k, v in inner.info.items() if k != "strategy"}}
        if len(cand) <= n:
            return Selection(cand[:n], cs[:n], info)
        X = embeddings[cand]
        X = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)
        C = kmeans(np.ascontiguousarray(X, np.float32), n, seed=int(rng.integers(2**31 - 1)),
                   weights=cs - cs.min() + 1e-6, rng=rng)
        pos = _nearest_distinct(X, C)
        pos = pos[np.argsort(-cs[pos], kind="stable")]
        return Selection(cand[pos], cs[pos], info)


class AutoImages(SegmentationSelector):
    """Coverage while few masks exist, then class-weighted uncertainty + diversity.

    With fewer than ``switch_at`` masks (or no ``probs``) the model's
    uncertainty is not yet worth much, so typical images of uncovered
    clusters come first; afterwards :class:`UncertaintyDiversityImages` over
    :class:`ClassWeightedUncertainty`. ``info["phase"]`` and ``info["reason"]``
    say which and why.
    """

    strategy_name = "auto"
    requires = ("embeddings",)

    def __init__(self, switch_at: int = 20, factor: int = 4, power: float = 2.0):
        self.switch_at = switch_at
        self.factor = factor
        self.power = power

    def _select(self, n, *, labelled, masks, embeddings, probs, candidates, rng, extra, **kw):
        n_lab = int(labelled.sum())
        lab_arg = masks if masks is not None else np.where(labelled, 0, -1)
        if n_lab < self.switch_at or probs is None or masks is None:
            why = (f"{n_lab} masks < switch_at={self.switch_at}" if n_lab < self.switch_at
                   else "no probabilities or masks given")
            sel = CoverageImages().select(n, labels=lab_arg, embeddings=embeddings, candidates=candidates,
                                          random_state=rng)
            return Selection(sel.indices, sel.scores, {"phase": "coverage", "reason": why})
        sel = UncertaintyDiversityImages(ClassWeightedUncertainty(power=self.power), self.factor).select(
            n, labels=lab_arg, embeddings=embeddings, probs=probs, candidates=candidates, random_state=rng, **extra)
        info = {k: v for k, v in sel.info.items() if k != "strategy"}
        return Selection(sel.indices, sel.scores, {"phase": "class_weighted+diversity",
                                                   "reason": f"{n_lab} masks >= switch_at={self.switch_at}", **info})


SELECTORS = {
    "random": RandomImages,
    "coverage": CoverageImages,
    "entropy": lambda: PixelUncertainty("entropy"),
    "margin": lambda: PixelUncertainty("margin"),
    "entropy_topk": lambda: PixelUncertainty("entropy", "topk"),
    "entropy_regions": lambda: PixelUncertainty("entropy", "regions"),
    "class_weighted": ClassWeightedUncertainty,
    "class_targeted": ClassTargeted,
    "uncertainty_diversity": UncertaintyDiversityImages,
    "auto": AutoImages,
}


def make_selector(name: str) -> SegmentationSelector:
    """A segmentation selector by name (``random``, ``coverage``, ``entropy``, ``class_weighted`` ...)."""
    if isinstance(name, SegmentationSelector):
        return name
    try:
        return SELECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown segmentation strategy {name!r}; choose from {', '.join(SELECTORS)}") from None
