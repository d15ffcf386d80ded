"""A team on one PostgreSQL database (issue 18): 4 annotator processes, each with its own connection and
session, label a 2,000-item pool through the store API until it is exhausted; then annotators are
SIGKILLed mid-submit 20 times and the server is restarted once, and every acknowledged label is there.

Annotators write ``<label_id> <item_id> <label> <session>`` to their own ack file with ``os.write``
only after ``add_labels`` returned (after COMMIT); a SIGKILL cannot lose what the kernel already has.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid

import pytest

from alwidgets.store import LabelStore, LeaseConflictError, StoreError
from store_backends import pg_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

N_ITEMS = 2000
IDS = [f"item-{i:05d}" for i in range(N_ITEMS)]
CLASSES = ["cat", "dog", "bird", "fish"]
BATCH = 16
CTX = multiprocessing.get_context("fork")


def _annotator(url: str, ack_path: str, seed: int, *, ttl: float, idle_first: float = 0.0,
               delay: float = 0.002, deadline: float | None = None) -> None:
    """Label until the pool is exhausted: lease a batch (the first free items by id), label, submit.

    ``idle_first``: lease the first batch, then sit idle that long (the lease expires meanwhile) before
    submitting it. Store errors (a restarted server) are retried: the next call reconnects.
    """
    rng = random.Random(seed)
    session = uuid.uuid4().hex
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode())

    log(f"SESSION {session}")
    store = LabelStore(url, annotator=f"ann{seed}", timeout=10)
    first = True
    while deadline is None or time.time() < deadline:
        try:
            done = store.current_labels()
            todo = [i for i in IDS if i not in done]
            if not todo:
                break
            got = store.lease(todo[:3 * BATCH], session=session, ttl=ttl)
            got, extra = got[:BATCH], got[BATCH:]
            if extra:
                store.release(extra, session=session)
            if not got:
                time.sleep(0.02)  # everything left is leased by others: wait for a submit or an expiry
                continue
            if first and idle_first:
                log("IDLE " + " ".join(got))
                time.sleep(idle_first)
            first = False
            time.sleep(delay * len(got))
            records = [{"item_id": i, "label": rng.choice(CLASSES), "seconds": delay} for i in got]
            while records:
                try:
                    ids = store.add_labels(records, session=session)
                except LeaseConflictError as e:
                    for item, why in e.conflicts.items():
                        log(f"REFUSED {item} {why.split()[0]}")
                    records = [r for r in records if r["item_id"] not in e.conflicts]
                    continue
                for lid, r in zip(ids, records):
                    log(f"ACK {lid} {r['item_id']} {r['label']} {session}")
                break
        except StoreError as e:  # a lost connection or a restarting server: nothing acknowledged, retry
            log(f"ERROR {type(e).__name__}")
            time.sleep(0.1)
    store.close()
    os.close(fd)


def _start(url, ack_path, seed, **kw):
    kw.setdefault("deadline", time.time() + 240)  # never outlive a failed test
    p = CTX.Process(target=_annotator, args=(url, str(ack_path), seed), kwargs=kw)
    p.start()
    return p


def _read_acks(paths):
    acks, refused, idle, errors = {}, [], [], 0
    for path in paths:
        if not os.path.exists(path):
            continue
        lines = open(path).read().split("\n")
        for line in lines[:-1]:  # the last piece may be cut by a kill
            parts = line.split(" ")
            if parts[0] == "ACK":
                acks[int(parts[1])] = (parts[2], parts[3], parts[4])
            elif parts[0] == "REFUSED":
                refused.append((parts[1], parts[2]))
            elif parts[0] == "IDLE":
                idle += parts[1:]
            elif parts[0] == "ERROR":
                errors += 1
    return acks, refused, idle, errors


def _check_history(url, acks, *, exhausted: bool):
    with LabelStore(url) as store:
        hist = store.labels_df(history=True)
        rows = {int(lid): (item, label, session) for lid, item, label, session in
                zip(hist.label_id, hist.item_id, hist.label, hist.session)}
        lost = [lid for lid, row in acks.items() if rows.get(lid) != row]
        assert not lost, f"{len(lost)} acknowledged labels lost or changed: {lost[:5]}"
        assert (hist.source != "undo").all()
        per_item = hist.groupby("item_id").size()
        duplicated = per_item[per_item > 1]
        assert duplicated.empty, f"{len(duplicated)} items labelled twice: {duplicated.head().to_dict()}"
        if exhausted:
            assert sorted(store.current_labels()) == IDS
            assert len(hist) == N_ITEMS
        assert store.check() == []
        return hist


@pytest.fixture
def tmp_path():
    """Ack files in a folder of our own (pytest's shared temporary root may be pruned by parallel runs)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="alwidgets-team-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_four_annotators_label_2000_items_exactly_once(pg_server, tmp_path):
    url = pg_server.new_schema()
    with LabelStore(url) as s:
        s.attach_pool(IDS, CLASSES)
    paths = [tmp_path / f"ann{k}.log" for k in range(4)]
    t0 = time.perf_counter()
    # annotator 0 leases a batch and goes idle past its lease: the others get those items
    procs = [_start(url, paths[0], 0, ttl=0.5, idle_first=2.0)]
    time.sleep(0.3)
    procs += [_start(url, paths[k], k, ttl=30) for k in range(1, 4)]
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    seconds = time.perf_counter() - t0
    acks, refused, idle, errors = _read_acks(paths)
    hist = _check_history(url, acks, exhausted=True)
    assert len(acks) == N_ITEMS and errors == 0  # 0 lost, 0 duplicated: every item acknowledged once
    # the three working annotators all labelled; the idle one may find the pool exhausted when it wakes
    assert {"ann1", "ann2", "ann3"} <= set(hist["annotator"])
    by_item = dict(zip(hist.item_id, hist.annotator))
    handed = [i for i in idle if by_item[i] != "ann0"]
    assert len(idle) == BATCH and handed, "the idle annotator's expired lease was handed to another"
    assert {i for i, why in refused if why == "relabelled"} == set(handed)
    print(f"4 annotators: {N_ITEMS} labels in {seconds:.1f} s ({N_ITEMS / seconds:.0f} labels/s), "
          f"{len(handed)} of an expired lease's {BATCH} items handed over, {len(refused)} refused")


def test_sigkills_mid_submit_and_a_server_restart_lose_no_acknowledged_label(pg_server, tmp_path):
    url = pg_server.new_schema()
    with LabelStore(url) as s:
        s.attach_pool(IDS, CLASSES)
    rng = random.Random(7)
    paths, procs = [], {}

    def spawn(slot):
        path = tmp_path / f"slot{slot}-{len(paths)}.log"
        paths.append(path)
        procs[slot] = _start(url, path, len(paths), ttl=1.0, delay=0.01)  # slow enough to outlast 20 kills

    for slot in range(4):
        spawn(slot)
    time.sleep(1.0)
    kills = 0
    for k in range(20):
        time.sleep(rng.uniform(0.05, 0.3))
        slot = rng.randrange(4)
        if procs[slot].is_alive():  # a fast machine may finish the pool first
            try:
                os.kill(procs[slot].pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        procs[slot].join(10)
        if k == 10:
            pg_server.restart()  # every annotator's connection dies; they reconnect
        spawn(slot)
    acks_mid, *_ = _read_acks(paths)
    assert len(acks_mid) > 100, f"only {len(acks_mid)} labels acknowledged; the test exercised too little"
    for p in procs.values():  # the survivors finish the pool, taking over the killed sessions' leases
        p.join(300)
        assert p.exitcode == 0
    acks, refused, idle, errors = _read_acks(paths)
    assert errors > 0  # the restart was noticed ...
    hist = _check_history(url, acks, exhausted=True)  # ... and nothing acknowledged was lost
    unacked = len(hist) - len(acks)
    assert unacked <= kills * BATCH  # committed, but killed before it could say so
    print(f"{kills} SIGKILLs + 1 restart: {len(acks)} acknowledged labels all present, {unacked} committed "
          f"but unacknowledged, {errors} store errors retried")
