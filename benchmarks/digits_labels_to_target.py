"""Labels needed to reach 90% test accuracy on scikit-learn digits, per strategy, against random.

    python benchmarks/digits_labels_to_target.py [--repeats 5] [--seed-per-class 2] [--strategies ...]

Prints the summary as a markdown table (the one in docs/benchmarks.md). Uses
the same protocol as ``alwidgets simulate``: linear probe on pixels, batch 10,
budget 300, 25% held-out test split per repeat.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from alwidgets import Pool, simulate
from alwidgets.embed import PixelEmbedder
from alwidgets.select import available

DEFAULT = ["random", "least_confidence", "margin", "entropy",
           "coverage", "kcenter", "badge", "uncertainty_diversity", "auto"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed-per-class", type=int, default=2)
    ap.add_argument("--target-acc", type=float, default=0.9)
    ap.add_argument("--strategies", default=",".join(DEFAULT))
    args = ap.parse_args()
    strategies = [s for s in args.strategies.split(",") if s in available()]
    pool = Pool.digits()
    X = PixelEmbedder().embed(pool)
    t0 = time.perf_counter()
    res = simulate(X, pool.targets, strategies, target_acc=args.target_acc, batch_size=10,
                   seed_per_class=args.seed_per_class, budget=300, repeats=args.repeats, random_state=0)
    wall = time.perf_counter() - t0
    print(f"digits: {len(X)} items, pixels, linear probe; batch 10, budget 300, "
          f"{args.seed_per_class} seed labels per class, {args.repeats} repeats; "
          f"full-pool accuracy {res.full_pool['accuracy'].mean():.3f}")
    print(f"machine: {platform.machine()}, {np.__name__} {np.__version__}; wall {wall:.0f} s")
    print()
    print(res.to_markdown())


if __name__ == "__main__":
    main()
