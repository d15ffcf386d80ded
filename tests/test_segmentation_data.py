"""Pools with masks, the mask PNG codec, and the metrics (confusion matrix, IoU, ignore index)."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from alwidgets.segmentation import (
    CAMVID_CLASSES,
    MaskError,
    camvid,
    check_mask,
    confusion_matrix,
    from_segmentation_folder,
    make_shapes,
    mask_from_png,
    mask_to_png,
    save_segmentation_folder,
    segmentation_scores,
)
from conftest import SHARED


def _folder(tmp_path, n=3, size=(16, 20)):
    return save_segmentation_folder(make_shapes(n_images=n, size=size, random_state=3), tmp_path / "set")


# ------------------------------------------------------------------------------ PNG codec
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (360, 480)])
def test_mask_png_round_trip_is_exact(shape):
    rng = np.random.default_rng(0)
    m = rng.integers(0, 12, shape).astype(np.uint8)
    back = mask_from_png(mask_to_png(m), n_classes=11, ignore_index=11, shape=shape)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, m)


def test_mask_png_accepts_palette_png():
    m = np.array([[0, 1], [2, 1]], np.uint8)
    im = Image.fromarray(m, "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    np.testing.assert_array_equal(mask_from_png(buf.getvalue(), n_classes=3), m)


def test_mask_png_rejects_bad_payloads():
    good = mask_to_png(np.zeros((4, 5), np.uint8))
    with pytest.raises(MaskError, match="not a PNG"):
        mask_from_png(b"GIF89a....", n_classes=3)
    with pytest.raises(MaskError, match="corrupt mask PNG"):
        mask_from_png(good[:40], n_classes=3)
    with pytest.raises(MaskError, match=r"mask is 5x4 \(WxH\) but the image is 6x4"):
        mask_from_png(good, n_classes=3, shape=(4, 6))
    with pytest.raises(MaskError, match=r"values \[9\] are outside the 3 classes"):
        mask_from_png(mask_to_png(np.full((2, 2), 9, np.uint8)), n_classes=3, ignore_index=255)
    rgb = io.BytesIO()
    Image.new("RGB", (3, 3)).save(rgb, "PNG")
    with pytest.raises(MaskError, match="mode RGB"):
        mask_from_png(rgb.getvalue(), n_classes=3)
    with pytest.raises(MaskError, match="item 'a7'"):
        mask_from_png(b"nope", n_classes=3, item_id="a7")


def test_mask_png_refuses_huge_masks():
    big = io.BytesIO()
    Image.new("L", (8000, 6000)).save(big, "PNG")
    with pytest.raises(MaskError, match="8000x6000 pixels is larger than the limit"):
        mask_from_png(big.getvalue(), n_classes=3)


def test_check_mask_names_values_and_shape():
    with pytest.raises(MaskError, match="2-d"):
        check_mask(np.zeros((2, 2, 3), np.uint8), n_classes=3)
    with pytest.raises(MaskError, match="integers"):
        check_mask(np.zeros((2, 2)), n_classes=3)
    with pytest.raises(MaskError, match=r"values \[-1\]"):
        check_mask(np.array([[0, -1]]), n_classes=3)
    assert check_mask(np.array([[0, 2, 255]], np.int64), n_classes=3, ignore_index=255).dtype == np.uint8


# ------------------------------------------------------------------------------ folders
def test_folder_pairs_images_and_masks_by_stem(tmp_path):
    root = _folder(tmp_path)
    data = from_segmentation_folder(root)
    src = make_shapes(n_images=3, size=(16, 20), random_state=3)
    assert data.ids == src.ids and data.classes == src.classes and data.ignore_index == 4
    for a, b in zip(data.masks, src.masks):
        np.testing.assert_array_equal(a, b)
    assert data.pool.image(0).size == (20, 16)


def test_folder_missing_mask_raises_or_skips(tmp_path):
    root = _folder(tmp_path)
    os.remove(root / "masks" / "shapes-0001.png")
    with pytest.raises(MaskError, match=r"item 'shapes-0001'.*no mask named shapes-0001"):
        from_segmentation_folder(root)
    data = from_segmentation_folder(root, on_error="skip")
    assert list(data.pool.errors) == ["shapes-0001"] and data.masks[1] is None
    assert data.pool.usable.tolist() == [True, False, True]


def test_folder_size_mismatch_names_the_file(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "shapes-0002.png").write_bytes(mask_to_png(np.zeros((16, 21), np.uint8)))
    with pytest.raises(MaskError, match=r"shapes-0002.*shapes-0002\.png.*mask is 21x16 \(WxH\) but the image is 20x16"):
        from_segmentation_folder(root)
    assert "shapes-0002" in from_segmentation_folder(root, on_error="skip").pool.errors


def test_folder_out_of_range_value(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "shapes-0000.png").write_bytes(mask_to_png(np.full((16, 20), 7, np.uint8)))
    with pytest.raises(MaskError, match=r"shapes-0000.*values \[7\] are outside the 4 classes"):
        from_segmentation_folder(root)


def test_folder_corrupt_mask_and_orphan_mask(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "shapes-0000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(MaskError, match="shapes-0000.*cannot read mask"):
        from_segmentation_folder(root)
    root2 = _folder(tmp_path / "b")
    (root2 / "masks" / "stray.png").write_bytes(mask_to_png(np.zeros((16, 20), np.uint8)))
    with pytest.raises(MaskError, match="stray.png.*no image of the same stem"):
        from_segmentation_folder(root2)
    assert len(from_segmentation_folder(root2, on_error="skip")) == 3


def test_oversized_and_rgb_masks_are_refused_from_a_file_and_from_a_payload(tmp_path, monkeypatch):
    import alwidgets.segmentation.data as segdata

    root = _folder(tmp_path)
    big = mask_to_png(np.zeros((16, 20), np.uint8))
    monkeypatch.setattr(segdata, "MAX_MASK_PIXELS", 16 * 20 - 1)
    with pytest.raises(MaskError, match=r"shapes-0000.*shapes-0000\.png.*20x16 pixels is larger than the limit"):
        from_segmentation_folder(root)
    with pytest.raises(MaskError, match=r"20x16 pixels is larger than the limit"):
        mask_from_png(big, n_classes=4)
    monkeypatch.undo()
    buf = io.BytesIO()
    Image.new("RGB", (20, 16)).save(buf, format="PNG")
    (root / "masks" / "shapes-0002.png").write_bytes(buf.getvalue())
    with pytest.raises(MaskError, match=r"shapes-0002\.png.*8-bit greyscale or palette.*got mode RGB"):
        from_segmentation_folder(root)
    with pytest.raises(MaskError, match=r"8-bit greyscale or palette.*got mode RGB"):
        mask_from_png(buf.getvalue(), n_classes=4)


def test_folder_without_classes_file_infers_names(tmp_path):
    root = _folder(tmp_path)
    (root / "classes.txt").unlink()
    data = from_segmentation_folder(root, ignore_index=4)
    assert data.classes == ["0", "1", "2", "3"][: len(data.classes)] and data.ignore_index == 4
    with pytest.raises(ValueError, match="ignore_index 1 is one of the"):
        from_segmentation_folder(root, classes=["a", "b", "c", "d"], ignore_index=1)


def test_shapes_are_learnable_and_reproducible():
    a, b = make_shapes(n_images=4, random_state=5), make_shapes(n_images=4, random_state=5)
    np.testing.assert_array_equal(a.pool.arrays, b.pool.arrays)
    counts = a.pixel_counts()
    assert counts.shape == (4,) and (counts > 0).all()
    assert all(((m <= 3) | (m == 4)).all() for m in a.masks)


# ------------------------------------------------------------------------------ metrics
def _reference_iou(t, p, n_classes, ignore):
    iou = []
    keep = t != ignore
    for c in range(n_classes):
        inter = np.sum((t == c) & (p == c) & keep)
        union = np.sum(((t == c) | (p == c)) & keep)
        iou.append(inter / union if union else np.nan)
    return np.array(iou)


@pytest.mark.parametrize("seed", range(5))
def test_iou_matches_direct_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    C, ignore = 5, 255
    truths = [rng.choice([0, 1, 2, 3, 4, 255], size=(9, 11), p=[.3, .2, .2, .1, .1, .1]) for _ in range(3)]
    preds = [np.where(rng.random(t.shape) < 0.6, np.where(t == 255, 0, t), rng.integers(0, C, t.shape)) for t in truths]
    s = segmentation_scores(truths, preds, C, ignore)
    T, P = np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in preds])
    ref = _reference_iou(T, P, C, ignore)
    np.testing.assert_allclose(s.iou, ref)
    assert s.miou == pytest.approx(np.nanmean(ref))
    assert s.pixel_accuracy == pytest.approx(np.mean(T[T != ignore] == P[T != ignore]))


def test_ignore_index_is_never_counted():
    t = np.array([[0, 1, 11, 11]])
    base = segmentation_scores([t], [np.array([[0, 1, 0, 0]])], 11, 11)
    other = segmentation_scores([t], [np.array([[0, 1, 5, 9]])], 11, 11)
    np.testing.assert_array_equal(base.confusion, other.confusion)
    assert base.confusion.sum() == 2 and base.miou == 1.0 and base.pixel_accuracy == 1.0
    assert np.isnan(base.iou[5])                        # absent from truth and prediction: no IoU


def test_confusion_matrix_checks_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match=r"values \[3\] outside the 3 classes"):
        confusion_matrix(np.zeros((1, 2), int), np.array([[0, 3]]), 3)


# ------------------------------------------------------------------------------ CamVid
def _camvid_root():
    root = SHARED / "data" / "camvid"
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CamVid not found at {root} (CI must provide ../shared)")
        pytest.skip(f"CamVid not found at {root} (clone with ../shared beside the repo)")
    return root


@pytest.mark.slow
def test_camvid_train_loads_with_readme_counts():
    data = camvid(_camvid_root(), "train")
    assert len(data) == 367 and data.classes == CAMVID_CLASSES and data.ignore_index == 11
    counts = np.zeros(12, np.int64)
    for m in data.masks:
        assert m.shape == (360, 480)
        counts += np.bincount(m.ravel(), minlength=12)
    # README: Pole 623,349 px, Bicyclist 184,967 px, Unlabelled 2,503,995 px in train
    assert counts[2] == 623_349 and counts[10] == 184_967 and counts[11] == 2_503_995
    np.testing.assert_array_equal(data.pixel_counts(), counts[:11])
