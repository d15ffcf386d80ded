"""The segmentation task for the loop: masks as labels, PNG payloads in the store, mIoU as the score.

Implements :class:`alwidgets.tasks.Task` so that the Session, the store and the
simulation can carry masks without knowing what they are:

- labels in the loop: a list with one ``(H, W)`` uint8 mask per item, ``None``
  while unlabelled;
- in the store: the mask as an 8-bit PNG payload (``media_type="image/png"``) and no
  class name (``label=None``: a mask is not one class), checked on the way in (size
  against the item's image, values against the classes) and on the way out;
- features: :class:`~alwidgets.segmentation.DenseFeatures` (``check_features``); pool
  and test rows are predicted separately (``fit_predict_eval``), selectors see the
  global embedding ``features.pooled`` and pick with the segmentation selectors
  (``make_selector``: ``auto``, ``class_weighted``, ...);
- model: :class:`~alwidgets.segmentation.DenseDecoder` on
  :class:`~alwidgets.segmentation.DenseFeatures`; it is refitted in place
  (warm start) rather than cloned, because a decoder that continues from its
  previous weights needs half the steps;
- predictions: per-pixel probabilities ``(n, C, h, w)`` on the feature grid;
- score: mIoU (also per-class IoU, pixel accuracy) from one confusion matrix
  over non-ignored pixels, predictions upsampled to each mask's size;
- calibration (``calibrate=True``): before a refit, the temperature is fitted on the
  masks the model has not trained on yet (the batch just received), as the
  class-weighted selectors read probabilities literally.

>>> from alwidgets.segmentation import make_shapes
>>> from alwidgets.segmentation.task import SegmentationTask
>>> task = SegmentationTask(["background", "disc", "box", "triangle"], ignore_index=4)
>>> data = make_shapes(n_images=2, size=(16, 16))
>>> rec = task.encode(data.masks[0])
>>> rec["label"], rec["media_type"], rec["payload"][:4]
(None, 'image/png', b'\\x89PNG')
>>> bool((task.decode(**rec) == data.masks[0]).all())
True
"""
from __future__ import annotations

import numpy as np

from ..tasks.base import Task
from .data import MaskError, check_mask, mask_from_png, mask_to_png
from .metrics import SegmentationScores, confusion_matrix

RELIABILITY_BINS = 10   # as the classification task's reliability table

MEDIA_TYPE = "image/png"


class SegmentationTask(Task):
    """Per-pixel class labels (masks) with an ignore index.

    Parameters
    ----------
    classes : list of str
    ignore_index : int
        Mask value that never trains or scores (outside ``0..C-1``, at most 255).
    """

    name = "segmentation"
    score_name = "mIoU"
    higher_is_better = True
    payload_labels = True
    metric_keys = ("miou", "pixel_accuracy", "iou")
    default_cv = 3
    slow_fit = True

    def __init__(self, classes, *, ignore_index: int | None = 255, calibrate: bool = True):
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"segmentation needs at least two distinct class names, got {self.classes}")
        ignore_index = 255 if ignore_index is None else ignore_index
        if not len(self.classes) <= int(ignore_index) <= 255:
            raise ValueError(f"ignore_index must be an 8-bit value outside 0..{len(self.classes) - 1}, "
                             f"got {ignore_index}")
        self.ignore_index = int(ignore_index)
        self.calibrate = bool(calibrate)

    def __repr__(self) -> str:
        return f"SegmentationTask(classes={self.classes!r}, ignore_index={self.ignore_index})"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # ---------------------------------------------------------------- labels
    def empty_labels(self, n_items: int) -> list:
        return [None] * int(n_items)

    def is_labelled(self, labels) -> np.ndarray:
        return np.array([m is not None for m in labels], dtype=bool)

    def set_label(self, labels, index: int, value) -> None:
        labels[index] = None if value is None else self._check(value)

    def _check(self, mask, item_id=None):
        return check_mask(mask, n_classes=self.n_classes, ignore_index=self.ignore_index, item_id=item_id)

    def encode(self, value, *, shape=None, item_id=None) -> dict:
        """A mask (array, or PNG bytes from the painter) → ``{"label": None, "payload": PNG, "media_type"}``;
        :class:`MaskError` (a ``ValueError``) naming ``item_id`` when it is not ``shape`` or holds values
        outside the classes."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = mask_from_png(bytes(value), n_classes=self.n_classes, ignore_index=self.ignore_index,
                                  shape=shape, item_id=item_id)
        elif value is None or (not isinstance(value, np.ndarray) and not isinstance(value, (list, tuple))):
            raise MaskError(item_id, None, f"a mask must be an (H, W) array of class indices or PNG bytes, "
                                           f"got {type(value).__name__}")
        mask = check_mask(value, n_classes=self.n_classes, ignore_index=self.ignore_index, shape=shape,
                          item_id=item_id)
        return {"label": None, "payload": mask_to_png(mask), "media_type": MEDIA_TYPE}

    def encode_item(self, value, *, item_id, pool=None, index=None) -> dict:
        """:meth:`encode` checked against the size of the item's image (``pool.image(index)``)."""
        shape = None if pool is None or index is None else image_shape(pool, index)
        return self.encode(value, shape=shape, item_id=item_id)

    def decode(self, label, payload=None, media_type=None):
        """The stored PNG → the mask; None when the record holds no valid mask of these classes."""
        if payload is None or media_type != MEDIA_TYPE:
            return None
        try:
            return mask_from_png(bytes(payload), n_classes=self.n_classes, ignore_index=self.ignore_index)
        except MaskError:
            return None

    def selector_inputs(self, labels) -> dict:
        """Segmentation selectors read the labelled masks themselves (class weights from their IoU)."""
        return {"masks": list(labels), "ignore_index": self.ignore_index}

    def selector_embeddings(self, X):
        """Image-level selectors (coverage, diversity) read the global embedding of each image."""
        return X.pooled

    def make_selector(self, spec):
        """A segmentation selector by name (``auto``, ``random``, ``coverage``, ``entropy``,
        ``class_weighted``, ``class_targeted``, ...; see :mod:`alwidgets.segmentation.select`)."""
        from .select import make_selector

        if isinstance(spec, str):
            spec = spec.strip().lower().replace("-", "_")
        return make_selector(spec)

    def label_counts(self, labels) -> np.ndarray:
        """Labelled pixels per class over the labelled masks (the ignore index is not counted)."""
        counts = np.zeros(self.n_classes, np.int64)
        for m in labels:
            if m is not None:
                counts += np.bincount(np.asarray(m).ravel(), minlength=256)[: self.n_classes]
        return counts

    def suggest(self, pred):
        """No class for a whole image; the confidence is the mean top probability over its pixels."""
        p = np.asarray(pred, dtype=np.float32)
        return None, round(float(p.max(axis=0).mean()), 4)

    # ---------------------------------------------------------------- features
    def check_features(self, X, *, n_items=None, like=None, name="features"):
        """``X`` must be :class:`DenseFeatures` with ``n_items`` rows (and the same strides and channels
        as ``like``)."""
        from .features import DenseFeatures

        if not isinstance(X, DenseFeatures):
            raise TypeError(f"segmentation needs dense features for {name}: DenseFeatures from "
                            f"DenseEmbedder(...).embed(pool) (or DenseFeatures.from_pixels(pool) for a demo), "
                            f"got {type(X).__name__}")
        if n_items is not None and len(X) != n_items:
            raise ValueError(f"{name} has {len(X)} rows but the pool has {n_items} items")
        if like is not None and (tuple(X.strides) != tuple(like.strides) or X.channels != like.channels):
            raise ValueError(f"{name} has strides {X.strides} and channels {X.channels} but the pool's features "
                             f"have {like.strides} and {like.channels}; embed both with the same embedder")
        return X

    def subset_features(self, X, rows):
        return X.subset(rows)

    def check_targets(self, y, name: str = "masks") -> list:
        """Masks (one per row, none missing) checked against the classes."""
        out = []
        for r, m in enumerate(y):
            if m is None:
                raise ValueError(f"{name}: row {r} has no mask")
            out.append(check_mask(m, n_classes=self.n_classes, ignore_index=self.ignore_index,
                                  item_id=f"{name}[{r}]"))
        return out

    # ---------------------------------------------------------------- model
    def default_model(self):
        from .model import DenseDecoder

        return DenseDecoder(self.n_classes, self.ignore_index)

    def _training_masks(self, X, labels) -> list:
        """The labels at the features' image size (masks of another size are nearest-sampled)."""
        from .model import _mask_grid

        H, W = X.image_size
        return [None if m is None else (m if m.shape == (H, W) else _mask_grid(m, (H, W), self.ignore_index))
                for m in labels]

    def fit_predict(self, model, X, labels, X_eval=None):
        """Fit ``model`` (in place: warm start) on the labelled masks of features ``X``; return
        ``(model, probabilities (n, C, h, w))`` for ``X_eval`` (default ``X``)."""
        model = self.fit(model, X, labels)
        return model, model.predict_proba(X if X_eval is None else X_eval)

    def fit(self, model, X, labels):
        """Fit ``model`` in place on the labelled masks of features ``X``; returns it.

        A warm start continues from the weights of the last fit; when a mask the model trained on
        is no longer labelled (an undo) the fit starts cold, so the retracted mask leaves no trace.
        With ``calibrate``, the temperature is first fitted on the masks the model has not trained
        on yet (on the feature grid, at most 16 of them) and applied after the refit.
        """
        masks = self._training_masks(X, list(labels))
        now = {i for i, m in enumerate(masks) if m is not None}
        before = getattr(model, "trained_rows_", None)
        fitted = hasattr(model, "n_features_in_")
        temperature = getattr(model, "temperature_", None) if fitted else None
        if self.calibrate and fitted and before is not None:
            new = sorted(now - set(before))[:16]
            if new:
                from .calibrate import fit_pixel_temperature

                try:
                    temperature = fit_pixel_temperature(model, X, masks, new, size=None,
                                                        random_state=0).temperature_
                except (ValueError, RuntimeError):   # one class in the new masks, features changed, ...
                    pass
        cold = before is not None and not set(before) <= now and getattr(model, "warm_start", False)
        if cold:
            model.set_params(warm_start=False)
        try:
            model.fit(X, masks)
        finally:
            if cold:
                model.set_params(warm_start=True)
        model.trained_rows_ = sorted(now)
        if temperature is not None:
            model.temperature_ = float(temperature)
        return model

    def fork_model(self, model):
        """A shallow copy of ``model`` with its own network weights (a decoder trains in place; a fixed
        PCA projection, when ``n_components`` asks for one, and its cached maps stay shared)."""
        import copy

        fork = copy.copy(model)
        if hasattr(model, "net_"):
            fork.net_ = copy.deepcopy(model.net_)
        if hasattr(model, "trained_rows_"):
            fork.trained_rows_ = list(model.trained_rows_)
        return fork

    def fit_predict_eval(self, model, X, labels, X_eval=None, on_fit=None):
        """Fit once, then predict the pool and the held-out rows separately (dense features are
        not joined: each set may be a large memory map); ``on_fit(model)`` between the two."""
        model = self.fit(model, X, labels)
        if on_fit is not None:
            on_fit(model)
        return model, model.predict_proba(X), None if X_eval is None else model.predict_proba(X_eval)

    def check_predictions(self, pred, n_items: int):
        p = np.asarray(pred)
        if p.ndim != 4 or p.shape[0] != n_items or p.shape[1] != self.n_classes:
            raise ValueError(f"segmentation predictions must have shape ({n_items}, {self.n_classes}, h, w), "
                             f"got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("segmentation predictions have NaN or inf values")
        if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("segmentation predictions must be probabilities that sum to 1 over the classes")
        return p

    def selector_probs(self, pred):
        return pred

    # ---------------------------------------------------------------- metrics
    def score(self, y_true, pred) -> dict:
        """mIoU (``score``), per-class IoU (None where a class is absent) and pixel accuracy.

        ``pred`` holds probabilities ``(n, C, h, w)`` (upsampled bilinearly to each mask's size before
        the arg-max) or class maps ``(n, H, W)`` at the masks' size. Items without a mask are skipped.
        With probabilities, the pixels' reliability (``{"confidence", "accuracy", "count"}`` per
        non-empty bin of the top probability) and ``ece`` come too: the check that the calibrated
        probabilities the class-weighted selectors read mean what they say.
        """
        import torch
        import torch.nn.functional as F

        cm = np.zeros((self.n_classes, self.n_classes), np.int64)
        rel = np.zeros((3, RELIABILITY_BINS))   # pixels, sum of confidence, hits per bin
        for t, p in zip(y_true, pred):
            if t is None:
                continue
            t = np.asarray(t)
            p = np.asarray(p)
            if p.ndim == 3:
                z = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))[None]
                if tuple(z.shape[-2:]) != t.shape:
                    z = F.interpolate(z, size=t.shape, mode="bilinear", align_corners=False)
                conf, p = (v.numpy() for v in z[0].max(0))
                keep = (t != self.ignore_index) & (t >= 0) & (t < self.n_classes)
                conf = conf[keep]
                b = np.clip(np.ceil(conf * RELIABILITY_BINS).astype(np.int64) - 1, 0, RELIABILITY_BINS - 1)
                rel += [np.bincount(b, minlength=RELIABILITY_BINS),
                        np.bincount(b, conf, RELIABILITY_BINS),
                        np.bincount(b, p[keep] == t[keep], RELIABILITY_BINS)]
            cm += confusion_matrix(t, p, self.n_classes, self.ignore_index)
        s = SegmentationScores.from_confusion(cm)
        iou = {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, s.iou)}
        out = {"score": s.miou, "miou": s.miou, "pixel_accuracy": s.pixel_accuracy, "iou": iou,
               "per_class": dict(iou)}
        n, conf, hits = rel
        if n.sum():
            full = n > 0
            out["reliability"] = {"confidence": (conf[full] / n[full]).tolist(),
                                  "accuracy": (hits[full] / n[full]).tolist(), "count": n[full].astype(int).tolist()}
            out["ece"] = float(np.abs(hits - conf).sum() / n.sum())
        return out

    def cross_validate(self, model, X, labels, *, cv: int = 5, random_state=0) -> dict | None:
        """mIoU of out-of-fold predictions on the labelled masks (seeded K-fold over images), ± its
        spread over the folds; None with fewer than 4 masks. Each fold fits a fresh copy of ``model``
        (``cv`` fits: slow for a decoder; use ``cv=2`` or ``3`` interactively)."""
        from sklearn.base import clone
        from sklearn.model_selection import KFold

        lab = np.flatnonzero(self.is_labelled(labels))
        if len(lab) < 4:
            return None
        folds = KFold(n_splits=max(2, min(cv, len(lab) // 2)), shuffle=True, random_state=random_state)
        preds: dict = {}
        fold_scores = []
        train = self._training_masks(X, list(labels))
        for tr, te in folds.split(lab):
            masks = [None] * len(labels)
            for i in lab[tr]:
                masks[i] = train[i]
            m = clone(model).fit(X, masks)
            p = m.predict_proba(X, lab[te])
            for i, pi in zip(lab[te], p):
                preds[int(i)] = pi
            fold_scores.append(self.score([labels[i] for i in lab[te]], p)["score"])
        out = self.score([labels[i] for i in lab], [preds[int(i)] for i in lab])
        out["score_std"] = float(np.std(fold_scores))
        out["n_folds"] = len(fold_scores)
        return out


def image_shape(pool, index: int) -> tuple[int, int]:
    """``(H, W)`` of pool item ``index`` (the size its mask must have), reading only the file's header."""
    arrays = getattr(pool, "arrays", None)
    if arrays is not None:
        return tuple(int(v) for v in np.shape(arrays[index])[:2])
    path = pool.paths[index]
    if "://" not in str(path):
        from .data import _image_shape

        return _image_shape(path, pool.ids[index])
    w, h = pool.image(index).size
    return int(h), int(w)
