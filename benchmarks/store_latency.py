"""Label store speed: one submit's latency and a team's throughput, SQLite file vs PostgreSQL over 127.0.0.1.

* submit latency: ``add_labels`` of 16 labels by a session that leased them (what one grid submit
  costs the store), median and 90th percentile over ``--repeats`` submits; lease(16) likewise.
* baseline: the bare durable commit of a one-row update on the same connection, one statement in
  autocommit (what the database's fsync costs, plus one round trip on PostgreSQL, whatever the store does).
* throughput: 4 annotator processes (own connection and session each) lease 16 items, label them
  (no think time) and submit, until a 2,000-item pool is exhausted: committed labels per second.

Both back ends run in the same process on the same machine; the ratio PostgreSQL / SQLite is printed
(issue 18's target: submit latency on PostgreSQL <= 2x SQLite). Both do the same work: the same 16
labels, leased to the same session, checked against the leases and written in one transaction (on
PostgreSQL a plain submit is one statement, the schema's ``alwidgets_submit``: one round trip; a lease
takes two). PostgreSQL is Debian's server started
on a temporary data directory (``tests/store_backends.py``), or the server of ``--url``.
SQLite runs with its durable settings (WAL, ``synchronous=FULL``); PostgreSQL with its defaults
(``fsync=on``, ``synchronous_commit=on``): both fsync every commit.

Run:  python benchmarks/store_latency.py [--repeats 100] [--items 2000] [--url postgresql://...]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from alwidgets.store import LabelStore  # noqa: E402

CLASSES = ["cat", "dog", "bird", "fish"]


def _pool(n):
    return [f"item-{i:06d}" for i in range(n)]


def submit_latency(targets: dict, n_items: int, repeats: int, batch: int = 16):
    """Per back end, seconds of each ``lease(16)`` and ``add_labels(16)``; the back ends take turns
    (alternating who goes first), so both see the same load on a shared machine."""
    ids = _pool(n_items)
    stores = {name: LabelStore(target, annotator="bench") for name, target in targets.items()}
    times = {name: ([], [], []) for name in stores}
    try:
        for store in stores.values():
            store.attach_pool(ids, CLASSES)
        session = uuid.uuid4().hex
        names = list(stores)
        for r in range(repeats):
            chunk = ids[r * batch:(r + 1) * batch]
            for name in (names if r % 2 == 0 else names[::-1]):
                store = stores[name]
                t0 = time.perf_counter()
                got = store.lease(chunk, session=session, ttl=60)
                t1 = time.perf_counter()
                store.add_labels([{"item_id": i, "label": CLASSES[k % 4], "seconds": 1.0}
                                  for k, i in enumerate(got)], session=session)
                t2 = time.perf_counter()
                assert len(got) == batch
                conn = store._connection()  # baseline: the bare durable commit of one tiny write, same connection
                t3 = time.perf_counter()
                conn.execute("UPDATE changes SET n = n + 1 WHERE id = 1")  # autocommit on both: one transaction
                t4 = time.perf_counter()
                times[name][0].append(t1 - t0)
                times[name][1].append(t2 - t1)
                times[name][2].append(t4 - t3)
    finally:
        for store in stores.values():
            store.close()
    return times


def _annotator(target, ids, seed, batch, out):
    session = uuid.uuid4().hex
    n = 0
    with LabelStore(target, annotator=f"ann{seed}", timeout=60) as store:
        while True:
            done = store.current_labels()
            todo = [i for i in ids if i not in done]
            if not todo:
                break
            start = (seed * 97) % len(todo)  # each annotator starts somewhere else in the queue
            got = store.lease((todo[start:] + todo[:start])[:batch], session=session, ttl=60)
            if not got:
                time.sleep(0.005)
                continue
            n += len(store.add_labels([{"item_id": i, "label": CLASSES[seed % 4]} for i in got], session=session))
    out.put(n)


def throughput(target, n_items: int, n_annotators: int = 4, batch: int = 16):
    ids = _pool(n_items)
    with LabelStore(target) as store:
        store.attach_pool(ids, CLASSES)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_annotator, args=(target, ids, k, batch, out)) for k in range(n_annotators)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    counts = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    with LabelStore(target) as store:
        hist = store.labels_df(history=True)
    assert len(hist) == n_items == sum(counts) == hist["item_id"].nunique(), "lost or duplicated labels"
    return n_items / seconds, seconds


def _ms(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1e3, xs[int(0.9 * (len(xs) - 1))] * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--url", help="an existing PostgreSQL database (default: start a temporary server)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.items < 16 * args.repeats:
        ap.error("--items must be at least 16 x --repeats")
    server = None
    if args.url is None:
        from store_backends import PostgresServer, _bindir

        bindir = _bindir()
        if bindir is None:
            ap.error("PostgreSQL binaries not found (apt-get install postgresql) and no --url given")
        server = PostgresServer(bindir)
        server.start()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="alwidgets-bench-"))
        targets = {"sqlite": lambda name: str(tmp / f"{name}.db"),
                   "postgresql": (lambda name: server.new_schema()) if server else (lambda name: args.url)}
        if server is None:
            print("note: --url given: the throughput run needs a fresh database; using the same one for both runs "
                  "is refused by the pool fingerprint check", file=sys.stderr)
        res = {name: {} for name in targets}
        lat = submit_latency({name: make("latency") for name, make in targets.items()}, args.items, args.repeats)
        for backend, make in targets.items():
            rate, seconds = throughput(make("team"), args.items)
            res[backend] = {"lease": _ms(lat[backend][0]), "submit": _ms(lat[backend][1]),
                            "commit": _ms(lat[backend][2]), "rate": rate, "seconds": seconds}
        cpu = os.cpu_count()
        print(f"label store, {args.items}-item pool, {args.repeats} submits of 16 labels, {cpu} CPUs, load "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'':28s}{'SQLite':>12s}{'PostgreSQL':>14s}{'PG / SQLite':>13s}")
        for key, label in (("submit", "submit 16 labels, median ms"), ("lease", "lease 16 items, median ms"),
                           ("commit", "bare 1-row commit, median ms")):
            s, p = res["sqlite"][key][0], res["postgresql"][key][0]
            print(f"{label:28s}{s:12.2f}{p:14.2f}{p / s:12.2f}x")
            s90, p90 = res["sqlite"][key][1], res["postgresql"][key][1]
            print(f"{'  90th percentile, ms':28s}{s90:12.2f}{p90:14.2f}{p90 / s90:12.2f}x")
        s, p = res["sqlite"]["rate"], res["postgresql"]["rate"]
        print(f"{'4 annotators, labels/s':28s}{s:12.0f}{p:14.0f}{p / s:12.2f}x")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
