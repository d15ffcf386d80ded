"""Calibration: temperature scaling, ECE, reliability data."""
import numpy as np
import pandas as pd
import pytest

from alwidgets.calibrate import TemperatureScaling, expected_calibration_error, reliability_data
from alwidgets.select import Margin


def calibrated_logits(n=4000, c=4, seed=0):
    """Logits z with labels drawn from softmax(z): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, c))
    p = TemperatureScaling.softmax(z)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_the_distortion(true_t):
    z, y = calibrated_logits()
    distorted = z / true_t                      # T<1 would have made the model under-confident, T>1 over-
    ts = TemperatureScaling().fit(distorted, y)
    assert ts.temperature_ == pytest.approx(1 / true_t, rel=0.1)
    assert ts.nll_after_ <= ts.nll_before_ + 1e-12


def test_temperature_scaling_reduces_ece_on_overconfident_probs_and_keeps_argmax():
    z, y = calibrated_logits(seed=1)
    over = TemperatureScaling.softmax(z * 3.0)
    ts = TemperatureScaling().fit(over, y)        # probabilities in: logs are the logits
    cal = ts.transform(over)
    assert ts.temperature_ > 2.0
    assert expected_calibration_error(cal, y) < 0.5 * expected_calibration_error(over, y)
    np.testing.assert_array_equal(cal.argmax(1), over.argmax(1))
    np.testing.assert_allclose(cal.sum(1), 1.0)
    # calibrated probabilities feed straight into an uncertainty selector
    sel = Margin().select(5, labels=np.full(len(y), -1), probs=cal, random_state=0)
    assert len(sel) == 5


def test_temperature_scaling_inputs():
    z, y = calibrated_logits(n=200)
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform(z)
    with pytest.raises(ValueError, match="y holds class 7 but there are only 4 columns"):
        TemperatureScaling().fit(z, np.where(np.arange(200) == 3, 7, y))
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[2\]"):
        bad = z.copy()
        bad[2, 1] = np.inf
        TemperatureScaling().fit(bad, y)
    with pytest.raises(ValueError, match="no labelled rows"):
        TemperatureScaling().fit(z, np.full(200, -1))
    with pytest.raises(ValueError, match="fitted on 4"):
        TemperatureScaling().fit(z, y).transform(z[:, :3])
    # unlabelled rows (-1) are ignored when fitting
    part = np.where(np.arange(200) % 2 == 0, y, -1)
    a = TemperatureScaling().fit(z, part).temperature_
    b = TemperatureScaling().fit(z[::2], y[::2]).temperature_
    assert a == pytest.approx(b, rel=1e-6)
    # declared input kinds
    p = TemperatureScaling.softmax(z)
    t_auto = TemperatureScaling().fit(p, y).temperature_
    t_probs = TemperatureScaling(input="probs").fit(p, y).temperature_
    assert t_auto == pytest.approx(t_probs)
    with pytest.raises(ValueError, match="TemperatureScaling: unknown input kind 'scores'; choose from auto, probs, logits"):
        TemperatureScaling(input="scores").fit(z, y)


def test_ece_and_reliability_data_by_hand():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.65, 0.35], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 0, 1])
    table = reliability_data(probs, y, n_bins=5)
    assert list(table.columns) == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    # confidences .95 .85 | .65 .70 | .55 fall in bins (.8, 1], (.6, .8], (.4, .6]
    assert table["count"].tolist() == [0, 0, 1, 2, 2]
    row = table.set_index("bin").loc[4]
    assert row["confidence"] == pytest.approx(0.9) and row["accuracy"] == pytest.approx(0.5)
    assert np.isnan(table.loc[0, "accuracy"])
    # bins 2, 3, 4: |1 - .55| * 1 + |1 - .675| * 2 + |.5 - .9| * 2, over 5 items
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx((0.45 + 0.65 + 0.8) / 5)
    assert isinstance(table, pd.DataFrame)


def test_ece_is_near_zero_for_calibrated_predictions():
    z, y = calibrated_logits(n=20000, seed=2)
    assert expected_calibration_error(TemperatureScaling.softmax(z), y) < 0.02
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        expected_calibration_error(TemperatureScaling.softmax(z), y, n_bins=0)
