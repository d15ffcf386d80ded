"""Embedding cache: hits, misses, invalidation, resume after interruption, atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import TimmEmbedder
from alwidgets._files import atomic_write
from alwidgets.embed.cache import CacheEntry, default_cache_dir

TINY = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear")
# other batch sizes pick other CUDA kernels (fp16 by default there): equal to ~1e-3, not 1e-5 as on the CPU
TOL = 1e-2 if torch.cuda.is_available() else 1e-5


def make(ckpt, cache_dir, **kw):
    kw.setdefault("pretrained_cfg_overlay", TINY)
    return TimmEmbedder("resnet10t", checkpoint=ckpt, cache_dir=cache_dir, progress=False, num_workers=0, **kw)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


class Counter:
    """Wraps TimmEmbedder._forward and counts the images it sees."""

    def __init__(self, monkeypatch, fail_after=None):
        self.seen = 0
        self.fail_after = fail_after
        real = TimmEmbedder._forward

        def counted(model, x, *a):
            if self.fail_after is not None and self.seen >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.seen += len(x)
            return real(model, x, *a)

        monkeypatch.setattr(TimmEmbedder, "_forward", staticmethod(counted))


def test_second_embed_is_a_cache_hit(folder, ckpt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    count = Counter(monkeypatch)
    X = make(ckpt, cache).embed(Pool.from_folder(folder))
    assert count.seen == 10
    Y = make(ckpt, cache).embed(Pool.from_folder(folder))  # a new embedder, a new pool object
    assert count.seen == 10 and np.array_equal(X, Y)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["embeddings.npy", "meta.json"]


def test_invalidation(folder, ckpt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    count = Counter(monkeypatch)
    make(ckpt, cache).embed(Pool.from_folder(folder))
    assert count.seen == 10
    # preprocessing changed -> miss
    make(ckpt, cache, pretrained_cfg_overlay=dict(TINY, mean=(0.5, 0.5, 0.5))).embed(Pool.from_folder(folder))
    assert count.seen == 20
    # a file rewritten (new size/mtime) -> miss
    p = folder / "a" / "0.png"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(p)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    make(ckpt, cache).embed(Pool.from_folder(folder))
    assert count.seen == 30
    # same pool, other weights -> miss
    other = tmp_path / "other.safetensors"
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ckpt))
    sd["conv1.0.weight"] = sd["conv1.0.weight"] * 2
    save_file(sd, str(other))
    make(other, cache).embed(Pool.from_folder(folder))
    assert count.seen == 40
    # nothing changed -> hit
    make(ckpt, cache).embed(Pool.from_folder(folder))
    assert count.seen == 40
    # array pools are keyed by content
    X = np.zeros((4, 8, 8), np.uint8)
    make(ckpt, cache).embed(Pool.from_arrays(X))
    X[2, 3, 3] = 1
    make(ckpt, cache).embed(Pool.from_arrays(X))
    make(ckpt, cache).embed(Pool.from_arrays(X))
    assert count.seen == 48


def test_interrupted_run_resumes_from_last_chunk(folder, ckpt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ref = make(ckpt, False).embed(Pool.from_folder(folder))
    emb = make(ckpt, cache, batch_size=2)
    emb.cache_chunk = 4  # chunks: rows 0-3, 4-7, 8-9
    count = Counter(monkeypatch, fail_after=6)  # dies inside the second chunk
    with pytest.raises(KeyboardInterrupt):
        emb.embed(Pool.from_folder(folder))
    (entry,) = cache.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["chunk4-000000.npz"]  # only finished chunks, no tmp files
    count.fail_after, count.seen = None, 0
    X = emb.embed(Pool.from_folder(folder))
    assert count.seen == 6  # rows 4..9 only
    np.testing.assert_allclose(X, ref, rtol=TOL, atol=TOL)


def test_resumed_run_reports_errors_found_before_the_interruption(folder, ckpt, tmp_path, monkeypatch):
    bad = folder / "a" / "1.png"  # a valid header, truncated data: unreadable only when decoded, in chunk 0
    bad.write_bytes(bad.read_bytes()[:60])
    assert Pool.from_folder(folder, on_error="skip").errors == {}
    emb = make(ckpt, tmp_path / "cache", batch_size=2)
    emb.cache_chunk = 4
    count = Counter(monkeypatch, fail_after=6)
    with pytest.raises(KeyboardInterrupt):
        emb.embed(Pool.from_folder(folder, on_error="skip"))
    count.fail_after = None
    again = Pool.from_folder(folder, on_error="skip")
    emb.embed(again)
    assert list(again.errors) == ["a/1.png"]


def test_errors_are_cached_with_the_rows(tmp_path, ckpt, monkeypatch):
    root = tmp_path / "imgs"
    root.mkdir()
    for k in range(3):
        Image.new("RGB", (10, 10), (k * 50, 0, 0)).save(root / f"{k}.png")
    (root / "bad.jpg").write_bytes(b"")
    pool = Pool.from_folder(root, on_error="skip")
    X = make(ckpt, tmp_path / "c").embed(pool)
    count = Counter(monkeypatch)
    again = Pool.from_folder(root, on_error="skip")
    again.errors.clear()  # errors must come back from the cache entry
    Y = make(ckpt, tmp_path / "c").embed(again)
    assert count.seen == 0 and np.array_equal(X, Y) and again.errors == {"bad.jpg": "zero-byte file"}


def test_corrupt_cache_entry_is_recomputed(folder, ckpt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    X = make(ckpt, cache).embed(Pool.from_folder(folder))
    (entry,) = cache.iterdir()
    (entry / "embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    count = Counter(monkeypatch)
    Y = make(ckpt, cache).embed(Pool.from_folder(folder))
    assert count.seen == 10 and np.allclose(X, Y, atol=TOL / 10)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_chunk_broken_on_disk_is_detected_and_recomputed(folder, ckpt, tmp_path, monkeypatch, damage):
    """A shard (cache chunk) cut short on disk, or with flipped bytes in its data, is recomputed on
    resume; never joined into a short or wrong array."""
    cache = tmp_path / "cache"
    ref = make(ckpt, False).embed(Pool.from_folder(folder))
    emb = make(ckpt, cache, batch_size=2)
    emb.cache_chunk = 4  # chunks: rows 0-3, 4-7, 8-9
    count = Counter(monkeypatch, fail_after=8)  # chunks 0 and 1 finish
    with pytest.raises(KeyboardInterrupt):
        emb.embed(Pool.from_folder(folder))
    (entry,) = cache.iterdir()
    chunk = entry / "chunk4-000001.npz"
    data = chunk.read_bytes()
    if damage == "truncate":  # caught before the run: only chunks 1 and 2 are computed
        chunk.write_bytes(data[: len(data) // 2])
    else:  # same size, a byte of X's data flipped: caught by the zip CRC when the chunks are joined
        k = data.index(b"X.npy") + 200
        chunk.write_bytes(data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:])
    count.fail_after, count.seen = None, 0
    X = emb.embed(Pool.from_folder(folder))
    assert count.seen == 6  # truncated: chunks 1 and 2 in one run; flipped: chunk 2, then chunk 1 again
    np.testing.assert_allclose(X, ref, rtol=TOL, atol=TOL)


def test_env_var_sets_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALWIDGETS_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("ALWIDGETS_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "alwidgets", "embeddings")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def half(tmp):
        Path(tmp).write_bytes(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.bin"]


def test_cache_entry_roundtrip(tmp_path):
    e = CacheEntry(tmp_path, "k", n=5, chunk_size=2)
    assert e.load() is None and e.missing_chunks() == [0, 1, 2]
    for c in range(3):
        rows = e.chunk_rows(c)
        e.save_chunk(c, np.full((len(rows), 3), c, np.float32), {rows[0]: "bad"} if c == 1 else None)
    X, err = e.finish()
    assert X[:, 0].tolist() == [0, 0, 1, 1, 2] and err == {2: "bad"}
    X2, err2 = CacheEntry(tmp_path, "k", n=5, chunk_size=2).load()
    assert np.array_equal(X, X2) and err2 == err
    assert CacheEntry(tmp_path, "k", n=6).load() is None  # wrong length: not this entry
    with pytest.raises(ValueError, match="needs 2 rows"):
        e.save_chunk(0, np.zeros((3, 3)))
