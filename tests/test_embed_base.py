"""The Embedder protocol: one run loop (cache, chunks, resume, errors) for every embedder and executor."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alwidgets import Pool
from alwidgets.embed import Embedder, Executor, LocalExecutor, PixelEmbedder, TimmEmbedder
from alwidgets.embed.base import EXECUTORS, get_executor


class Means(Embedder):
    """Per-channel means of each image: a tiny embedder that counts the rows it computes."""

    def __init__(self, batch_size: int = 3, cache_dir=False, fail_after: int | None = None):
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.fail_after = fail_after
        self.computed = 0

    def _identity(self):
        return dict(format="means-v1")

    def _embed_batches(self, pool, chunks):
        for rows in chunks.values():
            for k in range(0, len(rows), self.batch_size):
                part = list(rows[k:k + self.batch_size])
                if self.fail_after is not None and self.computed >= self.fail_after:
                    raise KeyboardInterrupt("simulated interruption")
                X, errors = np.zeros((len(part), 3), np.float32), {}
                for j, i in enumerate(part):
                    try:
                        X[j] = np.asarray(pool.image(i).convert("RGB"), np.float32).mean((0, 1))
                    except ValueError as e:  # ImageReadError
                        errors[i] = e.reason
                        X[j] = 99.0  # must be zeroed by the run loop
                self.computed += len(part)
                yield part, X, errors


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    return Pool.from_arrays(rng.integers(0, 255, (10, 4, 4, 3), dtype=np.uint8))


def test_custom_embedder_gets_the_run_loop(pool):
    X = Means().embed(pool)
    ref = pool.arrays.reshape(10, -1, 3).mean(1)
    assert X.dtype == np.float32 and X.shape == (10, 3)
    np.testing.assert_allclose(X, ref, rtol=1e-6)
    assert repr(Means(batch_size=4)) == "Means(batch_size=4)"


def test_cache_and_resume_for_any_embedder(pool, tmp_path):
    ref = Means().embed(pool)
    emb = Means(cache_dir=tmp_path, fail_after=6)
    emb.cache_chunk = 4  # batches of 3 inside chunks of 4: rows 0-2, 3, 4-6, 7, 8-9
    with pytest.raises(KeyboardInterrupt):
        emb.embed(pool)
    (entry,) = tmp_path.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["chunk4-000000.npz"]
    emb.fail_after, emb.computed = None, 0
    X = emb.embed(pool)
    assert emb.computed == 6 and np.array_equal(X, ref)  # chunks 1 and 2 only
    emb.computed = 0
    assert np.array_equal(emb.embed(pool), ref) and emb.computed == 0  # a hit
    assert emb.cache_key(pool) == entry.name
    assert Means(cache_dir=tmp_path).cache_key(pool.subset(range(9))) != entry.name


class Shuffled(Executor):
    """The local batches split into single rows, in a random order."""

    name = "shuffled"

    def run(self, embedder, pool, chunks):
        items = [(r, x[k:k + 1], {r: e[r]} if r in e else {})
                 for rows, x, e in embedder._embed_batches(pool, chunks) for k, r in enumerate(rows)]
        order = np.random.default_rng(1).permutation(len(items))
        for k in order:
            r, x, e = items[k]
            yield [r], x, e


def test_executor_order_does_not_matter(pool, tmp_path):
    ref = Means().embed(pool)
    np.testing.assert_array_equal(Means().embed(pool, executor=Shuffled()), ref)
    emb = Means(cache_dir=tmp_path)
    emb.cache_chunk = 4
    np.testing.assert_array_equal(emb.embed(pool, executor=Shuffled()), ref)
    np.testing.assert_array_equal(Means(cache_dir=tmp_path).embed(pool), ref)  # written under the same key


class Broken(Executor):
    def __init__(self, how):
        self.how = how

    def run(self, embedder, pool, chunks):
        batches = list(embedder._embed_batches(pool, chunks))
        if self.how == "twice":
            batches.append(batches[0])
        elif self.how == "short":
            batches = batches[:-1]
        elif self.how == "shape":
            rows, x, e = batches[0]
            batches[0] = rows, x[:-1], e
        yield from batches

    def __repr__(self):
        return f"Broken({self.how!r})"


@pytest.mark.parametrize("how, match", [("twice", "twice"), ("short", "stopped with 1 rows not embedded"),
                                        ("shape", r"returned \(2, 3\) embeddings for 3 rows")])
def test_misbehaving_executor_is_an_error_not_a_misaligned_array(pool, how, match):
    with pytest.raises(RuntimeError, match=match):
        Means().embed(pool, executor=Broken(how))


def test_executor_names():
    assert isinstance(get_executor("local"), LocalExecutor) and "local" in EXECUTORS
    with pytest.raises(ValueError, match="executor must be one of"):
        Means().embed(Pool.digits().subset([0]), executor="spark")


def test_unreadable_files_reported_per_item_and_zeroed(tmp_path):
    for k in range(4):
        Image.new("RGB", (6, 6), (40 * k, 10, 10)).save(tmp_path / f"{k}.png")
    good = tmp_path / "late.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:60])  # header fine, data truncated: found only when decoded
    pool = Pool.from_folder(tmp_path, on_error="skip")
    assert pool.errors == {}
    X = Means().embed(pool)
    assert list(pool.errors) == ["late.png"] and np.all(X[pool.index_of("late.png")] == 0)
    assert np.all(X[pool.usable].sum(1) > 0)
    P = PixelEmbedder(size=4).embed(pool)
    assert P.shape == (5, 48) and np.all(P[~pool.usable] == 0)
    strict = Pool.from_folder(tmp_path)
    with pytest.raises(ValueError, match="'late.png'"):
        PixelEmbedder(size=4).embed(strict)


def test_embedder_without_identity_cannot_cache(pool, tmp_path):
    class NoId(Embedder):
        def __init__(self, cache_dir=False):
            self.cache_dir = cache_dir

        def _embed_batches(self, pool, chunks):
            for rows in chunks.values():
                yield list(rows), np.ones((len(rows), 2)), {}

    assert NoId().embed(pool).shape == (10, 2)
    with pytest.raises(NotImplementedError, match="pass cache_dir=False"):
        NoId(cache_dir=tmp_path).embed(pool)


def test_reprs():
    assert repr(PixelEmbedder(pca=4)) == "PixelEmbedder(pca=4)"
    r = repr(TimmEmbedder("resnet10t", pretrained=False, cache_dir=False, pad_type="same"))
    assert r == "TimmEmbedder('resnet10t', pretrained=False, cache_dir=False, pad_type='same')"
