"""Two processes on one store: leased work is never duplicated, concurrent writes are never lost."""
from __future__ import annotations

import multiprocessing
import random
import sqlite3
import time

import pytest

from alwidgets import LabelStore

IDS = [f"item-{i:03d}" for i in range(240)]
CLASSES = ["a", "b", "c"]

try:
    CTX = multiprocessing.get_context("fork")  # children start in ms, with alwidgets already imported
except ValueError:  # pragma: no cover - Windows
    CTX = None

pytestmark = pytest.mark.skipif(CTX is None, reason="needs the fork start method")


def _lease_and_label(path, name, start, queue):
    """A second kernel: lease a few unlabelled items, label them, until the pool is done."""
    try:
        rng = random.Random(name)
        acks, leased_total = [], 0
        with LabelStore(path, annotator=name, timeout=30) as store:
            start.wait()
            while True:
                todo = [i for i in IDS if i not in store.current_labels()]
                if not todo:
                    break
                rng.shuffle(todo)
                got = store.lease(todo[:6], name, ttl=60)
                leased_total += len(got)
                if not got:  # the rest is leased by the other annotator
                    time.sleep(0.002)
                    continue
                for item in got:
                    label_id = store.add_labels([{"item_id": item, "label": rng.choice(CLASSES),
                                                  "seconds": 0.5}])[0]
                    acks.append((label_id, item))
        queue.put((name, acks, None))
    except BaseException as e:  # report instead of dying silently
        queue.put((name, [], repr(e)))


def _write_blindly(path, name, start, queue, n_ops):
    """A kernel that relabels and undoes random items without leases (worst case)."""
    try:
        rng = random.Random(name)
        acks = []
        with LabelStore(path, annotator=name, timeout=30) as store:
            start.wait()
            for _ in range(n_ops):
                item = rng.choice(IDS[:20])  # a few hot items: both processes fight over them
                if rng.random() < 0.25:
                    try:
                        acks.append((store.undo(item), item, None))
                    except ValueError:  # no label to undo right now
                        pass
                else:
                    label = rng.choice(CLASSES)
                    acks.append((store.add_labels([{"item_id": item, "label": label}])[0], item, label))
        queue.put((name, acks, None))
    except BaseException as e:
        queue.put((name, [], repr(e)))


def _run(target, path, args=()):
    start, queue = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=target, args=(str(path), name, start, queue, *args)) for name in ("ana", "bo")]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [(name, err) for name, _, err in results if err]
    assert not errors, errors
    return {name: acks for name, acks, _ in results}


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "shared.db"
    with LabelStore(p) as s:
        s.attach_pool(IDS, CLASSES)
    return p


def test_two_annotators_with_leases_never_duplicate_work(path):
    acks = _run(_lease_and_label, path)
    assert sum(len(a) for a in acks.values()) == len(IDS)
    assert all(len(a) > 0 for a in acks.values()), {k: len(v) for k, v in acks.items()}
    with LabelStore(path) as store:
        hist = store.labels_df(history=True)
        assert len(hist) == len(IDS)  # one row per item: nobody labelled an item twice
        assert sorted(hist["item_id"]) == IDS
        by_id = dict(zip(hist["label_id"], zip(hist["item_id"], hist["annotator"])))
        for name, rows in acks.items():
            for label_id, item in rows:
                assert by_id[label_id] == (item, name)
        counts = store.annotators()["n_labels"].to_dict()
        assert counts == {name: len(rows) for name, rows in acks.items()}
        assert store.check() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0  # labelling ended every lease
    conn.close()


def test_concurrent_relabel_and_undo_lose_nothing(path):
    acks = _run(_write_blindly, path, (120,))
    every = sorted(a for rows in acks.values() for a in rows)
    with LabelStore(path) as store:
        hist = store.labels_df(history=True)
        assert hist["label_id"].tolist() == [a[0] for a in every]  # every committed write was acknowledged
        assert list(zip(hist["item_id"], hist["label"])) == [(a[1], a[2]) for a in every]
        latest = {}
        for _, item, label in every:
            latest[item] = label
        assert store.current_labels() == {k: v for k, v in latest.items() if v is not None}
        assert store.check() == []
