"""Is BALD's MLP head cheap enough for a simulation round? Fit and MC-scoring times.

For each labelled-set size and embedding width: seconds to fit
:class:`alwidgets.heads.MLPHead` (default settings), seconds to score an
unlabelled pool with 20 MC-dropout samples, and, as the baseline measured in
the same run, seconds to fit the default :class:`alwidgets.models.LinearProbe`
on the same labels and predict the same pool.

    python benchmarks/bald_head.py
    python benchmarks/bald_head.py --labelled 100,1000 --dims 64,512 --pool 100000

Timings are wall-clock, best of ``--repeats``; other processes on the
machine add noise, so read the ratios.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from alwidgets.heads import MLPHead
from alwidgets.models import LinearProbe
from alwidgets.select.bald import _bald_from_logits


def pool(n, d, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes * 5, d), dtype=np.float32)
    blob = rng.integers(0, len(centres), n)
    X = centres[blob] + 0.6 * rng.standard_normal((n, d), dtype=np.float32)
    return X, blob % n_classes


def best(fn, repeats):
    out = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelled", default="100,1000")
    ap.add_argument("--dims", default="64,512")
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    MLPHead(epochs=2).fit(*pool(50, 8))                      # torch warm-up, not timed
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, pool {args.pool:,}, "
          f"T = {args.samples}, best of {args.repeats}")
    print("| labelled | d | head fit (s) | MC scoring of pool (s) | LinearProbe fit+predict (s) | head fit+score / probe |")
    print("|---|---|---|---|---|---|")
    for d in map(int, args.dims.split(",")):
        X, y = pool(args.pool, d)
        for n_lab in map(int, args.labelled.split(",")):
            Xl, yl = X[:n_lab], y[:n_lab]
            head = MLPHead(n_classes=10)
            t_fit = best(lambda: head.fit(Xl, yl), args.repeats)

            def score():
                for _, z in head.sample_logits(X, args.samples, 0):
                    _bald_from_logits(z)

            t_score = best(score, args.repeats)
            t_probe = best(lambda: LinearProbe(n_classes=10).fit(Xl, yl).predict_proba(X), args.repeats)
            print(f"| {n_lab:,} | {d} | {t_fit:.3f} | {t_score:.3f} | {t_probe:.3f} | "
                  f"{(t_fit + t_score) / t_probe:.1f}x |")


if __name__ == "__main__":
    main()
