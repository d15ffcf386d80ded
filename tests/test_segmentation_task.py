"""SegmentationTask: the Task contract for masks (store codec, model, predictions, mIoU, cross-validation)."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets.segmentation import DenseDecoder, MaskError, make_shapes, mask_to_png
from alwidgets.segmentation.features import DenseFeatures
from alwidgets.segmentation.task import SegmentationTask
from alwidgets.tasks.base import Task


@pytest.fixture(scope="module")
def setup():
    data = make_shapes(n_images=12, size=(32, 32), random_state=0)
    return SegmentationTask(data.classes, ignore_index=4), data, DenseFeatures.from_pixels(data.pool)


def test_is_a_task_and_round_trips_masks(setup):
    task, data, _ = setup
    assert isinstance(task, Task) and task.score_name == "mIoU"
    labels = task.empty_labels(3)
    assert task.is_labelled(labels).tolist() == [False] * 3
    task.set_label(labels, 1, data.masks[1])
    assert task.is_labelled(labels).tolist() == [False, True, False]
    rec = task.encode(data.masks[2])
    np.testing.assert_array_equal(task.decode(**rec), data.masks[2])
    np.testing.assert_array_equal(task.decode(**task.encode(mask_to_png(data.masks[2]))), data.masks[2])
    assert task.decode("mask", b"junk", "image/png") is None and task.decode("cat") is None
    with pytest.raises(MaskError, match=r"values \[9\]"):
        task.encode(np.full((4, 4), 9, np.uint8))
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationTask(["a", "b"], ignore_index=1)


def test_fit_predict_score_and_cross_validate(setup):
    task, data, feats = setup
    labels = task.empty_labels(len(data))
    for i in range(8):
        task.set_label(labels, i, data.masks[i])
    model = DenseDecoder(4, 4, n_components=None, min_steps=30, max_steps=30, random_state=0)
    fitted, pred = task.fit_predict(model, feats, labels)
    assert fitted is model and task.check_predictions(pred, len(data)).shape == (12, 4, 8, 8)
    s = task.score(data.masks[8:], pred[8:])
    assert 0.5 < s["score"] <= 1 and set(s["iou"]) == set(data.classes)
    hard = task.score(data.masks[8:], model.predict(feats, [8, 9, 10, 11]))
    assert abs(hard["score"] - s["score"]) < 0.1
    with pytest.raises(ValueError, match=r"shape \(12, 4, h, w\)"):
        task.check_predictions(pred[:, :3], 12)
    cv = task.cross_validate(model, feats, labels, cv=2)
    assert cv["n_folds"] == 2 and 0 <= cv["score"] <= 1 and "score_std" in cv
    assert task.cross_validate(model, feats, task.empty_labels(12)) is None


def test_score_gives_the_pixels_reliability_and_ece_leaving_out_the_ignore_index():
    task = SegmentationTask(["a", "b"], ignore_index=2)
    truth = np.array([[0, 0, 1, 2]])                       # one void pixel: not counted anywhere
    p = np.zeros((2, 1, 4), np.float32)
    p[:, 0, 0], p[:, 0, 1] = [0.95, 0.05], [0.65, 0.35]    # right at 0.95, right at 0.65
    p[:, 0, 2], p[:, 0, 3] = [0.62, 0.38], [0.05, 0.95]    # wrong at 0.62; the void pixel at 0.95
    m = task.score([truth], [p])
    rel = m["reliability"]
    assert rel["count"] == [2, 1] and rel["accuracy"] == [0.5, 1.0]
    np.testing.assert_allclose(rel["confidence"], [(0.65 + 0.62) / 2, 0.95], atol=1e-6)
    # ECE = sum over bins of |hits - confidence| / pixels
    assert m["ece"] == pytest.approx((abs(1 - 0.65 - 0.62) + abs(1 - 0.95)) / 3, abs=1e-6)
    assert "reliability" not in task.score([truth], [np.array([[0, 0, 0, 1]])])   # class maps: no confidences
