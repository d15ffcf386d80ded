"""Stopping rules: each returns a decision with its evidence."""
import numpy as np
import pytest

from alwidgets.stopping import (
    AccuracyLift,
    LowUncertainty,
    StabilizingPredictions,
    StoppingDecision,
    agreement_kappa,
)


def test_kappa_edge_cases():
    assert agreement_kappa([1, 1, 1], [1, 1, 1]) == 1.0          # constant and identical
    assert agreement_kappa([0, 0, 0], [1, 1, 1]) == 0.0
    assert agreement_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_stabilizing_predictions_stops_only_after_window_of_stable_rounds():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, 500)
    changing = [rng.integers(0, 3, 500) for _ in range(3)]
    rule = StabilizingPredictions(threshold=0.99, window=3)
    d = rule.check(changing + [base, base, base])
    assert d.action == "continue" and d.evidence["kappas"][-2:] == [1.0, 1.0]
    d = rule.check(changing + [base, base, base, base])
    assert d.stop and d.action == "stop" and d.rule == "stabilizing_predictions"
    assert d.evidence["kappas"][-3:] == [1.0, 1.0, 1.0] and d.evidence["rounds"] == 7
    # one flipped item in 500 keeps kappa above 0.99; 10% flipped does not
    nearly = base.copy()
    nearly[0] = (nearly[0] + 1) % 3
    assert rule.check([base, nearly, base, nearly]).stop
    noisy = np.where(rng.random(500) < 0.1, (base + 1) % 3, base)
    d = rule.check([base, noisy, base, noisy])
    assert not d.stop and max(d.evidence["kappas"]) < 0.99
    assert "need 4 rounds" in rule.check([base, base]).reason


def test_stabilizing_predictions_accepts_probabilities_and_checks_shapes():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert StabilizingPredictions(window=1).check([p, p * 0.5 + 0.25]).stop
    with pytest.raises(ValueError, match="same stop set"):
        StabilizingPredictions().check([[0, 1, 1], [0, 1]])
    with pytest.raises(ValueError, match="window must be a positive integer"):
        StabilizingPredictions(window=0).check([[0], [0]])


def test_low_uncertainty_uses_unlabelled_rows_and_reports_evidence():
    sure = np.array([[0.98, 0.02], [0.03, 0.97], [0.99, 0.01]])
    unsure = np.array([[0.5, 0.5], [0.55, 0.45], [0.98, 0.02]])
    assert LowUncertainty().check(sure).stop
    d = LowUncertainty().check(unsure)
    assert d.action == "continue" and d.evidence["mean"] == pytest.approx((1.0 + 0.9 + 0.04) / 3)
    # labelled rows are skipped: only row 2 (confident) is unlabelled
    d = LowUncertainty().check(unsure, labels=[0, 1, -1])
    assert d.stop and d.evidence["n_items"] == 1
    # max is stricter than mean
    mixed = np.vstack([np.tile([0.99, 0.01], (20, 1)), [[0.5, 0.5]]])
    assert LowUncertainty(statistic="mean").check(mixed).stop
    assert not LowUncertainty(statistic="max").check(mixed).stop
    with pytest.raises(ValueError, match="unknown measure"):
        LowUncertainty(measure="bald").check(sure)
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[1\]"):
        LowUncertainty().check(np.array([[0.5, 0.5], [np.nan, 0.5]]))


def test_accuracy_lift_suggests_switching_below_one_point():
    d = AccuracyLift().check([0.60, 0.70, 0.705], n_labels=[20, 30, 40])
    assert isinstance(d, StoppingDecision)
    assert d.action == "switch_strategy" and not d.stop
    assert d.evidence["lift_points"] == pytest.approx(0.5) and d.evidence["labels_added"] == 10
    d = AccuracyLift().check([0.60, 0.70, 0.72])
    assert d.action == "continue" and d.evidence["lift_points"] == pytest.approx(2.0)
    drop = AccuracyLift().check([0.7, 0.68])
    assert drop.action == "switch_strategy" and "accuracy fell 2.0 points" in drop.reason   # a drop is no lift
    assert AccuracyLift().check([0.7]).action == "continue"
    with pytest.raises(ValueError, match=r"rounds \[1\]"):
        AccuracyLift().check([0.5, 75.0])
