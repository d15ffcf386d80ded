"""Pixel calibration: temperature scaling fitted on held-out labelled pixels, per-class ECE, reliability data.

The class-weighted and class-targeted selectors read probabilities literally,
so they should see calibrated ones. A dense model fitted on a few masks is
over-confident on the pixels it was trained on; its temperature must be fitted
on pixels it has *not* seen. In an active-learning loop the natural held-out
set is the batch just labelled, before the model is refitted on it
(:func:`fit_pixel_temperature` with those rows).

>>> import numpy as np
>>> from alwidgets.segmentation.calibrate import classwise_ece
>>> y = np.array([0, 0, 1, 1])
>>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
>>> classwise_ece(p, y, n_bins=5).round(3).tolist()
[0.25, 0.25]
"""
from __future__ import annotations

import numpy as np

from ..calibrate import TemperatureScaling, expected_calibration_error, reliability_data


def sample_pixel_logits(model, features, masks, rows, *, size="image", max_pixels: int = 200_000,
                        random_state=None):
    """``(logits (N, C) float64, classes (N,))`` over labelled pixels of ``rows``.

    ``size="image"`` reads logits at image resolution; ``size=None`` on the
    model's feature grid with the masks sampled at the cells' centres (much
    cheaper, the same temperature within a few per cent). Pixels with the
    ignore index are left out; at most ``max_pixels`` are drawn uniformly.
    """
    from .model import _mask_grid

    rng = np.random.default_rng(random_state)
    rows = [int(r) for r in rows if masks[int(r)] is not None]
    if not rows:
        raise ValueError("no row with a mask among the held-out rows")
    Z, Y = [], []
    for batch, z in model.predict_logits(features, rows, size=size):
        z = z.numpy()
        for r, zr in zip(batch, z):
            m = masks[r] if size is not None else _mask_grid(np.asarray(masks[r]), zr.shape[-2:], 255)
            ok = _valid(m, model)
            pick = np.flatnonzero(ok.ravel())
            Z.append(zr.reshape(zr.shape[0], -1)[:, pick].T.astype(np.float64))
            Y.append(m.ravel()[pick].astype(np.int64))
    Z, Y = np.concatenate(Z), np.concatenate(Y)
    if len(Y) > max_pixels:
        keep = rng.choice(len(Y), max_pixels, replace=False)
        Z, Y = Z[keep], Y[keep]
    return Z, Y


def _valid(mask, model):
    ok = mask < model.n_classes
    if model.ignore_index is not None:
        ok &= mask != model.ignore_index
    return ok


def fit_pixel_temperature(model, features, masks, rows, *, size="image", max_pixels: int = 200_000,
                          random_state=None):
    """Fit one temperature on the held-out labelled pixels of ``rows``; returns the fitted
    :class:`~alwidgets.calibrate.TemperatureScaling` (set ``model.temperature_`` from it to apply).

    ``rows`` must be masks the model was *not* trained on.
    """
    Z, Y = sample_pixel_logits(model, features, masks, rows, size=size, max_pixels=max_pixels,
                               random_state=random_state)
    if len(np.unique(Y)) < 2:
        raise ValueError("the held-out pixels hold a single class; a temperature needs at least two")
    return TemperatureScaling(input="logits").fit(Z, Y)


def classwise_ece(probs, y, n_bins: int = 15) -> np.ndarray:
    """Class-wise ECE (Kull et al., 2019): for each class ``c``, the binned gap between ``p_c`` and the
    frequency of ``y == c``, weighted by bin counts. NaN for a class with no true pixel."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    C = p.shape[1]
    out = np.full(C, np.nan)
    for c in range(C):
        if not np.any(y == c):
            continue
        conf = p[:, c]
        hit = (y == c).astype(np.float64)
        which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        count = np.bincount(which, minlength=n_bins)
        s_conf = np.bincount(which, weights=conf, minlength=n_bins)
        s_hit = np.bincount(which, weights=hit, minlength=n_bins)
        full = count > 0
        out[c] = float(np.abs(s_hit[full] - s_conf[full]).sum() / count.sum())
    return out


def pixel_calibration(model, features, masks, rows, *, temperature: float | None = None, n_bins: int = 15,
                      size="image", max_pixels: int = 200_000, random_state=None) -> dict:
    """Calibration of the model's pixel probabilities on the labelled pixels of ``rows``.

    Returns ``{"ece", "classwise_ece" (C,), "reliability" (DataFrame), "temperature", "n_pixels"}``
    at ``temperature`` (default: the model's ``temperature_``).
    """
    from ..calibrate import TemperatureScaling as _TS

    Z, Y = sample_pixel_logits(model, features, masks, rows, size=size, max_pixels=max_pixels,
                               random_state=random_state)
    T = float(getattr(model, "temperature_", 1.0) if temperature is None else temperature)
    P = _TS.softmax(Z / T)
    return {"ece": expected_calibration_error(P, Y, n_bins), "classwise_ece": classwise_ece(P, Y, n_bins),
            "reliability": reliability_data(P, Y, n_bins), "temperature": T, "n_pixels": int(len(Y))}


__all__ = ["sample_pixel_logits", "fit_pixel_temperature", "classwise_ece", "pixel_calibration"]
