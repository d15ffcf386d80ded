"""CLI: ``alwidgets embed`` and the timm options of ``alwidgets simulate``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alwidgets import Pool
from alwidgets.cli import main
from alwidgets.embed import TimmEmbedder

CFG = json.dumps({"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear"})


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, base in (("dark", 40), ("light", 210)):
        (root / c).mkdir()
        for k in range(12):
            a = np.clip(base + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / c / f"{k:02d}.png")
    return root


def test_embed_npy_with_ids(capsys, tmp_path):
    code, out, err = run(capsys, "embed", "--dataset", "digits", "--embedder", "pca:8", "--out", tmp_path / "d.npy")
    assert code == 0, err
    X = np.load(tmp_path / "d.npy")
    ids = (tmp_path / "d.ids.txt").read_text().splitlines()
    assert X.shape == (1797, 8) and ids[:2] == ["digits-0000", "digits-0001"] and len(ids) == 1797
    assert "d.ids.txt" in out


def test_embed_timm_npz_matches_library(capsys, tmp_path, folder, ckpt):
    out_file = tmp_path / "f.npz"
    code, out, err = run(capsys, "embed", "--dataset", f"folder:{folder}", "--embedder", "timm:resnet10t",
                         "--checkpoint", ckpt, "--pretrained-cfg", CFG, "--device", "cpu",
                         "--cache-dir", tmp_path / "cache", "--no-progress", "--out", out_file)
    assert code == 0, err
    with np.load(out_file) as f:
        X, y, ids = f["X"], f["y"], f["ids"]
    pool = Pool.from_folder(folder)
    ref = TimmEmbedder("resnet10t", checkpoint=ckpt, pretrained_cfg_overlay=json.loads(CFG), cache_dir=False,
                       progress=False, num_workers=0, device="cpu").embed(pool)
    np.testing.assert_allclose(X, ref, rtol=1e-5, atol=1e-5)
    assert y.tolist() == pool.targets.tolist() and ids.tolist() == pool.ids
    assert any((tmp_path / "cache").iterdir())
    # the npz is a ready-made feature file for simulate
    code, out, err = run(capsys, "simulate", "--dataset", f"npz:{out_file}", "--strategies", "random",
                         "--repeats", "1", "--budget", "8", "--batch", "2", "--seed-per-class", "1",
                         "--target-acc", "0.6", "--no-progress", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["strategy"] == "random"


def test_simulate_with_timm_embedder(capsys, folder, ckpt, tmp_path):
    code, out, err = run(capsys, "simulate", "--dataset", f"folder:{folder}", "--embedder", "timm:resnet10t",
                         "--checkpoint", ckpt, "--pretrained-cfg", CFG, "--cache-dir", tmp_path,
                         "--model-kwargs", "{}", "--strategies", "random,margin", "--repeats", "1",
                         "--budget", "8", "--batch", "2", "--seed-per-class", "1", "--target-acc", "0.6",
                         "--no-progress", "--json")
    assert code == 0, err
    assert [r["strategy"] for r in json.loads(out)] == ["random", "margin"]


@pytest.mark.parametrize("argv, message", [
    (["--embedder", "pixels", "--checkpoint", "x.pt"], "--checkpoint only apply to --embedder timm"),
    (["--embedder", "timm:resnet10t", "--model-kwargs", "{bad"], "--model-kwargs: not valid JSON"),
    (["--embedder", "timm:resnet10t", "--pretrained-cfg", "[1]"], "--pretrained-cfg: expected a JSON object"),
    (["--embedder", "timm:resnet10t", "--checkpoint", "/nope/w.safetensors"], "--checkpoint /nope/w.safetensors: no such file"),
    (["--embedder", "timm:"], "needs a model name"),
    (["--embedder", "timm:resnet10t", "--model-kwargs", '{"pretrained": false}'],
     "--model-kwargs: 'pretrained' is not a timm.create_model argument here; use --checkpoint"),
    (["--embedder", "timm:resnet10t", "--model-kwargs", '{"cache_dir": "/tmp"}'], "use --cache-dir"),
    (["--embedder", "timm:resnet10x", "--cache-dir", "/tmp"], "unknown timm model 'resnet10x'"),
    (["--embedder", "clip"], "unknown --embedder 'clip'"),
])
def test_bad_embedder_options_are_one_line_usage_errors(capsys, tmp_path, argv, message):
    code, out, err = run(capsys, "embed", "--dataset", "digits", "--out", tmp_path / "x.npy", *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_missing_weights_error_says_how_to_provide_them(capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, err = run(capsys, "embed", "--dataset", "digits", "--embedder", "timm:resnet10t",
                         "--cache-dir", tmp_path, "--out", tmp_path / "x.npy")
    assert code == 2 and "could not load pretrained weights" in err and "checkpoint=" in err


def test_bad_out_path(capsys, tmp_path):
    code, _, err = run(capsys, "embed", "--out", tmp_path / "x.csv")
    assert code == 2 and "use a .npy file" in err
    code, _, err = run(capsys, "embed", "--out", tmp_path / "nope" / "x.npy")
    assert code == 2 and "does not exist" in err


@pytest.mark.ray
def test_engine_options_are_one_line_usage_errors(capsys, tmp_path, folder, ckpt):
    """``--engine ray`` (the cluster run itself is in test_embed_ray.py): misuse and an unreachable
    address are one-line usage errors, before anything is embedded."""
    code, _, err = run(capsys, "embed", "--address", "auto", "--out", tmp_path / "x.npy")
    assert code == 2 and "--address only applies to --engine ray" in err and err.count("\n") == 1
    try:
        import ray
    except ImportError:   # without Ray: says how to install it
        code, _, err = run(capsys, "embed", "--engine", "ray", "--dataset", f"folder:{folder}", "--embedder",
                           "timm:resnet10t", "--checkpoint", ckpt, "--out", tmp_path / "x.npy")
        assert code == 2 and 'pip install "alwidgets[ray]"' in err and err.count("\n") == 1
        return
    if ray.is_initialized():
        ray.shutdown()
    code, _, err = run(capsys, "embed", "--engine", "ray", "--address", "127.0.0.1:1", "--dataset",
                       f"folder:{folder}", "--embedder", "timm:resnet10t", "--checkpoint", ckpt,
                       "--out", tmp_path / "x.npy")
    assert code == 2 and "cannot connect to the Ray cluster at '127.0.0.1:1'" in err and err.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()
