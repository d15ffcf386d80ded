import math

import numpy as np
import pandas as pd
import pytest

from alwidgets import simulate
from alwidgets.select import Margin
from alwidgets.simulate import labels_to_target, normalised_auc, summarize


def test_margin_beats_random_on_digits(digits):
    X, y = digits
    res = simulate(X, y, ["random", "margin"], target_acc=0.9, batch_size=10, seed_per_class=2,
                   budget=200, repeats=3, progress=False)
    s = res.summary.set_index("strategy")
    assert s.loc["random", "reached"] == "3/3" and s.loc["margin", "reached"] == "3/3"
    assert s.loc["margin", "labels_to_target"] < s.loc["random", "labels_to_target"]
    assert s.loc["margin", "saved_vs_random"] > 0
    assert s.loc["margin", "auc"] > s.loc["random", "auc"]


def test_curves_follow_the_protocol(digits):
    X, y = digits
    res = simulate(X, y, {"rand": "random", "m": Margin()}, batch_size=7, seed_per_class=1, budget=45,
                   repeats=2, progress=False, target_acc=0.5)
    c = res.curves
    assert set(c["strategy"]) == {"rand", "m"}
    for _, g in c.groupby(["strategy", "repeat"]):
        assert g["n_labels"].tolist() == [10, 17, 24, 31, 38, 45]  # seed, then batches, capped at budget
        assert g["accuracy"].between(0, 1).all()
    # the same seed labels and test split for every strategy within a repeat
    first = c[c["round"] == 0].pivot(index="repeat", columns="strategy", values="accuracy")
    np.testing.assert_allclose(first["rand"], first["m"])
    assert len(res.full_pool) == 2 and (res.full_pool["accuracy"] > 0.9).all()


def test_cold_start_uses_random_first_batch_for_model_strategies(digits):
    X, y = digits
    res = simulate(X, y, ["margin"], seed_per_class=0, batch_size=20, budget=60, repeats=1, progress=False,
                   target_acc=0.5)
    c = res.curves
    assert c["n_labels"].tolist() == [20, 40, 60]
    assert c["picked_by"].tolist()[:2] == ["margin", "margin"]
    # the first batch (before any model) came from the random fallback: not recorded as a round without labels
    assert c["round"].tolist() == [1, 2, 3]


def test_deterministic(digits):
    X, y = digits
    a = simulate(X, y, ["margin"], budget=50, repeats=1, progress=False, random_state=5).curves
    b = simulate(X, y, ["margin"], budget=50, repeats=1, progress=False, random_state=5).curves
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_string_labels_and_external_test_set(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    res = simulate(X[:1200], names[:1200], ["random"], X_test=X[1200:], y_test=names[1200:], budget=40,
                   repeats=1, progress=False, target_acc=0.5)
    assert res.params["test_size"] is None and res.params["n_classes"] == 10


def test_summary_marks_unreached_targets_not_as_numbers():
    curves = pd.DataFrame({
        "strategy": ["random"] * 4 + ["margin"] * 4,
        "repeat": [0, 0, 1, 1] * 2,
        "n_labels": [10, 20] * 4,
        "accuracy": [0.5, 0.9, 0.5, 0.7, 0.9, 0.95, 0.6, 0.92],
        "seconds": 0.1,
    })
    s = summarize(curves, 0.9).set_index("strategy")
    assert math.isnan(s.loc["random", "labels_to_target"]) and s.loc["random", "reached"] == "1/2"
    assert s.loc["margin", "labels_to_target"] == 15.0
    assert math.isnan(s.loc["margin", "saved_vs_random"])  # no number against an unreached reference


def test_metric_helpers():
    c = pd.DataFrame({"n_labels": [10, 20, 30], "accuracy": [0.5, 0.91, 0.85]})
    assert labels_to_target(c, 0.9) == 20
    assert math.isnan(labels_to_target(c, 0.95))
    assert normalised_auc(np.array([0, 10.0]), np.array([0.5, 0.7])) == pytest.approx(0.6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_acc=1.5), "target_acc"),
    (dict(batch_size=0), "batch_size"),
    (dict(seed_per_class=50, budget=100), "budget"),
    (dict(strategies=["nope"]), "unknown strategy"),
    (dict(target_acc=0.999), "above what the model reaches"),
    (dict(strategies=["random", "random"]), "listed twice"),
])
def test_bad_arguments(digits, kwargs, match):
    X, y = digits
    kwargs = {"strategies": ["random"], "progress": False, "repeats": 1, **kwargs}
    strategies = kwargs.pop("strategies")
    with pytest.raises(ValueError, match=match):
        simulate(X, y, strategies, **kwargs)


def test_plot_has_reference_and_target(digits):
    X, y = digits
    res = simulate(X, y, ["random", "margin"], budget=40, repeats=2, progress=False, target_acc=0.6)
    fig = res.plot()
    names = [t.name for t in fig.data if t.name]
    assert names == ["random", "margin"]
    assert fig.data[[t.name for t in fig.data].index("random")].line.dash == "dash"
