"""Segmentation metrics from one confusion matrix over the pixels that count.

Pixels whose true value is the ignore index (or any value outside the
classes) are dropped before counting, so void never helps or hurts a score.
IoU of class ``c`` is ``TP / (TP + FP + FN)``; mIoU averages it over the
classes present in the truth or the prediction (a class absent from both has
no IoU and is left out, as in torchmetrics and mmseg).

>>> import numpy as np
>>> truth = np.array([[0, 0, 1, 255]])
>>> pred = np.array([[0, 1, 1, 0]])
>>> s = segmentation_scores([truth], [pred], n_classes=2, ignore_index=255)
>>> s.pixel_accuracy, s.iou.round(3).tolist(), round(s.miou, 3)
(0.6666666666666666, [0.5, 0.5], 0.5)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(truth, pred, n_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    ``truth`` and ``pred`` are integer maps of the same shape. Pixels whose truth
    is ``ignore_index`` (or outside ``0..C-1``) are not counted; a prediction
    outside ``0..C-1`` is an error.
    """
    t = np.asarray(truth)
    p = np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth has shape {t.shape} but the prediction has shape {p.shape}")
    t = t.ravel().astype(np.int64, copy=False)
    p = p.ravel().astype(np.int64, copy=False)
    keep = (t >= 0) & (t < n_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    t, p = t[keep], p[keep]
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        bad = np.unique(p[(p < 0) | (p >= n_classes)])[:10].tolist()
        raise ValueError(f"predictions hold values {bad} outside the {n_classes} classes")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores read off a confusion matrix.

    Attributes
    ----------
    confusion : (C, C) int64 array (rows = truth)
    iou : (C,) float array, NaN for a class absent from truth and prediction
    miou : float, mean of the non-NaN IoUs (0..1)
    pixel_accuracy : float, correct / counted pixels
    class_accuracy : (C,) float array, recall per class (NaN if absent from the truth)
    """

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_accuracy: np.ndarray

    @classmethod
    def from_confusion(cls, cm) -> "SegmentationScores":
        cm = np.asarray(cm, dtype=np.int64)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
            raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
        tp = np.diag(cm).astype(np.float64)
        rows = cm.sum(1).astype(np.float64)
        cols = cm.sum(0).astype(np.float64)
        union = rows + cols - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(rows > 0, tp / rows, np.nan)
        total = cm.sum()
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        return cls(cm, iou, miou, float(tp.sum() / total) if total else float("nan"), acc)

    def mean_iou_of(self, classes) -> float:
        """Mean IoU over the class indices ``classes`` (NaN classes left out)."""
        v = self.iou[np.asarray(classes, dtype=np.int64)]
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def to_dict(self, class_names=None) -> dict:
        names = class_names or [str(k) for k in range(len(self.iou))]
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy,
                "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, self.iou)}}


def segmentation_scores(truths, preds, n_classes: int, ignore_index: int | None = None) -> SegmentationScores:
    """mIoU, per-class IoU and pixel accuracy over pairs of maps (summed into one confusion matrix)."""
    truths, preds = list(truths), list(preds)
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} true masks but {len(preds)} predictions")
    cm = np.zeros((n_classes, n_classes), np.int64)
    for t, p in zip(truths, preds):
        cm += confusion_matrix(t, p, n_classes, ignore_index)
    return SegmentationScores.from_confusion(cm)
