"""Embedders: PixelEmbedder and TimmEmbedder (tiny random timm models on CPU)."""
from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import PixelEmbedder, TimmEmbedder, WeightsUnavailableError
from alwidgets.pool import ImageReadError

TINY = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear")


_MODEL = {}


def tiny(share=True, **kw):
    """A resnet10t embedder at 32 px; ``share`` reuses one set of random weights (and saves building)."""
    kw.setdefault("pretrained", False)
    kw.setdefault("cache_dir", False)
    kw.setdefault("progress", False)
    kw.setdefault("num_workers", 0)
    kw.setdefault("pretrained_cfg_overlay", TINY)
    emb = TimmEmbedder("resnet10t", **kw)
    if share and not kw["pretrained"] and kw["pretrained_cfg_overlay"] == TINY:
        if "m" not in _MODEL:
            _MODEL["m"] = emb.model_
        emb._model = _MODEL["m"]
    return emb


@pytest.fixture(scope="module")
def small_pool():
    return Pool.digits().subset(range(0, 1797, 90))  # 20 items


# ------------------------------------------------------------------ pixels
def test_pixels_shape_range_and_pca(small_pool):
    X = PixelEmbedder().embed(small_pool)
    assert X.shape == (20, 64) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    Z = PixelEmbedder(pca=5).embed(small_pool)
    assert Z.shape == (20, 5) and np.allclose(Z.mean(0), 0, atol=1e-4)
    with pytest.raises(ValueError, match="pca must be a positive integer"):
        PixelEmbedder(pca=0).embed(small_pool)


def test_pixels_from_files_resized(tmp_path):
    for k, size in enumerate([(10, 20), (33, 7)]):
        Image.new("RGB", size, (k * 100, 0, 0)).save(tmp_path / f"{k}.png")
    X = PixelEmbedder(size=8).embed(Pool.from_folder(tmp_path))
    assert X.shape == (2, 8 * 8 * 3) and np.isclose(X[1, 0], 100 / 255)


# -------------------------------------------------------------------- timm
# On CUDA, convolutions may run in TF32 and pick other kernels for channels_last than for the
# contiguous reference: the fp32 results then agree to about 1e-3, not 1e-5 as on the CPU.
TOL = 1e-2 if torch.cuda.is_available() else 1e-4
BATCH_TOL = 1e-2 if torch.cuda.is_available() else 1e-5  # same inputs, other batch sizes


def _device_of(model):
    return next(model.parameters()).device


def _reference(emb, pool):
    """The plain timm recipe: its eval transform on each PIL image, then the model (on its device, fp32)."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=emb.model_)
    tf = timm.data.create_transform(**cfg)
    x = torch.stack([tf(pool.image(i).convert("RGB")) for i in range(len(pool))])
    model = emb.model_.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        return model(x.to(_device_of(model))).cpu().numpy()


def test_timm_matches_plain_timm_pipeline(small_pool):
    emb = tiny(precision="fp32")
    X = emb.embed(small_pool)
    assert X.shape == (20, 512) and X.dtype == np.float32 and np.isfinite(X).all()
    np.testing.assert_allclose(X, _reference(emb, small_pool), rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(emb.embed(small_pool), X)  # deterministic


def test_timm_uses_pretrained_cfg_for_preprocessing(tmp_path):
    # a non-square image: resize short side to 32/0.5 = 64 then centre-crop 32, so only the middle is seen
    a = np.zeros((80, 120, 3), np.uint8)
    a[:, :20] = 255  # bright band on the left, cropped away by a centre crop
    Image.fromarray(a).save(tmp_path / "x.png")
    Image.fromarray(np.zeros_like(a)).save(tmp_path / "y.png")
    pool = Pool.from_folder(tmp_path)
    crop = tiny(pretrained_cfg_overlay=dict(TINY, crop_pct=0.5))
    assert crop.data_config()["crop_pct"] == 0.5
    X = crop.embed(pool)
    np.testing.assert_allclose(X[0], X[1], atol=1e-5)  # the band was cropped off: same input
    X = tiny().embed(pool)
    assert not np.allclose(X[0], X[1], atol=1e-5)


def test_uint8_on_device_normalisation_path():
    emb = tiny()
    model = emb.model_
    dev = _device_of(model)  # an earlier test may have moved the shared model to CUDA
    x = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)  # on the host, as the loader gives it
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.1)
    scale = torch.tensor([1 / (255 * s) for s in std], device=dev).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=dev).view(1, 3, 1, 1)
    with torch.inference_mode():
        got = TimmEmbedder._forward(model, x, dev, scale, shift)
        ref_in = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        ref = model(ref_in.to(dev)).cpu().numpy()
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL / 10)


def test_padded_last_batch_gives_the_same_embeddings(small_pool):
    """On CUDA a short last batch runs padded to the batch size (one input shape for cuDNN): same rows."""
    emb = tiny(batch_size=8)
    rt = emb._runtime()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (5, *rt.size, 3), dtype=np.uint8))
    sizes = []
    real = TimmEmbedder._forward

    def spy(model, x, *a):
        sizes.append(len(x))
        return real(model, x, *a)

    with torch.inference_mode():
        plain = emb._forward_batches(rt.model, x, rt.device, rt.scale, rt.shift)
        TimmEmbedder._forward = staticmethod(spy)
        try:
            padded = emb._forward_batches(rt.model, x, rt.device, rt.scale, rt.shift, pad=True)
        finally:
            TimmEmbedder._forward = staticmethod(real)
    assert sizes == [8] and padded.shape == plain.shape == (5, plain.shape[1])
    np.testing.assert_allclose(padded, plain, rtol=BATCH_TOL, atol=BATCH_TOL)


def test_oom_backoff_halves_batch(small_pool, monkeypatch):
    ref = tiny(batch_size=8).embed(small_pool)
    real = TimmEmbedder._forward
    sizes = []

    def flaky(model, x, *a):
        sizes.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, x, *a)

    monkeypatch.setattr(TimmEmbedder, "_forward", staticmethod(flaky))
    emb = tiny(batch_size=8)
    with pytest.warns(RuntimeWarning, match="out of memory with") as record:
        X = emb.embed(small_pool)
    assert [str(w.message).split(";")[0] for w in record] == ["out of memory with 8 images per batch",
                                                              "out of memory with 4 images per batch"]
    np.testing.assert_allclose(X, ref, rtol=BATCH_TOL, atol=BATCH_TOL)
    assert emb._max_batch == 2 and sizes[:3] == [8, 4, 2] and max(sizes[3:]) == 2


def test_non_oom_errors_propagate(small_pool, monkeypatch):
    def broken(model, x, *a):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(TimmEmbedder, "_forward", staticmethod(broken))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        tiny().embed(small_pool)


def test_oom_at_batch_one_is_raised(small_pool, monkeypatch):
    def always(model, x, *a):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(TimmEmbedder, "_forward", staticmethod(always))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            tiny(batch_size=4).embed(small_pool)


def test_workers_give_same_result(small_pool):
    a, b = tiny(num_workers=2, batch_size=7), tiny(num_workers=0)  # same random weights
    np.testing.assert_allclose(a.embed(small_pool), b.embed(small_pool), rtol=BATCH_TOL, atol=BATCH_TOL)


# ----------------------------------------------------------------- weights
def _save_checkpoint(model, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_checkpoint_file_loads_those_weights(small_pool, tmp_path):
    import timm

    src = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    ckpt = _save_checkpoint(src, tmp_path / "w.safetensors")
    emb = tiny(pretrained=True, checkpoint=ckpt, pretrained_cfg_overlay=dict(TINY, num_classes=7), precision="fp32")
    X = emb.embed(small_pool)
    src.reset_classifier(0)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(emb.model_.state_dict()[k].cpu(), v)  # the model may sit on CUDA now
    np.testing.assert_allclose(X, _reference(emb, small_pool), rtol=TOL, atol=TOL)


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    import timm

    ckpt = _save_checkpoint(timm.create_model("resnet18", pretrained=False), tmp_path / "r18.safetensors")
    with pytest.raises(WeightsUnavailableError, match="do not fit 'resnet10t'"):
        tiny(pretrained=True, checkpoint=ckpt).model_


def test_checkpoint_with_foreign_key_names_is_refused(tmp_path):
    import timm

    sd = timm.create_model("resnet10t", pretrained=False).state_dict()
    from safetensors.torch import save_file

    save_file({"encoder." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "prefixed.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="were not in the file"):
        tiny(pretrained=True, checkpoint=tmp_path / "prefixed.safetensors").model_


def test_bad_arguments():
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        tiny(pretrained=True, checkpoint="/nonexistent/w.safetensors").model_
    with pytest.raises(ValueError, match="cannot be combined with pretrained=False"):
        tiny(share=False, checkpoint=__file__).model_
    with pytest.raises(ValueError, match="unknown timm model 'resnet10x'"):
        TimmEmbedder("resnet10x", pretrained=False).model_
    with pytest.raises(ValueError, match="num_classes is fixed"):
        TimmEmbedder("resnet10t", pretrained=False, num_classes=3).model_
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny(precision="fp8").embed(Pool.digits().subset([0]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tiny(batch_size=0).embed(Pool.digits().subset([0]))


def test_pretrained_without_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=r"could not load pretrained weights for 'resnet10t'.*checkpoint="):
        TimmEmbedder("resnet10t", progress=False, cache_dir=False).model_


def test_model_kwargs_reach_timm():
    emb = TimmEmbedder("mobilenetv1_100", pretrained=False, pad_type="same", cache_dir=False)
    from timm.layers import Conv2dSame

    assert any(isinstance(m, Conv2dSame) for m in emb.model_.modules())
    assert "pad_type='same'" in repr(emb)


# ------------------------------------------------------------- bad images
@pytest.fixture
def bad_folder(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"ok{k}.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    return tmp_path


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_files_skipped_rows_zero(bad_folder, workers):
    pool = Pool.from_folder(bad_folder, on_error="skip")
    X = tiny(num_workers=workers).embed(pool)
    assert set(pool.errors) == {"empty.jpg", "truncated.jpg"}
    bad = ~pool.usable
    assert bad.sum() == 2 and np.all(X[bad] == 0) and np.all(np.abs(X[~bad]).sum(1) > 0)


def test_corrupt_files_raise_by_default(bad_folder):
    (bad_folder / "empty.jpg").unlink()
    pool = Pool.from_folder(bad_folder)
    with pytest.raises(ImageReadError, match=r"'truncated.jpg' \(.*truncated.jpg\)"):
        tiny(num_workers=1).embed(pool)


@pytest.mark.parametrize("module, decode", [("grpc", "pil"), ("ray._raylet", "pil-full")])
def test_decoding_runs_in_threads_once_grpc_is_loaded(bad_folder, monkeypatch, module, decode):
    """A process that has loaded gRPC (a Ray client, or Ray's core for a driver) is not forked: a worker
    forked while gRPC's threads hold its locks can crash (CI, after the Ray tests: "DataLoader worker
    ... killed by signal: Segmentation fault").
    The same PIL decoding then runs in threads: same embeddings, same per-item errors."""
    import multiprocessing.process
    import types

    from alwidgets.embed.timm import fork_is_unsafe

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(
        bad_folder / "big.jpg")  # reduced-scale decoding ("pil") differs from "pil-full" on it
    pool = Pool.from_folder(bad_folder, on_error="skip")
    ref = tiny(num_workers=0, batch_size=3, decode=decode).embed(pool)
    for loaded in ("grpc", "ray._raylet"):  # as in a process that never used Ray
        monkeypatch.delitem(sys.modules, loaded, raising=False)
    assert not fork_is_unsafe()
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    assert fork_is_unsafe()

    def no_process(self):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_process)
    X = tiny(num_workers=2, batch_size=3, decode=decode).embed(pool)
    assert set(pool.errors) == {"empty.jpg", "truncated.jpg"}
    np.testing.assert_allclose(X, ref, rtol=BATCH_TOL, atol=BATCH_TOL)
    assert np.all(X[~pool.usable] == 0)
    (bad_folder / "empty.jpg").unlink()
    with pytest.raises(ImageReadError, match=r"'truncated.jpg'"):
        tiny(num_workers=2, batch_size=3, decode=decode).embed(Pool.from_folder(bad_folder))
