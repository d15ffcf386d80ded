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

import math
import time
from dataclasses import dataclass, field

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
    params: dict = field(default_factory=dict)

    def summary(self, targets=(0.9, 0.95), rare=None, at: int | None = None) -> pd.DataFrame:
        """Per strategy: mean mIoU per budget, masks to reach each fraction of the full-pool mIoU
        (linear interpolation between budgets, averaged over the splits that reached it, with
        ``reached_P%`` = how many did), and the rare classes' mean IoU at ``at`` masks."""
        return summarize(self.curves, self.reference, targets=targets, rare=rare, at=at)

    # ------------------------------------------------------------------ the report (CLI, notebooks)
    @property
    def budgets(self) -> list:
        return sorted(int(b) for b in self.curves["n_masks"].unique())

    def default_at(self) -> int:
        """The budget whose per-class IoU the report shows by default: the middle one."""
        b = self.budgets
        return b[(len(b) - 1) // 2]

    def report(self, at: int | None = None, reference: str = "random") -> pd.DataFrame:
        """One row per strategy: ``miou@B`` (mean over splits, in %), ``masks_to_90%`` / ``masks_to_95%``
        of the full-pool mIoU (with ``reached_*``), ``saved_vs_random`` (1 - masks to 95 % / random's),
        ``auc`` (mean mIoU over the budget range, normalised like classification's, 0-1),
        ``final_miou``, ``seconds_per_round`` (select + fit) and ``iou@at_<class>`` (in %)."""
        from ..simulate import normalised_auc

        at = self.default_at() if at is None else int(at)
        if at not in self.budgets:
            raise ValueError(f"at={at} is not one of the budgets {self.budgets}")
        table = self.summary(at=None).set_index("strategy")
        rows = []
        for strat, g in self.curves.groupby("strategy", sort=False):
            rec = table.loc[strat].to_dict()
            aucs = [normalised_auc(gs["n_masks"].to_numpy(float), gs["miou"].to_numpy(float) / 100)
                    for _, gs in g.sort_values("n_masks").groupby("split")]
            last = g[g["n_masks"] == g["n_masks"].max()]
            rec.update(strategy=strat, auc=float(np.mean(aucs)), final_miou=float(last["miou"].mean()),
                       final_miou_std=float(last["miou"].std(ddof=0)),
                       seconds_per_round=float((g["fit_seconds"] + g["select_seconds"]).mean()))
            ga = g[g["n_masks"] == at]
            for c in self.classes:
                rec[f"iou@{at}_{c}"] = float(ga[f"iou_{c}"].mean())
            rows.append(rec)
        out = pd.DataFrame(rows)
        ref = out.loc[out["strategy"] == reference, "masks_to_95%"]
        ref = float(ref.iloc[0]) if len(ref) else math.nan
        out["saved_vs_random"] = 1.0 - out["masks_to_95%"] / ref
        first = ["strategy", *[f"miou@{b}" for b in self.budgets], "masks_to_90%", "reached_90%", "masks_to_95%",
                 "reached_95%", "saved_vs_random", "auc", "final_miou", "final_miou_std", "seconds_per_round"]
        return out[first + [c for c in out.columns if c not in first]]

    def full_pool_miou(self) -> float:
        """Mean full-pool mIoU (in %) over the splits."""
        return float(self.reference["miou"].mean())

    def to_records(self, at: int | None = None) -> list[dict]:
        """:meth:`report` as JSON-ready dicts (NaN becomes ``None``; mIoU and IoU in %)."""
        from ..simulate import _json_value

        at = self.default_at() if at is None else int(at)
        out = []
        for r in self.report(at).to_dict("records"):
            out.append({
                "strategy": r["strategy"],
                "miou": {str(b): _json_value(r[f"miou@{b}"]) for b in self.budgets},
                "masks_to_90": _json_value(r["masks_to_90%"]), "reached_90": r["reached_90%"],
                "masks_to_95": _json_value(r["masks_to_95%"]), "reached_95": r["reached_95%"],
                "saved_vs_random": _json_value(r["saved_vs_random"]), "auc": _json_value(r["auc"]),
                "final_miou": _json_value(r["final_miou"]), "seconds_per_round": _json_value(r["seconds_per_round"]),
                "iou_at": at, "iou": {c: _json_value(r[f"iou@{at}_{c}"]) for c in self.classes},
            })
        return out

    def to_markdown(self, at: int | None = None) -> str:
        """Two markdown tables: mIoU per budget with masks to 90 / 95 % of the full-pool mIoU, AUC and
        seconds per round; then per-class IoU at ``at`` masks (default: the middle budget)."""
        at = self.default_at() if at is None else int(at)
        t = self.report(at)

        def num(v, fmt="{:.1f}"):
            return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

        def reach(v, n):
            return f"{v:.1f} ({n})" if not math.isnan(v) else f"not reached ({n})"

        head = ["strategy", *[f"mIoU@{b}" for b in self.budgets], "masks to 90%", "masks to 95%",
                "saved vs random", "AUC", "s/round"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t.to_dict("records"):
            lines.append("| " + " | ".join([
                r["strategy"], *[num(r[f"miou@{b}"]) for b in self.budgets],
                reach(r["masks_to_90%"], r["reached_90%"]), reach(r["masks_to_95%"], r["reached_95%"]),
                num(r["saved_vs_random"], "{:+.0%}"), num(r["auc"], "{:.3f}"), num(r["seconds_per_round"], "{:.2f}"),
            ]) + " |")
        lines += ["", f"Per-class IoU (%) at {at} masks:", ""]
        head = ["strategy", *self.classes]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t.to_dict("records"):
            lines.append("| " + " | ".join([r["strategy"], *[num(r[f"iou@{at}_{c}"]) for c in self.classes]]) + " |")
        return "\n".join(lines)

    def plot(self, reference: str = "random"):
        """Plotly figure: mean mIoU (± std band over splits) versus masks labelled, per strategy, and
        the full-pool mIoU (:func:`alwidgets.plots.miou_curve_figure`)."""
        from ..plots import miou_curve_figure

        curves = self.curves.assign(miou=self.curves["miou"] / 100)
        return miou_curve_figure(curves, reference=reference, full_pool=self.full_pool_miou() / 100)


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


def simulate_task(features, masks, task, strategies=("random", "coverage", "entropy", "class_weighted", "auto"), *,
                  budgets=(5, 10, 20, 40), repeats: int = 3, test_features=None, test_masks=None,
                  test_size: float = 0.25, model=None, calibrate: bool = True, random_state: int = 0,
                  progress: bool = True) -> SegmentationSimulation:
    """:func:`simulate_segmentation` for a :class:`~alwidgets.segmentation.SegmentationTask`: what
    ``alwidgets.simulate(..., task="segmentation")`` and ``alwidgets simulate --task segmentation`` run.

    Without ``test_features``/``test_masks``, ``test_size`` of the images with a mask are held out
    (one seeded split) and scored at every budget. The ``repeats`` runs share the rest of the pool and
    differ in their seeds (first batch, model initialisation, selector randomness); the full-pool
    mIoU (every remaining mask, fitted once) is the reference for "masks to 90 / 95 %".
    """
    from sklearn.base import clone

    masks = list(masks)
    if len(masks) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(masks)} masks")
    known = np.flatnonzero([m is not None for m in masks])
    if test_features is None and test_masks is None:
        if not 0 < test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {test_size}")
        rng = np.random.default_rng([int(random_state), 99])
        perm = rng.permutation(known)
        n_test = max(1, int(round(test_size * len(perm))))
        test_rows, pool_rows = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        test_features, test_masks = features.subset(test_rows), [masks[i] for i in test_rows]
    elif test_features is None or test_masks is None:
        raise ValueError("give both test_features and test_masks, or neither")
    else:
        pool_rows = known
        test_masks = task.check_targets(test_masks, name="test masks")
    budgets = sorted({int(b) for b in budgets})
    if budgets and budgets[-1] > len(pool_rows):
        raise ValueError(f"the largest budget ({budgets[-1]} masks) exceeds the {len(pool_rows)} pool images with "
                         "a mask")
    sub = features if len(pool_rows) == len(features) else features.subset(pool_rows)
    sub_masks = task._training_masks(sub, [masks[i] for i in pool_rows])
    test_masks = task._training_masks(test_features, list(test_masks))
    base = task.default_model() if model is None else model
    t0 = time.perf_counter()
    ref_model = clone(base).set_params(random_state=0)
    ref_model.fit(sub, sub_masks)
    sc = ref_model.score(test_features, test_masks)
    reference = {"miou": 100 * sc.miou, "n_masks": len(pool_rows), "pixel_accuracy": 100 * sc.pixel_accuracy,
                 "fit_seconds": time.perf_counter() - t0}
    if progress:
        print(f"full pool of {len(pool_rows)} masks -> mIoU {reference['miou']:.1f}", flush=True)
    res = simulate_segmentation(sub, sub_masks, test_features, test_masks, n_classes=task.n_classes,
                                ignore_index=task.ignore_index, model=base, strategies=strategies, budgets=budgets,
                                splits=repeats, pool_fraction=1.0, calibrate=calibrate, classes=task.classes,
                                reference=reference, random_state=random_state, progress=progress)
    res.params = {"task": "segmentation", "budgets": budgets, "repeats": int(repeats), "n_pool": int(len(pool_rows)),
                  "n_test": int(len(test_masks)), "n_classes": task.n_classes, "classes": list(task.classes),
                  "ignore_index": task.ignore_index, "random_state": random_state, "model": type(base).__name__}
    return res
