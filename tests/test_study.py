"""Regression guard for the label-efficiency study (benchmarks/study.py).

A 3-split mini version on the CIFAR-10 subset with the real ImageNet MobileNet
V1 embeddings: coverage must still be at least as good as random at 1 label
per class (the full study measures +12.5 points there). Slow: the first
run embeds 1,500 images at 224 px (a few minutes on 2 CPU cores); the
embeddings are cached (``$ALWIDGETS_CACHE`` or ``~/.cache/alwidgets``), so
later runs take seconds. The fast tests check the study's table arithmetic.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _study():
    if "alwidgets_study" in sys.modules:
        return sys.modules["alwidgets_study"]
    spec = importlib.util.spec_from_file_location("alwidgets_study", REPO / "benchmarks" / "study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["alwidgets_study"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"study data not found at {path} (put ../shared beside the repo)")


@pytest.mark.slow
def test_mini_study_coverage_not_below_random_at_one_label_per_class():
    study = _study()
    _need(study.WEIGHTS)
    _need(study.CIFAR)
    from alwidgets import Pool

    train, test = Pool.from_folder(study.CIFAR / "train"), Pool.from_folder(study.CIFAR / "test")
    keep = lambda p, k: p.subset(np.concatenate([np.flatnonzero(p.targets == c)[:k] for c in range(10)]))  # noqa: E731
    train, test = keep(train, 100), keep(test, 50)
    emb = study.mobilenet(progress=False)
    ds = study.Dataset("cifar-mini", emb.embed(train), train.targets, emb.embed(test), test.targets, 10, "mini")
    curves = study.run_study(ds, ["random", "coverage"], repeats=3, max_per_class=2, starts=("cold",),
                             progress=False)
    table = study.summary_table(curves, 10, per_class=(1, 2)).set_index("strategy")
    acc = table["acc@1"]
    print(f"1 label per class: coverage {acc['coverage']:.3f}, random {acc['random']:.3f}")
    assert table.loc["coverage", "gain@1"] >= 0.0
    assert acc["random"] > 0.12  # the embeddings carry signal (chance is 0.10)


def test_summary_table_pairs_gains_by_split_and_counts_unreached():
    study = _study()
    rows = []
    for rep, (r_acc, c_acc) in enumerate([((0.2, 0.5), (0.4, 0.7)), ((0.3, 0.7), (0.3, 0.9))]):
        for strategy, accs in (("random", r_acc), ("coverage", c_acc)):
            for k, a in enumerate(accs, 1):
                rows.append(dict(start="cold", strategy=strategy, repeat=rep, round=k, n_labels=10 * k,
                                 accuracy=a, seconds=0.1, picked_by=strategy, full_pool_acc=1.0))
    t = study.summary_table(pd.DataFrame(rows), 10, per_class=(1, 2), fractions=(0.65,)).set_index("strategy")
    assert t.loc["coverage", "gain@1"] == pytest.approx(0.1)       # (+0.2 + 0.0) / 2
    assert t.loc["coverage", "gain_std@1"] == pytest.approx(0.1)
    assert t.loc["random", "gain@2"] == 0.0
    # random reaches 65% of full only in split 1 (at 20 labels); coverage in both splits, at 20
    assert t.loc["random", "reached 65% of full"] == 1 and t.loc["random", "labels to 65% of full"] == 20
    assert t.loc["coverage", "reached 65% of full"] == 2
    md = study.to_markdown(t.reset_index(), 10, budget=20, per_class=(1, 2))
    assert "20 (1/2 reached; rest > 20)" in md and "+10.0 ± 10.0" in md
