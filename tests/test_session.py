"""Session round trip: select → grid → submit (through the widget's messages) → store → refit → plots."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets import Pool
from alwidgets.session import Session
from alwidgets.store import LabelStore


@pytest.fixture(scope="module")
def pool():
    return Pool.digits()


@pytest.fixture(scope="module")
def X(pool):
    from alwidgets.embed import PixelEmbedder

    return PixelEmbedder().embed(pool)


def truth(session, ids):
    return {i: session.classes[session.pool.targets[session.pool.index_of(i)]] for i in ids}


def send(grid, msg_type, **content):
    """What the browser does: a custom message to the widget."""
    grid._handle_custom_msg({"type": msg_type, **content}, [])


def test_round_trip_through_the_widget(pool, X):
    s = Session(pool, embeddings=X, selector="margin", store=":memory:")
    app = s.label(8)
    grid = app.grid
    assert len(s.batch) == 8 and [it["id"] for it in grid.items] == s.batch
    assert all(len(t) > 100 and t[:2] == b"\xff\xd8" for t in grid.thumbs)  # JPEG bytes
    assert all(it["suggestion"] is None for it in grid.items)                # cold start: no model yet
    assert grid.progress == {"pool_labelled": 0, "pool_size": len(pool), "budget": None}

    ids = list(s.batch)
    first = truth(s, ids)
    labelled = dict(list(first.items())[:6])        # two tiles left unlabelled: one skipped, one untouched
    send(grid, "submit", labels=labelled, sources={ids[0]: "accepted"}, skipped=[ids[6]], seconds={ids[1]: 2.5})
    # recorded in the store, with source and time
    df = s.labels_df().set_index("item_id")
    assert df["label"].to_dict() == labelled
    assert df.loc[ids[0], "source"] == "accepted" and df.loc[ids[1], "source"] == "human"
    assert df.loc[ids[1], "seconds"] == 2.5 and np.isnan(df.loc[ids[2], "seconds"])
    # refit, history, plots
    assert s.model_ is not None and s.probs_.shape == (len(pool), 10)
    h = s.history
    assert h[["strategy", "n_labels", "n_added", "accuracy_source"]].values.tolist() == [
        ["random (cold start)", 6, 6, "cv"]]
    assert app.trace("session").x == (6,) and app.trace("session").y == (h["accuracy"][0],)
    counts = np.bincount([int(v) for v in labelled.values()], minlength=10)
    assert app.trace("balance").y == tuple(counts.tolist())
    assert "cross-validated on 6 labelled items" in app.figure.layout.annotations[0].text
    assert grid.status.startswith("saved 6 labels; accuracy") and grid.items == [] and s.batch == []
    assert grid.progress["pool_labelled"] == 6

    # next round: the model suggests classes, the skipped item is not offered again
    s.label(8)
    assert s.history.shape[0] == 1
    assert all(it["suggestion"] in s.classes and 0 < it["confidence"] <= 1 for it in grid.items)
    assert ids[6] not in s.batch
    send(grid, "submit", labels=truth(s, s.batch))
    assert s.history["strategy"].tolist() == ["random (cold start)", "margin"]
    assert s.history["n_labels"].tolist() == [6, 14]
    assert len(app.trace("session").y) == 2

    # undo from the grid (nothing left to undo in the browser) retracts the last saved label
    last = s._undo[-1]
    send(grid, "undo")
    assert last not in s.store.current_labels() and grid.status == f"retracted the label of {last}"
    assert sum(app.trace("balance").y) == 13
    assert len(s.labels_df(history=True)) == 15     # the history keeps the undo row


def test_continuous_mode_loads_the_next_batch(pool, X):
    s = Session(pool, embeddings=X, selector="random", store=":memory:", budget=12)
    app = s.label(5, continuous=True)
    first = list(s.batch)
    send(app.grid, "submit", labels=truth(s, first))
    assert len(s.batch) == 5 and not set(first) & set(s.batch)
    assert [it["id"] for it in app.grid.items] == s.batch
    send(app.grid, "submit", labels=truth(s, s.batch))
    assert len(s.batch) == 2                        # capped by the budget
    send(app.grid, "submit", labels=truth(s, s.batch))
    assert s.batch == [] and app.grid.items == []   # budget reached: no new batch
    assert s.history["n_labels"].tolist() == [5, 10, 12]


def test_skipped_items_are_not_offered_again(pool, X):
    small = Pool.from_arrays(pool.arrays[:10], pool.targets[:10], classes=pool.classes)
    s = Session(small, embeddings=X[:10], selector="random", store=":memory:")
    s.label(8)
    ids = list(s.batch)
    s.submit(truth(s, ids[:7]), skipped=[ids[7]])
    s.label(8)
    assert sorted(s.batch) == sorted(set(small.ids) - set(ids))   # the two never shown, not the skipped one
    s.submit(truth(s, s.batch))
    s.label(8)
    assert s.batch == [] and s.app.grid.status == "no unskipped items left"
    s.submit({ids[7]: "1"})                                       # a skipped item can still be labelled
    assert s.app.grid.status.startswith("saved 1 labels")
    s.label(8)
    assert s.app.grid.status == "every item is labelled"


def test_submit_validates_before_writing(pool, X):
    s = Session(pool, embeddings=X, selector="random", store=":memory:")
    s.label(4)
    with pytest.raises(ValueError, match=r"item ids \['nope'\]"):
        s.submit({"nope": "3", s.batch[0]: "3"})
    with pytest.raises(ValueError, match=r"unknown classes \['eleven'\]"):
        s.submit({s.batch[0]: "eleven"})
    assert s.store.current_labels() == {}
    send(s.app.grid, "submit", labels={s.batch[0]: "eleven"})
    assert s.app.grid.status.startswith("error: unknown classes") and not s.app.grid.busy
    with pytest.raises(TypeError, match="dict"):
        s.submit([("a", "1")])


def test_test_set_accuracy_and_calibration(pool, X):
    rng = np.random.default_rng(0)
    test_idx = rng.choice(len(pool), 200, replace=False)
    y_test = [pool.classes[t] for t in pool.targets[test_idx]]
    s = Session(pool, embeddings=X, selector="margin", store=":memory:", test=(X[test_idx], y_test),
                calibration=True)
    app = s.label(30)
    s.submit(truth(s, s.batch))
    m = s.metrics_
    assert m["source"] == "test" and m["n_eval"] == 200 and 0.3 < m["accuracy"] <= 1
    pred = s._test_probs.argmax(1)
    codes = np.array([s.classes.index(c) for c in y_test])
    assert m["accuracy"] == pytest.approx(np.mean(pred == codes))
    assert m["per_class"]["0"] == pytest.approx(np.mean(pred[codes == 0] == 0))
    rel = m["reliability"]
    assert sum(rel["count"]) == 200 and 0 <= m["ece"] <= 1
    assert app.trace("reliability").x == tuple(rel["confidence"])
    assert "test set, 200 items" in app.figure.layout.annotations[0].text
    with pytest.raises(ValueError, match=r"rows \[1\] are not classes"):
        Session(pool, embeddings=X, selector="random", store=":memory:", test=(X[:2], ["1", "ten"]))
    with pytest.raises(ValueError, match="features"):
        Session(pool, embeddings=X, selector="random", store=":memory:", test=(X[:2, :5], ["1", "2"]))


def test_default_store_is_a_file_in_the_cwd_and_sessions_resume(pool, X, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Session(pool, embeddings=X, selector="random")
    assert s.store_path == str(tmp_path / "alwidgets-digits.db")
    app = s.label(4)
    assert app.grid.status == f"labels are saved in {tmp_path / 'alwidgets-digits.db'}"
    saved = truth(s, s.batch)
    s.submit(saved)
    s.close()
    again = Session(pool, embeddings=X, selector="random", store=tmp_path / "alwidgets-digits.db")
    assert again.store.current_labels() == saved
    assert again.history["n_labels"].tolist() == [4]
    assert np.count_nonzero(again.labels() >= 0) == 4
    again.close()
    with LabelStore(":memory:") as store:   # a store object is used as given, and not closed by the session
        s2 = Session(pool, embeddings=X, selector="random", store=store)
        s2.close()
        assert store.current_labels() == {}


def test_constructor_errors(pool, X):
    with pytest.raises(TypeError, match="alwidgets.Pool"):
        Session(X, store=":memory:")
    with pytest.raises(ValueError, match="has no class names"):
        Session(Pool.from_arrays(np.zeros((3, 4, 4), np.uint8)), store=":memory:", selector="random")
    with pytest.raises(ValueError, match="3 rows but the pool has 1797"):
        Session(pool, embeddings=X[:3], store=":memory:", selector="random")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        Session(pool, embeddings=X, store=":memory:", selector="nope")


def test_random_baseline_is_drawn(pool, X):
    small = Pool.from_arrays(pool.arrays[:400], pool.targets[:400], classes=pool.classes)
    s = Session(small, embeddings=X[:400], selector="random", store=":memory:")
    s.label(10)
    curves = s.show_baseline(repeats=1, budget=40)
    b = s.app.trace("baseline")
    assert b.visible is True and list(b.x) == sorted(curves["n_labels"].unique().tolist())
    assert list(b.x)[-1] == 40
    no_truth = Pool.from_arrays(pool.arrays[:400], classes=pool.classes)
    with pytest.raises(ValueError, match="needs the true class"):
        Session(no_truth, embeddings=X[:400], selector="random", store=":memory:").show_baseline()
