"""Two processes on one store (SQLite file or PostgreSQL): leased work is never duplicated, an
acknowledged label is never replaced by another session, undo retracts only a session's own labels,
and concurrent writes are never lost."""
from __future__ import annotations

import multiprocessing
import random
import time
import uuid

import pytest

from alwidgets import LabelStore
from alwidgets.store import LeaseConflictError
from store_backends import backend, pg_server, store_target  # noqa: F401 (fixtures)

IDS = [f"item-{i:03d}" for i in range(120)]
CLASSES = ["a", "b", "c"]

try:
    CTX = multiprocessing.get_context("fork")  # children start in ms, with alwidgets already imported
except ValueError:  # pragma: no cover - Windows
    CTX = None

pytestmark = pytest.mark.skipif(CTX is None, reason="needs the fork start method")


def _kernel(target, name, start, queue, seed, finished):
    """One Session's use of the store, as a notebook kernel of the OS user 'jovyan' would: lease a batch,
    look at it (a realistic delay), submit; some leases expire while the annotator is away. The undo
    checks run once both kernels ``finished`` labelling (an item undone earlier is free work for the other
    kernel, which may lease it before this one relabels it: the store allows that, the checks below don't)."""
    try:
        rng = random.Random(seed)
        session = uuid.uuid4().hex
        acks, refused, undo_refused = [], {}, 0
        with LabelStore(target, annotator="jovyan", timeout=30) as store:
            start.wait()
            n_batch = 0
            while True:
                done = store.current_labels()
                todo = [i for i in IDS if i not in done]
                if not todo:
                    break
                rng.shuffle(todo)
                away = n_batch % 4 == 1  # every 4th batch the annotator leaves: the lease expires meanwhile
                got = store.lease(todo[:6], session=session, ttl=0.15 if away else 30)
                n_batch += 1
                if not got:  # the rest is leased by the other kernel
                    time.sleep(0.01)
                    continue
                time.sleep(0.4 if away else rng.uniform(0.01, 0.05))  # looking at the images
                records = [{"item_id": i, "label": rng.choice(CLASSES), "seconds": 0.5} for i in got]
                while records:
                    try:
                        ids = store.add_labels(records, session=session)
                    except LeaseConflictError as e:
                        refused.update(e.conflicts)
                        records = [r for r in records if r["item_id"] not in e.conflicts]  # retry without them
                        continue
                    acks += [(lid, r["item_id"], r["label"]) for lid, r in zip(ids, records)]
                    break
            finished.wait(timeout=120)
            # undo: the other kernel's labels are refused; our own last one is retracted and labelled again
            mine = {item for _, item, _ in acks}
            for item in [i for i in IDS if i not in mine][:5]:
                try:
                    store.undo(item, session=session)
                except LeaseConflictError:
                    undo_refused += 1
                except ValueError:  # no label right now (the other kernel is between its undo and relabel):
                    undo_refused += 1  # refused all the same, nothing retracted
            if acks:
                _, item, _ = acks[-1]
                store.undo(item, session=session)
                store.lease([item], session=session)
                label = rng.choice(CLASSES)
                acks.append((store.add_labels([{"item_id": item, "label": label}], session=session)[0], item, label))
        queue.put((name, session, acks, refused, undo_refused, None))
    except BaseException as e:  # report instead of dying silently
        queue.put((name, None, [], {}, 0, repr(e)))


def _write_blindly(target, name, start, queue, n_ops):
    """A script that relabels and undoes random items without a session (worst case)."""
    try:
        rng = random.Random(name)
        acks = []
        with LabelStore(target, annotator=name, timeout=30) as store:
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


def _run(target, fn, args_of):
    start, queue = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=fn, args=(str(target), name, start, queue, *args_of(name))) for name in ("k1", "k2")]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [r for r in results if r[-1]]
    assert not errors, errors
    return results


@pytest.fixture
def target(store_target):
    with LabelStore(store_target) as s:
        s.attach_pool(IDS, CLASSES)
    return store_target


def test_two_kernels_of_one_user_never_replace_each_others_labels(target):
    finished = CTX.Barrier(2)
    results = _run(target, _kernel, lambda name: (1 if name == "k1" else 2, finished))
    sessions = {r[1]: r for r in results}
    with LabelStore(target) as store:
        hist = store.labels_df(history=True)
        assert store.check() == []
        assert sorted(store.current_labels()) == IDS  # every item labelled
        assert set(hist["annotator"]) == {"jovyan"} and set(hist["session"]) == set(sessions)
        rows = {lid: (item, label, session) for lid, item, label, session in
                zip(hist.label_id, hist.item_id, hist.label, hist.session)}
        superseded_by = dict(zip(hist.label_id, hist.superseded_by))
        for session, (_, _, acks, refused, undo_refused, _) in sessions.items():
            assert acks, "each kernel labelled something"
            for lid, item, label in acks:
                assert rows[lid] == (item, label, session)  # every acknowledged label is there, as written
                nxt = superseded_by[lid]
                if nxt is not None and nxt is not __import__("pandas").NA:
                    assert rows[int(nxt)][2] == session, f"{item}: {session}'s label replaced by another session"
            assert undo_refused == 5  # undo of the other kernel's labels: always refused
        # every item was labelled by exactly one session: no duplicated work, nothing overwritten
        by_item = hist[hist.source != "undo"].groupby("item_id")["session"].nunique()
        assert (by_item == 1).all(), by_item[by_item > 1]
        n_labels = hist[hist.source != "undo"].groupby("item_id").size()
        relabelled = {acks[-1][1] for _, _, acks, _, _, _ in sessions.values()}
        assert set(n_labels[n_labels > 1].index) == relabelled  # only the items a kernel undid itself
        assert len(store.leases_df()) == 0  # labelling ended every lease
    refused = {k: v for r in results for k, v in r[3].items()}
    print(f"{len(hist)} rows; {len(refused)} refused submits: {sorted(set(refused.values()))}")


def test_concurrent_relabel_and_undo_lose_nothing(target):
    results = _run(target, _write_blindly, lambda name: (120,))
    every = sorted(a for _, rows, _ in results for a in rows)
    with LabelStore(target) as store:
        hist = store.labels_df(history=True)
        assert hist["label_id"].tolist() == [a[0] for a in every]  # every committed write was acknowledged
        assert list(zip(hist["item_id"], hist["label"])) == [(a[1], a[2]) for a in every]
        latest = {}
        for _, item, label in every:
            latest[item] = label
        assert store.current_labels() == {k: v for k, v in latest.items() if v is not None}
        assert store.check() == []
