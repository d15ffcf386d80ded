"""The session's live panels (alwidgets.plots.session_panels / draw_session), without a browser."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alwidgets.plots import (ACCURACY, BALANCE, PANEL_WIDTH, PER_CLASS, RELIABILITY, accuracy_text, draw_session,
                             integer_axis, session_panels, trace)

DIGITS = [str(d) for d in range(10)]


def _history(rows):
    return pd.DataFrame(rows, columns=["round", "n_labels", "accuracy", "accuracy_std", "session_id"])


def test_class_axes_are_categorical_even_for_digit_names():
    figs = session_panels(DIGITS)
    for panel in (PER_CLASS, BALANCE):
        ax = figs[panel].layout.xaxis
        assert ax.type == "category" and list(ax.categoryarray) == DIGITS
    draw_session(figs, DIGITS, _history([]), None, np.zeros(10))
    assert figs[BALANCE].layout.xaxis.type == "category"


def test_markup_in_class_names_is_shown_as_text():
    figs = session_panels(["<b>bird</b>", "a&b"])
    assert list(trace(figs[PER_CLASS], "per_class").x) == ["&lt;b&gt;bird&lt;/b&gt;", "a&amp;b"]
    assert list(figs[BALANCE].layout.xaxis.categoryarray) == ["&lt;b&gt;bird&lt;/b&gt;", "a&amp;b"]


def test_no_labels_yet_is_said_and_axes_stay_sane():
    figs = session_panels(["cat", "dog"])
    draw_session(figs, ["cat", "dog"], _history([]), None, [0, 0])
    for panel in (ACCURACY, PER_CLASS, BALANCE):
        assert [a.text for a in figs[panel].layout.annotations] == ["no labels yet"]
    assert tuple(figs[ACCURACY].layout.xaxis.range) == (0, 10)       # not plotly's empty -1..1
    assert tuple(figs[BALANCE].layout.yaxis.range) == (0, 1.1)
    assert figs[ACCURACY].layout.showlegend is False
    draw_session(figs, ["cat", "dog"], _history([(1, 4, 0.5, 0.1, "s")]),
                 {"accuracy": 0.5, "per_class": {"cat": 1.0, "dog": 0.0}}, [3, 1], session_id="s")
    for panel in (ACCURACY, PER_CLASS, BALANCE):
        assert not figs[panel].layout.annotations


def test_label_axes_have_whole_number_ticks():
    assert integer_axis(3)["dtick"] == 1 and integer_axis(0)["dtick"] == 1
    assert integer_axis(37)["dtick"] == 10 and integer_axis(120)["dtick"] == 50 and integer_axis(9)["dtick"] == 2
    figs = session_panels(["a", "b"])
    draw_session(figs, ["a", "b"], _history([(1, 6, 0.5, 0.1, "s")]), None, [4, 2], session_id="s")
    acc, bal = figs[ACCURACY].layout, figs[BALANCE].layout
    assert acc.xaxis.tickformat == "d" and acc.xaxis.dtick == 2 and acc.xaxis.tick0 == 0
    assert bal.yaxis.tickformat == "d" and bal.yaxis.dtick == 1


def test_a_class_without_data_is_not_a_class_at_zero():
    figs = session_panels(["cat", "dog", "eel"])
    draw_session(figs, ["cat", "dog", "eel"], _history([]),
                 {"accuracy": 0.4, "per_class": {"cat": 0.0, "dog": 0.8, "eel": None}}, [2, 3, 0])
    assert trace(figs[PER_CLASS], "per_class").y == (0.0, 0.8, None)
    missing = trace(figs[PER_CLASS], "per_class_missing")
    assert missing.y == (None, None, 1.0) and missing.visible and set(missing.text) == {"no data"}
    assert trace(figs[PER_CLASS], "per_class").texttemplate == "%{y:.0%}"   # "0%" is written on the empty bar


def test_rounds_of_earlier_sessions_are_not_this_session():
    figs = session_panels(["a", "b"])
    h = _history([(1, 4, 0.4, 0.1, "old"), (2, 8, 0.5, 0.08, "old"), (3, 12, 0.6, None, "new")])
    draw_session(figs, ["a", "b"], h, {"accuracy": 0.6, "accuracy_std": 0.05, "source_text": "test set, 50 items"},
                 [6, 6], session_id="new")
    mine, earlier = trace(figs[ACCURACY], "session"), trace(figs[ACCURACY], "earlier")
    assert (mine.name, mine.x, mine.y) == ("this session", (12,), (0.6,))
    assert (earlier.name, earlier.x, earlier.error_y.array) == ("earlier sessions", (4, 8), (0.1, 0.08))
    assert mine.showlegend and earlier.showlegend and figs[ACCURACY].layout.showlegend
    assert figs[ACCURACY].layout.title.text == "accuracy vs labels<br><sub>60% ± 5 · test set, 50 items</sub>"
    # without a session id no round is called "this session"
    draw_session(figs, ["a", "b"], h, None, [6, 6])
    assert trace(figs[ACCURACY], "session").name == "rounds" and trace(figs[ACCURACY], "earlier").x == ()


def test_panels_have_a_fixed_width_so_a_narrow_notebook_wraps_them():
    figs = session_panels(["a"], calibration=True)
    assert list(figs) == [ACCURACY, PER_CLASS, BALANCE, RELIABILITY]
    assert {f.layout.width for f in figs.values()} == {PANEL_WIDTH} and 2 * PANEL_WIDTH <= 700


def test_reliability_and_accuracy_text():
    figs = session_panels(["a", "b"], calibration=True)
    draw_session(figs, ["a", "b"], _history([]), {"accuracy": 0.7, "reliability": {
        "confidence": [0.55, 0.9], "accuracy": [0.5, 0.85], "count": [4, 9]}}, [3, 4])
    r = trace(figs[RELIABILITY], "reliability")
    assert r.x == (0.55, 0.9) and r.text == ("4 items", "9 items")
    assert accuracy_text(None) == "" and accuracy_text({"accuracy": 0.625}) == "62%"
    assert accuracy_text({"accuracy": 0.5, "accuracy_std": float("nan")}) == "50%"
    with pytest.raises(KeyError, match="no trace 'nope'"):
        trace(figs[ACCURACY], "nope")


def test_segmentation_panels_read_masks_iou_and_pixels():
    classes = ["road", "sky", "car", "pole", "sign", "bike"]
    figs = session_panels(classes, segmentation=True)
    assert RELIABILITY in figs and figs[ACCURACY].layout.xaxis.title.text == "masks"
    draw_session(figs, classes, _history([]), None, [0] * 6)
    assert [a.text for a in figs[BALANCE].layout.annotations] == ["no masks yet"]
    iou = {"road": 0.9, "sky": 0.8, "car": 0.5, "pole": 0.05, "sign": 0.1, "bike": None}
    draw_session(figs, classes, _history([(1, 5, 0.47, 0.0, "s")]),
                 {"accuracy": 0.47, "per_class": iou, "ece": 0.031,
                  "reliability": {"confidence": [0.55, 0.95], "accuracy": [0.4, 0.9], "count": [1200, 90000]}},
                 [90000, 50000, 8000, 300, 200, 0], session_id="s")
    assert list(trace(figs[PER_CLASS], "per_class_weak").y) == [None, None, None, 0.05, 0.1, None]  # 6: 2 weakest
    assert list(trace(figs[PER_CLASS], "per_class").y) == [0.9, 0.8, 0.5, None, None, None]
    assert "weakest: pole, sign" in figs[PER_CLASS].layout.title.text
    assert figs[BALANCE].layout.yaxis.type == "log"                   # 90,000 against 200 pixels
    assert tuple(figs[ACCURACY].layout.xaxis.range) == (0, 10)        # 5 masks: pixels do not stretch the axis
    assert list(trace(figs[RELIABILITY], "reliability").text) == ["1,200 pixels", "90,000 pixels"]
    assert figs[RELIABILITY].layout.title.text.endswith("ECE 0.031</sub>")
    draw_session(figs, classes, _history([(1, 5, 0.47, 0.0, "s")]), None, [900, 500, 80, 30, 20, 10])
    assert figs[BALANCE].layout.yaxis.type == "linear"
