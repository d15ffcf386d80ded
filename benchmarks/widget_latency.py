"""Widget latency: how long the labeller waits, and how many bytes a batch costs.

Measures, on a synthetic 100k-item pool (28x28 images, 64-d clustered
embeddings, 10 classes) with 1,000 labels already in the store:

* ``label(64)``: from the call to the grid's state being ready (selection +
  thumbnail encoding + round bookkeeping). Target <= 300 ms on 2 cores.
* bytes sent per batch: thumbnails (binary buffers) + item metadata (JSON).
* submit -> refit -> next batch ready (``continuous=True``), through the
  widget's submit message. Target <= 2 s on 2 cores.

Ratios are against baselines timed in the same run: the bare selector call
(for ``label``) and one bare model fit + pool prediction (for submit), so the
session's own overhead is visible independent of the machine.

Run:  python benchmarks/widget_latency.py [--items 100000] [--selector margin] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def make_pool(n_items: int, n_classes: int = 10, dim: int = 64, seed: int = 0):
    from alwidgets import Pool

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_items)
    centers = rng.normal(0, 1.0, (n_classes, dim)).astype(np.float32)
    X = centers[y] + rng.normal(0, 1.2, (n_items, dim)).astype(np.float32)
    # images: a class-dependent bar plus noise, so thumbnails compress like real small images
    imgs = rng.integers(0, 60, (n_items, 28, 28), dtype=np.uint8)
    for c in range(n_classes):
        imgs[y == c, 2 + 2 * c: 5 + 2 * c, 4:24] = 230
    pool = Pool.from_arrays(imgs, y, classes=[f"class {c}" for c in range(n_classes)], name="synthetic")
    return pool, X, y


def _blas_threads():
    from threadpoolctl import threadpool_info

    return max((d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"), default=None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--selector", default="margin")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)

    from alwidgets import LabelStore, Session
    from alwidgets.models import fit_predict_proba

    pool, X, y = make_pool(args.items)
    store = LabelStore(":memory:", annotator="bench")
    store.attach_pool(pool.ids, pool.classes)
    rng = np.random.default_rng(1)
    seed_idx = rng.choice(len(pool), args.labels, replace=False)
    store.add_labels([{"item_id": pool.ids[i], "label": pool.classes[y[i]]} for i in seed_idx])

    s = Session(pool, embeddings=X, selector=args.selector, store=store, random_state=0)
    s.fit()
    from alwidgets.widgets import SessionView

    s._view = SessionView(s)
    s._view.app  # build the widget (plotly import) outside the timings: it happens once per session

    def truth(ids):
        return {i: pool.classes[y[pool.index_of(i)]] for i in ids}

    # baselines, same run
    labels = s.labels()
    t_sel, t_fit = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        s.selector.select(args.batch, labels=labels, embeddings=X, probs=s.probs_, model=s.model, random_state=r)
        t_sel.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_predict_proba(s.model, X, labels, len(s.classes))
        t_fit.append(time.perf_counter() - t0)

    # label(n): one round per call, submitted (not timed) so the next call starts clean
    t_label, n_bytes, meta_bytes = [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        grid = s.label(args.batch).grid
        t_label.append(time.perf_counter() - t0)
        n_bytes.append(sum(len(it["thumb"]) for it in grid.items))
        meta_bytes.append(len(json.dumps([{k: v for k, v in it.items() if k != "thumb"} for it in grid.items])))
        s.submit(truth(s.batch), close=True)
    # submit -> refit -> next batch in the grid (continuous mode), through the widget's message
    grid = s.label(args.batch, continuous=True).grid
    t_submit = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        grid._handle_custom_msg({"type": "submit", "batch": grid.batch, "labels": truth(s.batch)}, [])  # as the browser
        t_submit.append(time.perf_counter() - t0)
        assert grid.status.startswith("saved"), (grid.status, grid.error)
        assert len(s.batch) == args.batch and len(grid.items) == args.batch
    med = statistics.median
    out = {
        "items": len(pool), "labels_at_start": args.labels, "batch": args.batch, "selector": s.selector.name,
        "label_ms": med(t_label) * 1e3, "select_baseline_ms": med(t_sel) * 1e3,
        "label_vs_select": med(t_label) / med(t_sel),
        "thumb_bytes_per_batch": int(med(n_bytes)), "meta_bytes_per_batch": int(med(meta_bytes)),
        "submit_to_next_batch_ms": med(t_submit) * 1e3, "fit_baseline_ms": med(t_fit) * 1e3,
        "submit_vs_fit": med(t_submit) / med(t_fit),
        "label_target_ms": 300, "submit_target_ms": 2000,
        "accuracy_source": s.metrics_["source"],
        "blas_threads": _blas_threads(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"pool {out['items']:,} items, {args.labels} labels in the store, batch {args.batch}, "
          f"selector {out['selector']}, median of {args.repeats}, BLAS threads {out['blas_threads']}")
    print(f"label({args.batch}) -> grid ready : {out['label_ms']:8.1f} ms  (target 300 ms; "
          f"{out['label_vs_select']:.1f}x the bare selector call, {out['select_baseline_ms']:.1f} ms)")
    print(f"bytes per batch         : {out['thumb_bytes_per_batch']:,} thumbnail bytes (binary) + "
          f"{out['meta_bytes_per_batch']:,} bytes item JSON")
    print(f"submit -> refit -> next : {out['submit_to_next_batch_ms']:8.1f} ms  (target 2000 ms; "
          f"{out['submit_vs_fit']:.1f}x one bare fit+predict, {out['fit_baseline_ms']:.1f} ms; "
          f"accuracy by {out['accuracy_source']})")


if __name__ == "__main__":
    main()
