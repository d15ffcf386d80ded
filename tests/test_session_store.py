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
from alwidgets.store import (
    LABEL_COLUMNS,
    LabelStore,
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


def send(grid, msg_type, **content):
    """What the browser does: a custom message to the widget."""
    grid._handle_custom_msg({"type": msg_type, **content}, [])


# ---------------------------------------------------------------------- resume
def test_resume_in_a_new_session_continues_where_it_stopped(pool, X, db):
    s = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    s.label(10)
    first = list(s.batch)
    s.submit(truth(s, first))
    s.label(10)
    second = list(s.batch)
    s.submit(truth(s, second[:7]), skipped=second[7:8])
    history, metrics = s.history, s.metrics_
    s.close()

    again = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    assert again.store.current_labels() == {**truth(s, first), **truth(s, second[:7])}
    pd.testing.assert_frame_equal(again.history, history)
    assert again.metrics_["accuracy"] == metrics["accuracy"]
    assert again.metrics_["per_class"] == metrics["per_class"]
    assert again.metrics_["source_text"] == metrics["source_text"] == "cross-validated on 17 labelled items"
    app = again.app                                # plots come back before anything new is labelled
    assert list(app.trace("session").x) == [10, 17]
    assert list(app.trace("session").y) == history["accuracy"].tolist()
    counts = np.bincount([int(c) for c in again.store.current_labels().values()], minlength=10)
    assert list(app.trace("balance").y) == counts.tolist()
    assert list(app.trace("per_class").y) == [metrics["per_class"][c] for c in again.classes]
    assert app.grid.progress["pool_labelled"] == 17
    again.label(N)                                 # every item not labelled, nothing labelled twice
    assert len(again.batch) == N - 17 and not set(again.batch) & set(first + second[:7])
    assert again.model_ is not None and all(it["suggestion"] in again.classes for it in app.grid.items)
    assert again.history["strategy"].tolist()[-1] == "margin"
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
                    annotator="ana")
        for _ in range(2):
            s.label(6)
            s.submit({{i: s.classes[pool.targets[pool.index_of(i)]] for i in s.batch}})
        s.label(6)                                  # shown and leased, never labelled
        print(" ".join(s.batch), flush=True)
        os._exit(0)                                 # the kernel dies: no close, no release
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.split()
    assert len(shown) == 6
    with LabelStore(db, read_only=True) as store:
        assert len(store.current_labels()) == 12 and store.check() == []
    other = Session(pool, embeddings=X, selector="margin", store=db, annotator="bo", lease_ttl=60)
    other.label(N)                                  # the dead kernel's batch is still leased to ana
    assert not set(other.batch) & set(shown) and len(other.batch) == N - 12 - 6
    other.close()
    again = Session(pool, embeddings=X, selector="margin", store=db, annotator="ana")
    assert again.history["n_labels"].tolist()[:2] == [6, 12]
    again.label(N)                                  # ana gets her own leased items back
    assert set(shown) <= set(again.batch) and len(again.batch) == N - 12
    again.close()


# ---------------------------------------------------------------------- attach
def test_a_store_of_another_pool_is_refused_unless_attached_by_ids(pool, X, db):
    a = pool.subset(range(0, 200))
    s = Session(a, embeddings=X[:200], selector="random", store=db)
    s.submit({a.ids[0]: "0", a.ids[150]: "1", a.ids[199]: "2"})
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
    app = s.label(8)
    shown = list(s.batch)
    rows = [(shown[0], s.classes[pool.targets[0]], 2.0)]                 # an item of the shown batch
    rows += [(i, c, None) for i, c in truth(s, pool.ids[100:120]).items()]
    rows += [("ghost", "3", None), (pool.ids[130], "eleven", None), (pool.ids[100], "4", None), ("", "1", None)]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["item_id", "label", "seconds"]).to_csv(csv, index=False)
    report = s.import_labels(csv)
    out = capsys.readouterr().out.strip()
    assert out == "imported 21 labels (0 replaced an earlier label), 0 unchanged, 4 rejected (see report.rejected)"
    assert report.accepted == 21
    reasons = dict(zip(report.rejected["row"], report.rejected["reason"]))
    assert reasons[21] == "item id not in the pool" and reasons[22].startswith("unknown class")
    assert reasons[23] == "duplicate item id (first at row 1)" and reasons[24] == "missing item_id"
    df = s.labels_df()
    assert list(df.columns) == LABEL_COLUMNS and len(df) == 21 and set(df["source"]) == {"imported"}
    assert set(df["annotator"]) == {"ana"}
    # refit, history and plots include the imported labels; the imported item left the shown batch
    assert s.model_ is not None and s.metrics_["n_labels"] == 21
    assert s.history[["strategy", "n_labels", "n_added"]].values.tolist()[-1] == ["import", 21, 21]
    assert list(app.trace("session").x)[-1] == 21 and sum(app.trace("balance").y) == 21
    assert s.batch == shown[1:] and [it["id"] for it in app.grid.items] == shown[1:]
    assert len(app.grid.thumbs) == 7
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
    s.label(6)
    s.submit(truth(s, s.batch), seconds={s.batch[0]: 1.5}, sources={s.batch[1]: "accepted"})
    s.submit({s.pool.ids[299]: "1"})
    s.submit({s.pool.ids[299]: "2"})               # a correction: two rows in the history
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


# ---------------------------------------------------------------------- several annotators
def test_two_annotators_on_one_store_get_disjoint_batches_and_every_label_lands_once(pool, X, db):
    # the same random_state: both selectors rank the same items first, so bo must be topped up
    ana = Session(pool, embeddings=X, selector="random", store=db, annotator="ana", random_state=0)
    bo = Session(pool, embeddings=X, selector="random", store=db, annotator="bo", random_state=0)
    ana.label(8)
    bo.label(8)
    assert len(ana.batch) == len(bo.batch) == 8 and not set(ana.batch) & set(bo.batch)
    assert bo.store.lease(ana.batch, "bo") == []   # ana's batch is reserved for her
    a_first, b_first = list(ana.batch), list(bo.batch)
    send(bo.app.grid, "submit", labels=truth(bo, b_first))
    send(ana.app.grid, "submit", labels=truth(ana, a_first[:5]), skipped=a_first[5:6])
    # ana's unlabelled and skipped items were given back: bo may get them
    assert sorted(bo.store.lease(a_first[5:], "bo")) == sorted(a_first[5:])
    bo.store.release(a_first[5:], "bo")
    for _ in range(3):
        ana.label(8)
        bo.label(8)
        assert not set(ana.batch) & set(bo.batch)
        assert not (set(ana.batch) | set(bo.batch)) & set(ana.store.current_labels())
        send(ana.app.grid, "submit", labels=truth(ana, ana.batch))
        send(bo.app.grid, "submit", labels=truth(bo, bo.batch))
    hist = ana.labels_df(history=True)
    assert len(hist) == 5 + 8 + 3 * 16 and hist["item_id"].is_unique    # no item labelled twice
    assert len(ana.labels_df()) == len(bo.labels_df()) == 61
    who = ana.annotators()
    assert who.loc["ana", "n_labels"] == 5 + 24 and who.loc["bo", "n_labels"] == 8 + 24
    # closing gives the shown batch back
    ana.label(8)
    shown = list(ana.batch)
    ana.close()
    assert sorted(bo.store.lease(shown, "bo")) == sorted(shown)
    bo.close()


def test_annotators_time_per_label_and_kappa_on_items_labelled_twice(pool, X, db):
    from sklearn.metrics import cohen_kappa_score

    ana = Session(pool, embeddings=X, selector="random", store=db, annotator="ana")
    bo = Session(pool, embeddings=X, selector="random", store=db, annotator="bo")
    ids = pool.ids[:40]
    a = {i: str(k % 3) for k, i in enumerate(ids)}
    b = {i: (str(k % 3) if k % 5 else str((k + 1) % 3)) for k, i in enumerate(ids)}
    ana.submit(a, seconds={i: 2.0 for i in ids})
    bo.submit(b, seconds={i: 4.0 for i in ids[:20]})        # a second opinion on the same items
    who = bo.annotators()
    assert who.loc["ana", "n_labels"] == 40 and who.loc["bo", "n_labels"] == 40
    assert who.loc["ana", "seconds_per_label"] == 2.0 and who.loc["bo", "seconds_per_label"] == 4.0
    expected = cohen_kappa_score([a[i] for i in ids], [b[i] for i in ids])
    assert who.loc["ana", "kappa_bo"] == pytest.approx(expected) and who.loc["bo", "kappa_ana"] == pytest.approx(expected)
    assert 0 < expected < 1
    ana.close()
    bo.close()


@pytest.mark.slow
def test_two_processes_label_one_store_without_duplicates(pool, X, db):
    """Two kernels (a spawned subprocess and this one) label the same pool concurrently."""
    script = textwrap.dedent(f"""
        from alwidgets import Pool
        from alwidgets.embed import PixelEmbedder
        from alwidgets.session import Session
        full = Pool.digits()
        pool = Pool.from_arrays(full.arrays[:{N}], full.targets[:{N}], classes=full.classes, name="digits300")
        s = Session(pool, embeddings=PixelEmbedder().embed(pool), selector="random", store={str(db)!r},
                    annotator="child", random_state=0)
        print("READY", flush=True)
        for _ in range(12):
            s.label(5)
            s.submit({{i: s.classes[pool.targets[pool.index_of(i)]] for i in s.batch}})
        s.close()
    """)
    me = Session(pool, embeddings=X, selector="random", store=db, annotator="parent", random_state=0)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "READY"
    for _ in range(12):
        me.label(5)
        me.submit(truth(me, me.batch))
    assert child.wait(timeout=300) == 0
    hist = me.labels_df(history=True)
    assert len(hist) == 120 and hist["item_id"].is_unique
    assert hist.groupby("annotator").size().to_dict() == {"child": 60, "parent": 60}
    assert me.store.check() == []
    me.close()


# ---------------------------------------------------------------------- store failures in the grid
def _shown(s):
    s.label(6)
    return list(s.batch)


def _assert_refused(s, batch, before, match):
    grid = s.app.grid
    send(grid, "submit", labels=truth(s, batch))
    assert grid.status.startswith("error: ") and match in grid.status, grid.status
    assert "nothing from this call was written" in grid.status or "rolled back" in grid.status
    assert not grid.busy
    assert [it["id"] for it in grid.items] == batch and s.batch == batch   # tiles stay, not saved
    assert s.store.current_labels() == before                             # nothing lost, nothing added


def test_locked_store_shows_the_error_and_keeps_the_batch(pool, X, db):
    store = LabelStore(db, annotator="ana", timeout=0.1)
    s = Session(pool, embeddings=X, selector="random", store=store)
    s.submit(truth(s, pool.ids[:3]))
    before = s.store.current_labels()
    batch = _shown(s)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        _assert_refused(s, batch, before, "is locked by another writer")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    send(s.app.grid, "submit", labels=truth(s, batch))   # the retry saves them
    assert s.app.grid.status.startswith("saved 6 labels") and s.app.grid.items == []
    assert s.store.current_labels() == {**before, **truth(s, batch)}
    s.close()
    store.close()


def test_read_only_store_shows_the_error_and_keeps_the_batch(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    s.submit(truth(s, pool.ids[:3]))
    before = s.store.current_labels()
    batch = _shown(s)
    conn = s.store._connection()
    conn.execute("PRAGMA query_only = ON")           # tests run as root, which ignores chmod
    _assert_refused(s, batch, before, "is read-only")
    conn.execute("PRAGMA query_only = OFF")
    send(s.app.grid, "submit", labels=truth(s, batch))
    assert len(s.store.current_labels()) == 9
    s.close()
    with LabelStore(db, read_only=True) as ro:       # a read-only store can be viewed, not labelled
        viewer = Session(pool, embeddings=X, selector="random", store=ro)
        assert len(viewer.labels_df()) == 9 and viewer.history["n_labels"].tolist() == [3, 9]
        with pytest.raises(StoreReadOnlyError, match="read-only.*nothing from this call was written"):
            viewer.label(4)
        assert len(viewer.labels_df(history=True)) == 9


def test_full_disk_shows_the_error_and_keeps_earlier_labels(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    s.submit(truth(s, pool.ids[:3]))
    before = s.store.current_labels()
    s.label(N)                                       # a big batch: its rows cannot fit in free space
    batch = list(s.batch)
    conn = s.store._connection()
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    _assert_refused(s, batch, before, "is full")
    assert s.store.check() == []
    conn.execute("PRAGMA max_page_count = 1073741823")
    send(s.app.grid, "submit", labels=truth(s, batch))
    assert len(s.store.current_labels()) == N
    s.close()


def test_a_failure_after_the_commit_never_offers_saved_labels_again(pool, X, db, monkeypatch):
    s = Session(pool, embeddings=X, selector="random", store=db)
    batch = _shown(s)

    def locked(*a, **k):
        raise StoreLockedError("finishing a round: the label store is locked", str(db))

    monkeypatch.setattr(s.store, "finish_round", locked)
    send(s.app.grid, "submit", labels=truth(s, batch))
    assert s.app.grid.status.startswith("error: saved 6 labels (they are in the store), but then StoreLockedError")
    assert s.app.grid.items == [] and s.batch == []
    assert s.store.current_labels() == truth(s, batch)
    s.close()


def test_undo_that_cannot_be_written_can_be_retried(pool, X, db):
    s = Session(pool, embeddings=X, selector="random", store=db)
    batch = _shown(s)
    send(s.app.grid, "submit", labels=truth(s, batch))
    conn = s.store._connection()
    conn.execute("PRAGMA query_only = ON")
    send(s.app.grid, "undo")
    assert s.app.grid.status.startswith("error: ") and "read-only" in s.app.grid.status
    assert batch[-1] in s.store.current_labels()
    conn.execute("PRAGMA query_only = OFF")
    send(s.app.grid, "undo")                          # still on the undo stack
    assert s.app.grid.status == f"retracted the label of {batch[-1]}"
    assert batch[-1] not in s.store.current_labels()
    s.close()


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("classes, error, match", [
    (["a", ""], ValueError, "non-empty strings"),
    (["a", "  "], ValueError, "non-empty strings"),
    (["a", "b", "a"], ValueError, r"duplicate class names \['a'\]"),
    ([], ValueError, "has no class names"),
    (["a", None], ValueError, r"must be strings .*\[None\]"),
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
    s.submit({pool.ids[0]: "0"})
    before = s.labels_df(history=True)
    with pytest.raises(ValueError, match=r"not in pool digits300: item ids \['nope'\]"):
        s.submit({pool.ids[1]: "1", "nope": "1"})
    with pytest.raises(ValueError, match=r"unknown classes \['cat'\]"):
        s.submit({pool.ids[1]: "cat"})
    with pytest.raises(ValueError, match=r"unknown classes \[''\]"):
        s.submit({pool.ids[1]: ""})
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


def test_images_broken_at_display_time_show_a_placeholder_and_are_not_offered_again(folder, tmp_path):
    pool = Pool.from_folder(folder)
    X = np.random.default_rng(0).normal(size=(len(pool), 4)).astype(np.float32)
    (folder / "cat" / "1.png").unlink()                         # deleted after the pool was built
    data = (folder / "dog" / "2.png").read_bytes()
    (folder / "dog" / "2.png").write_bytes(data[:60])          # header intact, pixels cut off
    s = Session(pool, embeddings=X, selector="random", store=tmp_path / "l.db")
    app = s.label(10)                                           # the grid is shown, not a traceback
    items = {it["id"]: (it, t) for it, t in zip(app.grid.items, app.grid.thumbs)}
    assert len(items) == 10
    for bad in ("cat/1.png", "dog/2.png"):
        it, thumb = items[bad]
        assert it["error"] and it["error"] == pool.errors[bad]
        assert thumb != items["cat/0.png"][1]                   # not the image of another item
    assert items["cat/0.png"][0]["error"] is None and items["cat/0.png"][1][:4] == b"\xff\xd8\xff\xe0"
    assert app.grid.status.startswith("error: 2 image(s) could not be read and show a placeholder: ")
    assert "cat/1.png ([Errno 2] No such file" in app.grid.status and "dog/2.png (image file is truncated)" in app.grid.status
    s.submit(truth(s, [i for i in s.batch if i not in pool.errors]))
    s.label(10)
    assert s.batch == [] and "2 unreadable" in app.grid.status  # never offered again
    s.close()


def test_files_flagged_when_the_pool_was_built_are_never_offered(folder, tmp_path):
    (folder / "dog" / "3.png").write_bytes(b"")
    pool = Pool.from_folder(folder, on_error="skip")
    assert pool.errors == {"dog/3.png": "zero-byte file"}
    X = np.random.default_rng(0).normal(size=(len(pool), 4)).astype(np.float32)
    s = Session(pool, embeddings=X, selector="random", store=tmp_path / "l.db")
    s.label(10)
    assert sorted(s.batch) == sorted(set(pool.ids) - {"dog/3.png"})
    s.close()
