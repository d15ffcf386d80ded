"""LabelStore: the API contract, bad input, and failures (locked, read-only, full disk, corrupt).

Every behaviour test runs against both back ends (``db`` is an SQLite file or a fresh
PostgreSQL schema, see ``store_backends.py``); tests of SQLite files (pragmas, file
permissions, corrupt files) use ``sqlite_db``.
"""
from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

import alwidgets
from alwidgets.store import (
    LABEL_COLUMNS,
    SCHEMA_VERSION,
    LabelStore,
    LeaseConflictError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from alwidgets.store import agreement, annotators, export_labels, import_labels
from alwidgets.store import schema as store_schema
from store_backends import backend, pg_server, store_target  # noqa: F401 (fixtures)

IDS = [f"img-{i:03d}" for i in range(20)]
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def db(store_target):
    return store_target


@pytest.fixture
def sqlite_db(tmp_path):
    return tmp_path / "labels.db"


@pytest.fixture
def sqlite_store(sqlite_db):
    s = LabelStore(sqlite_db, annotator="ana")
    s.attach_pool(IDS, CLASSES)
    yield s
    s.close()


@pytest.fixture
def store(db):
    s = LabelStore(db, annotator="ana")
    s.attach_pool(IDS, CLASSES)
    yield s
    s.close()


def lab(item_id, label, **kw):
    return {"item_id": item_id, "label": label, **kw}


def test_exported_from_package_and_pragmas(sqlite_store, sqlite_db):
    store, db = sqlite_store, sqlite_db
    assert alwidgets.LabelStore is LabelStore
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.classes == CLASSES
    assert store.path == str(db)
    assert "items=20" in repr(store) and "labelled=0" in repr(store)


def test_add_labels_returns_after_commit_visible_to_other_connection(store, db):
    ids = store.add_labels([lab("img-000", "cat", seconds=1.5), lab("img-001", "dog", source="accepted")])
    assert ids == [1, 2]
    with LabelStore(db, read_only=True) as other:  # a different connection sees the rows: they were committed
        assert len(other.labels_df(history=True)) == 2
    assert store.current_labels() == {"img-000": "cat", "img-001": "dog"}
    df = store.labels_df()
    assert list(df.columns) == LABEL_COLUMNS
    assert df["annotator"].tolist() == ["ana", "ana"]
    assert df["source"].tolist() == ["human", "accepted"]
    assert df["seconds"].iloc[0] == 1.5 and np.isnan(df["seconds"].iloc[1])
    assert isinstance(df["created_at"].dtype, pd.DatetimeTZDtype) and str(df["created_at"].dt.tz) == "UTC"
    assert store.add_labels([]) == []


def test_relabel_and_undo_append_history_never_overwrite(store):
    a = store.add_labels([lab("img-000", "cat")])[0]
    b = store.add_labels([lab("img-000", "dog")])[0]
    u = store.undo("img-000")
    assert store.current_labels() == {}
    assert store.labels_df().empty
    c = store.add_labels([lab("img-000", "bird", annotator="bo")])[0]
    hist = store.labels_df(history=True)
    assert hist["label_id"].tolist() == [a, b, u, c]
    assert hist["label"].tolist() == ["cat", "dog", None, "bird"]
    assert hist["source"].tolist() == ["human", "human", "undo", "human"]
    assert hist["superseded_by"].tolist() == [b, u, c, pd.NA]
    assert store.current_labels() == {"img-000": "bird"}
    assert store.labels_df()["annotator"].tolist() == ["bo"]
    assert store.check() == []


def test_history_rows_cannot_be_deleted_or_edited(store):
    store.add_labels([lab("img-000", "cat")])
    conn = store._connection()
    with pytest.raises(Exception, match="append-only"):
        conn.execute("DELETE FROM labels")
    with pytest.raises(Exception, match="append-only"):
        conn.execute("UPDATE labels SET class_id = 2")
    assert store.current_labels() == {"img-000": "cat"}


def test_undo_errors(store):
    with pytest.raises(ValueError, match="no label to undo"):
        store.undo("img-000")
    with pytest.raises(ValueError, match="'nope' is not in the pool"):
        store.undo("nope")
    store.add_labels([lab("img-000", "cat")])
    store.undo("img-000")
    with pytest.raises(ValueError, match="no label to undo"):
        store.undo("img-000")


def test_add_labels_validates_everything_before_writing(store):
    store.add_labels([lab("img-000", "cat")])
    before = store.labels_df(history=True)
    with pytest.raises(ValueError, match=r"item ids not in the pool: \['ghost-1', 'ghost-2'\]"):
        store.add_labels([lab("img-001", "dog"), lab("ghost-1", "dog"), lab("ghost-2", "cat")])
    with pytest.raises(ValueError, match=r"unknown classes \['Cat'\] \(known: \['cat', 'dog', 'bird'\]\)"):
        store.add_labels([lab("img-001", "dog"), lab("img-002", "Cat")])
    with pytest.raises(ValueError, match=r"unknown rounds \[7\]"):
        store.add_labels([lab("img-001", "dog", round=7)])
    with pytest.raises(ValueError, match="record 1: source must be one of"):
        store.add_labels([lab("img-001", "dog"), lab("img-002", "dog", source="robot")])
    with pytest.raises(ValueError, match="record 0 has unknown keys"):
        store.add_labels([{"item_id": "img-001", "lable": "dog", "label": "dog"}])
    with pytest.raises(ValueError, match="record 0: seconds must be finite"):
        store.add_labels([lab("img-001", "dog", seconds=-1)])
    with pytest.raises(ValueError, match="record 0: label must be a class name"):
        store.add_labels([lab("img-001", "")])
    with pytest.raises(ValueError, match="record 0: item_id must be a non-empty string"):
        store.add_labels([lab(3, "dog")])
    pd.testing.assert_frame_equal(store.labels_df(history=True), before)


def test_add_labels_accepts_single_dict_and_dataframe(store):
    store.add_labels(lab("img-000", "cat"))
    store.add_labels(pd.DataFrame({"item_id": ["img-001"], "label": ["dog"]}))
    assert store.current_labels() == {"img-000": "cat", "img-001": "dog"}


def test_attach_same_pool_any_order_and_extend_classes(store, db):
    store.add_labels([lab("img-000", "cat")])
    store.close()
    with LabelStore(db, annotator="ana") as s:
        rep = s.attach_pool(list(reversed(IDS)), CLASSES + ["fish"])
        assert rep.new_classes == ["fish"] and rep.n_labelled == 1 and rep.orphaned == []
        s.attach_pool(IDS)  # classes=None keeps the stored ones
        assert s.classes == CLASSES + ["fish"]
        s.add_labels([lab("img-001", "fish")])
        assert s.current_labels() == {"img-000": "cat", "img-001": "fish"}


def test_classes_never_renamed_removed_or_reordered(store):
    with pytest.raises(StoreMismatchError, match=r"classes \['dog'\] that are not in classes="):
        store.attach_pool(IDS, ["cat", "doggo", "bird"])
    with pytest.raises(StoreMismatchError, match="different order"):
        store.attach_pool(IDS, ["dog", "cat", "bird"])
    assert store.classes == CLASSES


@pytest.mark.parametrize("classes, message", [
    ([], "classes is empty"),
    (["cat", ""], "non-empty strings"),
    (["cat", "  "], "non-empty strings"),
    (["cat", "dog", "cat"], r"duplicate class names \['cat'\]"),
    ("cat", "not the single string"),
])
def test_bad_class_names(db, classes, message):
    with LabelStore(db) as s:
        with pytest.raises((ValueError, TypeError), match=message):
            s.attach_pool(IDS, classes)
        assert s.fingerprint is None


def test_bad_pool_ids(db):
    with LabelStore(db) as s:
        with pytest.raises(ValueError, match=r"duplicate item ids \['a'\]"):
            s.attach_pool(["a", "b", "a"], CLASSES)
        with pytest.raises(ValueError, match="positions \\[1\\]"):
            s.attach_pool(["a", ""], CLASSES)
        with pytest.raises(ValueError, match="ids is empty"):
            s.attach_pool([], CLASSES)
        with pytest.raises(ValueError, match="classes are needed the first time"):
            s.attach_pool(["a"])


def test_mismatched_pool_is_refused_then_attached_by_ids(store, db):
    store.add_labels([lab("img-000", "cat"), lab("img-019", "dog")])
    store.close()
    other = IDS[:10] + [f"new-{i}" for i in range(5)]
    with LabelStore(db) as s:
        with pytest.raises(StoreMismatchError, match=r"20 items .* 15 items .* 10 ids in common.*match='ids'"):
            s.attach_pool(other, CLASSES)
        assert s.current_labels() == {"img-000": "cat", "img-019": "dog"}  # refusal changed nothing
        with pytest.warns(UserWarning, match="1 labelled items"):
            rep = s.attach_pool(other, CLASSES, match="ids")
        assert rep.orphaned == ["img-019"] and rep.n_labelled == 1 and rep.matched_by == "ids"
        assert s.current_labels() == {"img-000": "cat"}
        assert set(s.labels_df(history=True)["item_id"]) == {"img-000", "img-019"}  # kept, not dropped
        s.add_labels([lab("new-0", "bird")])
        with pytest.raises(ValueError, match="not in the pool"):
            s.add_labels([lab("img-019", "bird")])
    with LabelStore(db) as s:  # the new pool is now the store's pool
        with pytest.warns(UserWarning, match="kept in the store"):
            assert s.attach_pool(other).orphaned == ["img-019"]
        assert s._connection().execute("SELECT COUNT(*) FROM pools").fetchone()[0] == 2


def test_resume_in_a_new_store_object(store, db):
    r = store.start_round("entropy", {"batch_size": 8}, "LinearProbe")
    store.add_labels([lab("img-000", "cat", round=r, seconds=2.0), lab("img-001", "dog", round=r)])
    store.finish_round(r, {"accuracy": 0.5}, {"fit": 0.1})
    store.close()
    with LabelStore(db, annotator="ana") as s:
        s.attach_pool(IDS, CLASSES)
        assert s.current_labels() == {"img-000": "cat", "img-001": "dog"}
        rounds = s.rounds_df()
        assert rounds["round"].tolist() == [1] and rounds["n_labels"].tolist() == [2]
        assert rounds["metrics"].iloc[0] == {"accuracy": 0.5}
        assert s.labels_df()["round"].tolist() == [1, 1]


def test_rounds(store):
    r1 = store.start_round("margin", {"n": np.int64(8), "w": np.float32(0.5), "v": np.arange(2)}, "probe")
    r2 = store.start_round("random", None, "probe")
    assert (r1, r2) == (1, 2)
    store.finish_round(r1, {"accuracy": np.float64(0.75)}, {"select": 0.01})
    with pytest.raises(ValueError, match="already finished"):
        store.finish_round(r1, {}, {})
    with pytest.raises(ValueError, match="unknown round 9"):
        store.finish_round(9, {}, {})
    with pytest.raises(TypeError, match="params must be JSON-serialisable"):
        store.start_round("x", {"f": object()}, "m")
    with pytest.raises(ValueError, match="strategy must be a non-empty string"):
        store.start_round("", {}, "m")
    df = store.rounds_df()
    assert df["params"].iloc[0] == {"n": 8, "w": 0.5, "v": [0, 1]}
    assert df["metrics"].tolist() == [{"accuracy": 0.75}, None]
    assert df["finished_at"].isna().tolist() == [False, True]


def test_leases_between_sessions(store):
    assert store.lease(IDS[:5], session="k1", annotator="ana", ttl=60) == IDS[:5]
    assert store.lease(IDS[3:8], session="k2", annotator="ana", ttl=60) == IDS[5:8]  # same name, other kernel
    assert store.lease(IDS[:2], session="k1", ttl=60) == IDS[:2]  # renew own lease
    store.add_labels([lab(IDS[5], "cat")], session="k2")  # labelling ends the lease
    assert store.lease([IDS[5]], session="k1") == []  # labelled items are never handed out
    assert store.release(IDS[6:8], session="k1") == 0  # not k1's
    assert store.release(IDS[6:8], session="k2") == 2
    assert store.lease(IDS[6:8], session="k1") == IDS[6:8]
    live = store.leases_df()
    assert sorted(live["item_id"]) == sorted(IDS[:5] + IDS[6:8]) and set(live["session"]) == {"k1"}
    with pytest.raises(ValueError, match=r"item ids not in the pool: \['zzz'\]"):
        store.lease(["zzz"], session="k1")
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        store.lease(IDS[:1], session="k1", ttl=0)
    with pytest.raises(ValueError, match="session must be a non-empty string"):
        store.lease(IDS[:1], session="")
    with pytest.raises(TypeError):
        store.lease(IDS[:1])  # a lease always names its session


def test_expired_lease_is_handed_to_another_session(store):
    assert store.lease(IDS[:3], session="k1", ttl=0.2) == IDS[:3]
    assert store.lease(IDS[:3], session="k2") == []
    time.sleep(0.3)
    assert store.lease(IDS[:3], session="k2") == IDS[:3]


def test_submit_refuses_items_of_another_session_before_writing(store):
    store.lease(IDS[:4], session="k1", ttl=60)
    store.lease(IDS[4:8], session="k2", ttl=60)
    before = store.labels_df(history=True)
    with pytest.raises(LeaseConflictError, match="nothing from this call was written") as e:
        store.add_labels([lab(IDS[0], "cat"), lab(IDS[4], "dog"), lab(IDS[5], "dog")], session="k1")
    assert set(e.value.conflicts) == {IDS[4], IDS[5]}
    assert all("leased to another session" in why for why in e.value.conflicts.values())
    pd.testing.assert_frame_equal(store.labels_df(history=True), before)
    assert store.add_labels([lab(IDS[0], "cat")], session="k1") == [1]  # the caller retries without them
    assert store.labels_df(history=True)["session"].tolist() == ["k1"]


def test_relabelled_since_shown_is_refused(store):
    """k1 is shown an item, its lease expires, k2 leases and labels it: k1's late submit must not replace it."""
    store.lease(IDS[:2], session="k1", ttl=0.2)
    time.sleep(0.3)
    assert store.lease(IDS[:2], session="k2", ttl=60) == IDS[:2]
    store.add_labels([lab(IDS[0], "dog")], session="k2")
    with pytest.raises(LeaseConflictError) as e:
        store.add_labels([lab(IDS[0], "cat"), lab(IDS[1], "cat")], session="k1")
    assert e.value.conflicts == {IDS[0]: "relabelled by another session since this session was shown it",
                                 IDS[1]: e.value.conflicts[IDS[1]]}
    assert "leased to another session" in e.value.conflicts[IDS[1]]
    assert store.current_labels() == {IDS[0]: "dog"}
    # a write outside any session (a script, an import) also counts as "relabelled since shown"
    store.lease([IDS[2]], session="k1")
    store.add_labels([lab(IDS[2], "bird")])
    with pytest.raises(LeaseConflictError, match="relabelled"):
        store.add_labels([lab(IDS[2], "cat")], session="k1")


def test_session_resubmit_is_not_stored_twice(store):
    store.lease(IDS[:2], session="k1")
    first = store.add_labels([lab(IDS[0], "cat"), lab(IDS[1], "dog")], session="k1")
    again = store.add_labels([lab(IDS[0], "cat"), lab(IDS[1], "bird")], session="k1")  # a retry and a correction
    assert again[0] == first[0] and again[1] > first[1]
    assert len(store.labels_df(history=True)) == 3
    assert store.add_labels([lab(IDS[2], "cat"), lab(IDS[2], "cat")], session="k1") == [4, 4]


def test_undo_only_retracts_own_label(store):
    store.lease(IDS[:2], session="k1")
    store.lease(IDS[2:4], session="k2")
    store.add_labels([lab(IDS[0], "cat")], session="k1")
    store.add_labels([lab(IDS[2], "dog")], session="k2")
    with pytest.raises(LeaseConflictError, match="only retract its own") as e:
        store.undo(IDS[2], session="k1")
    assert e.value.conflicts == {IDS[2]: "its current label was written by another session"}
    assert store.current_labels() == {IDS[0]: "cat", IDS[2]: "dog"}
    store.undo(IDS[0], session="k1")
    assert store.labels_df(history=True)["session"].tolist() == ["k1", "k2", "k1"]
    store.undo(IDS[2])  # without a session (a script): whoever wrote it
    assert store.current_labels() == {}


HOSTILE = ["x'); DROP TABLE labels; --", 'Robert"); DELETE FROM items; --', "%s %(x)s ? $1 :name",
           "\\x00 not a NUL, a backslash", "名前 ☃ ‮rtl", "a" * 5000, " leading and trailing ", "\n\t"]


def test_hostile_names_are_stored_and_read_back_verbatim(db):
    """Client values are query parameters, never SQL text: hostile ids, classes, annotators, sessions and
    payloads round-trip unchanged and the tables survive."""
    ids = HOSTILE + ["plain"]
    classes = [f"class {c}" for c in HOSTILE[:3]] + HOSTILE[3:5]
    with LabelStore(db, annotator=HOSTILE[1]) as s:
        s.attach_pool(ids, classes)
        assert s.classes == classes and s.item_ids == sorted(ids)
        payload = bytes(range(256)) + b"'; DROP TABLE labels; --"
        recs = [lab(i, classes[k % len(classes)], annotator=HOSTILE[k % 3]) for k, i in enumerate(HOSTILE)]
        recs[0].update(payload=payload, media_type="image/png; x='1'")
        assert s.lease(ids, session=HOSTILE[2]) == ids
        s.add_labels(recs, session=HOSTILE[2])
        r = s.start_round(HOSTILE[0], {HOSTILE[1]: HOSTILE[2]}, HOSTILE[3])
        s.finish_round(r, {"note": HOSTILE[4]}, {})
    with LabelStore(db) as s:
        assert s.current_labels() == {i: classes[k % len(classes)] for k, i in enumerate(HOSTILE)}
        hist = s.labels_df(history=True)
        assert hist["annotator"].tolist() == [HOSTILE[k % 3] for k in range(len(HOSTILE))]
        assert set(hist["session"]) == {HOSTILE[2]}
        assert s.payload(HOSTILE[0]) == (payload, "image/png; x='1'")
        rounds = s.rounds_df()
        assert rounds["strategy"].tolist() == [HOSTILE[0]] and rounds["params"][0] == {HOSTILE[1]: HOSTILE[2]}
        assert rounds["model"].tolist() == [HOSTILE[3]] and rounds["metrics"][0] == {"note": HOSTILE[4]}
        assert s.check() == []
        for bad in ("a\x00b", "\udc80"):  # text no database can hold is refused up front, naming the problem
            with pytest.raises(ValueError, match="NUL|surrogate"):
                s.add_labels([lab("plain", bad)])
            with pytest.raises(ValueError, match="NUL|surrogate"):
                s.attach_pool(ids, classes + [bad])
        assert len(s.labels_df(history=True)) == len(HOSTILE)


def test_huge_values_are_not_echoed_whole(store):
    """Defect 11 (store side): a 5 MB class name or id is named in the error, not copied into it."""
    huge = "x" * 5_000_000
    for call in (lambda: store.add_labels([lab(IDS[0], huge)]), lambda: store.add_labels([lab(huge, "cat")]),
                 lambda: store.lease([huge], session="k1"), lambda: store.undo(huge),
                 lambda: store.attach_pool(IDS, CLASSES + [huge, huge])):
        with pytest.raises((ValueError, StoreError)) as e:
            call()
        assert len(str(e.value)) < 2000 and "characters)" in str(e.value)
    store.lease([IDS[0]], session="k2")
    with pytest.raises(LeaseConflictError) as e:
        store.add_labels([lab(IDS[0], "cat")], session="k1" * 1_000_000)
    assert len(str(e.value)) < 2000
    assert store.labels_df(history=True).empty


def test_store_boundary_refuses_malformed_ids_and_writes_nothing(store):
    """Defect 6: unknown or malformed ids never reach the store, so later calls keep working."""
    store.lease(IDS[:2], session="k1")
    for bad in (["zzz-not-an-id"], [{"a": 1}], [3], "img-000", [""], ["a\x00b"], ["\ud800"]):
        with pytest.raises((ValueError, TypeError)):
            store.release(bad, session="k1")
        with pytest.raises((ValueError, TypeError)):
            store.lease(bad, session="k1")
    with pytest.raises(ValueError, match="not in the pool"):
        store.add_labels([lab(IDS[0], "cat"), lab("zzz-not-an-id", "cat")], session="k1")
    assert store.current_labels() == {}
    assert store.lease(IDS[:3], session="k1") == IDS[:3]
    assert store.add_labels([lab(IDS[0], "cat")], session="k1") == [1]


def test_simulated_source_and_payloads_are_versioned(store):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    a = store.add_labels([{"item_id": IDS[0], "label": "cat", "source": "simulated"}])[0]
    b = store.add_labels([{"item_id": IDS[0], "label": "cat", "payload": png, "media_type": "image/png"}])[0]
    c = store.add_labels([{"item_id": IDS[1], "label": None, "payload": b"mask", "media_type": "image/png"}])[0]
    assert store.payload(IDS[0]) == (png, "image/png")
    assert store.payload(IDS[0], label_id=a) is None
    assert store.current_labels() == {IDS[0]: "cat", IDS[1]: None}
    store.undo(IDS[1])
    assert store.payload(IDS[1]) is None and store.payload(IDS[1], label_id=c) == (b"mask", "image/png")
    hist = store.labels_df(history=True)
    assert hist["source"].tolist() == ["simulated", "human", "human", "undo"]
    assert hist["media_type"].tolist() == [None, "image/png", "image/png", None]
    assert hist["superseded_by"].tolist()[:1] == [b]
    for bad, msg in [({"payload": "text", "media_type": "image/png"}, "payload must be bytes"),
                     ({"payload": b"x"}, "needs a media_type"),
                     ({"media_type": "image/png"}, "without a payload"),
                     ({"label": None}, "label must be a class name")]:
        with pytest.raises(ValueError, match=msg):
            store.add_labels([{"item_id": IDS[2], "label": "cat", **bad}])
    assert store.check() == []


def test_change_counter_moves_with_every_commit_of_any_connection(store, db):
    c0 = store.changes
    store.current_labels()
    assert store.changes == c0  # reads change nothing
    store.add_labels([lab(IDS[0], "cat")])
    c1 = store.changes
    assert c1 > c0
    with LabelStore(db, annotator="bo") as other:
        other.add_labels([lab(IDS[1], "dog")])
    assert store.changes > c1
    c2 = store.changes
    with pytest.raises(ValueError):
        store.add_labels([lab("ghost", "cat")])
    with pytest.raises(LeaseConflictError):
        other_session = "k2"
        store.lease([IDS[5]], session="k1")
        c2 = store.changes
        store.add_labels([lab(IDS[5], "cat")], session=other_session)
    assert store.changes == c2  # refused writes committed nothing


def test_annotators_counts_time_and_kappa(store):
    a = ["cat", "cat", "dog", "dog", "bird", "bird", "cat", "dog"]
    b = ["cat", "cat", "dog", "bird", "bird", "bird", "dog", "dog"]
    store.add_labels([lab(IDS[i], c, annotator="ana", seconds=2.0) for i, c in enumerate(a)])
    store.add_labels([lab(IDS[i], c, annotator="bo", seconds=4.0) for i, c in enumerate(b)])
    store.add_labels([lab(IDS[10], "cat", annotator="bo")])
    store.add_labels([lab(IDS[11], "cat", annotator="ana", seconds=5.0)])
    store.undo(IDS[11], annotator="ana")  # ana withdrew this one
    df = annotators(store)
    assert df.index.tolist() == ["ana", "bo"]
    assert df.loc["ana", "n_labels"] == 9 and df.loc["ana", "n_items"] == 8
    assert df.loc["bo", "n_labels"] == 9 and df.loc["bo", "n_items"] == 9
    assert df.loc["ana", "seconds_per_label"] == pytest.approx((8 * 2.0 + 5.0) / 9)
    assert df.loc["bo", "seconds_per_label"] == pytest.approx(4.0)
    from sklearn.metrics import cohen_kappa_score

    expected = cohen_kappa_score(a, b)
    assert df.loc["ana", "kappa_bo"] == pytest.approx(expected)
    assert df.loc["bo", "kappa_ana"] == pytest.approx(expected)
    assert np.isnan(df.loc["ana", "kappa_ana"])
    pairs = agreement(store)
    assert pairs[["annotator_a", "annotator_b", "n_items"]].values.tolist() == [["ana", "bo", 8]]
    assert pairs["agreement"].iloc[0] == pytest.approx(6 / 8)


def test_import_reports_rejects_and_is_idempotent(store, tmp_path):
    store.add_labels([lab("img-000", "cat"), lab("img-001", "dog")])
    csv = tmp_path / "in.csv"
    csv.write_text("item_id,label,annotator,seconds\n"
                   "img-000,cat,,\n"        # unchanged
                   "img-001,bird,carl,3\n"  # replaces dog
                   "img-002,dog,,\n"        # new
                   "ghost,dog,,\n"          # unknown id
                   "img-003,horse,,\n"      # unknown class
                   "img-004,,,\n"           # missing label
                   "img-002,cat,,\n"        # duplicate
                   "img-005,cat,,-2\n")     # bad seconds
    rep = import_labels(store, csv)
    assert (rep.accepted, rep.replaced, rep.unchanged) == (2, 1, 1)
    assert rep.rejected["row"].tolist() == [3, 4, 5, 6, 7]
    reasons = rep.rejected["reason"].tolist()
    assert reasons[0] == "item id not in the pool" and reasons[1].startswith("unknown class")
    assert reasons[2] == "missing label" and reasons[3] == "duplicate item id (first at row 2)"
    assert reasons[4].startswith("seconds must be")
    assert "imported 2 labels" in str(rep) and "row 3: 'ghost'" in str(rep)
    cur = store.labels_df().set_index("item_id")
    assert cur.loc["img-001", "label"] == "bird" and cur.loc["img-001", "annotator"] == "carl"
    assert cur.loc["img-001", "source"] == "imported" and cur.loc["img-001", "seconds"] == 3.0
    n = len(store.labels_df(history=True))
    again = import_labels(store, csv)
    assert again.accepted == 0 and again.unchanged == 3
    assert len(store.labels_df(history=True)) == n


def test_import_dataframe_with_integer_class_names(db):
    with LabelStore(db) as s:
        s.attach_pool(["a", "b", "c"], ["0", "1", "2"])
        rep = import_labels(s, pd.DataFrame({"item_id": ["a", "b", "c"], "label": [0, 2.0, np.nan]}),
                              source="accepted")
        assert rep.accepted == 2 and rep.rejected["reason"].tolist() == ["missing label"]
        assert s.current_labels() == {"a": "0", "b": "2"}
        assert set(s.labels_df()["source"]) == {"accepted"}


def test_import_bad_files(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        import_labels(store, tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,class\na,b\n")
    with pytest.raises(ValueError, match=r"bad.csv: needs columns item_id and label; missing"):
        import_labels(store, bad)
    weird = tmp_path / "x.xlsx"
    weird.write_text("")
    with pytest.raises(ValueError, match="unsupported file type"):
        import_labels(store, weird)
    with pytest.raises(ValueError, match="source must be one of"):
        import_labels(store, pd.DataFrame({"item_id": [], "label": []}), source="magic")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_round_trips_through_import(store, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    store.add_labels([lab("img-000", "cat", seconds=1.0), lab("img-001", "dog")])
    store.add_labels([lab("img-001", "bird")])
    path = export_labels(store, tmp_path / f"out.{fmt}")
    with LabelStore(tmp_path / "copy.db", annotator="zed") as copy:
        copy.attach_pool(IDS, CLASSES)
        rep = import_labels(copy, path)
        assert rep.accepted == 2 and rep.rejected.empty
        assert copy.current_labels() == store.current_labels()
        assert copy.labels_df()["annotator"].tolist() == ["ana", "ana"]
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows[0]["item_id"] == "img-000" and rows[0]["seconds"] == 1.0 and rows[1]["seconds"] is None
        assert rows[0]["created_at"].endswith("+00:00")
    hist = export_labels(store, tmp_path / "hist.txt", format="csv", history=True)
    assert len(pd.read_csv(hist)) == 3
    with pytest.raises(ValueError, match="cannot tell the format"):
        export_labels(store, tmp_path / "out.xlsx")


def test_backup_is_a_consistent_copy(store, tmp_path):
    store.add_labels([lab(i, "cat") for i in IDS[:5]])
    out = store.backup(tmp_path / "backup.db")
    with LabelStore(out, read_only=True) as b:
        assert b.current_labels() == store.current_labels()
        assert b.check() == []


# ---------------------------------------------------------------------- failures
def test_locked_store_raises_and_loses_nothing(sqlite_store, sqlite_db):
    store, db = sqlite_store, sqlite_db
    store.add_labels([lab("img-000", "cat")])
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        s2 = LabelStore(db, annotator="bo", timeout=0.1)
        with pytest.raises(StoreLockedError, match=f"{db}.*locked.*nothing from this call was written"):
            s2.add_labels([lab("img-001", "dog")])
        assert s2.current_labels() == {"img-000": "cat"}  # readers are not blocked in WAL mode
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    s2.add_labels([lab("img-001", "dog")])  # and it works once the lock is gone
    s2.close()
    assert store.current_labels() == {"img-000": "cat", "img-001": "dog"}


def test_read_only_store(store, db):
    store.add_labels([lab("img-000", "cat")])
    with LabelStore(db, read_only=True) as ro:
        assert ro.current_labels() == {"img-000": "cat"}
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.add_labels([lab("img-001", "dog")])
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.lease(IDS[:2], session="k1")
    assert store.current_labels() == {"img-000": "cat"}


def test_read_only_sqlite_pragma(sqlite_store, sqlite_db):
    """Simulated with SQLite's ``mode=ro`` and ``PRAGMA query_only``: tests run as root, which ignores chmod
    (test_store_readonly_folder.py checks a real read-only folder as an unprivileged user)."""
    store, db = sqlite_store, sqlite_db
    store.add_labels([lab("img-000", "cat")])
    store._connection().execute("PRAGMA query_only = ON")
    with pytest.raises(StoreReadOnlyError, match="nothing from this call was written"):
        store.add_labels([lab("img-001", "dog")])
    store._connection().execute("PRAGMA query_only = OFF")
    assert store.current_labels() == {"img-000": "cat"}
    with pytest.raises(StoreError, match="read_only=True never creates one"):
        LabelStore(db.parent / "nothing.db", read_only=True)


def test_full_disk_rolls_back_and_keeps_earlier_labels(sqlite_store):
    store = sqlite_store
    """SQLITE_FULL forced with PRAGMA max_page_count (no tiny filesystem without root mounts)."""
    store.add_labels([lab(i, "cat") for i in IDS[:10]])
    conn = store._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    many = [f"x-{i:05d}-{'p' * 200}" for i in range(2000)]
    with pytest.raises(StoreFullError, match="full.*rolled back.*earlier labels are intact"):
        store.attach_pool(IDS + many, CLASSES, match="ids")
    with pytest.raises(StoreFullError):
        store.add_labels([lab(i, "dog", seconds=1.0) for i in IDS] * 300)
    assert store.current_labels() == {i: "cat" for i in IDS[:10]}
    assert len(store.labels_df(history=True)) == 10
    assert store.check() == []
    conn.execute("PRAGMA max_page_count = 1073741823")
    store.add_labels([lab(IDS[10], "dog")])
    assert len(store.current_labels()) == 11


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="folder .*nowhere does not exist"):
        LabelStore(tmp_path / "nowhere" / "labels.db")
    with pytest.raises(StoreError, match="is a folder"):
        LabelStore(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreCorruptError, match="junk.db is not a readable SQLite label store"):
        LabelStore(junk)
    foreign = tmp_path / "foreign.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(StoreError, match=r"not an alwidgets label store \(it has tables \['t'\]\)"):
        LabelStore(foreign)
    with pytest.raises(TypeError, match="path is required"):
        LabelStore(None)
    with pytest.raises(ValueError, match="annotator must be a non-empty string"):
        LabelStore(":memory:", annotator=" ")


def test_closed_store_says_so(db):
    s = LabelStore(db)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="is closed"):
        s.current_labels()
    assert "closed" in repr(s)


def test_newer_schema_is_refused(db):
    with LabelStore(db) as s:
        if s.backend == "sqlite":
            s._connection().execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        else:
            s._connection().execute("INSERT INTO schema_version VALUES (%s, 'now', 'future')", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this alwidgets understands"):
        LabelStore(db)


def test_migrations_run_in_order_and_are_recorded(db, monkeypatch):
    with LabelStore(db) as s:
        s.attach_pool(IDS, CLASSES)
        s.add_labels([lab("img-000", "cat")])
    nxt = ("ALTER TABLE labels ADD COLUMN note TEXT",)
    postgres = isinstance(db, str)
    monkeypatch.setitem(store_schema.POSTGRES_MIGRATIONS if postgres else store_schema.MIGRATIONS,
                        SCHEMA_VERSION + 1, nxt)
    with LabelStore(db) as s:
        conn = s._connection()
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        if postgres:  # PostgreSQL stores start at version 2
            assert versions == list(range(2, SCHEMA_VERSION + 2))
            cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                               "WHERE table_name = 'labels' AND table_schema = current_schema()")]
        else:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
            assert versions == list(range(1, SCHEMA_VERSION + 2))
            cols = [r[1] for r in conn.execute("PRAGMA table_info(labels)")]
        assert "note" in cols
        assert s.current_labels() == {"img-000": "cat"}


def test_memory_store_only_when_asked(tmp_path):
    with LabelStore(":memory:") as s:
        s.attach_pool(["a"], ["x"])
        s.add_labels([lab("a", "x")])
        assert s.current_labels() == {"a": "x"}
    s = LabelStore(tmp_path / "memory")  # a file literally named 'memory' is a file, not RAM
    s.close()
    assert (tmp_path / "memory").exists()
