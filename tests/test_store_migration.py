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
