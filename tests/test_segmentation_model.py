"""Dense models on synthetic shapes, pixel calibration, the dense feature cache, the simulation loop."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets.segmentation import DenseDecoder, DenseLinearProbe, make_shapes
from alwidgets.segmentation.calibrate import classwise_ece, fit_pixel_temperature, pixel_calibration
from alwidgets.segmentation.features import DenseFeatures
from alwidgets.segmentation.model import class_weights_from_counts


@pytest.fixture(scope="module")
def shapes():
    train = make_shapes(n_images=16, size=(32, 32), random_state=0)
    test = make_shapes(n_images=6, size=(32, 32), random_state=1)
    return train, test, DenseFeatures.from_pixels(train.pool), DenseFeatures.from_pixels(test.pool)


def _decoder(**kw):
    kw = dict(n_components=None, min_steps=40, max_steps=40, random_state=0) | kw
    return DenseDecoder(4, 4, **kw)


def test_decoder_learns_shapes_and_gives_probabilities(shapes):
    train, test, ftr, fte = shapes
    m = _decoder().fit(ftr, train.masks)
    s = m.score(fte, test.masks)
    assert s.miou > 0.6 and s.pixel_accuracy > 0.85
    p = m.predict_proba(fte, [0, 1])
    assert p.shape == (2, 4, 8, 8) and np.allclose(p.sum(1), 1, atol=1e-5)
    full = m.predict_proba(fte, [0], size="image")
    assert full.shape == (1, 4, 32, 32)
    assert m.predict(fte, [0, 1]).shape == (2, 32, 32)


def test_probe_learns_shapes(shapes):
    train, test, ftr, fte = shapes
    m = DenseLinearProbe(4, 4, positions_per_class=500, random_state=0).fit(ftr, train.masks)
    assert m.score(fte, test.masks).miou > 0.5


def test_warm_start_continues_with_fewer_steps(shapes):
    train, _, ftr, _ = shapes
    m = _decoder(min_steps=40, max_steps=40, warm_fraction=0.5)
    m.fit(ftr, train.masks[:4] + [None] * 12)
    first = [p.detach().clone() for p in m.net_.parameters()]
    m.fit(ftr, train.masks[:8] + [None] * 8)
    assert m.warm_started_ and m.n_steps_ == 20 and m.n_masks_ == 8
    assert any(not np.allclose(a.numpy(), b.detach().numpy()) for a, b in zip(first, m.net_.parameters()))
    cold = _decoder(warm_start=False, min_steps=40, max_steps=40)
    cold.fit(ftr, train.masks[:4] + [None] * 12)
    cold.fit(ftr, train.masks[:8] + [None] * 8)
    assert not cold.warm_started_ and cold.n_steps_ == 40


def test_max_seconds_caps_a_refit(shapes):
    train, _, ftr, _ = shapes
    m = _decoder(min_steps=10_000, max_steps=10_000, max_seconds=0.5).fit(ftr, train.masks)
    assert 1 <= m.n_steps_ < 10_000 and m.fit_seconds_ < 30


def test_ignored_pixels_never_train(shapes):
    train, _, ftr, _ = shapes
    hidden = [np.where(m == 3, 4, m).astype(np.uint8) for m in train.masks]    # triangles -> ignore
    for model in (_decoder(), DenseLinearProbe(4, 4, positions_per_class=500, random_state=0)):
        model.fit(ftr, hidden)
        pred = model.predict(ftr)
        assert np.mean(pred == 3) < 0.01, type(model).__name__


def test_scores_skip_ignored_pixels(shapes):
    train, test, ftr, fte = shapes
    m = _decoder().fit(ftr, train.masks)
    void = [np.full_like(t, 4) for t in test.masks]
    assert m.confusion(fte, void).sum() == 0
    half = m.score(fte, test.masks, scale=2)
    assert abs(half.miou - m.score(fte, test.masks).miou) < 0.05


def test_bad_inputs_are_named(shapes):
    train, _, ftr, _ = shapes
    with pytest.raises(ValueError, match="masks has 3 entries but features has 16"):
        _decoder().fit(ftr, train.masks[:3])
    bad = list(train.masks)
    bad[2] = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match=r"row 2 \('shapes-0002'\) is 10x10"):
        _decoder().fit(ftr, bad)
    with pytest.raises(ValueError, match="no labelled mask"):
        _decoder().fit(ftr, [None] * 16)
    with pytest.raises(RuntimeError, match="not fitted"):
        _decoder().predict_proba(ftr)
    m = _decoder().fit(ftr, train.masks)
    other = DenseFeatures.from_pixels(train.pool, strides=(4,))
    with pytest.raises(ValueError, match="channels"):
        m.predict_proba(other)
    with pytest.raises(ValueError, match="multiple of 4"):
        _decoder(crop=6).fit(ftr, train.masks)


def test_decoder_crop_covers_the_same_pixels_at_any_finest_stride():
    """``crop`` counts stride-8 cells: 8 cells = 64 pixels whether the finest map has stride 4 or 8."""
    rng = np.random.default_rng(0)
    dec = _decoder(crop=8)
    t = np.zeros((1, 64, 64))                                     # targets at loss stride 2: 128 pixels
    for strides in ((4, 8), (8, 16)):
        xs = [np.zeros((1, 1, 128 // s, 128 // s)) for s in strides]
        out, tt = dec._crop(xs, t, strides, 2, rng)
        assert [o.shape[-1] * s for o, s in zip(out, strides)] == [64, 64] and tt.shape[-1] * 2 == 64


def test_median_frequency_weights():
    w = class_weights_from_counts([1000, 100, 10, 0], "median_frequency")
    assert w[3] == 0 and w[0] < w[1] < w[2] and w[1] == pytest.approx(1.0)
    s = class_weights_from_counts([1000, 100, 10, 0], "sqrt_median_frequency")
    np.testing.assert_allclose(s[:3], np.sqrt(w[:3]))
    with pytest.raises(ValueError, match="class_weight"):
        class_weights_from_counts([1, 2], "inverse")


def test_temperature_on_held_out_pixels_and_calibration_report(shapes):
    train, _, ftr, _ = shapes
    m = _decoder().fit(ftr, train.masks[:8] + [None] * 8)
    ts = fit_pixel_temperature(m, ftr, train.masks, rows=range(8, 16), random_state=0)
    assert 0.05 < ts.temperature_ < 20 and ts.nll_after_ <= ts.nll_before_ + 1e-9
    rep = pixel_calibration(m, ftr, train.masks, range(8, 16), temperature=ts.temperature_)
    assert set(rep) >= {"ece", "classwise_ece", "reliability", "temperature", "n_pixels"}
    assert rep["classwise_ece"].shape == (4,) and rep["reliability"]["count"].sum() == rep["n_pixels"]


def test_classwise_ece_matches_direct_computation():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 500)
    y = rng.integers(0, 3, 500)
    got = classwise_ece(p, y, n_bins=10)
    for c in range(3):
        bins = np.clip(np.ceil(p[:, c] * 10).astype(int) - 1, 0, 9)
        ref = sum(abs((y[bins == b] == c).sum() - p[bins == b, c].sum()) for b in range(10)) / 500
        assert got[c] == pytest.approx(ref)


def test_dense_cache_hits_and_matches(tmp_path):
    from alwidgets.segmentation import DenseEmbedder

    pool = make_shapes(n_images=5, size=(32, 32)).pool
    kw = dict(pretrained=False, out_indices=(2, 3), cache_dir=tmp_path, progress=False, batch_size=2)
    emb = DenseEmbedder("resnet10t", **kw)
    emb.cache_chunk = 2
    a = emb.embed(pool)
    assert [m.shape for m in a.maps] == [(5, 128, 4, 4), (5, 256, 2, 2)] and a.maps[0].dtype == np.float16
    b = emb.embed(pool)                                   # from the cache: memory-mapped float16
    assert isinstance(b.maps[0], np.memmap)
    np.testing.assert_array_equal(np.asarray(b.maps[1]), a.maps[1])
    np.testing.assert_allclose(b.pooled, a.pooled)
    emb.cache_dir = False                                 # same (random) weights, computed afresh
    nocache = emb.embed(pool)
    np.testing.assert_array_equal(nocache.maps[0], np.asarray(a.maps[0]))
    other = make_shapes(n_images=5, size=(32, 32), random_state=9).pool
    emb.cache_dir = tmp_path
    assert not np.array_equal(np.asarray(emb.embed(other).maps[0]), np.asarray(a.maps[0]))   # new pool: new entry


def test_dense_input_scale_gives_finer_maps_of_the_same_image(tmp_path):
    """input_scale=2 is the backbone on the twice-enlarged image, described in the image's own pixels."""
    from alwidgets.segmentation import DenseDecoder, DenseEmbedder

    data = make_shapes(n_images=4, size=(32, 32))
    kw = dict(pretrained=False, out_indices=(2, 3), cache_dir=tmp_path, progress=False, batch_size=2)
    x2 = DenseEmbedder("resnet10t", input_scale=2, **kw)
    f = x2.embed(data.pool)
    assert f.strides == (4, 8) and f.image_size == (32, 32)
    assert [m.shape for m in f.maps] == [(4, 128, 8, 8), (4, 256, 4, 4)]
    assert "input_scale=2" in repr(x2)
    # the same maps as the plain embedder asked for an enlarged image (one cache entry serves both)
    big = DenseEmbedder("resnet10t", image_size=(64, 64), **kw)
    big.model_.load_state_dict(x2.model_.state_dict())
    g = big.embed(data.pool)
    assert g.strides == (8, 16) and g.image_size == (64, 64)
    np.testing.assert_array_equal(np.asarray(g.maps[0]), np.asarray(f.maps[0]))
    # the finer maps train and predict at the masks' size
    m = DenseDecoder(4, 4, n_components=None, min_steps=5, max_steps=5, crop=None).fit(f, data.masks)
    assert m.predict_proba(f, [0]).shape == (1, 4, 8, 8)                 # the finest grid: stride 4
    assert m.predict_proba(f, [0], size="image").shape == (1, 4, 32, 32)
    for bad in (3, 0, True, 2.0):
        with pytest.raises(ValueError, match="input_scale must be 1, 2 or 4"):
            DenseEmbedder("resnet10t", input_scale=bad, **kw)
    with pytest.raises(ValueError, match="does not divide the strides"):
        DenseEmbedder("resnet10t", input_scale=4, pretrained=False, out_indices=(0, 1), cache_dir=False).strides


def test_simulation_runs_every_budget_and_summarises(shapes):
    from alwidgets.segmentation.simulate import simulate_segmentation

    train, test, ftr, fte = shapes
    res = simulate_segmentation(ftr, train.masks, fte, test.masks, n_classes=4, ignore_index=4,
                                model=_decoder(min_steps=20, max_steps=20), strategies=["random", "coverage",
                                "class_weighted"], budgets=[2, 4, 8], splits=1, pool_fraction=0.75,
                                classes=train.classes, progress=False)
    c = res.curves
    assert len(c) == 9 and set(c["strategy"]) == {"random", "coverage", "class_weighted"}
    assert c[c.strategy == "class_weighted"]["temperature"].iloc[1:].notna().all()
    table = res.summary(rare=["triangle"], at=4)
    assert {"miou@2", "miou@8", "masks_to_95%", "reached_95%", "rare_iou@4"} <= set(table.columns)
    with pytest.raises(ValueError, match="increasing"):
        simulate_segmentation(ftr, train.masks, fte, test.masks, n_classes=4, budgets=[4, 2], progress=False)


def test_simulation_with_heldout_class_iou(shapes, monkeypatch):
    from alwidgets.segmentation import select as seg_select
    from alwidgets.segmentation.simulate import simulate_segmentation

    train, test, ftr, fte = shapes
    seen = []
    original = seg_select.ClassWeightedUncertainty._select

    def spy(self, n, **kw):
        seen.append(kw["extra"].get("class_iou"))
        return original(self, n, **kw)

    monkeypatch.setattr(seg_select.ClassWeightedUncertainty, "_select", spy)
    simulate_segmentation(ftr, train.masks, fte, test.masks, n_classes=4, ignore_index=4,
                          model=_decoder(min_steps=10, max_steps=10), strategies=["class_weighted"],
                          budgets=[2, 4, 8], splits=1, class_iou="heldout", progress=False)
    assert seen[0] is None and seen[1] is not None and np.shape(seen[1]) == (4,)   # from round 2 on
    with pytest.raises(ValueError, match="class_iou must be"):
        simulate_segmentation(ftr, train.masks, fte, test.masks, n_classes=4, class_iou="cv", progress=False)


def test_decoder_device_choice(shapes):
    import torch

    train, test, ftr, fte = shapes
    m = _decoder(device="cpu", min_steps=5, max_steps=5).fit(ftr, train.masks)
    assert m.predict_proba(fte, [0]).shape == (1, 4, 8, 8)
    auto = _decoder(device="auto", min_steps=5, max_steps=5).fit(ftr, train.masks)
    assert next(auto.net_.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            _decoder(device="cuda").fit(ftr, train.masks)


def test_mobilenet_v1_loads_the_offline_checkpoint_with_its_preprocessing():
    from conftest import SHARED, require

    from alwidgets.segmentation.features import mobilenet_v1

    weights = SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"
    require(weights.is_file(), f"the MobileNet V1 checkpoint is not at {weights}")
    data = make_shapes(n_images=2, size=(64, 96), random_state=0)
    emb = mobilenet_v1(weights, cache_dir=False, progress=False, device="cpu")
    f = emb.embed(data.pool)
    assert f.strides == (8, 16, 32) and f.image_size == (64, 96) and f.pooled.shape == (2, 1024)
    assert [m.shape[2:] for m in f.maps] == [(8, 12), (4, 6), (2, 3)]
    cfg = emb.data_config()
    assert list(cfg["mean"]) == list(cfg["std"]) == [0.5, 0.5, 0.5]       # the Coral checkpoint's
    assert np.isfinite(f.pooled).all() and f.pooled.std() > 0                   # real weights, not zeros
