"""Agreement between annotators: Cohen's kappa (the package's one implementation) and per-annotator tables.

:func:`cohen_kappa` is also what :func:`alwidgets.stopping.agreement_kappa` uses to
compare consecutive rounds' predictions.
"""
from __future__ import annotations

import numpy as np


def cohen_kappa(a, b) -> float:
    """Cohen's kappa between two equally long label vectors: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the fraction of equal pairs, ``p_e`` the agreement expected by
    chance from each side's class frequencies. NaN when undefined: no pairs, or
    both sides use one and the same class (``p_e = 1``).

    >>> cohen_kappa(["cat", "dog", "dog", "cat"], ["cat", "dog", "cat", "cat"])
    0.5
    >>> cohen_kappa([1, 1], [1, 1])
    nan
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"cohen_kappa needs two 1-d label vectors of one length, got shapes {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return float("nan")
    _, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = codes[:n], codes[n:]
    k = int(codes.max()) + 1
    p_o = float(np.mean(ia == ib))
    p_e = float(np.dot(np.bincount(ia, minlength=k), np.bincount(ib, minlength=k))) / n**2
    if p_e >= 1.0:
        return float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def _latest(history):
    """Every annotator's latest label per item (their undone ones dropped), from ``labels_df(history=True)``."""
    last = history.sort_values("label_id").groupby(["annotator", "item_id"], sort=False).tail(1)
    return last[last["label"].notna()][["annotator", "item_id", "label"]]


def _pairs(history, latest):
    import pandas as pd

    names = sorted(history["annotator"].unique())
    out = []
    for k, a in enumerate(names):
        la = latest[latest.annotator == a].set_index("item_id")["label"]
        for b in names[k + 1:]:
            lb = latest[latest.annotator == b].set_index("item_id")["label"]
            both = la.index.intersection(lb.index)
            ya, yb = la.loc[both].to_numpy(), lb.loc[both].to_numpy()
            out.append((a, b, len(both), float(np.mean(ya == yb)) if len(both) else np.nan, cohen_kappa(ya, yb)))
    return pd.DataFrame(out, columns=["annotator_a", "annotator_b", "n_items", "agreement", "kappa"])


def agreement(store):
    """Pairwise agreement between the annotators of ``store`` (a :class:`~alwidgets.store.LabelStore`).

    Columns ``annotator_a, annotator_b, n_items`` (items both labelled, by their
    latest label), ``agreement`` (fraction equal) and ``kappa`` (:func:`cohen_kappa`).

    >>> from alwidgets.store import LabelStore
    >>> with LabelStore(":memory:") as s:
    ...     _ = s.attach_pool(["a", "b", "c"], ["x", "y"])
    ...     _ = s.add_labels([{"item_id": i, "label": c, "annotator": "ana"} for i, c in zip("abc", "xyy")])
    ...     _ = s.add_labels([{"item_id": i, "label": c, "annotator": "bo"} for i, c in zip("abc", "xyx")])
    ...     agreement(s).round(3)[["annotator_a", "annotator_b", "n_items", "agreement", "kappa"]].values.tolist()
    [['ana', 'bo', 3, 0.667, 0.4]]
    """
    history = store.labels_df(history=True)
    return _pairs(history, _latest(history))


def annotators(store):
    """Per annotator of ``store``: ``n_labels`` (label rows written), ``n_items`` (items they currently
    label), ``seconds_per_label``, ``total_seconds`` and one ``kappa_<other>`` column per other annotator
    (Cohen's kappa on items both labelled; see :func:`agreement`)."""
    import pandas as pd

    history = store.labels_df(history=True)
    names = sorted(history["annotator"].unique())
    grouped = history.groupby("annotator")
    df = pd.DataFrame(index=pd.Index(names, name="annotator"))
    df["n_labels"] = grouped["source"].apply(lambda s: int((s != "undo").sum())).reindex(names, fill_value=0)
    latest = _latest(history)
    df["n_items"] = latest.groupby("annotator").size().reindex(names, fill_value=0)
    df["seconds_per_label"] = grouped["seconds"].mean().reindex(names)
    df["total_seconds"] = grouped["seconds"].sum(min_count=0).reindex(names, fill_value=0.0)
    df["n_labels"] = df["n_labels"].astype("int64")
    df["n_items"] = df["n_items"].astype("int64")
    df["seconds_per_label"] = df["seconds_per_label"].astype("float64")
    df["total_seconds"] = df["total_seconds"].astype("float64")
    pairs = _pairs(history, latest)
    for name in names:
        col = pd.Series(float("nan"), index=df.index)
        for r in pairs.itertuples():
            if r.annotator_a == name:
                col[r.annotator_b] = r.kappa
            elif r.annotator_b == name:
                col[r.annotator_a] = r.kappa
        df[f"kappa_{name}"] = col
    return df
