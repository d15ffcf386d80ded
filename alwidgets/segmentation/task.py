"""The segmentation task for the loop: masks as labels, PNG payloads in the store, mIoU as the score.

Implements :class:`alwidgets.tasks.Task` so that the Session, the store and the
simulation can carry masks without knowing what they are:

- labels in the loop: a list with one ``(H, W)`` uint8 mask per item, ``None``
  while unlabelled;
- in the store: ``label="mask"`` with the mask as an 8-bit PNG payload
  (``media_type="image/png"``), checked on the way in and on the way out;
- model: :class:`~alwidgets.segmentation.DenseDecoder` on
  :class:`~alwidgets.segmentation.DenseFeatures`; it is refitted in place
  (warm start) rather than cloned, because a decoder that continues from its
  previous weights needs half the steps;
- predictions: per-pixel probabilities ``(n, C, h, w)`` on the feature grid;
- score: mIoU (also per-class IoU, pixel accuracy) from one confusion matrix
  over non-ignored pixels, predictions upsampled to each mask's size.

>>> from alwidgets.segmentation import make_shapes
>>> from alwidgets.segmentation.task import SegmentationTask
>>> task = SegmentationTask(["background", "disc", "box", "triangle"], ignore_index=4)
>>> data = make_shapes(n_images=2, size=(16, 16))
>>> rec = task.encode(data.masks[0])
>>> rec["label"], rec["media_type"], rec["payload"][:4]
('mask', 'image/png', b'\\x89PNG')
>>> bool((task.decode(**rec) == data.masks[0]).all())
True
"""
from __future__ import annotations

import numpy as np

from ..tasks.base import Task
from .data import MaskError, check_mask, mask_from_png, mask_to_png
from .metrics import SegmentationScores, confusion_matrix

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

    def __init__(self, classes, *, ignore_index: int = 255):
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"segmentation needs at least two distinct class names, got {self.classes}")
        if not len(self.classes) <= int(ignore_index) <= 255:
            raise ValueError(f"ignore_index must be an 8-bit value outside 0..{len(self.classes) - 1}, "
                             f"got {ignore_index}")
        self.ignore_index = int(ignore_index)

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

    def encode(self, value) -> dict:
        """A mask (array, or PNG bytes from the painter) → ``{"label": "mask", "payload": PNG, "media_type"}``."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = mask_from_png(bytes(value), n_classes=self.n_classes, ignore_index=self.ignore_index)
        mask = self._check(value)
        return {"label": "mask", "payload": mask_to_png(mask), "media_type": MEDIA_TYPE}

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
        return {"masks": list(labels)}

    # ---------------------------------------------------------------- model
    def default_model(self):
        from .model import DenseDecoder

        return DenseDecoder(self.n_classes, self.ignore_index)

    def fit_predict(self, model, X, labels, X_eval=None):
        """Fit ``model`` (in place: warm start) on the labelled masks of features ``X``; return
        ``(model, probabilities (n, C, h, w))`` for ``X_eval`` (default ``X``)."""
        model.fit(X, list(labels))
        return model, model.predict_proba(X if X_eval is None else X_eval)

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
        """
        import torch
        import torch.nn.functional as F

        cm = np.zeros((self.n_classes, self.n_classes), np.int64)
        for t, p in zip(y_true, pred):
            if t is None:
                continue
            t = np.asarray(t)
            p = np.asarray(p)
            if p.ndim == 3:
                z = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))[None]
                if tuple(z.shape[-2:]) != t.shape:
                    z = F.interpolate(z, size=t.shape, mode="bilinear", align_corners=False)
                p = z[0].argmax(0).numpy()
            cm += confusion_matrix(t, p, self.n_classes, self.ignore_index)
        s = SegmentationScores.from_confusion(cm)
        return {"score": s.miou, "miou": s.miou, "pixel_accuracy": s.pixel_accuracy,
                "iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, s.iou)}}

    def cross_validate(self, model, X, labels, *, cv: int = 5, random_state=0) -> dict | None:
        """mIoU of out-of-fold predictions on the labelled masks (seeded K-fold over images), ± its
        spread over the folds; None with fewer than 4 masks. Each fold fits a fresh copy of ``model``
        (``cv`` fits: slow for a decoder; use ``cv=2`` or ``3`` interactively)."""
        from sklearn.base import clone
        from sklearn.model_selection import KFold

        lab = np.flatnonzero(self.is_labelled(labels))
        if len(lab) < 4:
            return None
        folds = KFold(n_splits=min(cv, len(lab) // 2), shuffle=True, random_state=random_state)
        preds: dict = {}
        fold_scores = []
        for tr, te in folds.split(lab):
            masks = [None] * len(labels)
            for i in lab[tr]:
                masks[i] = labels[i]
            m = clone(model).fit(X, masks)
            p = m.predict_proba(X, lab[te])
            for i, pi in zip(lab[te], p):
                preds[int(i)] = pi
            fold_scores.append(self.score([labels[i] for i in lab[te]], p)["score"])
        out = self.score([labels[i] for i in lab], [preds[int(i)] for i in lab])
        out["score_std"] = float(np.std(fold_scores))
        out["n_folds"] = len(fold_scores)
        return out
