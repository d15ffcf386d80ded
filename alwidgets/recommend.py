"""Which strategy would have needed the fewest labels on *your* data? Replay them on what you labelled.

The label-efficiency study (``benchmarks/study.py``) answers this on public
datasets; :func:`recommend` answers it on the items you have already
labelled: their labels are hidden, each strategy picks from them batch by
batch from zero labels (the study's cold start) with the same model, and
accuracy is measured on a held-out part of your labels. The strategy that
reaches ``target`` x (accuracy with all replayed labels) with the fewest
labels wins (ties: higher area under the curve).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._validation import UNLABELED, check_embeddings, check_labels

DEFAULT_STRATEGIES = ("random", "coverage", "least_confidence", "margin", "entropy",
                      "uncertainty_diversity", "kcenter", "badge", "auto")


@dataclass
class Recommendation:
    """The outcome of :func:`recommend`.

    Attributes
    ----------
    best : str
        The strategy that needed the fewest labels.
    table : DataFrame
        One row per strategy, best first: ``labels_to_target`` (mean over
        splits; unreached splits count as the whole replay budget),
        ``reached`` (splits that got there), ``auc`` (mean accuracy over the
        curve) and ``saved_vs_random`` (fraction of random's labels saved).
    curves : DataFrame
        The replayed learning curves (see :func:`alwidgets.simulate`).
    message : str
        One sentence for the user.
    """

    best: str
    table: pd.DataFrame
    curves: pd.DataFrame
    message: str

    def __repr__(self) -> str:
        return f"Recommendation(best={self.best!r}): {self.message}"

    def _repr_markdown_(self) -> str:
        lines = ["| strategy | labels to target | reached | AUC | saved vs random |", "|---|---|---|---|---|"]
        for r in self.table.to_dict("records"):
            saved = "—" if pd.isna(r["saved_vs_random"]) else f"{r['saved_vs_random']:+.0%}"
            lines.append(f"| {r['strategy']} | {r['labels_to_target']:.0f} | {r['reached']} | {r['auc']:.1%} | {saved} |")
        return self.message + "\n\n" + "\n".join(lines)


def recommend(source, labels=None, *, strategies=DEFAULT_STRATEGIES, model=None, target: float = 0.9,
              repeats: int = 5, test_size: float = 0.3, min_per_class: int = 4, batch_size: int | None = None,
              random_state: int = 0, progress: bool = False) -> Recommendation:
    """Replay ``strategies`` on the labelled items and report which needed the fewest labels.

    Parameters
    ----------
    source : Session or array (n_items, d)
        A :class:`~alwidgets.Session` (its embeddings, labels and model are
        used), or embeddings with ``labels`` given.
    labels : array of int, optional
        Class per item, ``-1`` = unlabelled (only with embeddings).
    strategies : names or selectors
        What to compare; keep ``"random"`` in to get the savings.
    target : float
        Fraction of the accuracy reached with every replayed label that
        counts as "there" (0.9 = 90%).
    repeats : int
        Random splits of your labels into replay pool and held-out test part.
    min_per_class : int
        Labels each labelled class needs; with fewer, the held-out accuracy
        is meaningless and a ``ValueError`` says which classes are short.
    batch_size : int, optional
        Labels revealed per replay round; default about 1/12 of the replay pool
        (at least one per class).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from alwidgets.recommend import recommend
    >>> X, y = load_digits(return_X_y=True)
    >>> labels = y.copy(); labels[200:] = -1          # only 200 items labelled so far
    >>> rec = recommend(X, labels, strategies=["random", "coverage"], repeats=2)
    >>> rec.best in ("random", "coverage"), list(rec.table.columns)[:2]
    (True, ['strategy', 'labels_to_target'])
    """
    from .simulate import labels_to_target, normalised_auc, saved_vs_reference, simulate

    names = None
    if hasattr(source, "embeddings") and hasattr(source, "labels") and callable(source.labels):
        if labels is not None:
            raise ValueError("labels= is taken from the session; pass embeddings to give your own")
        X, labels, names = source.embeddings, source.labels(), list(source.classes)
        model = source.model if model is None else model
    else:
        if labels is None:
            raise ValueError("give labels= (class per item, -1 = unlabelled) with the embeddings")
        X = source
    X = check_embeddings(X, name="embeddings")
    labels = check_labels(labels, n_items=len(X))
    if not (0.0 < target <= 1.0):
        raise ValueError(f"target must be in (0, 1], got {target}")
    lab = np.flatnonzero(labels != UNLABELED)
    counts = np.bincount(labels[lab], minlength=1)  # [0] when nothing is labelled
    present = np.flatnonzero(counts)
    short = [int(c) for c in present if counts[c] < min_per_class]
    if len(present) < 2 or short:
        def name(c):
            return names[c] if names is not None and c < len(names) else str(c)
        detail = (f"classes {', '.join(f'{name(c)!r} ({counts[c]})' for c in short)} have fewer"
                  if short else f"only {len(present)} class has labels")
        raise ValueError(f"recommend() replays strategies on your labels and needs at least {min_per_class} labels "
                         f"in each of at least 2 classes: {detail}. Label a few more items first.")
    Xl, yl = X[lab], labels[lab]
    n_classes = len(present)
    n_test = max(n_classes, int(math.ceil(test_size * len(lab))))
    n_pool = len(lab) - n_test
    bs = batch_size if batch_size is not None else max(n_classes, int(math.ceil(n_pool / 12)))
    # target_acc=None: only the curves; the target here is relative to each split's full-pool accuracy
    res = simulate(Xl, yl, strategies, model=model, target_acc=None, batch_size=bs, seed_per_class=0, budget=n_pool,
                   repeats=repeats, test_size=n_test / len(lab), random_state=random_state, progress=progress)
    curves = res.curves
    full = res.full_pool.set_index("repeat")["accuracy"]
    rows = []
    for strategy, g in curves.groupby("strategy", sort=False):
        ltt, aucs = [], []
        for r, c in g.groupby("repeat"):
            c = c.sort_values("n_labels")
            ltt.append(labels_to_target(c, target * full[r] - 1e-12))
            aucs.append(normalised_auc(c["n_labels"].to_numpy(float), c["accuracy"].to_numpy(float)))
        ltt = np.array(ltt)
        rows.append({"strategy": strategy,
                     "labels_to_target": float(np.where(np.isnan(ltt), n_pool, ltt).mean()),
                     "reached": f"{int(np.isfinite(ltt).sum())}/{len(ltt)}",
                     "auc": float(np.mean(aucs))})
    table = pd.DataFrame(rows)
    table["saved_vs_random"] = saved_vs_reference(table, "random")
    table = table.sort_values(["labels_to_target", "auc"], ascending=[True, False], ignore_index=True)
    best = str(table["strategy"].iloc[0])
    b = table.iloc[0]
    saved = "" if pd.isna(b["saved_vs_random"]) or best == "random" else \
        f", {b['saved_vs_random']:.0%} fewer than random"
    message = (f"replayed {len(table)} strategies on your {len(lab)} labels ({n_pool} as the pool, {n_test} held out, "
               f"{repeats} splits): {best!r} needed the fewest labels to reach {target:.0%} of the full accuracy "
               f"({full.mean():.0%}): {b['labels_to_target']:.0f}{saved}")
    return Recommendation(best, table, curves, message)
