"""Segmentation figures: mIoU vs masks (+ simulated random baseline), IoU per class with the weakest marked,
labelled pixels per class."""
from __future__ import annotations

import numpy as np
import pandas as pd

from alwidgets import Session
from alwidgets.plots import class_iou_figure, miou_curve_figure, pixel_counts_figure
from alwidgets.segmentation import DenseDecoder, make_shapes
from alwidgets.segmentation.features import DenseFeatures


def test_miou_curve_strategies_baseline_and_full_pool():
    curves = pd.DataFrame({"strategy": ["random"] * 4 + ["auto"] * 4, "split": [0, 0, 1, 1] * 2,
                           "n_masks": [5, 10] * 4, "miou": [0.3, 0.4, 0.32, 0.42, 0.31, 0.45, 0.33, 0.47]})
    base = pd.DataFrame({"n_labels": [5, 10], "mean": [0.3, 0.41], "std": [0.01, 0.02]})
    fig = miou_curve_figure(curves, baseline=base, full_pool=0.5)
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert list(lines) == ["random", "auto"]
    assert np.allclose(lines["auto"].y, [0.32, 0.46]) and lines["random"].line.dash == "dash"   # mean over splits
    assert [t.name for t in fig.data][-2:] == ["random band", "random (simulated)"]
    assert fig.layout.xaxis.title.text == "masks labelled" and fig.layout.yaxis.title.text == "mIoU"
    assert any("full pool 50%" in a.text for a in fig.layout.annotations)
    # a session's history: rounds without a score (too few masks) are left out
    h = pd.DataFrame({"n_labels": [3, 6, 9], "miou": [np.nan, 0.4, 0.5]})
    (t,) = [t for t in miou_curve_figure(h).data if t.name == "session"]
    assert list(t.x) == [6, 9]


def test_class_iou_weakest_marked_and_pixels():
    iou = {"Sky": 0.9, "Pole": 0.15, "Road": 0.95, "Sign<b>": 0.2, "Bicyclist": None}
    fig = class_iou_figure(iou, n_weak=2)
    by = {t.name: list(t.y) for t in fig.data}
    assert by["weakest"] == [None, 0.15, None, 0.2, None] and by["IoU"] == [0.9, None, 0.95, None, None]
    assert by["no data"] == [None, None, None, None, 1.0]
    assert "weakest: Pole, Sign&lt;b&gt;" in fig.layout.title.text        # names shown as text
    assert list(fig.data[0].x)[3] == "Sign&lt;b&gt;"
    fig = pixel_counts_figure([100000, 50, 0], ["road", "pole", "sign"])
    assert fig.data[0].name == "pixels" and list(fig.data[0].y) == [100000, 50, 0]
    assert fig.layout.yaxis.type == "log" and list(fig.data[0].text) == ["100.0%", "0.0%", "0.0%"]
    assert pixel_counts_figure([10, 20], ["a", "b"]).layout.yaxis.type == "linear"


def test_session_baseline_and_figures_from_a_session():
    data = make_shapes(n_images=14, size=(24, 24), random_state=4)
    feats = DenseFeatures.from_pixels(data.pool)
    model = DenseDecoder(4, 4, n_components=None, width=8, fine=8, min_steps=4, max_steps=4, random_state=0)
    got = []
    with Session(data, embeddings=feats, model=model, store=":memory:", selector="random",
                 test=data.ids[10:]) as s:
        s.on("baseline", got.append)
        s.batch_size = 2
        curves = s.show_baseline(repeats=1, budget=4)
        assert sorted(curves["n_labels"].unique()) == [2, 4] and got[0]["n_labels"].tolist() == [2, 4]
        b = s.next_batch(2)
        s.submit({k: data.masks[data.pool.index_of(k)] for k in b})
        fig = miou_curve_figure(s.history, baseline=got[0])
        assert [t.name for t in fig.data if t.name == "session"] == ["session"]
        assert class_iou_figure(s.metrics_["iou"], data.classes).data[0].x == tuple(data.classes)
        assert pixel_counts_figure(s.label_counts(), data.classes).data[0].y == tuple(int(c) for c in s.label_counts())
