"""A headless segmentation Session: masks in, PNG payloads in the store, mIoU out, the loop unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets import Session
from alwidgets.loop import Loop
from alwidgets.segmentation import DenseDecoder, MaskError, make_shapes, mask_from_png, mask_to_png
from alwidgets.segmentation.features import DenseFeatures
from alwidgets.segmentation.task import SegmentationTask
from store_backends import backend, pg_server, store_target  # noqa: F401 (fixtures)


def small_model():
    return DenseDecoder(4, 4, n_components=None, width=16, fine=8, min_steps=12, max_steps=12, random_state=0)


@pytest.fixture(scope="module")
def shapes():
    data = make_shapes(n_images=16, size=(32, 32), random_state=0)
    return data, DenseFeatures.from_pixels(data.pool)


def masks_for(data, batch):
    return {k: data.masks[data.pool.index_of(k)] for k in batch}


def test_loop_runs_on_dense_features(shapes):
    data, feats = shapes
    loop = Loop(SegmentationTask(data.classes, ignore_index=4), small_model(), "entropy")
    labels = loop.task.empty_labels(len(data))
    sel = loop.select(3, feats, labels, None, random_state=0)      # cold start: the task's random images
    assert sel.info["cold_start"].startswith("no model predictions") and sel.info["picked_by"] == "random"
    for i in sel.indices:
        labels[i] = data.masks[i]
    test = feats.subset([12, 13, 14, 15])
    fitted = loop.fit(feats, labels, X_eval=test)
    assert fitted.predictions.shape == (16, 4, 8, 8) and fitted.eval_predictions.shape == (4, 4, 8, 8)
    sel = loop.select(2, feats, labels, fitted, candidates=np.arange(8), random_state=0)
    assert sel.info["picked_by"] == "entropy" and set(sel.indices) <= set(range(8)) - set(np.flatnonzero(
        loop.task.is_labelled(labels)))


def test_round_trip_restart_undo_and_metrics(shapes, tmp_path):
    data, feats = shapes
    db = tmp_path / "masks.db"
    s = Session(data, embeddings=feats, model=small_model(), store=db, cv=2)
    assert isinstance(s.task, SegmentationTask) and s.task.ignore_index == 4 and s.selector.name == "auto"
    assert s.predicted_mask(data.ids[0]) is None                      # nothing labelled yet
    b = s.next_batch(3)
    assert len(b) == 3 and b.info["phase"] == "random" and b.suggestions == [None] * 3
    msg = s.submit(masks_for(data, b))
    assert msg == "saved 3 labels · mIoU n/a (cross-validated on 3 labelled items)"
    fit = s.fitted_
    b2 = s.next_batch(2)
    assert s.fitted_ is fit       # rounds and leases change the store, not the masks: no second fit
    assert all(0 < c <= 1 for c in b2.confidences)                   # mean top probability per image
    # the painter's PNG bytes work as well as arrays
    s.submit({k: mask_to_png(v) for k, v in masks_for(data, b2).items()})
    h = s.history
    assert h["n_labels"].tolist() == [3, 5] and (h["accuracy_source"] == "cv").all()
    assert {"miou", "pixel_accuracy", "iou"} <= set(h.columns)
    assert np.isnan(h["miou"].iloc[0])      # 3 masks: too few to cross-validate (the status said "n/a")
    assert h["miou"].iloc[-1] == h["accuracy"].iloc[-1] and set(h["iou"].iloc[-1]) == set(data.classes)
    assert 0 < s.metrics_["miou"] <= s.metrics_["pixel_accuracy"] <= 1
    # stored as 8-bit PNG payloads, no class name
    stored = s.labels_df(history=True)
    assert set(stored["media_type"]) == {"image/png"} and stored["label"].isna().all()
    payload, media = s.store.payload(b.ids[0])
    np.testing.assert_array_equal(mask_from_png(payload, n_classes=4, ignore_index=4), data.masks[b.indices[0]])
    # labelled pixels per class, the ignore index not counted
    counts = s.label_counts()
    expected = sum(np.bincount(data.masks[i].ravel(), minlength=5)[:4] for i in [*b.indices, *b2.indices])
    np.testing.assert_array_equal(counts, expected)
    # the painter's pre-fill: a class map at the image's size
    pred = s.predicted_mask(data.ids[10])
    assert pred.shape == (32, 32) and pred.dtype == np.uint8 and pred.max() < 4
    # undo retracts the last mask and refits (cold: the retracted mask leaves no trace in the weights)
    last = b2.ids[-1]
    assert s.undo() == f"retracted the label of {last}"
    assert last not in s.store.current_labels() and s.progress()["pool_labelled"] == 4
    assert s.model_.trained_rows_ == sorted(int(i) for i in [*b.indices, *b2.indices[:-1]])
    s.close()

    # a restarted session reads the masks back from the store
    s2 = Session(data, embeddings=feats, model=small_model(), store=db, cv=2)
    labels = s2.labels()
    assert sum(m is not None for m in labels) == 4
    for k in [*b.ids, *b2.ids[:-1]]:
        np.testing.assert_array_equal(labels[data.pool.index_of(k)], data.masks[data.pool.index_of(k)])
    assert labels[data.pool.index_of(last)] is None
    assert s2.metrics_["n_labels"] == 5        # the last finished round, before the undo
    s2.close()


def test_bad_masks_are_refused_and_nothing_is_stored(shapes):
    data, feats = shapes
    s = Session(data, embeddings=feats, model=small_model(), store=":memory:", selector="random")
    b = s.next_batch(2)
    good = masks_for(data, b)
    a, c = b.ids
    with pytest.raises(MaskError, match=rf"item '{a}'.*mask is 16x32 \(WxH\) but the image is 32x32"):
        s.submit({c: good[c], a: good[a][:, :16]})
    with pytest.raises(MaskError, match=rf"item '{a}'.*values \[7\]"):
        s.submit({c: good[c], a: np.full((32, 32), 7, np.uint8)})
    with pytest.raises(MaskError, match=rf"item '{a}'.*not a PNG"):
        s.submit({c: good[c], a: b"junk"})
    with pytest.raises(MaskError, match=rf"item '{a}'.*array of class indices or PNG bytes"):
        s.submit({c: good[c], a: "road"})
    assert len(s.labels_df(history=True)) == 0 and s.progress()["pool_labelled"] == 0
    assert s.submit(good).startswith("saved 2 labels")
    s.close()


def test_segmentation_by_name_test_set_and_selector_names(shapes):
    data, feats = shapes
    with pytest.raises(ValueError, match="needs classes"):
        Session(data.pool, embeddings=feats, task="segmentation", store=":memory:")
    with pytest.raises(ValueError, match="needs features"):
        Session(data.pool, task="segmentation", classes=data.classes, store=":memory:")
    with pytest.raises(TypeError, match="dense features"):
        Session(data, embeddings=feats.pooled, store=":memory:")
    test_ids = data.ids[12:]
    s = Session(data.pool, embeddings=feats, task=SegmentationTask(data.classes, ignore_index=4),
                model=small_model(), selector="class_weighted", store=":memory:",
                test=(feats.subset(range(12, 16)), data.masks[12:]))
    assert s.selector.name == "class_weighted"
    b = s.next_batch(3)
    assert b.strategy.endswith("(cold start)")
    assert s.submit(masks_for(data, b)).endswith("(test set, 4 items)")
    assert s.metrics_["source"] == "test" and s.metrics_["n_eval"] == 4
    assert s.next_batch(2).info["picked_by"] == "class_weighted"
    assert "next batches are picked by 'random'" == s.use("random")
    with pytest.raises(ValueError, match="unknown segmentation strategy"):
        s.use("least_confidence")
    with pytest.raises(TypeError, match="import_masks"):
        s.import_labels(s.labels_df())
    with pytest.raises(TypeError, match="simulate --task segmentation"):
        s.recommend()
    s.close()
    # test items by id, with masks known to the data set: never offered
    s = Session(data, embeddings=feats, model=small_model(), store=":memory:", test=list(test_ids),
                selector="random")
    assert s.metrics_ is None and not set(s.candidates()) & set(range(12, 16))
    s.close()


def test_two_sessions_lease_images_and_supersede_masks(shapes, tmp_path):
    data, feats = shapes
    db = tmp_path / "team.db"
    a = Session(data, embeddings=feats, model=small_model(), store=db, selector="random", annotator="ana")
    b = Session(data, embeddings=feats, model=small_model(), store=db, selector="random", annotator="bo",
                random_state=0)
    ba, bb = a.next_batch(3), b.next_batch(3)
    assert not set(ba.ids) & set(bb.ids)                    # each session's batch is leased to it
    a.submit(masks_for(data, ba))
    # a corrected mask (the painter's resubmit of a saved image) supersedes the first; the history keeps both
    k = ba.ids[0]
    fixed = data.masks[data.pool.index_of(k)].copy()
    fixed[:4, :4] = 1 - fixed[:4, :4].clip(0, 1)     # a visible change (an equal mask is not stored again)
    a.submit({k: fixed}, resubmit=True)
    hist = a.labels_df(history=True)
    rows = hist[hist["item_id"] == k]
    assert len(rows) == 2 and rows["superseded_by"].notna().tolist() == [True, False]
    np.testing.assert_array_equal(b.labels()[data.pool.index_of(k)], fixed)   # the other session reads it
    assert set(a.labels_df()["annotator"]) == {"ana"}
    a.close()
    b.close()


def test_masks_round_trip_on_both_backends(shapes, store_target):
    """Masks as payloads through SQLite and PostgreSQL: submit, read back by a new session, undo."""
    data, feats = shapes
    with Session(data, embeddings=feats, model=small_model(), store=store_target, selector="random") as s:
        b = s.next_batch(2)
        s.submit(masks_for(data, b))
        assert set(s.store.current_payloads()) == set(b.ids)
        s.undo()
    with Session(data, embeddings=feats, model=small_model(), store=store_target, selector="random") as s2:
        labels = s2.labels()
        i = data.pool.index_of(b.ids[0])
        np.testing.assert_array_equal(labels[i], data.masks[i])
        assert labels[data.pool.index_of(b.ids[1])] is None and set(s2.store.current_payloads()) == {b.ids[0]}


def test_session_with_a_backbone_on_enlarged_images():
    """``DenseEmbedder(input_scale=2)`` feeds a Session unchanged: masks, refits and pre-fill at the image's size."""
    from alwidgets.segmentation import DenseEmbedder

    data = make_shapes(n_images=10, size=(32, 32), random_state=3)
    emb = DenseEmbedder("resnet10t", pretrained=False, out_indices=(1, 2), input_scale=2, cache_dir=False,
                        progress=False)
    s = Session(data, embedder=emb, model=small_model(), selector="entropy", store=":memory:")
    assert s.embeddings.strides == (2, 4) and s.embeddings.image_size == (32, 32)
    b = s.next_batch(3)
    s.submit(masks_for(data, b))
    b2 = s.next_batch(2)
    assert b2.info["picked_by"] == "entropy" and not set(b2.ids) & set(b.ids)
    pred = s.predicted_mask(b2.ids[0])
    assert pred.shape == (32, 32) and pred.max() < 4
    s.close()


def _tested_session(shapes, selector):
    data, feats = shapes
    test = make_shapes(n_images=4, size=(32, 32), random_state=1)
    s = Session(data, embeddings=feats, store=":memory:", selector=selector,
                test=(DenseFeatures.from_pixels(test.pool), test.masks), model=small_model())
    return s, data, test


def test_label_shows_the_painter_above_live_panels_and_calibration_reaches_the_selector(shapes):
    from alwidgets.widgets.app import MaskApp

    s, data, test = _tested_session(shapes, "class_targeted")
    app = s.label(3)
    assert isinstance(app, MaskApp) and app.painter.current in s.batch.ids
    assert [f.layout.title.text for f in app.figures.values()] == [
        "mIoU vs masks", "IoU per class", "labelled pixels per class", "reliability (pixels)"]
    assert [a.text for a in app.figures["balance"].layout.annotations] == ["no masks yet"]
    for _ in range(2):   # two rounds: the second fit calibrates on the masks the first did not see
        s.submit(masks_for(data, s.batch.ids))
        s.wait()
        s.label(3)
    s.wait()
    counts = s.label_counts()
    assert list(app.trace("balance").y) == counts.tolist() and counts.sum() == 6 * 32 * 32 - sum(
        int((data.masks[data.pool.index_of(k)] == 4).sum()) for k in s.labels_df()["item_id"])
    assert list(app.trace("session").x) == [3, 6]
    np.testing.assert_allclose(app.trace("session").y, s.history["miou"])
    iou = [s.metrics_["iou"][c] for c in data.classes]
    shown = [w if v is None else v for v, w in zip(app.trace("per_class").y, app.trace("per_class_weak").y)]
    np.testing.assert_allclose(np.array(shown, float), np.array(iou, float))
    weak = [k for k, v in enumerate(app.trace("per_class_weak").y) if v is not None]
    assert weak == [int(np.nanargmin(np.array(iou, float)))]          # 4 classes: the one weakest in red
    rel = s.metrics_["reliability"]
    assert list(app.trace("reliability").x) == rel["confidence"] and sum(rel["count"]) == sum(
        int((m != 4).sum()) for m in test.masks)                      # every scored test pixel, once
    assert f"ECE {s.metrics_['ece']:.3f}" in app.figures["reliability"].layout.title.text
    T = s.model.__dict__.get("temperature_")
    assert T is not None and s.batch.info["temperature"] == pytest.approx(T)


def test_the_mask_panels_draw_the_simulated_random_baseline(shapes):
    s, _, _ = _tested_session(shapes, "random")
    app = s.label(3)
    curves = s.show_baseline(repeats=1, budget=6)
    base = app.trace("baseline")
    assert base.visible and list(base.x) == sorted(curves["n_labels"].unique().tolist())
