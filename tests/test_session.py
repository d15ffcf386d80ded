"""Session round trip through the public, headless API: next_batch → submit → store → refit → history."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from alwidgets import Pool
from alwidgets.session import Batch, Session
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


def test_round_trip(pool, X):
    s = Session(pool, embeddings=X, selector="margin", store=":memory:")
    events = {"batch": [], "change": []}
    s.on("batch", events["batch"].append)
    s.on("change", events["change"].append)
    batch = s.next_batch(8)
    assert isinstance(batch, Batch) and len(batch) == 8 and events["batch"] == [batch]
    assert batch.suggestions == [None] * 8 and batch.strategy == "random (cold start)"
    assert "needs probs" in batch.info["cold_start"]
    assert s.progress() == {"pool_labelled": 0, "pool_size": len(pool), "budget": None}

    ids = list(batch)
    labelled = dict(list(truth(s, ids).items())[:6])      # one skipped, one left untouched
    msg = s.submit(labelled, sources={ids[0]: "accepted"}, skipped=[ids[6]], seconds={ids[1]: 2.5})
    assert events["change"] == [msg] and msg.startswith("saved 6 labels · accuracy")
    df = s.labels_df().set_index("item_id")
    assert df["label"].to_dict() == labelled
    assert df.loc[ids[0], "source"] == "accepted" and df.loc[ids[1], "source"] == "human"
    assert df.loc[ids[1], "seconds"] == 2.5 and np.isnan(df.loc[ids[2], "seconds"])
    assert s.model_ is not None and s.probs_.shape == (len(pool), 10)
    assert list(s.batch) == [ids[7]]                       # the untouched item stays in the batch
    assert s.history.empty                                 # the round is open until the batch is done
    s.submit(truth(s, [ids[7]]))
    h = s.history
    assert h[["strategy", "n_labels", "n_added", "accuracy_source"]].values.tolist() == [
        ["random (cold start)", 7, 1, "cv"]]
    assert h["session_id"].tolist() == [s.session_id] and 0 <= h["accuracy_std"][0] <= 1
    assert s.label_counts().sum() == 7 and len(s.batch) == 0

    batch = s.next_batch(8)                                 # now the model suggests
    assert batch.strategy == "margin"
    s.submit(truth(s, batch.ids[:2]), close=True)           # Enter: the other 6 go back, the round ends
    assert len(s.batch) == 0 and len(s.history) == 2 and s.history["n_added"].tolist()[-1] == 2
    assert s.store.lease(batch.ids[2:], session="another") == batch.ids[2:]
    s.store.release(batch.ids[2:], session="another")
    batch = s.next_batch(8)
    assert batch.strategy == "margin"
    assert all(c in s.classes for c in batch.suggestions) and all(0 < c <= 1 for c in batch.confidences)
    assert ids[6] not in batch                              # skipped in this session
    s.submit(truth(s, batch))
    last = batch.ids[-1]
    assert s.undo() == f"retracted the label of {last}"
    assert last not in s.store.current_labels() and s.progress()["pool_labelled"] == 16
    s.close()


def test_accuracy_is_reproducible_and_reports_its_spread(pool, X):
    """Seeded folds: the same labels give the same cross-validated accuracy, with ± over the folds."""
    ids = pool.ids[:40]
    figures = []
    for _ in range(2):
        s = Session(pool, embeddings=X, selector="random", store=":memory:", random_state=3)
        s.import_labels(__import__("pandas").DataFrame({"item_id": ids, "label": list(truth(s, ids).values())}))
        m = s.evaluate()
        figures.append((m["accuracy"], m["accuracy_std"]))
        s.close()
    assert figures[0] == figures[1] and figures[0][1] > 0


def test_submit_only_takes_the_current_batch(pool, X):
    s = Session(pool, embeddings=X, selector="random", store=":memory:")
    batch = s.next_batch(4)
    with pytest.raises(ValueError, match=r"not in the current batch: item ids \['nope'\]"):
        s.submit({"nope": "3", batch.ids[0]: "3"})
    with pytest.raises(ValueError, match=r"unknown class 'eleven'"):
        s.submit({batch.ids[0]: "eleven"})
    with pytest.raises(ValueError, match="not in the current batch"):
        s.submit({}, skipped=["zzz-not-an-id"])
    with pytest.raises(TypeError, match="dict"):
        s.submit([("a", "1")])
    with pytest.raises(TypeError, match="skipped must be a list"):
        s.submit({}, skipped="abc")
    with pytest.raises(ValueError, match="seconds must be finite and >= 0"):    # one seconds rule: the store's
        s.submit(truth(s, batch), seconds={batch.ids[0]: -1.0})
    assert s.store.current_labels() == {}
    s.submit(truth(s, batch))
    with pytest.raises(ValueError, match="not in the current batch"):   # the same batch twice
        s.submit(truth(s, batch))
    assert len(s.labels_df(history=True)) == 4 and len(s.history) == 1
    huge = "x" * 1_000_000
    with pytest.raises(ValueError) as e:
        s.submit({s.next_batch(1).ids[0]: huge})
    assert len(str(e.value)) < 400


def test_skipped_and_test_items_are_never_offered(pool, X):
    small = Pool.from_arrays(pool.arrays[:12], pool.targets[:12], classes=pool.classes)
    held_out = small.ids[:2]
    s = Session(small, embeddings=X[:12], selector="random", store=":memory:", test=held_out)
    ids = list(s.next_batch(8))
    assert not set(ids) & set(held_out)
    s.submit(truth(s, ids[:7]), skipped=[ids[7]])
    rest = s.next_batch(8)
    assert sorted(rest) == sorted(set(small.ids) - set(ids) - set(held_out))
    s.submit(truth(s, rest))
    empty = s.next_batch(8)
    assert len(empty) == 0 and empty.reason == "no more items to offer (1 skipped, 2 held out as test items)"
    assert s.metrics_["source"] == "test" and s.metrics_["n_eval"] == 2


def test_test_set_accuracy_and_calibration(pool, X):
    rng = np.random.default_rng(0)
    test_idx = rng.choice(len(pool), 200, replace=False)
    y_test = [pool.classes[t] for t in pool.targets[test_idx]]
    s = Session(pool, embeddings=X, selector="margin", store=":memory:", test=(X[test_idx], y_test),
                calibration=True)
    s.submit(truth(s, s.next_batch(30)))
    m = s.metrics_
    assert m["source"] == "test" and m["n_eval"] == 200 and 0.3 < m["accuracy"] <= 1
    pred = s.fitted_.eval_predictions.argmax(1)
    codes = np.array([s.classes.index(c) for c in y_test])
    assert m["accuracy"] == pytest.approx(np.mean(pred == codes))
    assert m["per_class"]["0"] == pytest.approx(np.mean(pred[codes == 0] == 0))
    assert sum(m["reliability"]["count"]) == 200 and 0 <= m["ece"] <= 1
    with pytest.raises(ValueError, match=r"rows \[1\] are not classes"):
        Session(pool, embeddings=X, selector="random", store=":memory:", test=(X[:2], ["1", "ten"]))
    with pytest.raises(ValueError, match="features"):
        Session(pool, embeddings=X, selector="random", store=":memory:", test=(X[:2, :5], ["1", "2"]))


def test_default_store_is_a_file_in_the_cwd_and_sessions_resume(pool, X, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Session(pool, embeddings=X, selector="random")
    assert s.store_path == str(tmp_path / "alwidgets-digits.db")
    saved = truth(s, s.next_batch(4))
    s.submit(saved)
    s.close()
    again = Session(pool, embeddings=X, selector="random", store=tmp_path / "alwidgets-digits.db")
    assert again.store.current_labels() == saved
    assert again.history["n_labels"].tolist() == [4] and again.metrics_["n_labels"] == 4
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
    with pytest.raises(ValueError, match="look the same"):
        Session(pool, embeddings=X, store=":memory:", classes=["cat", "Cat"] + [str(i) for i in range(8)])


def test_random_baseline_is_emitted(pool, X):
    small = Pool.from_arrays(pool.arrays[:400], pool.targets[:400], classes=pool.classes)
    s = Session(small, embeddings=X[:400], selector="random", store=":memory:")
    got = []
    s.on("baseline", got.append)
    curves = s.show_baseline(repeats=1, budget=40)
    assert got[0]["n_labels"].tolist() == sorted(curves["n_labels"].unique().tolist())
    assert got[0]["n_labels"].tolist()[-1] == 40
    no_truth = Pool.from_arrays(pool.arrays[:400], classes=pool.classes)
    with pytest.raises(ValueError, match="needs the true class"):
        Session(no_truth, embeddings=X[:400], selector="random", store=":memory:").show_baseline()


def test_a_full_round_imports_no_widget_code():
    code = (
        "import sys\n"
        "from alwidgets import Pool, Session\n"
        "s = Session(Pool.digits(), selector='margin', store=':memory:')\n"
        "for _ in range(2):\n"
        "    b = s.next_batch(8)\n"
        "    s.submit({i: s.classes[s.pool.targets[s.pool.index_of(i)]] for i in b})\n"
        "assert len(s.history) == 2, s.history\n"
        "bad = [m for m in sys.modules if m.startswith(('alwidgets.widgets', 'anywidget', 'ipywidgets'))]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
