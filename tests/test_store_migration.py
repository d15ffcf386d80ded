"""A store written by the schema-v1 release opens, upgrades and keeps everything.

``tests/data/store_v1.db`` was written by ``LabelStore`` at commit 3b275fd (schema v1) with:

- pool ``item-00`` ... ``item-19`` (20 items), classes ``cat, dog, bird``;
- round 1 (``random``, LinearProbe, metrics ``accuracy=0.5``, timings ``select_s, fit_s``):
  ana labels item-00 cat (1.5 s), item-01 dog (2.0 s), item-02 bird (accepted, 0.5 s);
- round 2 (``margin``, ``accuracy=0.75``): bo relabels item-01 cat (supersedes ana's dog),
  labels item-03 dog then undoes it, labels item-04 bird (4.25 s);
  carl imports item-05 cat (no round);
- one live lease: item-10 and item-11 leased to ana until 2036.

So: 8 label rows (one superseded, one undo), 5 current labels, 2 rounds, 3 annotators,
2 leased items.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

FIXTURE = Path(__file__).parent / "data" / "store_v1.db"

V1_HISTORY = [  # label_id, item_id, label, annotator, seconds, round, source, superseded_by
    (1, "item-00", "cat", "ana", 1.5, 1, "human", None),
    (2, "item-01", "dog", "ana", 2.0, 1, "human", 4),
    (3, "item-02", "bird", "ana", 0.5, 1, "accepted", None),
    (4, "item-01", "cat", "bo", 3.0, 2, "human", None),
    (5, "item-03", "dog", "bo", None, 2, "human", 6),
    (6, "item-03", None, "bo", None, None, "undo", None),
    (7, "item-04", "bird", "bo", 4.25, 2, "human", None),
    (8, "item-05", "cat", "carl", None, None, "imported", None),
]
V1_CURRENT = {"item-00": "cat", "item-01": "cat", "item-02": "bird", "item-04": "bird", "item-05": "cat"}


@pytest.fixture
def v1(tmp_path):
    path = tmp_path / "store_v1.db"
    shutil.copy(FIXTURE, path)
    return path


def test_fixture_is_a_v1_store(v1):
    c = sqlite3.connect(v1)
    try:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        rows = c.execute("SELECT l.label_id, l.item_id, c.name, l.annotator, l.seconds, l.round_id, l.source, "
                         "l.superseded_by FROM labels l LEFT JOIN classes c USING (class_id) "
                         "ORDER BY label_id").fetchall()
        assert rows == V1_HISTORY
        assert c.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 20
        assert c.execute("SELECT item_id, annotator FROM leases ORDER BY item_id").fetchall() == [
            ("item-10", "ana"), ("item-11", "ana")]
        assert c.execute("SELECT COUNT(*) FROM rounds WHERE finished_at IS NOT NULL").fetchone()[0] == 2
    finally:
        c.close()


def test_v1_store_upgrades_and_keeps_every_label_round_and_lease(v1):
    from alwidgets.store import SCHEMA_VERSION, LabelStore, annotators

    with LabelStore(v1, annotator="dan") as store:
        conn = store._connection()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
        assert store.check() == []
        hist = store.labels_df(history=True)
        got = list(zip(hist.label_id, hist.item_id, hist.label, hist.annotator,
                       [None if pd.isna(x) else x for x in hist.seconds],
                       [None if pd.isna(x) else int(x) for x in hist["round"]], hist.source,
                       [None if pd.isna(x) else int(x) for x in hist.superseded_by]))
        assert got == V1_HISTORY
        assert hist["session"].isna().all() and hist["media_type"].isna().all()
        assert store.current_labels() == V1_CURRENT
        assert store.attach_pool([f"item-{i:02d}" for i in range(20)]).n_labelled == 5  # same pool, same classes
        assert store.classes == ["cat", "dog", "bird"]
        rounds = store.rounds_df()
        assert rounds["round"].tolist() == [1, 2] and rounds["strategy"].tolist() == ["random", "margin"]
        assert rounds["metrics"].tolist() == [{"accuracy": 0.5, "n_labels": 3}, {"accuracy": 0.75, "n_labels": 5}]
        assert rounds["timings"].tolist() == [{"fit_s": 0.2, "select_s": 0.01}, {"fit_s": 0.3, "select_s": 0.02}]
        assert rounds["n_labels"].tolist() == [3, 3]
        assert annotators(store)["n_labels"].to_dict() == {"ana": 3, "bo": 3, "carl": 1}
        # the v1 lease survives, held by the session "v1:ana": no new session gets those items
        live = store.leases_df()
        assert live["item_id"].tolist() == ["item-10", "item-11"]
        assert set(live["session"]) == {"v1:ana"} and set(live["annotator"]) == {"ana"}
        assert store.lease(["item-10", "item-11", "item-12"], session="new") == ["item-12"]
        # and the upgraded store takes v2 records: sessions, payloads, simulated answers
        store.add_labels([{"item_id": "item-12", "label": "dog", "payload": b"\x89PNG", "media_type": "image/png",
                           "source": "simulated"}], session="new")
        assert store.payload("item-12") == (b"\x89PNG", "image/png")
        store.undo("item-12", session="new")
        assert store.current_labels() == V1_CURRENT
        with pytest.raises(Exception, match="append-only"):
            conn.execute("DELETE FROM labels")
    with LabelStore(v1) as again:  # opening an upgraded store again changes nothing
        assert again.current_labels() == V1_CURRENT and len(again.labels_df(history=True)) == 10


def test_v1_store_opened_read_only_is_not_upgraded(v1):
    from alwidgets.store import LabelStore, StoreReadOnlyError

    with pytest.raises(StoreReadOnlyError, match="schema version 1 and needs upgrading to 3.*open it once writable"):
        LabelStore(v1, read_only=True)
    c = sqlite3.connect(v1)
    assert c.execute("PRAGMA user_version").fetchone()[0] == 1
    c.close()


def test_failed_migration_leaves_the_v1_store_untouched(v1, monkeypatch):
    from alwidgets.store import LabelStore, schema

    broken = schema.SQLITE_V2[:-1] + ("INSERT INTO no_such_table VALUES (1)",)
    monkeypatch.setitem(schema.MIGRATIONS, 2, broken)
    with pytest.raises(Exception, match="no_such_table"):
        LabelStore(v1)
    test_fixture_is_a_v1_store(v1)
    monkeypatch.undo()
    with LabelStore(v1) as store:
        assert store.current_labels() == V1_CURRENT


def test_v2_file_opens_read_only_and_upgrades_to_v3_without_changes(tmp_path):
    """v3 changes nothing in an SQLite file (it adds PostgreSQL's submit function): a v2 store still opens
    read-only as it is, and a writable open only records the version."""
    from alwidgets.store import LabelStore

    path = tmp_path / "v2.db"
    with LabelStore(path, annotator="ana") as store:
        store.attach_pool(["a", "b"], ["cat", "dog"])
        store.add_labels([{"item_id": "a", "label": "cat"}])
    c = sqlite3.connect(path)
    c.execute("DELETE FROM schema_version WHERE version = 3")
    c.execute("PRAGMA user_version = 2")
    c.commit()
    c.close()
    with LabelStore(path, read_only=True) as store:
        assert store.current_labels() == {"a": "cat"}
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == 2
    c.close()
    with LabelStore(path) as store:
        conn = store._connection()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
        assert store.add_labels([{"item_id": "b", "label": "dog"}]) == [2]
