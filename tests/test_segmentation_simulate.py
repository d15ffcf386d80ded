"""Segmentation simulation through ``alwidgets.simulate(task="segmentation")`` and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alwidgets import simulate
from alwidgets.cli import main
from alwidgets.segmentation import DenseDecoder, make_shapes, save_segmentation_folder
from alwidgets.segmentation.features import DenseFeatures
from alwidgets.segmentation.simulate import SegmentationSimulation
from alwidgets.segmentation.task import SegmentationTask


@pytest.fixture(scope="module")
def segfolder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "shapes"
    save_segmentation_folder(make_shapes(n_images=12, size=(24, 24), random_state=0), root)
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


FAST = ("--decoder-steps", "4", "--no-progress", "--repeats", "1")


def test_simulate_task_segmentation_api():
    data = make_shapes(n_images=12, size=(24, 24), random_state=1)
    feats = DenseFeatures.from_pixels(data.pool)
    model = DenseDecoder(4, 4, n_components=None, width=8, fine=8, min_steps=4, max_steps=4)
    res = simulate(feats, data.masks, ["random", "entropy"], task=SegmentationTask(data.classes, ignore_index=4),
                   budgets=[2, 4], repeats=2, model=model, progress=False)
    assert isinstance(res, SegmentationSimulation) and res.params["n_test"] == 3 and res.params["n_pool"] == 9
    assert res.curves[["strategy", "n_masks"]].drop_duplicates().values.tolist() == [
        ["random", 2], ["random", 4], ["entropy", 2], ["entropy", 4]]
    rep = res.report(at=4)
    assert rep["strategy"].tolist() == ["random", "entropy"] and rep.loc[0, "saved_vs_random"] in (0.0, None) or \
        np.isnan(rep.loc[0, "saved_vs_random"])
    assert {"miou@2", "miou@4", "masks_to_90%", "masks_to_95%", "auc", "seconds_per_round", "iou@4_disc"} <= set(rep)
    assert 0 <= rep["auc"].min() and rep["auc"].max() <= 1
    fig = res.plot()
    assert [t.name for t in fig.data if t.showlegend is not False] == ["random", "entropy"]
    with pytest.raises(ValueError, match="budgets= is for task='segmentation'"):
        simulate(np.zeros((10, 2)), np.arange(10) % 2, budgets=[2])
    with pytest.raises(ValueError, match="exceeds the 9 pool images"):
        simulate(feats, data.masks, "random", task="segmentation", budgets=[10], repeats=1, model=model,
                 progress=False)


def test_cli_segmentation_json_curves_plot(capsys, segfolder, tmp_path):
    code, out, err = run(capsys, "simulate", "--task", "segmentation", "--dataset", f"segfolder:{segfolder}",
                         "--strategies", "random,class_weighted", "--budgets", "2,4", "--json",
                         "--curves", str(tmp_path / "c.csv"), "--plot", str(tmp_path / "p.html"), *FAST)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["strategy"] for r in rows] == ["random", "class_weighted"]
    for r in rows:
        assert set(r["miou"]) == {"2", "4"} and all(0 <= v <= 100 for v in r["miou"].values())
        assert {"masks_to_90", "masks_to_95", "reached_95", "auc", "seconds_per_round", "saved_vs_random"} <= set(r)
        assert r["iou_at"] == 2 and set(r["iou"]) == {"background", "disc", "box", "triangle"}
        assert r["seconds_per_round"] > 0
    assert "9 pool images, 3 test images" in err and "ignore index 4" in err and "full-pool mIoU" in err
    curves = pd.read_csv(tmp_path / "c.csv")
    assert {"strategy", "split", "n_masks", "miou", "iou_disc"} <= set(curves.columns) and len(curves) == 4
    assert "plotly" in (tmp_path / "p.html").read_text()[:100000].lower()


def test_cli_segmentation_markdown_and_train_test_layout(capsys, tmp_path):
    root = tmp_path / "tt"
    save_segmentation_folder(make_shapes(n_images=6, size=(24, 24), random_state=2), root / "train")
    save_segmentation_folder(make_shapes(n_images=3, size=(24, 24), random_state=3), root / "test")
    code, out, err = run(capsys, "simulate", "--task", "segmentation", "--dataset", f"segfolder:{root}",
                         "--strategies", "random", "--budgets", "2,4", "--iou-at", "4", "--model", "probe",
                         "--no-progress", "--repeats", "1")
    assert code == 0, err
    assert "6 pool images, 3 test images (test/)" in out
    assert "| strategy | mIoU@2 | mIoU@4 | masks to 90% | masks to 95% |" in out
    assert "Per-class IoU (%) at 4 masks:" in out and "| strategy | background | disc | box | triangle |" in out


def test_cli_segmentation_timm_backbone_on_enlarged_images(capsys, segfolder, tmp_path):
    code, out, err = run(capsys, "simulate", "--task", "segmentation", "--dataset", f"segfolder:{segfolder}",
                         "--embedder", "timm:resnet10t", "--model-kwargs", '{"pretrained": false}',
                         "--input-scale", "2", "--cache-dir", str(tmp_path), "--strategies", "random",
                         "--budgets", "2,4", "--json", *FAST)
    assert code == 0, err
    assert set(json.loads(out)[0]["miou"]) == {"2", "4"}
    meta = json.loads(next((tmp_path / "dense").glob("*/meta.json")).read_text())
    assert meta["size"] == [48, 48]                       # the backbone saw the 24x24 images enlarged twice


@pytest.mark.parametrize("argv, match", [
    (["--dataset", "digits"], "needs --dataset segfolder:DIR"),
    (["--dataset", "segfolder:/no/such"], "no such folder"),
    (["--budgets", "4,2"], "argument --budgets: expected increasing positive integers"),
    (["--budgets", "50"], "the largest budget (50 masks) exceeds the 9 pool images"),
    (["--ignore-index", "300"], "must be an 8-bit mask value"),
    (["--ignore-index", "1"], "ignore_index 1 is one of the 4 classes"),
    (["--strategies", "margin,least_confidence"], "unknown segmentation strategy 'least_confidence'"),
    (["--iou-at", "3"], "--iou-at 3: not one of the budgets 5,10,20,40"),
    (["--target-acc", "0.9"], "--target-acc is for classification"),
    (["--embedder", "pca:4"], "takes --embedder pixels or timm:MODEL_NAME"),
    (["--budgets", "2,4", "--input-scale", "2"], "--input-scale is for --embedder timm:MODEL_NAME"),
    (["--input-scale", "3"], "argument --input-scale: invalid choice: 3"),
    (["--budgets", "2,4", "--embedder", "timm:resnet10t", "--input-scale", "4",
      "--model-kwargs", '{"pretrained": false, "out_indices": [0, 1]}'], "input_scale=4 does not divide the strides"),
])
def test_cli_segmentation_bad_arguments(capsys, segfolder, argv, match):
    argv = ["--dataset", f"segfolder:{segfolder}", *argv] if not argv[0] == "--dataset" else argv
    code, out, err = run(capsys, "simulate", "--task", "segmentation", "--no-progress", *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("alwidgets: error:") and match in err, err


def test_cli_segmentation_options_refused_for_classification(capsys, segfolder):
    code, _, err = run(capsys, "simulate", "--budgets", "5,10", "--no-progress")
    assert code == 2 and "--budgets is for --task segmentation" in err
    code, _, err = run(capsys, "simulate", "--input-scale", "2", "--no-progress")
    assert code == 2 and "--input-scale is for --task segmentation" in err
    code, _, err = run(capsys, "simulate", "--dataset", f"segfolder:{segfolder}", "--no-progress")
    assert code == 2 and "add --task segmentation" in err


def test_cli_segmentation_ignore_index_given_on_the_command_line(capsys, tmp_path):
    import dataclasses

    data = make_shapes(n_images=9, size=(24, 24), random_state=4)
    masks = [np.where(m == 4, 255, m).astype(np.uint8) for m in data.masks]    # void painted as 255
    root = tmp_path / "void255"
    save_segmentation_folder(dataclasses.replace(data, masks=masks, ignore_index=None), root)
    assert not (root / "classes.txt").read_text().startswith("#")            # the folder does not say it
    code, _, err = run(capsys, "simulate", "--task", "segmentation", "--dataset", f"segfolder:{root}",
                       "--strategies", "random", "--budgets", "2,4", "--model", "probe", "--no-progress")
    assert code == 2 and "255" in err                                         # out of range without the flag
    code, out, err = run(capsys, "simulate", "--task", "segmentation", "--dataset", f"segfolder:{root}",
                         "--ignore-index", "255", "--strategies", "random", "--budgets", "2,4", "--model", "probe",
                         "--json", "--no-progress", "--repeats", "1")
    assert code == 0, err
    assert "ignore index 255" in err and set(json.loads(out)[0]["miou"]) == {"2", "4"}
