"""recommend(): replaying strategies on the user's own labels; Session.recommend/use and the lift note."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets import Pool, Session
from alwidgets.recommend import recommend


def _blobs(n_per=40, seed=0):
    """Three tight, well separated blobs plus a few far, rare items of one class."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + 0.5 * rng.standard_normal((n_per, 2)) for c in centres])
    y = np.repeat(np.arange(3), n_per)
    return X.astype(np.float32), y


def test_recommend_ranks_strategies_and_reports_table(digits):
    X, y = digits
    labels = np.full(len(y), -1)
    labels[:240] = y[:240]
    rec = recommend(X, labels, strategies=["random", "coverage", "margin"], repeats=2)
    assert set(rec.table["strategy"]) == {"random", "coverage", "margin"}
    assert rec.best == rec.table["strategy"].iloc[0]
    # sorted: fewest labels first; every value within the replay budget
    ltt = rec.table["labels_to_target"].to_numpy()
    assert np.all(np.diff(ltt) >= 0)
    n_pool = 240 - int(np.ceil(0.3 * 240))
    assert np.all((ltt > 0) & (ltt <= n_pool))
    # only labelled items were replayed: the curves never exceed the replay pool
    assert rec.curves["n_labels"].max() == n_pool
    assert "fewest labels" in rec.message and rec.best in rec.message
    assert "| strategy |" in rec._repr_markdown_()


def test_recommend_prefers_coverage_on_clustered_data():
    # with one item per blob, coverage reaches full accuracy after its first batch; random often misses a blob
    X, y = _blobs()
    rec = recommend(X, y, strategies=["random", "coverage"], repeats=3, batch_size=3, target=0.99)
    t = rec.table.set_index("strategy")
    assert t.loc["coverage", "labels_to_target"] <= t.loc["random", "labels_to_target"]
    assert t.loc["coverage", "labels_to_target"] == 3


def test_recommend_says_when_labels_are_too_few():
    X, y = _blobs()
    labels = np.full(len(y), -1)
    labels[[0, 1, 2, 3, 40, 41]] = y[[0, 1, 2, 3, 40, 41]]
    with pytest.raises(ValueError, match=r"at least 4 labels in each.*'1' \(2\)"):
        recommend(X, labels)
    with pytest.raises(ValueError, match="only 1 class"):
        recommend(X, np.where(y == 0, 0, -1))
    with pytest.raises(ValueError, match="labels="):
        recommend(X)


def test_session_recommend_use_and_lift_note(tmp_path):
    pool = Pool.digits()
    s = Session(pool, selector="random", store=":memory:", random_state=0)
    for _ in range(4):
        b = s.next_batch(20)
        s.submit({i: pool.classes[pool.targets[pool.index_of(i)]] for i in b})
    rec = s.recommend(strategies=["random", "margin"], repeats=1)
    assert rec is s.recommendation_ and rec.best in ("random", "margin")
    assert s.use("margin") == "next batches are picked by 'margin'"
    assert s.selector.name == "margin"
    s.close()


def test_lift_note_fires_only_for_a_small_lift_beyond_the_noise(monkeypatch):
    import pandas as pd

    s = Session(Pool.digits(), selector="random", store=":memory:")
    hist = pd.DataFrame({"n_added": [10, 10, 10], "accuracy": [0.6, 0.7, 0.705], "accuracy_std": [0.0, 0.0, 0.0],
                         "n_labels": [10, 20, 30]})
    monkeypatch.setattr(type(s), "history", property(lambda self: hist))
    assert s._lift_note() == " · little gain: see session.recommend()"
    hist.loc[2, "accuracy"] = 0.8                           # a real gain: no advice
    assert s._lift_note() == ""
    hist.loc[2, "accuracy"] = 0.6                           # a 10-point drop ...
    hist["accuracy_std"] = [0.08, 0.08, 0.08]                # ... within the noise of the estimate: no advice
    assert s._lift_note() == ""
    hist["accuracy_std"] = [0.01, 0.01, 0.01]                # ... well beyond it: advice
    assert "session.recommend()" in s._lift_note()
    s.close()
