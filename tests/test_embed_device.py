"""Decoding: JPEG draft mode on the CPU, the device pipeline (run on the CPU here), CUDA-only checks."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import TimmEmbedder
from alwidgets.embed.device import DeviceBatches, device_decodable
from alwidgets.embed.preprocess import decode_target, pil_resize_crop, read_image, read_resized, resize_crop, split_transform
from alwidgets.pool import ImageReadError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")


def smooth(h, w, seed=0):
    """A photo-like image: random colours at 1/8 resolution, upscaled bicubic."""
    a = np.random.default_rng(seed).integers(0, 255, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC)


def cfg(interp="bilinear", mode="center", size=224, crop_pct=0.875):
    return dict(input_size=(3, size, size), interpolation=interp, mean=(0.5,) * 3, std=(0.5,) * 3,
                crop_pct=crop_pct, crop_mode=mode)


def as_tensor(im):
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


# ------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_tensor_resize_crop_matches_pil_within_rounding(interp, mode):
    tf, _, _ = split_transform(cfg(interp, mode, crop_pct=1.0 if mode == "border" else 0.875))
    for k, (h, w) in enumerate([(375, 500), (750, 1000), (32, 32), (300, 200)]):
        im = smooth(h, w, seed=k)
        ref = np.asarray(tf(im)).astype(int)
        got = resize_crop(tf, [as_tensor(im)], (224, 224))
        assert got.shape == (1, 224, 224, 3) and got.dtype == torch.uint8
        d = np.abs(got[0].numpy().astype(int) - ref)
        assert d.mean() <= 0.3 and d.max() <= (1 if interp == "bilinear" else 6), (h, w, d.mean(), d.max())


@pytest.mark.parametrize("mode", ["center", "border"])
def test_batched_resize_of_mixed_sizes_equals_one_image_at_a_time(mode):
    """Same-size images are resized in one call; the result is exactly the per-image one, in order."""
    tf, _, _ = split_transform(cfg("bicubic", mode, crop_pct=1.0 if mode == "border" else 0.875))
    ims = [as_tensor(smooth(h, w, seed=k)) for k, (h, w) in enumerate([(375, 500), (40, 30), (375, 500), (375, 500),
                                                                        (40, 30), (500, 375)])]
    got = resize_crop(tf, ims, (224, 224))
    for k, x in enumerate(ims):
        assert torch.equal(got[k], resize_crop(tf, [x], (224, 224))[0]), k


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_decode_target_is_what_the_resize_step_makes(mode):
    tf, _, _ = split_transform(dict(cfg(mode=mode), input_size=(3, 224, 200)))
    for w, h in [(2000, 1500), (1500, 2000), (500, 375), (33, 70)]:
        im = Image.new("RGB", (w, h))
        assert decode_target(tf, (w, h)) == tf.transforms[0](im).size


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
@pytest.mark.parametrize("mode", ["center", "squash", "border"])
def test_resampling_only_the_cropped_region_equals_resize_then_crop(interp, mode):
    """One resize of the region the crop keeps gives the pixels of resize-then-crop (float rounding
    at most): PIL's taps reach beyond the box, as they do in the full resize."""
    tf, _, _ = split_transform(dict(cfg(interp, mode, crop_pct=1.0 if mode == "border" else 0.875),
                                    input_size=(3, 224, 200)))
    for k, (w, h) in enumerate([(500, 375), (375, 500), (2000, 1500), (341, 256), (224, 200), (30, 40)]):
        im = smooth(h, w, seed=k)
        ref, got = np.asarray(tf(im)).astype(int), np.asarray(pil_resize_crop(tf, im)).astype(int)
        assert got.shape == ref.shape == (224, 200, 3), (w, h, got.shape)
        d = np.abs(got - ref)
        assert d.mean() < 0.05 and d.max() <= 2, (w, h, d.mean(), d.max())


def jpeg_bytes(im, **kw):
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_draft_decoding_is_reduced_covers_the_target_and_stays_close(tmp_path):
    smooth(1500, 2000).save(tmp_path / "big.jpg", quality=90)
    smooth(375, 500).save(tmp_path / "small.jpg", quality=90)
    smooth(1500, 2000).save(tmp_path / "big.png")
    pool = Pool.from_folder(tmp_path)
    tf, _, _ = split_transform(cfg())
    sizes = {pool.ids[i]: read_image(pool, i, tf).size for i in range(3)}
    # 2000x1500 -> 1/4 (500x375 still covers 341x256); 500x375 cannot shrink; PNGs are never reduced
    assert sizes == {"big.jpg": (500, 375), "small.jpg": (500, 375), "big.png": (2000, 1500)}
    i = pool.index_of("big.jpg")
    full = np.asarray(tf(pool.image(i).convert("RGB"))).astype(int)
    draft = np.asarray(tf(read_image(pool, i, tf))).astype(int)
    assert np.abs(full - draft).mean() < 2.0
    bad = tmp_path / "cut.jpg"
    bad.write_bytes((tmp_path / "big.jpg").read_bytes()[:3000])
    with pytest.raises(ImageReadError, match="'cut.jpg'"):
        read_image(Pool.from_folder(tmp_path), Pool.from_folder(tmp_path).index_of("cut.jpg"), tf)


def test_device_decodable_only_for_what_the_batched_decoder_takes():
    im = smooth(40, 48)
    assert device_decodable(jpeg_bytes(im)) and device_decodable(jpeg_bytes(im.convert("L")))
    assert not device_decodable(jpeg_bytes(im, progressive=True))
    assert not device_decodable(jpeg_bytes(im.convert("CMYK")))
    assert not device_decodable(jpeg_bytes(im)[:-200])  # truncated: no end marker
    png = io.BytesIO()
    im.save(png, "PNG")
    assert not device_decodable(png.getvalue()) and not device_decodable(b"")


# ------------------------------------------------------ the device pipeline
TINY = dict(input_size=(3, 64, 64), crop_pct=0.875, interpolation="bilinear")
_MODEL = {}


def tiny(**kw):
    kw = dict(dict(pretrained=False, cache_dir=False, progress=False, num_workers=0, device="cpu",
                   precision="fp32", pretrained_cfg_overlay=TINY), **kw)
    emb = TimmEmbedder("resnet10t", **kw)
    if "m" not in _MODEL:
        torch.manual_seed(0)
        _MODEL["m"] = emb.model_
    emb._model = _MODEL["m"]
    return emb


@pytest.fixture
def mixed(tmp_path):
    """Baseline JPEGs of several sizes plus every kind the device decoder must hand to the CPU path."""
    for k, (h, w) in enumerate([(75, 100), (150, 200), (100, 75), (64, 64), (90, 120), (120, 90)]):
        smooth(h, w, seed=k).save(tmp_path / f"j{k}.jpg", quality=90)
    smooth(80, 100, seed=10).convert("L").save(tmp_path / "grey.jpg")
    smooth(80, 100, seed=11).save(tmp_path / "prog.jpg", progressive=True)
    smooth(80, 100, seed=12).convert("CMYK").save(tmp_path / "cmyk.jpg")
    smooth(80, 100, seed=13).save(tmp_path / "p.png")
    cut = jpeg_bytes(smooth(150, 200, seed=14))
    (tmp_path / "cut.jpg").write_bytes(cut[: len(cut) // 2])  # header fine, unreadable when decoded
    (tmp_path / "empty.jpg").write_bytes(b"")
    return tmp_path


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_device_pipeline_on_cpu_matches_the_pil_path(mixed, batch_size):
    ref_pool, dev_pool = Pool.from_folder(mixed, on_error="skip"), Pool.from_folder(mixed, on_error="skip")
    ref = tiny(decode="pil-full", batch_size=batch_size).embed(ref_pool)
    got = tiny(decode="device", batch_size=batch_size, num_workers=2).embed(dev_pool)
    assert ref_pool.errors == dev_pool.errors and set(dev_pool.errors) == {"cut.jpg", "empty.jpg"}
    ok = ref_pool.usable
    assert np.all(got[~ok] == 0) and _cos(got[ok], ref[ok]).min() > 0.999


def test_device_pipeline_batches_and_fallbacks(mixed):
    pool = Pool.from_folder(mixed, on_error="skip")
    tf, _, _ = split_transform(tiny().data_config())
    rows = list(range(len(pool)))
    src = DeviceBatches(pool, tf, (64, 64), [rows[:5], rows[5:]], torch.device("cpu"), io_workers=3,
                        skip={pool.index_of(i) for i in pool.errors})
    out = list(src)
    assert [r for _, r, _ in out] == [rows[:5], rows[5:]]
    x = torch.cat([b for b, _, _ in out])
    msgs = dict(zip(pool.ids, [m for _, _, ms in out for m in ms]))
    assert x.shape == (len(pool), 64, 64, 3) and x.dtype == torch.uint8
    assert {k for k, m in msgs.items() if m} == {"cut.jpg", "empty.jpg"} and msgs["empty.jpg"] == "zero-byte file"
    # p.png, prog.jpg, cmyk.jpg and the 64x64 JPEG (enlarged to 73 px) take the CPU path; grey.jpg (one
    # component) and the other five JPEGs the device decoder
    assert src.counts == {"device": 6, "pil": 4, "error": 2}, src.counts
    for k in ("p.png", "prog.jpg", "cmyk.jpg", "j0.jpg"):  # PIL fallbacks and device-decoded alike
        i = pool.index_of(k)
        ref = np.asarray(tf(pool.image(i).convert("RGB"))).astype(int)
        assert np.abs(x[i].numpy().astype(int) - ref).mean() < 1.0, k


def test_decoder_refusal_falls_back_per_image(mixed, monkeypatch):
    import torchvision.io

    real = torchvision.io.decode_jpeg

    def picky(data, *a, **kw):  # refuses one image, as nvJPEG refuses formats it does not support
        items = data if isinstance(data, list) else [data]
        if any(len(d) == len(target) for d in items):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, *a, **kw)

    target = np.fromfile(mixed / "j1.jpg", dtype=np.uint8)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", picky)
    pool = Pool.from_folder(mixed, on_error="skip")
    tf, _, _ = split_transform(tiny().data_config())
    src = DeviceBatches(pool, tf, (64, 64), [list(range(len(pool)))], torch.device("cpu"), io_workers=2,
                        skip={pool.index_of(i) for i in pool.errors})
    ((x, rows, msgs),) = list(src)
    assert src.fallbacks == 1 and not msgs[pool.index_of("j1.jpg")]
    i = pool.index_of("j1.jpg")
    ref = np.asarray(read_resized(pool, i, tf)).astype(int)
    assert np.array_equal(x[i].numpy().astype(int), ref)  # exactly the CPU path


def test_images_the_resize_enlarges_are_decoded_on_the_cpu(tmp_path, monkeypatch):
    """nvJPEG repeats chroma samples where libjpeg interpolates; enlarging magnifies that (32-px CIFAR on an
    H100: min cosine 0.71 to the CPU path for MobileNet V1), so enlarged images take the CPU path."""
    import torchvision.io

    smooth(32, 32, seed=1).save(tmp_path / "small.jpg", quality=90)  # resized up to 73 px: CPU
    smooth(75, 100, seed=2).save(tmp_path / "large.jpg", quality=90)  # resized down: device decoder
    sizes = []
    real = torchvision.io.decode_jpeg

    def spy(data, *a, **kw):
        sizes.extend(len(d) for d in (data if isinstance(data, list) else [data]))
        return real(data, *a, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", spy)
    pool = Pool.from_folder(tmp_path)
    tf, _, _ = split_transform(tiny().data_config())
    ((x, rows, msgs),) = list(DeviceBatches(pool, tf, (64, 64), [[0, 1]], torch.device("cpu")))
    assert sizes == [(tmp_path / "large.jpg").stat().st_size] and msgs == ["", ""]
    i = pool.index_of("small.jpg")
    assert np.array_equal(x[i].numpy(), np.asarray(tf(pool.image(i).convert("RGB"))))  # exactly the PIL path


def test_device_pipeline_raise_mode_stops_its_threads(mixed):
    (mixed / "empty.jpg").unlink()
    pool = Pool.from_folder(mixed)  # on_error="raise": cut.jpg is found only when decoded
    with pytest.raises(ImageReadError, match="'cut.jpg'"):
        tiny(decode="device", batch_size=2).embed(pool)
    assert not [t for t in threading.enumerate() if t.name.startswith(("alwidgets-decode", "alwidgets-io"))]


def test_device_pipeline_producer_error_reaches_the_caller(mixed, monkeypatch):
    from alwidgets.embed import device

    def boom(*a, **kw):
        raise MemoryError("simulated")

    monkeypatch.setattr(device, "resize_crop", boom)
    with pytest.raises(MemoryError, match="simulated"):
        tiny(decode="device").embed(Pool.from_folder(mixed, on_error="skip"))


def test_decode_and_precision_defaults_and_cache_identity(tmp_path):
    emb = TimmEmbedder("resnet10t", pretrained=False)
    assert emb._precision(torch.device("cpu")) == "fp32" and emb._decode(torch.device("cpu")) == "pil"
    assert emb._precision(torch.device("cuda")) == "fp16" and emb._decode(torch.device("cuda")) == "device"
    with pytest.raises(ValueError, match="decode must be one of"):
        tiny(decode="gpu").embed(Pool.digits().subset([0]))
    pool = Pool.digits().subset(range(3))
    keys = {d: tiny(decode=d, cache_dir=tmp_path).cache_key(pool) for d in ("pil", "pil-full", "device")}
    assert len(set(keys.values())) == 3  # numbers may differ by rounding: separate cache entries


# ------------------------------------------------------------------ CUDA only
@needs_cuda
def test_cuda_nvjpeg_path_matches_cpu_path(mixed):
    ref_pool, dev_pool = Pool.from_folder(mixed, on_error="skip"), Pool.from_folder(mixed, on_error="skip")
    ref = tiny(decode="pil-full").embed(ref_pool)
    got = tiny(decode="device", device="cuda", batch_size=4, num_workers=2).embed(dev_pool)
    assert ref_pool.errors == dev_pool.errors
    ok = ref_pool.usable
    assert np.all(got[~ok] == 0) and _cos(got[ok], ref[ok]).min() > 0.999


@needs_cuda
def test_cuda_resize_crop_matches_cpu_tensor_path():
    tf, _, _ = split_transform(cfg("bicubic"))
    ims = [as_tensor(smooth(h, w, seed=h)) for h, w in [(375, 500), (1500, 2000)]]
    cpu = resize_crop(tf, ims, (224, 224)).numpy().astype(int)
    gpu = resize_crop(tf, [x.cuda() for x in ims], (224, 224)).cpu().numpy().astype(int)
    assert np.abs(cpu - gpu).max() <= 1


@needs_cuda
def test_cuda_default_fp16_within_0999_of_fp32(mixed):
    pool = Pool.from_folder(mixed, on_error="skip")
    fp32 = tiny(device="cuda", precision="fp32").embed(pool)
    auto = tiny(device="cuda", precision="auto").embed(pool)
    ok = pool.usable
    assert _cos(auto[ok], fp32[ok]).min() >= 0.999
