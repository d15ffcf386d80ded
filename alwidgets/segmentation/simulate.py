"""Simulated mask labelling: how mIoU grows with the masks each strategy picks.

The hidden masks of a labelled pool play the labeller. For each split (a
random ``pool_fraction`` of the pool) and strategy, the loop runs
select -> reveal masks -> (calibrate) -> refit (warm start) -> score on a
fixed test set, at every budget. A model fitted on the split's whole pool
gives the reference ("full-pool mIoU") the summary measures against.

>>> from alwidgets.segmentation import make_shapes, DenseDecoder
>>> from alwidgets.segmentation.features import DenseFeatures
>>> train, test = make_shapes(n_images=24, size=(32, 32), random_state=0), make_shapes(8, (32, 32), random_state=1)
>>> ftr, fte = DenseFeatures.from_pixels(train.pool), DenseFeatures.from_pixels(test.pool)
>>> res = simulate_segmentation(ftr, train.masks, fte, test.masks, n_classes=4, ignore_index=4,
...     model=DenseDecoder(4, 4, n_components=None, min_steps=20, max_steps=20), strategies=["random", "entropy"],
...     budgets=[2, 4], splits=1, random_state=0, progress=False)
>>> res.curves[["strategy", "n_masks"]].drop_duplicates().values.tolist()
[['random', 2], ['random', 4], ['entropy', 2], ['entropy', 4]]
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from .select import grid_confusion, iou_from_confusion, make_selector


@dataclass
class SegmentationSimulation:
    """Curves (one row per split x strategy x budget) and the full-pool reference per split."""

    curves: pd.DataFrame
    reference: pd.DataFrame
    classes: list

    def summary(self, targets=(0.9, 0.95), rare=None, at: int | None = None) -> pd.DataFrame:
        """Per strategy: mean mIoU per budget, masks to reach each fraction of the full-pool mIoU
        (linear interpolation between budgets, averaged over the splits that reached it, with
        ``reached_P%`` = how many did), and the rare classes' mean IoU at ``at`` masks."""
        return summarize(self.curves, self.reference, targets=targets, rare=rare, at=at)


def _interp_reach(n, y, target):
    n, y = np.asarray(n, float), np.asarray(y, float)
    above = np.flatnonzero(y >= target)
    if not len(above):
        return float("nan")
    k = above[0]
    if k == 0:
        return float(n[0])
    return float(n[k - 1] + (target - y[k - 1]) * (n[k] - n[k - 1]) / (y[k] - y[k - 1]))


def summarize(curves: pd.DataFrame, reference: pd.DataFrame, targets=(0.9, 0.95), rare=None,
              at: int | None = None) -> pd.DataFrame:
    """See :meth:`SegmentationSimulation.summary`."""
    rows = []
    ref = reference.set_index("split")["miou"]
    for strat, g in curves.groupby("strategy", sort=False):
        rec = {"strategy": strat}
        for b, gb in g.groupby("n_masks"):
            rec[f"miou@{b}"] = gb["miou"].mean()
        for t in targets:
            reach = np.array([_interp_reach(gs["n_masks"], gs["miou"], t * ref[s]) for s, gs in g.groupby("split")])
            pct = int(round(t * 100))
            # mean over the splits that reached the target within the budgets; how many did
            rec[f"masks_to_{pct}%"] = float(np.nanmean(reach)) if np.isfinite(reach).any() else float("nan")
            rec[f"reached_{pct}%"] = f"{int(np.isfinite(reach).sum())}/{len(reach)}"
        if rare is not None and at is not None:
            ga = g[g["n_masks"] == at]
            rec[f"rare_iou@{at}"] = ga[[f"iou_{c}" for c in rare]].mean(axis=1).mean()
        rows.append(rec)
    return pd.DataFrame(rows)


def simulate_segmentation(features, masks, test_features, test_masks, *, n_classes: int, ignore_index=None,
                          model=None, strategies=("random", "coverage", "entropy", "class_weighted",
                                                  "class_targeted", "auto"),
                          budgets=(5, 10, 20, 40, 80, 160), splits: int = 3, pool_fraction: float = 0.8,
                          calibrate: bool = True, score_scale: int = 1, classes=None, random_state=0,
                          reference=None, class_iou: str = "labelled", progress: bool = True,
                          on_record=None) -> SegmentationSimulation:
    """Simulate image-level mask selection on a pool with known masks.

    Parameters
    ----------
    features, masks
        Dense features of the pool and its hidden masks (one per row).
    test_features, test_masks
        The fixed test set every model is scored on.
    model : estimator, optional
        A dense model (cloned per run); default :class:`~alwidgets.segmentation.DenseDecoder`.
    strategies : names or selector objects
    budgets : increasing ints
        Total masks after each round (the first round is the cold start).
    splits : int
        Random sub-pools of ``pool_fraction`` of the pool; each strategy runs on each. With
        ``pool_fraction=1`` the splits share the whole pool and differ only in their seeds
        (first batch, model initialisation, selector randomness).
    calibrate : bool
        Before each refit, fit the model's temperature on the masks just
        revealed (pixels it has not trained on) so the selectors read
        calibrated probabilities.
    score_scale : int
        1 scores every test pixel; 2 every second pixel each way (4x cheaper).
    reference : dict, optional
        ``{"miou": ..., "n_masks": ...}`` (mIoU in %) of a model already fitted on the whole pool
        with the same settings: skips the full-pool fit of every split (only with ``pool_fraction=1``).
    class_iou : {"labelled", "heldout"}
        Where the class-weighted and class-targeted selectors get per-class IoU: the model's
        predictions on its own training masks (``"labelled"``, optimistic), or on the masks of each
        batch *before* the refit that uses them (``"heldout"``: unseen by that model; the confusion
        matrices of past batches are kept with weight halving each round), passed as ``class_iou=``.
    on_record : callable, optional
        Called with each curve row (a dict) as it is produced, e.g. to write partial results.
    """
    from .model import DenseDecoder

    budgets = [int(b) for b in budgets]
    if not budgets or any(b < 1 for b in budgets) or budgets != sorted(set(budgets)):
        raise ValueError(f"budgets must be increasing positive integers, got {budgets}")
    if len(masks) != len(features) or len(test_masks) != len(test_features):
        raise ValueError("features and masks must have one entry per item (pool and test)")
    if class_iou not in ("labelled", "heldout"):
        raise ValueError(f"class_iou must be 'labelled' or 'heldout', got {class_iou!r}")
    if not 0 < pool_fraction <= 1:
        raise ValueError(f"pool_fraction must be in (0, 1], got {pool_fraction}")
    classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    base = model if model is not None else DenseDecoder(n_classes, ignore_index)
    known = np.array([m is not None for m in masks])
    N = int(known.sum())
    m_pool = max(budgets[-1], int(round(pool_fraction * N)))
    if m_pool > N:
        raise ValueError(f"the largest budget {budgets[-1]} exceeds the {N} images with a mask")
    strategies = list(strategies)
    curves, refs = [], []
    for split in range(splits):
        rng = np.random.default_rng([int(random_state), split])
        pool_rows = np.sort(rng.choice(np.flatnonzero(known), m_pool, replace=False))
        sub = features.subset(pool_rows)
        sub_masks = [masks[i] for i in pool_rows]
        if reference is not None:
            if m_pool != N:
                raise ValueError("reference= is the whole pool's mIoU: use it with pool_fraction=1")
            refs.append({"split": split, **reference})
        else:
            ref_model = clone(base).set_params(random_state=split)
            ref_model.fit(sub, sub_masks)
            s = ref_model.score(test_features, test_masks, scale=score_scale)
            refs.append({"split": split, "n_masks": m_pool, "miou": 100 * s.miou,
                         "pixel_accuracy": 100 * s.pixel_accuracy, "fit_seconds": ref_model.fit_seconds_,
                         **{f"iou_{c}": 100 * v for c, v in zip(classes, s.iou)}})
        if progress:
            print(f"split {split}: full pool of {m_pool} masks -> mIoU {refs[-1]['miou']:.1f}", flush=True)
        first = np.random.default_rng([int(random_state), split, 1]).permutation(m_pool)[: budgets[0]]
        for name in strategies:
            selector = make_selector(name)
            sname = name if isinstance(name, str) else selector.name
            mdl = clone(base).set_params(random_state=split)
            labels = [None] * m_pool
            fitted = False
            temperature = None
            held_cm = None
            prev = 0
            for b in budgets:
                t0 = time.perf_counter()
                if not fitted and ("probs" in selector.requires or not selector.requires):
                    batch, info = first, {"reason": "cold start: the same random first batch for random and "
                                                    "every model-based strategy"}
                else:
                    probs = mdl.predict_proba(sub) if fitted else None
                    extra = {}
                    if class_iou == "heldout" and held_cm is not None:
                        extra["class_iou"] = iou_from_confusion(held_cm)
                    sel = selector.select(b - prev, labels=labels, embeddings=sub.pooled, probs=probs,
                                          random_state=np.random.default_rng([int(random_state), split, b]),
                                          ignore_index=ignore_index, temperature=temperature, **extra)
                    batch, info = sel.indices, sel.info
                select_s = time.perf_counter() - t0
                for i in batch:
                    labels[int(i)] = sub_masks[int(i)]
                if class_iou == "heldout" and fitted:   # the new masks, as the current model sees them
                    cm = grid_confusion(mdl.predict_proba(sub, batch), [labels[int(i)] for i in batch], range(len(batch)),
                                        n_classes, ignore_index)
                    held_cm = cm if held_cm is None else 0.5 * held_cm + cm
                if calibrate and fitted:
                    from .calibrate import fit_pixel_temperature

                    try:
                        ts = fit_pixel_temperature(mdl, sub, labels, batch[:16], size=None, random_state=split)
                        temperature = ts.temperature_
                    except ValueError:   # e.g. the new masks hold a single class: keep the last temperature
                        pass
                mdl.fit(sub, labels)
                if temperature is not None:
                    mdl.temperature_ = temperature
                fitted = True
                prev = b
                t1 = time.perf_counter()
                s = mdl.score(test_features, test_masks, scale=score_scale)
                rec = {"split": split, "strategy": sname, "n_masks": b, "miou": 100 * s.miou,
                       "pixel_accuracy": 100 * s.pixel_accuracy, "fit_seconds": mdl.fit_seconds_,
                       "select_seconds": select_s, "score_seconds": time.perf_counter() - t1,
                       "temperature": temperature, "phase": info.get("phase", ""),
                       **{f"iou_{c}": 100 * v for c, v in zip(classes, s.iou)}}
                curves.append(rec)
                if on_record is not None:
                    on_record(rec)
                if progress:
                    print(f"split {split} {sname:>15} {b:4d} masks: mIoU {rec['miou']:.1f} "
                          f"(fit {rec['fit_seconds']:.0f}s, select {select_s:.0f}s)", flush=True)
    return SegmentationSimulation(pd.DataFrame(curves), pd.DataFrame(refs), classes)
