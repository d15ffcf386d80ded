"""Replay strategies on data whose labels are hidden: how many labels does each need?

The standard pool-based protocol: split off a held-out test set, start from a
few labels per class (or none: cold start), then each round fit the model,
score the test set, let the strategy pick a batch and reveal its labels.
Repeat over several random splits and compare against random sampling.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ._validation import UNLABELED, check_positive_int, check_embeddings
from .loop import Loop
from .models import default_model
from .select.base import Selector
from .select.registry import make_selector
from .tasks import Classification

SUMMARY_COLUMNS = [
    "strategy",
    "labels_to_target",
    "labels_to_target_median",
    "reached",
    "saved_vs_random",
    "auc",
    "final_acc",
    "final_acc_std",
    "seconds_per_round",
]


@dataclass
class SimulationResult:
    """Learning curves and a per-strategy summary of a simulation.

    Attributes
    ----------
    curves : DataFrame
        One row per (strategy, repeat, round): ``n_labels``, ``accuracy``,
        ``seconds`` (fit + selection), ``picked_by`` (the strategy that chose
        the batch that followed: a model-based strategy falls back to random
        while there is no model).
    summary : DataFrame
        One row per strategy, columns as in ``SUMMARY_COLUMNS``;
        ``labels_to_target`` is NaN unless every repeat reached the target.
        Empty (no rows, the same columns) when run with ``target_acc=None``.
    full_pool : DataFrame
        Accuracy of the model trained on every pool label, per repeat.
    params : dict
        The settings of the run.
    """

    curves: pd.DataFrame
    summary: pd.DataFrame
    full_pool: pd.DataFrame
    params: dict = field(default_factory=dict)

    def to_records(self) -> list[dict]:
        """The summary as JSON-ready dicts (NaN becomes ``None``)."""
        keys = ["strategy", "labels_to_target", "labels_to_target_median", "saved_vs_random",
                "auc", "final_acc", "seconds_per_round"]
        out = []
        for row in self.summary.to_dict("records"):
            out.append({k: _json_value(row[k]) for k in keys} | {"reached": row["reached"]})
        return out

    def to_markdown(self) -> str:
        """The summary as a markdown table; unreached targets read "not reached"."""
        target = self.params.get("target_acc")
        head = ["strategy", f"labels to {target:.0%} (mean)" if target else "labels to target",
                "median", "saved vs random", "AUC", "final acc", "s/round"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.summary.to_dict("records"):
            if math.isnan(r["labels_to_target"]):
                ltt = f"not reached ({r['reached']})"
            else:
                ltt = f"{r['labels_to_target']:.1f}"
            med = "not reached" if math.isnan(r["labels_to_target_median"]) else f"{r['labels_to_target_median']:.0f}"
            saved = "—" if math.isnan(r["saved_vs_random"]) else f"{r['saved_vs_random']:+.0%}"
            lines.append(
                f"| {r['strategy']} | {ltt} | {med} | {saved} | {r['auc']:.3f} | "
                f"{r['final_acc']:.3f} ± {r['final_acc_std']:.3f} | {r['seconds_per_round']:.3f} |"
            )
        return "\n".join(lines)

    def plot(self, reference: str = "random"):
        """Plotly figure: mean accuracy (± std band) versus labels per strategy."""
        from .plots import learning_curve_figure

        return learning_curve_figure(self.curves, target=self.params.get("target_acc"), reference=reference)


def _json_value(v):
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _encode_targets(y):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-d, got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y must hold at least 2 classes, found {len(classes)}")
    return classes, codes.astype(np.int64)


def _strategies(strategies) -> dict[str, Selector]:
    if isinstance(strategies, (str, Selector)):
        strategies = [strategies]
    if isinstance(strategies, dict):
        out = {str(k): make_selector(v) for k, v in strategies.items()}
    else:
        out = {}
        for s in strategies:
            sel = make_selector(s)
            name = s if isinstance(s, str) else sel.name
            if name in out:
                raise ValueError(f"strategy {name!r} is listed twice")
            out[name] = sel
    if not out:
        raise ValueError("give at least one strategy")
    return out


def labels_to_target(curve: pd.DataFrame, target: float) -> float:
    """First ``n_labels`` at which ``accuracy >= target`` (NaN if never)."""
    hit = curve.loc[curve["accuracy"] >= target, "n_labels"]
    return float(hit.iloc[0]) if len(hit) else math.nan


def normalised_auc(n_labels: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under the accuracy curve divided by its label range (= mean accuracy)."""
    if len(n_labels) < 2:
        return float(accuracy[0]) if len(accuracy) else math.nan
    area = np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(n_labels))
    return float(area / (n_labels[-1] - n_labels[0]))


def summarize(curves: pd.DataFrame, target_acc: float, reference: str = "random") -> pd.DataFrame:
    """Per-strategy summary of learning curves (see :class:`SimulationResult`)."""
    rows = []
    for strategy, g in curves.groupby("strategy", sort=False):
        per_rep = []
        for _, c in g.groupby("repeat"):
            c = c.sort_values("n_labels")
            per_rep.append((
                labels_to_target(c, target_acc),
                normalised_auc(c["n_labels"].to_numpy(float), c["accuracy"].to_numpy(float)),
                float(c["accuracy"].iloc[-1]),
            ))
        ltt, auc, final = map(np.array, zip(*per_rep))
        reached = int(np.sum(~np.isnan(ltt)))
        rows.append({
            "strategy": strategy,
            "labels_to_target": float(ltt.mean()) if reached == len(ltt) else math.nan,
            "labels_to_target_median": float(np.median(ltt)) if reached * 2 > len(ltt) else math.nan,
            "reached": f"{reached}/{len(ltt)}",
            "auc": float(auc.mean()),
            "final_acc": float(final.mean()),
            "final_acc_std": float(final.std()),
            "seconds_per_round": float(g["seconds"].mean()),
        })
    summary = pd.DataFrame(rows)
    summary["saved_vs_random"] = saved_vs_reference(summary, reference)
    return summary[SUMMARY_COLUMNS]


def saved_vs_reference(table: pd.DataFrame, reference: str = "random") -> pd.Series:
    """``1 - labels_to_target / reference's labels_to_target`` per row of ``table``.

    NaN throughout when ``table`` has no ``reference`` row or the reference's
    value is NaN (it did not reach the target).
    """
    ref = table.loc[table["strategy"] == reference, "labels_to_target"]
    ref_ltt = float(ref.iloc[0]) if len(ref) else math.nan
    return 1.0 - table["labels_to_target"] / ref_ltt


def simulate(
    X,
    y,
    strategies=("random", "margin"),
    *,
    model=None,
    target_acc: float | None = 0.9,
    batch_size: int = 10,
    seed_per_class: int = 2,
    budget: int = 300,
    repeats: int = 5,
    test_size: float = 0.25,
    X_test=None,
    y_test=None,
    random_state: int = 0,
    progress: bool = True,
    task=None,
    budgets=None,
) -> SimulationResult:
    """Replay active-learning strategies on labelled data with the labels hidden.

    With ``task="segmentation"`` (or a :class:`~alwidgets.segmentation.SegmentationTask`,
    which also names the classes and the ignore index; the string infers classes ``0..max``
    and ignore index 255) ``X`` is :class:`~alwidgets.segmentation.DenseFeatures`, ``y`` one
    mask per image, ``X_test``/``y_test`` test features and masks, and the run is
    :func:`alwidgets.segmentation.simulate.simulate_task`: whole images are picked, mIoU is
    scored at each of ``budgets`` (masks, default 5, 10, 20, 40) over ``repeats`` seeds, and the
    result is a :class:`~alwidgets.segmentation.simulate.SegmentationSimulation` (``report()``,
    ``to_markdown()``, ``to_records()``, ``plot()``: masks to 90 / 95 % of the full-pool mIoU,
    per-class IoU, AUC, seconds per round). ``target_acc``, ``batch_size``, ``seed_per_class``
    and ``budget`` are classification's.

    Parameters
    ----------
    X : array (n, d)
        Embeddings (or any features) of the items.
    y : array (n,)
        True labels (any hashable values); they are revealed only when selected.
    strategies : names or selectors
        E.g. ``["random", "margin"]``; include ``"random"`` to get savings.
    model : scikit-learn classifier, optional
        Fitted from scratch each round; default :class:`~alwidgets.models.LinearProbe`.
    target_acc : float or None
        Accuracy whose label cost is reported. ``None``: only the curves are
        wanted; the summary is left empty and there is no check that the
        model can reach a target with every pool label.
    batch_size, budget : int
        Labels revealed per round, and in total (seed labels included).
    seed_per_class : int
        Labels per class given before the first round; 0 is a cold start, where
        strategies that need a model take a random first batch.
    repeats : int
        Random splits (test split, seed labels and selection randomness change).
    test_size : float
        Held-out fraction, ignored when ``X_test``/``y_test`` are given.
    random_state : int
        Makes the whole run reproducible.

    Returns
    -------
    SimulationResult

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from alwidgets import simulate
    >>> X, y = load_digits(return_X_y=True)
    >>> res = simulate(X, y, ["random", "margin"], budget=60, repeats=1, progress=False)
    >>> sorted(res.summary["strategy"])
    ['margin', 'random']
    """
    if task is not None and task != "classification":
        return _simulate_task(X, y, task, strategies, model=model, budgets=budgets, repeats=repeats,
                              test_size=test_size, X_test=X_test, y_test=y_test, random_state=random_state,
                              progress=progress)
    if budgets is not None:
        raise ValueError("budgets= is for task='segmentation'; classification takes batch_size= and budget=")
    X = check_embeddings(X, name="X")
    class_values, codes = _encode_targets(y)
    if len(codes) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(codes)}")
    n_classes = len(class_values)
    sels = _strategies(strategies)
    if target_acc is not None and not (0.0 < target_acc <= 1.0):
        raise ValueError(f"target_acc must be in (0, 1], got {target_acc}")
    batch_size = check_positive_int(batch_size, "batch_size")
    budget = check_positive_int(budget, "budget")
    repeats = check_positive_int(repeats, "repeats")
    if isinstance(seed_per_class, bool) or not isinstance(seed_per_class, (int, np.integer)) or seed_per_class < 0:
        raise ValueError(f"seed_per_class must be an integer >= 0, got {seed_per_class!r}")
    if seed_per_class * n_classes >= budget:
        raise ValueError(
            f"budget ({budget}) must exceed the seed labels ({seed_per_class} per class x {n_classes} classes)"
        )
    external_test = X_test is not None or y_test is not None
    if external_test:
        if X_test is None or y_test is None:
            raise ValueError("give both X_test and y_test, or neither")
        X_test = check_embeddings(X_test, name="X_test")
        lookup = {v: i for i, v in enumerate(class_values.tolist())}
        try:
            codes_test = np.array([lookup[v] for v in np.asarray(y_test).tolist()], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"y_test holds class {e.args[0]!r}, which y does not have") from None
    elif not (0.0 < test_size < 1.0):
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    model = default_model() if model is None else model

    splits = []  # (seed, pool rows or None for all of X, test features, test codes)
    for r in range(repeats):
        seed = np.random.SeedSequence([random_state, r]).generate_state(1)[0]
        if external_test:
            pool_idx, Xt, yt = None, X_test, codes_test
        else:
            pool_idx, test_idx = train_test_split(
                np.arange(len(X)), test_size=test_size, stratify=codes, random_state=int(seed)
            )
            Xt, yt = X[test_idx], codes[test_idx]
        splits.append((int(seed), pool_idx, Xt, yt))

    def pool_of(pool_idx):  # with an external test set the pool is all of X: no copy
        return (X, codes) if pool_idx is None else (X[pool_idx], codes[pool_idx])

    task = Classification(range(n_classes))
    full_rows = []
    for r, (seed, pool_idx, Xt, yt) in enumerate(splits):
        Xp, yp = pool_of(pool_idx)
        _, p = task.fit_predict(model, Xp, yp, X_eval=Xt)
        full_rows.append({"repeat": r, "accuracy": float(np.mean(p.argmax(1) == yt)), "n_labels": len(Xp)})
    full_pool = pd.DataFrame(full_rows)
    best = full_pool["accuracy"].max()
    if target_acc is not None and target_acc > best:
        raise ValueError(
            f"target accuracy {target_acc:.3f} is above what the model reaches with every pool label "
            f"({best:.3f} at best over {repeats} splits); no strategy can be expected to reach it"
        )

    n_rounds = 1 + math.ceil((budget - seed_per_class * n_classes) / batch_size)
    bar = _progress(repeats * len(sels) * n_rounds, progress)
    rows = []
    for r, (seed, pool_idx, Xt, yt) in enumerate(splits):
        Xp, yp = pool_of(pool_idx)
        seed_rng = np.random.default_rng(seed)
        initial = np.concatenate([
            seed_rng.permutation(np.flatnonzero(yp == c))[:seed_per_class] for c in range(n_classes)
        ]).astype(np.int64)
        for name, selector in sels.items():
            rows.extend(_run_one(name, selector, model, task, Xp, yp, Xt, yt, initial,
                                 batch_size, budget, seed, r, bar))
    bar.close()
    curves = pd.DataFrame(rows)
    params = dict(target_acc=target_acc, batch_size=batch_size, seed_per_class=seed_per_class, budget=budget,
                  repeats=repeats, test_size=None if external_test else test_size, random_state=random_state,
                  n_items=len(X), n_classes=n_classes, classes=[str(c) for c in class_values])
    summary = pd.DataFrame(columns=SUMMARY_COLUMNS) if target_acc is None else summarize(curves, target_acc)
    return SimulationResult(curves, summary, full_pool, params)


def _simulate_task(X, y, task, strategies, *, model, budgets, repeats, test_size, X_test, y_test, random_state,
                   progress):
    """``simulate`` for a task other than classification (today: segmentation)."""
    from .segmentation.simulate import simulate_task
    from .segmentation.task import SegmentationTask

    if task == "segmentation":
        y = list(y)
        values = set()
        for m in (*y, *(y_test or [])):
            if m is not None:
                values.update(np.flatnonzero(np.bincount(np.asarray(m).ravel(), minlength=256)).tolist())
        values.discard(255)
        if not values:
            raise ValueError("no class values found in the masks")
        task = SegmentationTask([str(k) for k in range(max(max(values) + 1, 2))], ignore_index=255)
    if not isinstance(task, SegmentationTask):
        raise ValueError(f"simulate supports task='classification' or 'segmentation', got {task!r}")
    if isinstance(strategies, str):
        strategies = [strategies]
    return simulate_task(X, y, task, list(strategies), budgets=(5, 10, 20, 40) if budgets is None else budgets,
                         repeats=check_positive_int(repeats, "repeats"), test_features=X_test, test_masks=y_test,
                         test_size=test_size, model=model, random_state=random_state, progress=progress)


def _run_one(name, selector, model, task, Xp, yp, Xt, yt, initial, batch_size, budget, seed, repeat, bar):
    """One strategy on one split of the pool (``Xp, yp``) and test set (``Xt, yt``), through the loop."""
    loop = Loop(task, model, selector)
    labels = loop.task.empty_labels(len(Xp))
    labels[initial] = yp[initial]
    rows = []
    for rnd in itertools.count():
        t0 = time.perf_counter()
        n_labels = int(np.count_nonzero(labels != UNLABELED))
        fitted = loop.fit(Xp, labels, X_eval=Xt) if n_labels else None
        k = min(batch_size, budget - n_labels, len(Xp) - n_labels)
        picked_by = None
        if k > 0:
            rs = np.random.SeedSequence([seed, rnd, 7]).generate_state(1)[0]
            sel = loop.select(k, Xp, labels, fitted, random_state=int(rs))
            picked_by = sel.info["picked_by"]
            labels[sel.indices] = yp[sel.indices]
        seconds = time.perf_counter() - t0
        if n_labels:
            rows.append({"strategy": name, "repeat": repeat, "round": rnd, "n_labels": n_labels,
                         "accuracy": float(np.mean(fitted.eval_predictions.argmax(1) == yt)),
                         "seconds": seconds, "picked_by": picked_by})
        bar.update(1)
        if k <= 0:
            return rows


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar only on a terminal (or in a notebook), not in logs
    return tqdm(total=total, disable=None if enabled else True, file=sys.stderr, desc="simulate", unit="round",
                leave=False)
