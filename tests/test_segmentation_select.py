"""Image-level segmentation selectors: score directions on hand-made maps, class weights, the contract."""
from __future__ import annotations

import numpy as np
import pytest

from alwidgets.segmentation.select import (
    AutoImages,
    ClassTargeted,
    ClassWeightedUncertainty,
    CoverageImages,
    PixelUncertainty,
    RandomImages,
    UncertaintyDiversityImages,
    class_areas,
    class_weakness,
    greedy_diverse,
    labelled_class_iou,
    labelled_class_pixels,
    layout_descriptors,
    make_selector,
    pixel_uncertainty,
    reduce_image,
)

C, h, w = 3, 8, 8


def _sure(c, n=1):
    p = np.full((n, C, h, w), 0.01)
    p[:, c] = 0.98
    return p


def _maps():
    """Image 0 sure of class 0, image 1 unsure everywhere, image 2 unsure on a small patch only."""
    p = np.concatenate([_sure(0), np.full((1, C, h, w), 1 / C), _sure(0)])
    p[2, :, :2, :2] = 1 / C
    return p


@pytest.mark.parametrize("measure", ["entropy", "margin", "least_confidence"])
def test_uncertainty_prefers_the_unsure_image(measure):
    sel = PixelUncertainty(measure).select(2, labels=[None] * 3, probs=_maps(), random_state=0)
    assert sel.indices.tolist() == [1, 2]
    assert sel.scores[0] > sel.scores[1] and sel.info["measure"] == measure


def test_topk_and_regions_rank_a_local_uncertain_object_above_diffuse_doubt():
    p = np.concatenate([_sure(0), _sure(0)])
    p[0, :, :2, :2] = 1 / C                          # image 0: one fully uncertain object
    p[1, 0], p[1, 1] = 0.7, 0.29                        # image 1: mild doubt everywhere
    assert PixelUncertainty("entropy", "mean").select(1, labels=[None] * 2, probs=p).indices.tolist() == [1]
    for red in ("topk", "regions"):
        got = PixelUncertainty("entropy", red, top_fraction=1 / 16, region=2).select(1, labels=[None] * 2, probs=p)
        assert got.indices.tolist() == [0], red


def test_pixel_uncertainty_bounds():
    p = np.random.default_rng(0).dirichlet(np.ones(C), size=(h, w)).transpose(2, 0, 1)
    for m in ("entropy", "margin", "least_confidence"):
        u = pixel_uncertainty(p, m)
        assert u.shape == (h, w) and (u >= -1e-6).all() and (u <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="unknown measure"):
        pixel_uncertainty(p, "variance")
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_image(np.zeros((2, 2)), "max")


def test_class_weights_follow_per_class_iou():
    w = class_weakness([0.9, 0.5, 0.1])
    assert w[0] < w[1] < w[2] and w.mean() == pytest.approx(1.0)
    # IoU measured against labelled masks: class 2 always predicted as class 1 -> IoU 0 -> heaviest
    probs = np.concatenate([_sure(0), _sure(1)])
    masks = [np.zeros((16, 16), np.uint8), np.full((16, 16), 2, np.uint8)]
    masks[1][:8] = 1
    iou = labelled_class_iou(probs, masks, [0, 1], C)
    assert iou[0] == 1.0 and iou[1] == pytest.approx(0.5) and iou[2] == 0.0
    sel = ClassWeightedUncertainty().select(1, labels=masks + [None], probs=np.concatenate([probs, _maps()[1:2]]))
    cw = sel.info["class_weights"]
    assert cw[2] > cw[1] > cw[0] and sel.info["iou_source"].startswith("model vs its 2 labelled")


def test_class_weighted_prefers_uncertainty_on_weak_classes():
    # two images equally uncertain: image 2 between the weak classes 1/2, image 3 between strong 0 and weak 1
    p = np.zeros((4, C, h, w))
    p[0, 0] = p[1, 0] = 1.0
    p[2, 1] = p[2, 2] = 0.5
    p[3, 0] = p[3, 1] = 0.5
    labels = [np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8), None, None]
    plain = PixelUncertainty("entropy").image_scores(p, [2, 3])
    assert plain[0] == pytest.approx(plain[1])
    sel = ClassWeightedUncertainty().select(1, labels=labels, probs=p, class_iou=[0.9, 0.2, 0.1])
    assert sel.indices.tolist() == [2] and sel.info["iou_source"] == "given"


def test_class_targeted_picks_the_most_weak_class_area():
    p = np.concatenate([_sure(0), _sure(0), _sure(0)])
    p[1, :, :4] = 0.0
    p[1, 2, :4] = 1.0                                 # half of image 1 predicted as weak class 2
    p[2, :, :1] = 0.0
    p[2, 2, :1] = 1.0                                 # an eighth of image 2
    sel = ClassTargeted(n_weak=1).select(2, labels=[None] * 3, probs=p, class_iou=[0.9, 0.8, 0.1])
    assert sel.indices.tolist() == [1, 2] and sel.info["weak_classes"] == [2]


def test_class_targeted_with_saturation_spreads_over_the_weak_classes():
    p = np.concatenate([_sure(0)] * 4)
    for i, (c, rows) in enumerate([(2, 4), (2, 3), (1, 2)], start=1):   # images 1, 2: class 2; image 3: class 1
        p[i, :, :rows] = 0.0
        p[i, c, :rows] = 1.0
    iou = [0.9, 0.2, 0.1]
    plain = ClassTargeted(n_weak=2, saturation=None, diversity=0.0).select(2, labels=[None] * 4, probs=p,
                                                                          class_iou=iou)
    assert plain.indices.tolist() == [1, 2]
    sat = ClassTargeted(n_weak=2, saturation=1.0, diversity=0.0).select(2, labels=[None] * 4, probs=p, class_iou=iou)
    assert sat.indices.tolist() == [1, 3]             # class 2 is covered by image 1; image 3 brings class 1
    # labelled masks already full of class 2: its gain is small, class 1 first
    masks = [np.full((h, w), 2, np.uint8)] + [None] * 3
    got = ClassTargeted(n_weak=2, saturation=1.0, diversity=0.0).select(1, labels=masks, probs=p, class_iou=iou)
    assert got.indices.tolist() == [3] and got.info["labelled_pixels"][2] == h * w


def test_candidates_limit_the_pick_and_are_checked():
    sel = PixelUncertainty().select(2, labels=[None] * 3, probs=_maps(), candidates=[0, 2])
    assert sorted(sel.indices.tolist()) == [0, 2]
    got = RandomImages().select(2, labels=[np.zeros((2, 2)), None, None], candidates=[0, 1])
    assert got.indices.tolist() == [1]                        # a labelled candidate is never picked
    with pytest.raises(ValueError, match="outside the pool"):
        RandomImages().select(1, labels=[None, None], candidates=[5])
    assert len(RandomImages().select(3, labels=np.array([-1, 0, -1]))) == 2


def test_missing_inputs_are_named():
    with pytest.raises(ValueError, match="needs `probs=`"):
        PixelUncertainty().select(1, labels=[None])
    with pytest.raises(ValueError, match="needs the labelled masks"):
        ClassWeightedUncertainty().select(1, labels=np.array([-1, 0]), probs=_maps()[:2])
    with pytest.raises(ValueError, match="needs `embeddings=`"):
        CoverageImages().select(1, labels=[None])
    with pytest.raises(ValueError, match="probs has 3 items but labels has 2"):
        PixelUncertainty().select(1, labels=[None, None], probs=_maps())
    with pytest.raises(ValueError, match="unknown segmentation strategy"):
        make_selector("bald")


def _blobs(n_per=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(k, 8) * 5
    return np.repeat(centres, n_per, axis=0) + 0.1 * rng.standard_normal((n_per * k, 8))


@pytest.mark.parametrize("method", ["features", "kmeans", "typiclust", "kcenter", "facility"])
def test_coverage_spreads_over_clusters_and_respects_labelled(method):
    X = np.abs(_blobs())
    sel = CoverageImages(method, cold_start=None).select(3, labels=[None] * 30, embeddings=X, random_state=0)
    assert sorted(int(i) // 10 for i in sel.indices) == [0, 1, 2]
    assert sel.info["method"] == method and sel.info["reason"]
    labels = [np.zeros((2, 2))] + [None] * 29                      # cluster 0 already has a mask
    sel = CoverageImages(method, cold_start=None).select(2, labels=labels, embeddings=X, random_state=0)
    assert sorted(int(i) // 10 for i in sel.indices) == [1, 2]


def test_feature_coverage_prefers_patterns_the_labelled_images_lack():
    # non-negative "channel" embeddings: images 0-2 show patterns 0/1, image 3 pattern 2 (rare), image 4 both
    X = np.array([[1.0, 1.0, 0.0], [1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.3]])
    labels = [np.zeros((2, 2))] + [None] * 4                        # image 0 labelled: patterns 0, 1 covered
    sel = CoverageImages("features").select(1, labels=labels, embeddings=X, random_state=0)
    assert sel.indices.tolist() == [4] and sel.info["method"] == "features"   # adds the rare pattern on top
    sel = CoverageImages("features").select(2, labels=labels, embeddings=X, random_state=0)
    assert sel.indices.tolist() == [4, 3]                             # then more of the rare pattern, not a duplicate
    assert not sel.info["shifted"]
    assert CoverageImages("features", cold_start=None).select(1, labels=[None] * 5, embeddings=X - 5.0,
                                                             random_state=0).info["shifted"]
    # nothing labelled: the first batch comes from the cold-start method
    first = CoverageImages("features").select(2, labels=[None] * 5, embeddings=X, random_state=0)
    assert first.info["method"] == "kmeans"
    with pytest.raises(ValueError, match="cold_start must be another method"):
        CoverageImages("features", cold_start="features").select(1, labels=[None] * 5, embeddings=X)
    with pytest.raises(ValueError, match="saturation must be > 0"):
        CoverageImages("features", saturation=0).select(1, labels=[None] * 5, embeddings=X)


def test_facility_location_takes_big_clusters_first_and_their_central_image():
    rng = np.random.default_rng(0)
    sizes = [40, 20, 10, 5]
    X = np.concatenate([np.eye(8)[c] * 5 + 0.5 + rng.normal(0, 0.3, (k, 8)) for c, k in enumerate(sizes)])
    blob = np.repeat(np.arange(4), sizes)
    sel = CoverageImages("facility", cold_start=None).select(4, labels=[None] * 75, embeddings=X, random_state=0)
    assert blob[sel.indices].tolist() == [0, 1, 2, 3]                   # the most pool images stood for first
    assert (np.diff(sel.scores) < 0).all() and sel.info["n_clients"] == 75
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = np.maximum(U @ U.T, 0)
    assert sel.indices[0] == np.argmax(S.sum(0))                        # the direct objective: the pool's medoid
    second = np.maximum(S - S[:, [sel.indices[0]]], 0).sum(0)           # what each image would add after it
    assert sel.indices[1] == np.argmax(second) and np.isclose(sel.scores[1], second.max(), atol=1e-6)
    capped = CoverageImages("facility", cold_start=None, max_clients=30).select(2, labels=[None] * 75, embeddings=X,
                                                                                 random_state=0)
    assert capped.info["n_clients"] == 30
    assert CoverageImages("facility").select(2, labels=[None] * 75, embeddings=X, random_state=0).info["method"] == "kmeans"
    with pytest.raises(ValueError, match="cold_start must be another method than 'facility'"):
        CoverageImages("facility", cold_start="facility").select(2, labels=[None] * 75, embeddings=X)


def test_coverage_kmeans_picks_central_or_random_members():
    X = _blobs(n_per=10, k=2)
    sel = CoverageImages("kmeans", pick="random").select(2, labels=[None] * 20, embeddings=X, random_state=0)
    assert sorted(int(i) // 10 for i in sel.indices) == [0, 1] and sel.info["pick"] == "random"
    with pytest.raises(ValueError, match="pick must be"):
        CoverageImages("kmeans", pick="densest").select(1, labels=[None] * 20, embeddings=X)


def test_coverage_kmeans_takes_the_central_image_not_an_outlier():
    X = _blobs(n_per=10, k=2)
    X[7, 2] += 1.5                                    # image 7 is an outlier of blob 0
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    central = [int(np.argmin(((U[b:b + 10] - U[b:b + 10].mean(0)) ** 2).sum(1))) + b for b in (0, 10)]
    sel = CoverageImages("kmeans", pick="central").select(2, labels=[None] * 20, embeddings=X, random_state=0)
    assert sorted(sel.indices.tolist()) == central and 7 not in central
    # the default `coverage` is this, also once masks exist: the cluster without one gets the next pick
    labels = [None] * 20
    labels[central[0]] = np.zeros((h, w), np.uint8)
    nxt = make_selector("coverage").select(1, labels=labels, embeddings=X, random_state=0)
    assert nxt.indices.tolist() == [central[1]] and nxt.info["method"] == "kmeans"
    with pytest.raises(ValueError, match="method must be"):
        CoverageImages("dense").select(1, labels=[None] * 20, embeddings=X)


def test_layout_descriptors_see_content_and_place():
    p = np.zeros((3, C, h, w))
    p[0, 0] = 1.0                                     # all class 0
    p[1, 0] = 1.0
    p[1, :, :, :2] = 0.0
    p[1, 1, :, :2] = 1.0                              # class 1 on the left quarter
    p[2, 0] = 1.0
    p[2, :, :, -2:] = 0.0
    p[2, 1, :, -2:] = 1.0                             # class 1 on the right quarter
    d = layout_descriptors(p, [0, 1, 2], grid=(2, 4))
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    assert d[0] @ d[1] == pytest.approx(d[0] @ d[2]) and d[1] @ d[2] < d[0] @ d[1] < 1.0
    areas = class_areas(p, [1])
    assert areas[0].tolist() == [48.0, 16.0, 0.0]
    masks = [np.ones((16, 16), np.uint8)]
    masks[0][:, :4] = 3                               # ignore index 3
    assert labelled_class_pixels(masks, [0], C, (h, w), ignore_index=3).tolist() == [0.0, 48.0, 0.0]


def test_greedy_diverse_skips_near_duplicates_of_picks_and_labelled():
    rng = np.random.default_rng(0)
    X = np.vstack([[1.0, 0, 0, 0], [0.999, 0.04, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0],
                   np.abs(rng.normal(size=(12, 4)))])          # + unrelated rows that set the similarity scale
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    gains = np.r_[1.0, 0.99, 0.5, 0.4, np.full(12, 0.01)]
    assert greedy_diverse(2, gains, X, diversity=0.0)[0].tolist() == [0, 1]
    assert greedy_diverse(2, gains, X, diversity=1.0, rng=0)[0].tolist() == [0, 2]
    # row 2 duplicates a labelled image: it loses to row 3
    got = greedy_diverse(2, gains, X, anchors=X[2:3], diversity=1.0, rng=0)[0].tolist()
    assert got == [0, 3]


def _scenes(n=12, seed=0):
    """Sure maps of ``n`` different scenes: each class in a random block of the grid."""
    rng = np.random.default_rng(seed)
    p = np.full((n, C, h, w), 0.01)
    for i in range(n):
        lab = rng.integers(0, C, size=(2, 2)).repeat(h // 2, 0).repeat(w // 2, 1)
        for c in range(C):
            p[i, c][lab == c] = 0.98
    return p


def test_uncertainty_with_diversity_leaves_consecutive_frames():
    p = np.concatenate([np.repeat(_maps()[1:2], 3, axis=0), _scenes()])   # images 0-2: one uncertain frame
    p[3, :, :4] = 1 / C                               # image 3: a different scene, half uncertain
    labels = [None] * len(p)
    plain = PixelUncertainty(diversity=0.0).select(2, labels=labels, probs=p, random_state=0)
    assert set(plain.indices.tolist()) <= {0, 1, 2}
    div = PixelUncertainty(diversity=1.0).select(2, labels=labels, probs=p, random_state=0)
    assert 3 in div.indices.tolist() and div.info["diversity"] == 1.0
    cw = ClassWeightedUncertainty(diversity=1.0).select(2, labels=labels, probs=p, class_iou=[0.5] * 3,
                                                        random_state=0)
    assert 3 in cw.indices.tolist()


def test_diversity_and_auto_explain_themselves():
    X = _blobs()
    p = np.repeat(_maps()[1:2], 30, axis=0)
    p[:10] = _sure(0)[0]
    labels = [np.zeros((h, w), np.uint8)] + [None] * 29
    sel = UncertaintyDiversityImages(PixelUncertainty(), factor=4).select(2, labels=labels, embeddings=X, probs=p,
                                                                        random_state=0)
    assert sorted(int(i) // 10 for i in sel.indices) == [1, 2]        # unsure clusters, one pick each
    auto = AutoImages(switch_at=2, start="coverage", then=ClassWeightedUncertainty())
    assert auto.requires == ("embeddings",)
    first = auto.select(2, labels=labels, embeddings=X, probs=p, random_state=0)
    assert first.info["phase"] == "coverage" and "1 masks < switch_at=2" in first.info["reason"]
    labels[10] = np.zeros((h, w), np.uint8)
    later = auto.select(2, labels=labels, embeddings=X, probs=p, random_state=0)
    assert later.info["phase"] == "class_weighted" and "class_weights" in later.info
    assert AutoImages(start="coverage").select(2, labels=[None] * 30, embeddings=np.abs(X),
                                               random_state=0).info["method"] == "kmeans"

    # the default: a random first batch (needs nothing), then class-targeted picks from the first mask on
    auto = AutoImages()
    assert auto.requires == ()
    cold = auto.select(3, labels=[None] * 30, probs=p, random_state=0)
    assert cold.info["phase"] == "random" and "0 masks < switch_at=1" in cold.info["reason"]
    assert cold.indices.tolist() == RandomImages().select(3, labels=[None] * 30, random_state=0).indices.tolist()
    ct = auto.select(2, labels=labels, embeddings=X, probs=p, random_state=0)
    assert ct.info["phase"] == "class_targeted" and "weak_classes" in ct.info
    assert ct.info["reason"].startswith("2 masks >= switch_at=1")
    assert auto.select(2, labels=labels, embeddings=X, random_state=0).info["phase"] == "random"  # no probs yet


def test_loop_style_inputs_int_labels_with_masks_and_bool_candidates():
    masks = [np.zeros((h, w), np.uint8), None, None]
    flags = np.array([0, -1, -1])
    sel = ClassWeightedUncertainty().select(1, labels=flags, probs=_maps(), masks=masks, model=object(),
                                            candidates=np.array([False, False, True]))
    assert sel.indices.tolist() == [2]
    with pytest.raises(ValueError, match="masks has 2 entries"):
        ClassWeightedUncertainty().select(1, labels=flags, probs=_maps(), masks=masks[:2])


def test_class_balance_goes_after_the_class_the_masks_lack():
    from alwidgets.segmentation.select import ClassBalance

    p = np.concatenate([_sure(0), _sure(1), _sure(2)])
    masks = [None, None, None, np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)]   # classes 0, 1 labelled
    probs = np.concatenate([p, _sure(0), _sure(1)])
    sel = ClassBalance(diversity=0.0).select(1, labels=masks, probs=probs, class_iou=[0.5, 0.5, 0.5])
    assert sel.indices.tolist() == [2] and sel.info["strategy"] == "class_balance"   # every class counts, equally
    assert isinstance(make_selector("class_balance"), ClassBalance)


def test_class_targeted_uncertain_and_argmax_areas():
    # images 1 and 2 both predict weak class 2 on half the image: 1 unsure (0.5), 2 sure (1.0)
    p = np.concatenate([_sure(0)] * 3)
    p[1, :, :4] = 0.25
    p[1, 2, :4] = 0.5
    p[2, :, :4] = 0.0
    p[2, 2, :4] = 1.0
    kw = dict(n_weak=1, saturation=None, diversity=0.0)
    iou = [0.9, 0.9, 0.1]
    assert ClassTargeted(**kw).select(1, labels=[None] * 3, probs=p, class_iou=iou).indices.tolist() == [2]
    # counted by uncertainty, the sure image adds nothing the model does not know
    assert ClassTargeted(uncertain=True, **kw).select(1, labels=[None] * 3, probs=p,
                                                      class_iou=iou).indices.tolist() == [1]
    # on the arg-max maps both hold the same weak area: the tie goes by the other rule (the random tie-break)
    got = ClassTargeted(area="argmax", **kw).select(2, labels=[None] * 3, probs=p, class_iou=iou)
    assert sorted(got.indices.tolist()) == [1, 2]
    with pytest.raises(ValueError, match="area must be"):
        ClassTargeted(area="max", **kw).select(1, labels=[None] * 3, probs=p, class_iou=iou)


def test_uncertainty_diversity_in_prediction_space_spreads_over_layouts():
    # six unsure images: three alike (unsure on the left), three alike (unsure on the right)
    p = np.concatenate([_sure(0)] * 6)
    for i in range(3):
        p[i, :, :, :4] = 1 / C
        p[3 + i, :, :, 4:] = 1 / C
    emb = np.ones((6, 2))
    sel = UncertaintyDiversityImages(PixelUncertainty(diversity=0.0), space="predictions").select(
        2, labels=[None] * 6, probs=p, embeddings=emb, random_state=0)
    assert {int(i) // 3 for i in sel.indices} == {0, 1} and sel.info["space"] == "predictions"
    default = UncertaintyDiversityImages().select(2, labels=[None] * 6, probs=p, embeddings=emb, random_state=0)
    assert default.info["base"] == "class_weighted" and len(default.indices) == 2
    with pytest.raises(ValueError, match="space must be"):
        UncertaintyDiversityImages(space="pixels").select(2, labels=[None] * 6, probs=p, embeddings=emb)


@pytest.mark.parametrize("name,reduction", [("entropy_topk", "topk"), ("entropy_regions", "regions")])
def test_named_reductions(name, reduction):
    sel = make_selector(name)
    assert isinstance(sel, PixelUncertainty) and sel.reduction == reduction
    got = sel.select(1, labels=[None] * 3, probs=_maps(), random_state=0)
    assert got.indices.tolist() == [1] and got.info["reduction"] == reduction
