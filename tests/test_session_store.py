"""The session on its label store: resume, attach by ids, import/export, annotators and leases,
store failures in the grid's submit path, and bad input at the session boundary."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from alwidgets import Pool
from alwidgets.session import Session
from alwidgets.pool import ImageReadError
from alwidgets.store import (
    LABEL_COLUMNS,
    LabelStore,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)

N = 300  # a digits subset keeps every refit and selection fast


@pytest.fixture(scope="module")
def pool():
    full = Pool.digits()
    return Pool.from_arrays(full.arrays[:N], full.targets[:N], classes=full.classes, name="digits300")


@pytest.fixture(scope="module")
def X(pool):
    from alwidgets.embed import PixelEmbedder

    return PixelEmbedder().embed(pool)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "labels.db"


def truth(session, ids):
    return {i: session.classes[session.pool.targets[session.pool.index_of(i)]] for i in ids}


def give(session, ids, annotator=None, **cols):
    """Labels from elsewhere (not a shown batch): through the import path."""
    df = pd.DataFrame({"item_id": list(ids), "label": [truth(session, [i])[i] for i in ids], **cols})
    return session.import_labels(df, annotator=annotator)


# ---------------------------------------------------------------------- resume
def test_resume_in_a_new_session_continues_where_it_stopped(pool, X, db):
    s = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    first = list(s.next_batch(10))
    s.submit(truth(s, first))
    second = list(s.next_batch(10))
    s.submit(truth(s, second[:7]), skipped=second[7:8])
    s.submit({}, skipped=second[8:])
    history, metrics = s.history, s.metrics_
    s.close()

    again = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    assert again.store.current_labels() == {**truth(s, first), **truth(s, second[:7])}
    pd.testing.assert_frame_equal(again.history, history)
    assert again.metrics_["accuracy"] == metrics["accuracy"]
    assert again.metrics_["per_class"] == metrics["per_class"]
    assert again.metrics_["source_text"] == metrics["source_text"] == "cross-validated on 17 labelled items"
    assert again.history["n_labels"].tolist() == [10, 17]     # what the plots draw before anything new
    counts = np.bincount([int(c) for c in again.store.current_labels().values()], minlength=10)
    assert again.label_counts().tolist() == counts.tolist() and again.progress()["pool_labelled"] == 17
    batch = again.next_batch(N)                    # every item not labelled, nothing labelled twice
    assert len(batch) == N - 17 and not set(batch) & set(first + second[:7])
    assert again.model_ is not None and all(c in again.classes for c in batch.suggestions)
    assert batch.strategy == "margin"
    again.close()


@pytest.mark.slow
def test_resume_after_the_kernel_dies(pool, X, db, tmp_path):
    """A real second kernel: a subprocess labels, then dies without closing anything (os._exit)."""
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        from alwidgets import Pool
        from alwidgets.embed import PixelEmbedder
        from alwidgets.session import Session
        full = Pool.digits()
        pool = Pool.from_arrays(full.arrays[:{N}], full.targets[:{N}], classes=full.classes, name="digits300")
        s = Session(pool, embeddings=PixelEmbedder().embed(pool), selector="margin", store={str(db)!r},
                    annotator="ana", lease_ttl=3)
        for _ in range(2):
            b = s.next_batch(6)
            s.submit({{i: s.classes[pool.targets[pool.index_of(i)]] for i in b}})
        b = s.next_batch(6)                          # shown and leased, never labelled
        print(" ".join(b), flush=True)
        os._exit(0)                                 # the kernel dies: no close, no release
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.split()
    assert len(shown) == 6
    with LabelStore(db, read_only=True) as store:
        assert len(store.current_labels()) == 12 and store.check() == []
    # a new kernel of the same user is another session: the dead one's lease holds until it expires
    again = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    assert again.history["n_labels"].tolist()[:2] == [6, 12]
    batch = again.next_batch(N)
    assert not set(batch) & set(shown) and len(batch) == N - 12 - 6
    again.close()
    import time

    time.sleep(3.5)
    later = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    assert set(shown) <= set(later.next_batch(N))  # expired: offered again
    later.close()


# ---------------------------------------------------------------------- attach
def test_a_store_of_another_pool_is_refused_unless_attached_by_ids(pool, X, db):
    a = pool.subset(range(0, 200))
    s = Session(a, embeddings=X[:200], selector="random", store=db)
    s.import_labels(pd.DataFrame({"item_id": [a.ids[0], a.ids[150], a.ids[199]], "label": ["0", "1", "2"]}))
    s.close()
    b = pool.subset(range(100, 300))
    with pytest.raises(StoreMismatchError, match=r"different pool.*100 ids in common.*Session\(\.\.\., attach='ids'\)"):
        Session(b, embeddings=X[100:], selector="random", store=db)
    with pytest.raises(ValueError, match="attach must be 'fingerprint' or 'ids'"):
        Session(b, embeddings=X[100:], selector="random", store=db, attach="names")
    with pytest.warns(UserWarning, match="1 labelled items .* are not in this pool"):
        s = Session(b, embeddings=X[100:], selector="random", store=db, attach="ids")
    assert s.attach_report.matched_by == "ids" and s.attach_report.orphaned == [a.ids[0]]
    assert s.attach_report.n_labelled == 2
    assert s.store.current_labels() == {a.ids[150]: "1", a.ids[199]: "2"}
    assert np.flatnonzero(s.labels() >= 0).tolist() == [50, 99]
    s.close()
    with LabelStore(db) as store:                  # the orphaned label is kept in the history
        assert a.ids[0] in set(store.labels_df(history=True)["item_id"])


# ---------------------------------------------------------------------- import / export
def test_import_labels_validates_reports_and_refreshes(pool, X, db, tmp_path, capsys):
    s = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    changes = []
    s.on("change", changes.append)
    shown = list(s.next_batch(8))
    rows = [(shown[0], s.classes[pool.targets[pool.index_of(shown[0])]], 2.0)]   # an item of the shown batch
    rows += [(i, c, None) for i, c in truth(s, [i for i in pool.ids[100:121] if i != shown[0]][:20]).items()]
    rows += [("ghost", "3", None), (pool.ids[130], "eleven", None), (rows[1][0], "4", None), ("", "1", None)]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["item_id", "label", "seconds"]).to_csv(csv, index=False)
    report = s.import_labels(csv)
    out = capsys.readouterr().out.strip()
    assert out == "imported 21 labels (0 replaced an earlier label), 0 unchanged, 4 rejected (see report.rejected)"
    assert report.accepted == 21 and changes == [out]
    reasons = dict(zip(report.rejected["row"], report.rejected["reason"]))
    assert reasons[21] == "item id not in the pool" and reasons[22].startswith("unknown class")
    assert reasons[23] == "duplicate item id (first at row 1)" and reasons[24] == "missing item_id"
    df = s.labels_df()
    assert list(df.columns) == LABEL_COLUMNS and len(df) == 21 and set(df["source"]) == {"imported"}
    assert set(df["annotator"]) == {"ana"}
    # refit and history include the imported labels; the imported item left the shown batch
    assert s.model_ is not None and s.metrics_["n_labels"] == 21
    assert s.history[["strategy", "n_labels", "n_added"]].values.tolist()[-1] == ["import", 21, 21]
    assert s.label_counts().sum() == 21 and list(s.batch) == shown[1:]
    again = s.import_labels(csv)                    # importing twice adds nothing
    assert again.accepted == 0 and again.unchanged == 21 and len(s.labels_df(history=True)) == 21
    assert "imported 0 labels" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs columns item_id and label"):
        s.import_labels(pd.DataFrame({"id": ["a"], "class": ["1"]}))
    with pytest.raises(FileNotFoundError, match="no such file"):
        s.import_labels(tmp_path / "missing.csv")
    s.close()


def test_exports_round_trip(pool, X, db, tmp_path):
    pytest.importorskip("pyarrow")
    s = Session(pool, embeddings=X, selector="random", store=db, annotator="ana")
    b = s.next_batch(6)
    s.submit(truth(s, b), seconds={b.ids[0]: 1.5}, sources={b.ids[1]: "accepted"})
    s.import_labels(pd.DataFrame({"item_id": [s.pool.ids[299]], "label": ["1"]}))
    s.import_labels(pd.DataFrame({"item_id": [s.pool.ids[299]], "label": ["2"]}))  # a correction: 2 rows
    current = s.labels_df()
    csv, pq, jl = s.to_csv(tmp_path / "l.csv"), s.to_parquet(tmp_path / "l.parquet"), s.to_jsonl(tmp_path / "l.jsonl")
    assert csv == tmp_path / "l.csv" and pq.is_file() and jl.is_file()
    back = pd.read_csv(csv, dtype={"label": str})
    assert list(back.columns) == LABEL_COLUMNS and back["item_id"].tolist() == current["item_id"].tolist()
    assert back["label"].tolist() == current["label"].tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(pq), current, check_dtype=False)  # pandas 3 reads strings as str
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["item_id"] for r in lines] == current["item_id"].tolist() and lines[0]["seconds"] == 1.5
    assert len(s.to_jsonl(tmp_path / "h.jsonl", history=True).read_text().splitlines()) == 8
    assert len(pd.read_csv(s.to_csv(tmp_path / "h.csv", history=True))) == 8
    s.close()
    # a fresh store for the same pool takes the export back
    other = Session(pool, embeddings=X, selector="random", store=tmp_path / "copy.db", annotator="bo")
    rep = other.import_labels(jl)
    assert rep.accepted == 7 and len(rep.rejected) == 0
    assert other.store.current_labels() == dict(zip(current["item_id"], current["label"]))
    other.close()


# ---------------------------------------------------------------------- several sessions
@pytest.mark.parametrize("annotators", [("ana", "bo"), ("ana", "ana")])
def test_two_sessions_on_one_store_get_disjoint_batches_and_every_label_lands_once(pool, X, db, annotators):
    """Two people, or two kernels of one person: leases belong to the session, not the name."""
    # the same random_state: both selectors rank the same items first, so the second is topped up
    ana = Session(pool, embeddings=X, selector="random", store=db, annotator=annotators[0], random_state=0)
    bo = Session(pool, embeddings=X, selector="random", store=db, annotator=annotators[1], random_state=0)
    a_first, b_first = list(ana.next_batch(8)), list(bo.next_batch(8))
    assert len(a_first) == len(b_first) == 8 and not set(a_first) & set(b_first)
    assert bo.store.lease(a_first, session=bo.session_id) == []     # ana's batch is reserved for her session
    bo.submit(truth(bo, b_first))
    ana.submit(truth(ana, a_first[:5]), skipped=a_first[5:6])
    ana.submit({}, skipped=a_first[6:])
    # ana's unlabelled and skipped items were given back: bo may get them
    assert sorted(bo.store.lease(a_first[5:], session="probe")) == sorted(a_first[5:])
    bo.store.release(a_first[5:], session="probe")
    for _ in range(3):
        a, b = ana.next_batch(8), bo.next_batch(8)
        assert not set(a) & set(b)
        assert not (set(a) | set(b)) & set(ana.store.current_labels())
        ana.submit(truth(ana, a))
        bo.submit(truth(bo, b))
    hist = ana.labels_df(history=True)
    assert len(hist) == 5 + 8 + 3 * 16 and hist["item_id"].is_unique    # no item labelled twice
    assert len(ana.labels_df()) == len(bo.labels_df()) == 61
    # undo retracts only what this session wrote
    assert ana.undo().startswith("retracted") and len(bo.labels_df()) == 60
    last_of_ana = ana._undo[-1]
    ana.store.add_labels([{"item_id": last_of_ana, "label": "0", "annotator": "bo"}])   # someone relabels it
    assert ana.undo() == f"{last_of_ana} was relabelled by another session; its label stays"
    assert ana.store.current_labels()[last_of_ana] == "0"
    shown = list(ana.next_batch(8))                 # closing gives the shown batch back
    ana.close()
    assert sorted(bo.store.lease(shown, session=bo.session_id)) == sorted(shown)
    bo.close()


def test_annotators_time_per_label_and_kappa_on_items_labelled_twice(pool, X, db):
    from sklearn.metrics import cohen_kappa_score

    ana = Session(pool, embeddings=X, selector="random", store=db, annotator="ana")
    bo = Session(pool, embeddings=X, selector="random", store=db, annotator="bo")
    ids = pool.ids[:40]
    a = {i: str(k % 3) for k, i in enumerate(ids)}
    b = {i: (str(k % 3) if k % 5 else str((k + 1) % 3)) for k, i in enumerate(ids)}
    ana.store.add_labels([{"item_id": i, "label": v, "seconds": 2.0, "annotator": "ana"} for i, v in a.items()])
    bo.store.add_labels([{"item_id": i, "label": v, "seconds": 4.0 if k < 20 else None, "annotator": "bo"}
                         for k, (i, v) in enumerate(b.items())])       # a second opinion on the same items
    who = bo.annotators()
    assert who.loc["ana", "n_labels"] == 40 and who.loc["bo", "n_labels"] == 40
    assert who.loc["ana", "seconds_per_label"] == 2.0 and who.loc["bo", "seconds_per_label"] == 4.0
    expected = cohen_kappa_score([a[i] for i in ids], [b[i] for i in ids])
    assert who.loc["ana", "kappa_bo"] == pytest.approx(expected) and who.loc["bo", "kappa_ana"] == pytest.approx(expected)
    assert 0 < expected < 1
    ana.close()
    bo.close()


@pytest.mark.slow
@pytest.mark.parametrize("child_annotator", ["child", "parent"])
def test_two_processes_label_one_store_without_duplicates(pool, X, db, child_annotator):
    """Two kernels (a spawned subprocess and this one), also of the same user, label concurrently."""
    script = textwrap.dedent(f"""
        import time
        from alwidgets import Pool
        from alwidgets.embed import PixelEmbedder
        from alwidgets.session import Session
        full = Pool.digits()
        pool = Pool.from_arrays(full.arrays[:{N}], full.targets[:{N}], classes=full.classes, name="digits300")
        s = Session(pool, embeddings=PixelEmbedder().embed(pool), selector="random", store={str(db)!r},
                    annotator={child_annotator!r}, random_state=0)
        print("READY", flush=True)
        for _ in range(12):
            b = s.next_batch(5)
            time.sleep(0.05)
            s.submit({{i: s.classes[pool.targets[pool.index_of(i)]] for i in b}})
        s.close()
    """)
    me = Session(pool, embeddings=X, selector="random", store=db, annotator="parent", random_state=0)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "READY"
    for _ in range(12):
        b = me.next_batch(5)
        me.submit(truth(me, b))
    assert child.wait(timeout=300) == 0
    hist = me.labels_df(history=True)
    assert len(hist) == 120 and hist["item_id"].is_unique
    assert me.store.check() == []
    me.close()


# ---------------------------------------------------------------------- store failures on submit
def _assert_refused(s, batch, before, error, match):
    with pytest.raises(error) as e:
        s.submit(truth(s, batch))
    assert match in str(e.value), str(e.value)
    assert "nothing from this call was written" in str(e.value) or "rolled back" in str(e.value)
    assert list(s.batch) == batch                                         # kept, not saved
    assert s.store.current_labels() == before                             # nothing lost, nothing added


def test_locked_store_refuses_and_keeps_the_batch(pool, X, db):
    store = LabelStore(db, annotator="ana", timeout=0.1)
    s = Session(pool, embeddings=X, selector="random", store=store)
    give(s, pool.ids[:3])
    before = s.store.current_labels()
    batch = list(s.next_batch(6))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        _assert_refused(s, batch, before, StoreLockedError, "is locked by another writer")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.submit(truth(s, batch)).startswith("saved 6 labels") and len(s.batch) == 0   # the retry saves them
    assert s.store.current_labels() == {**before, **truth(s, batch)}
    s.close()
    store.close()


def test_read_only_store_refuses_and_keeps_the_batch(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    give(s, pool.ids[:3])
    before = s.store.current_labels()
    batch = list(s.next_batch(6))
    conn = s.store._connection()
    conn.execute("PRAGMA query_only = ON")           # tests run as root, which ignores chmod
    _assert_refused(s, batch, before, StoreReadOnlyError, "is read-only")
    conn.execute("PRAGMA query_only = OFF")
    s.submit(truth(s, batch))
    assert len(s.store.current_labels()) == 9
    s.close()
    with LabelStore(db, read_only=True) as ro:       # a read-only store can be viewed, not labelled
        viewer = Session(pool, embeddings=X, selector="random", store=ro)
        assert len(viewer.labels_df()) == 9 and viewer.history["n_labels"].tolist() == [3, 9]
        with pytest.raises(StoreReadOnlyError, match="read-only.*nothing from this call was written"):
            viewer.next_batch(4)
        assert len(viewer.labels_df(history=True)) == 9


def test_full_disk_refuses_and_keeps_earlier_labels(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    give(s, pool.ids[:3])
    before = s.store.current_labels()
    batch = list(s.next_batch(N))                    # a big batch: its rows cannot fit in free space
    conn = s.store._connection()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    _assert_refused(s, batch, before, StoreError, "is full")
    assert s.store.check() == []
    conn.execute("PRAGMA max_page_count = 1073741823")
    s.submit(truth(s, batch))
    assert len(s.store.current_labels()) == N
    s.close()


def test_a_failure_after_the_commit_never_offers_saved_labels_again(pool, X, db, monkeypatch):
    s = Session(pool, embeddings=X, selector="random", store=db)
    batch = list(s.next_batch(6))

    def locked(*a, **k):
        raise StoreLockedError("finishing a round: the label store is locked", str(db))

    monkeypatch.setattr(s.store, "finish_round", locked)
    with pytest.raises(RuntimeError, match=r"saved 6 labels \(they are in the store\), but then StoreLockedError"):
        s.submit(truth(s, batch))
    assert len(s.batch) == 0 and s.store.current_labels() == truth(s, batch)
    monkeypatch.undo()
    assert not set(s.next_batch(N)) & set(batch)
    s.close()


def test_undo_that_cannot_be_written_can_be_retried(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    batch = list(s.next_batch(6))
    s.submit(truth(s, batch))
    conn = s.store._connection()
    conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreReadOnlyError, match="read-only"):
        s.undo()
    assert batch[-1] in s.store.current_labels()
    conn.execute("PRAGMA query_only = OFF")
    assert s.undo() == f"retracted the label of {batch[-1]}"   # still on the undo stack
    assert batch[-1] not in s.store.current_labels()
    s.close()


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("classes, error, match", [
    (["a", ""], ValueError, "empty or holds invisible"),
    (["a", "  "], ValueError, "empty or holds invisible"),
    (["a", "b", "a"], ValueError, "class name 'a' is given twice"),
    ([], ValueError, "has no class names"),
    (["a", None], ValueError, r"must be strings \(or integers\); got None"),
    ("cat", TypeError, "single string"),
])
def test_bad_class_names_are_refused_and_nothing_is_written(pool, X, db, classes, error, match):
    with pytest.raises(error, match=match):
        Session(pool, classes=classes, embeddings=X, selector="random", store=db)
    assert not db.exists()


def test_bad_embeddings_are_refused_naming_rows_and_nothing_is_written(pool, X, db):
    bad = X.copy()
    bad[[3, 7]] = np.nan
    bad[11, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[3, 7, 11\]"):
        Session(pool, embeddings=bad, selector="random", store=db)
    with pytest.raises(ValueError, match=f"embeddings has {N - 1} rows but the pool has {N} items"):
        Session(pool, embeddings=X[:-1], selector="random", store=db)

    class Broken:
        def embed(self, p):
            return X[:10]

    with pytest.raises(ValueError, match=f"10 rows but the pool has {N} items"):
        Session(pool, embedder=Broken(), selector="random", store=db)
    assert not db.exists()


def test_unknown_classes_and_ids_are_refused_and_nothing_is_written(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    b = s.next_batch(2)
    s.submit({b.ids[0]: s.classes[0]})
    before = s.labels_df(history=True)
    with pytest.raises(ValueError, match=r"not in the current batch: item ids \['nope'\]"):
        s.submit({b.ids[1]: "1", "nope": "1"})
    with pytest.raises(ValueError, match=r"unknown class 'cat'"):
        s.submit({b.ids[1]: "cat"})
    with pytest.raises(ValueError, match=r"unknown class ''"):
        s.submit({b.ids[1]: ""})
    pd.testing.assert_frame_equal(s.labels_df(history=True), before)
    s.close()
    # a store made with other classes refuses this session's classes
    with pytest.raises(StoreMismatchError, match="never renamed or removed"):
        Session(pool, classes=[str(k) for k in range(9)], embeddings=X, selector="random", store=db)


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


def test_images_broken_after_the_pool_was_built_are_recorded_and_not_offered_again(folder, tmp_path):
    pool = Pool.from_folder(folder)
    X = np.random.default_rng(0).normal(size=(len(pool), 4)).astype(np.float32)
    (folder / "cat" / "1.png").unlink()                         # deleted after the pool was built
    data = (folder / "dog" / "2.png").read_bytes()
    (folder / "dog" / "2.png").write_bytes(data[:60])          # header intact, pixels cut off
    s = Session(pool, embeddings=X, selector="random", store=tmp_path / "l.db")
    batch = s.next_batch(10)
    assert len(batch) == 10
    for bad, why in (("cat/1.png", "No such file"), ("dog/2.png", "truncated")):
        with pytest.raises(ImageReadError, match=why):
            s.thumbnail(bad)
        assert why in pool.errors[bad]
    assert s.thumbnail("cat/0.png")[0][:4] == b"\xff\xd8\xff\xe0" and s.caption("cat/0.png") == "cat/0.png"
    s.submit(truth(s, [i for i in batch if i not in pool.errors]))
    empty = s.next_batch(10)
    assert len(empty) == 0 and "2 unreadable" in empty.reason       # never offered again
    s.close()


def test_files_flagged_when_the_pool_was_built_are_never_offered(folder, tmp_path):
    (folder / "dog" / "3.png").write_bytes(b"")
    pool = Pool.from_folder(folder, on_error="skip")
    assert pool.errors == {"dog/3.png": "zero-byte file"}
    X = np.random.default_rng(0).normal(size=(len(pool), 4)).astype(np.float32)
    s = Session(pool, embeddings=X, selector="random", store=tmp_path / "l.db")
    assert sorted(s.next_batch(10)) == sorted(set(pool.ids) - {"dog/3.png"})
    s.close()
