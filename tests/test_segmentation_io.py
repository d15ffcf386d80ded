"""Masks out of and into a store: a folder of index PNGs + classes file, COCO JSON with RLE (pycocotools)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alwidgets import Pool, Session
from alwidgets.segmentation import from_segmentation_folder, make_shapes, mask_to_png, save_segmentation_folder
from alwidgets.segmentation.features import DenseFeatures
from alwidgets.segmentation.io import export_coco, export_masks, import_masks
from alwidgets.segmentation.task import SegmentationTask
from alwidgets.store import LabelStore

mask_utils = pytest.importorskip("pycocotools.mask")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2


@pytest.fixture()
def labelled(tmp_path):
    data = make_shapes(n_images=6, size=(24, 32), random_state=3)
    task = SegmentationTask(data.classes, ignore_index=data.ignore_index)
    store = LabelStore(":memory:")
    store.attach_pool(data.ids, task.classes)
    store.add_labels([{"item_id": data.ids[i], **task.encode(data.masks[i])} for i in range(4)])
    yield data, task, store
    store.close()


def test_mask_folder_round_trip(labelled, tmp_path):
    data, task, store = labelled
    root = export_masks(store, tmp_path / "out", task)
    assert (root / "classes.txt").read_text().splitlines() == ["# ignore_index=4", *data.classes]
    assert sorted(p.stem for p in (root / "masks").iterdir()) == data.ids[:4]
    for i in range(4):  # the stored bytes as they are: 8-bit greyscale, values = class indices
        with Image.open(root / "masks" / f"{data.ids[i]}.png") as im:
            assert im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), data.masks[i])
    # with the images beside them it is a segmentation folder again
    save_segmentation_folder(data.subset(range(4)), tmp_path / "imgs")
    back = from_segmentation_folder(root, images=str(tmp_path / "imgs" / "images"))
    assert back.classes == data.classes and back.ignore_index == 4
    for i in range(4):
        np.testing.assert_array_equal(back.masks[i], data.masks[i])
    # and imported into a fresh store, equal
    with LabelStore(":memory:") as other:
        other.attach_pool(data.ids, task.classes)
        report = import_masks(other, root, task)
        assert (report.accepted, report.unchanged, len(report.rejected)) == (4, 0, 0)
        for i in range(4):
            np.testing.assert_array_equal(task.decode(None, *other.payload(data.ids[i])), data.masks[i])
        assert set(other.labels_df()["source"]) == {"imported"}
        again = import_masks(other, root, task)         # importing twice adds nothing
        assert (again.accepted, again.unchanged) == (0, 4)


def test_coco_rle_decodes_to_the_masks(labelled, tmp_path):
    data, task, store = labelled
    path = export_coco(store, tmp_path / "coco.json", task)
    doc = json.loads(path.read_text())
    assert [c["name"] for c in doc["categories"]] == data.classes and doc["categories"][0]["id"] == 1
    assert [im["alwidgets_item_id"] for im in doc["images"]] == data.ids[:4]
    for im in doc["images"]:
        m = data.masks[data.ids.index(im["alwidgets_item_id"])]
        assert (im["height"], im["width"]) == m.shape
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        assert sorted(a["category_id"] - 1 for a in anns) == sorted(set(np.unique(m)) - {4})
        covered = np.zeros(m.shape, int)
        for a in anns:
            decoded = mask_utils.decode(a["segmentation"])          # pycocotools reads our RLE
            np.testing.assert_array_equal(decoded, (m == a["category_id"] - 1).astype(np.uint8))
            assert a["area"] == int(decoded.sum()) == int(mask_utils.area(a["segmentation"]))
            assert a["iscrowd"] == 0 and len(a["bbox"]) == 4
            covered += decoded
        assert covered.max() == 1                                    # classes never overlap
        np.testing.assert_array_equal(covered == 0, m == 4)          # the ignore index is in no annotation


def test_import_rejects_bad_files_and_wrong_classes(tmp_path):
    data = make_shapes(n_images=5, size=(24, 32), random_state=1)
    task = SegmentationTask(data.classes, ignore_index=4)
    d = tmp_path / "masks"
    d.mkdir()
    (d / f"{data.ids[0]}.png").write_bytes(mask_to_png(data.masks[0]))
    (d / f"{data.ids[1]}.png").write_bytes(mask_to_png(data.masks[1][:, :16]))           # wrong size
    (d / f"{data.ids[2]}.png").write_bytes(mask_to_png(np.full((24, 32), 9, np.uint8)))  # values
    Image.new("RGB", (32, 24)).save(d / f"{data.ids[3]}.png")                            # colour, not indices
    (d / "stranger.png").write_bytes(mask_to_png(data.masks[0]))                         # not in the pool
    with LabelStore(":memory:") as store:
        store.attach_pool(data.ids, task.classes)
        report = import_masks(store, tmp_path, task, pool=data.pool)
        assert report.accepted == 1 and list(store.current_labels()) == [data.ids[0]]
        reasons = dict(zip(report.rejected["item_id"], report.rejected["reason"]))
        assert "16x24 (WxH) but the image is 32x24" in reasons[data.ids[1]]
        assert "values [9]" in reasons[data.ids[2]]
        assert "mode RGB" in reasons[data.ids[3]]
        assert reasons["stranger"] == "not in the pool"
        (tmp_path / "classes.txt").write_text("sky\nroad\n")
        with pytest.raises(ValueError, match="nothing was imported"):
            import_masks(store, tmp_path, task, pool=data.pool)
        assert len(store.labels_df(history=True)) == 1


def test_ids_with_folders_and_unsafe_ids(tmp_path):
    task = SegmentationTask(["a", "b"], ignore_index=255)
    with LabelStore(":memory:") as store:
        store.attach_pool(["cam1/f001", "../evil"], task.classes)
        m = np.array([[0, 1], [255, 1]], np.uint8)
        store.add_labels([{"item_id": "cam1/f001", **task.encode(m)}])
        root = export_masks(store, tmp_path, task)
        assert (root / "masks" / "cam1" / "f001.png").is_file()
        with LabelStore(":memory:") as other:
            other.attach_pool(["cam1/f001"], task.classes)
            assert import_masks(other, root, task).accepted == 1
        store.add_labels([{"item_id": "../evil", **task.encode(m)}])
        with pytest.raises(ValueError, match="cannot be a file name"):
            export_masks(store, tmp_path / "x", task)
        assert not (tmp_path / "x").exists() and not (tmp_path / "evil.png").exists()


def test_session_hand_off(tmp_path):
    data = make_shapes(n_images=6, size=(24, 32), random_state=2)
    feats = DenseFeatures.from_pixels(data.pool)
    from alwidgets.segmentation import DenseDecoder

    model = DenseDecoder(4, 4, n_components=None, width=8, fine=8, min_steps=5, max_steps=5, random_state=0)
    d = tmp_path / "in" / "masks"
    d.mkdir(parents=True)
    for i in (0, 1):
        (d / f"{data.ids[i]}.png").write_bytes(mask_to_png(data.masks[i]))
    with Session(data, embeddings=feats, model=model, store=":memory:", selector="random") as s:
        report = s.import_masks(tmp_path / "in")
        assert report.accepted == 2 and s.history["n_added"].tolist() == [2]
        assert s.export_masks(tmp_path / "out") == tmp_path / "out"
        assert len(json.loads(s.to_coco(tmp_path / "c.json").read_text())["images"]) == 2
    with Session(Pool.digits().subset(range(20)), store=":memory:") as s:
        with pytest.raises(TypeError, match="for segmentation sessions"):
            s.export_masks(tmp_path / "no")
