"""Pool: constructors, thumbnails, bad files and image modes."""
from __future__ import annotations

import gzip
import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alwidgets import Pool
from alwidgets.pool import ImageReadError

SHARED = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared"


def shared_path(*parts):
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found at {p}")
    return p


def _save(path, mode="RGB", size=(12, 10), color=(200, 30, 40), fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt, **kw)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "cat" / "a.jpg")
    _save(root / "cat" / "b.PNG", color=(0, 0, 255))
    _save(root / "dog" / "c.webp", color=(0, 255, 0))
    _save(root / "dog" / "sub" / "d.bmp")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------- constructors
def test_from_folder_classes_targets_and_relative_ids(folder):
    pool = Pool.from_folder(folder)
    assert pool.classes == ["cat", "dog"]
    assert pool.ids == ["cat/a.jpg", "cat/b.PNG", "dog/c.webp", "dog/sub/d.bmp"]
    assert pool.targets.tolist() == [0, 0, 1, 1]
    assert pool.image(1).mode == "RGB" and pool.image(1).getpixel((0, 0)) == (0, 0, 255)
    assert not pool.errors and pool.usable.all()


def test_from_folder_flat_has_no_targets(tmp_path):
    for k in range(3):
        _save(tmp_path / f"{k}.gif", mode="P", color=k)
    pool = Pool.from_folder(tmp_path)
    assert pool.classes is None and (pool.targets == -1).all() and len(pool) == 3


def test_from_folder_empty_or_missing(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        Pool.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Pool.from_folder(tmp_path / "nope")


def test_from_paths_ids(folder):
    paths = sorted(folder.rglob("*.jpg")) + sorted(folder.rglob("*.webp"))
    assert Pool.from_paths(paths).ids == [str(p) for p in paths]
    pool = Pool.from_paths(paths, ids=["x", "y"])
    assert pool.ids == ["x", "y"] and pool.image(1).getpixel((0, 0))[1] > 200


@pytest.mark.parametrize("shape", [(5, 8, 9), (5, 8, 9, 3), (5, 3, 8, 9), (5, 8, 9, 1)])
def test_from_arrays_layouts(shape):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=shape).astype(np.uint8)
    pool = Pool.from_arrays(X, y=["b", "a", "b", "a", "c"])
    assert pool.classes == ["a", "b", "c"] and pool.targets.tolist() == [1, 0, 1, 0, 2]
    im = pool.image(2)
    assert im.size == (9, 8)
    ref = X[2].transpose(1, 2, 0) if shape[1] == 3 else X[2]
    assert np.array_equal(np.asarray(im), ref.squeeze())


def test_from_arrays_float_scaled():
    X = np.full((2, 4, 4), 0.5, np.float32)
    assert np.asarray(Pool.from_arrays(X).image(0)).max() == 128


def test_from_arrays_bad_shape():
    with pytest.raises(ValueError, match=r"\(n,h,w\)"):
        Pool.from_arrays(np.zeros((3, 4, 4, 5)))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        Pool.from_arrays(np.zeros((3, 4, 4)), y=[0, 1])


def test_from_dataframe_string_labels_with_unknowns(folder):
    df = pd.DataFrame({"file": ["cat/a.jpg", "dog/c.webp", "cat/b.PNG"],
                       "label": ["cat", None, "mouse"], "key": ["k1", "k2", "k3"]})
    pool = Pool.from_dataframe(df, "file", "label", id_col="key", root=folder)
    assert pool.ids == ["k1", "k2", "k3"]
    assert pool.classes == ["cat", "mouse"] and pool.targets.tolist() == [0, -1, 1]
    assert pool.image(1).getpixel((0, 0))[1] > 200


def test_from_dataframe_int_labels_and_errors(folder):
    df = pd.DataFrame({"file": [str(folder / "cat/a.jpg"), str(folder / "dog/c.webp")], "y": [7, -1]})
    pool = Pool.from_dataframe(df, "file", "y")
    assert pool.classes == ["7"] and pool.targets.tolist() == [0, -1] and pool.ids == df["file"].tolist()
    pool = Pool.from_dataframe(df.assign(y=[1, 0]), "file", "y", classes=["a", "b"])
    assert pool.targets.tolist() == [1, 0]
    with pytest.raises(ValueError, match="no column 'label'"):
        Pool.from_dataframe(df, "file", "label")
    with pytest.raises(ValueError, match="not among classes"):
        Pool.from_dataframe(df.assign(y=["x", "z"]), "file", "y", classes=["x"])
    with pytest.raises(ValueError, match="duplicate item ids"):
        Pool.from_dataframe(pd.concat([df, df]), "file")


def test_digits():
    pool = Pool.digits()
    assert len(pool) == 1797 and pool.image(0).size == (8, 8) and set(pool.targets) == set(range(10))


def _write_idx(path, arr, ndim):
    header = bytes([0, 0, 8, ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx(tmp_path):
    X = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", X, 3)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 0, 3]), 1)
    pool = Pool.fashion_mnist(tmp_path, split="test")
    assert pool.targets.tolist() == [9, 0, 3] and pool.classes[9] == "Ankle boot"
    assert np.array_equal(np.asarray(pool.image(1)), X[1])
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        Pool.fashion_mnist(tmp_path, split="train")


def test_fashion_mnist_real():
    root = shared_path("data", "fashion-mnist")
    pool = Pool.fashion_mnist(root, split="test")
    assert len(pool) == 10000 and np.bincount(pool.targets).tolist() == [1000] * 10


def test_empty_and_duplicate_ids():
    with pytest.raises(ValueError, match="empty"):
        Pool([], arrays=np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match=r"duplicate item ids \['a'\]"):
        Pool(["a", "b", "a"], arrays=np.zeros((3, 2, 2)))


def test_subset_keeps_ids_targets_and_errors(tmp_path):
    pool = Pool.digits().subset([10, 3])
    assert pool.ids == ["digits-0010", "digits-0003"] and pool.targets.tolist() == [0, 3]
    assert pool.index_of("digits-0003") == 1
    with pytest.raises(IndexError):
        Pool.digits().subset([5000])


# ------------------------------------------------------------------ thumbnails
def test_thumbnail_jpeg_webp_and_cache():
    pool = Pool.digits()
    jpg = pool.thumbnail(0, size=64)
    assert jpg[:2] == b"\xff\xd8" and Image.open(io.BytesIO(jpg)).size == (64, 64)
    assert pool.thumbnail(0, size=64) is jpg  # cached
    webp = pool.thumbnail(0, size=40, format="webp")
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP" and Image.open(io.BytesIO(webp)).size == (40, 40)
    with pytest.raises(ValueError, match="jpeg' or 'webp"):
        pool.thumbnail(0, format="gif")


def test_thumbnail_keeps_aspect(folder):
    pool = Pool.from_folder(folder)
    assert Image.open(io.BytesIO(pool.thumbnail(0, size=96))).size == (96, 80)


# ------------------------------------------------------------------ bad files
@pytest.fixture
def bad_folder(tmp_path):
    root = tmp_path / "bad"
    _save(root / "ok.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root


def test_bad_files_raise_with_id_and_path(bad_folder):
    with pytest.raises(ImageReadError, match=r"'empty.jpg' \(.*empty.jpg\): zero-byte file"):
        Pool.from_folder(bad_folder)


def test_bad_files_skipped_and_listed(bad_folder):
    pool = Pool.from_folder(bad_folder, on_error="skip")
    assert set(pool.errors) == {"empty.jpg", "garbage.png"}  # found when built
    assert "zero-byte" in pool.errors["empty.jpg"] and "cannot identify" in pool.errors["garbage.png"]
    t = pool.index_of("truncated.jpg")  # a valid header: found only when decoded
    with pytest.raises(ImageReadError, match=r"'truncated.jpg' \(.*truncated.jpg\): .*truncated"):
        pool.image(t)
    assert pool.usable.tolist() == [i not in pool.errors for i in pool.ids]


def test_report_error_follows_on_error(bad_folder):
    pool = Pool.from_folder(bad_folder, on_error="skip")
    pool.report_error(pool.index_of("ok.jpg"), "boom")
    assert pool.errors["ok.jpg"] == "boom" and not pool.usable[pool.index_of("ok.jpg")]
    with pytest.raises(ValueError, match="on_error must be"):
        Pool.from_folder(bad_folder, on_error="ignore")


def test_missing_file_named(tmp_path):
    with pytest.raises(ImageReadError, match="'x' .*: no such file"):
        Pool.from_paths([tmp_path / "nope.jpg"], ids=["x"])


# ----------------------------------------------------------------- image modes
def test_cmyk_converted(tmp_path):
    p = _save(tmp_path / "c.jpg", mode="CMYK", color=(0, 255, 255, 0))  # pure red in CMYK
    im = Pool.from_paths([p]).image(0)
    assert im.mode == "RGB" and im.getpixel((3, 3))[0] > 200 and im.getpixel((3, 3))[1] < 60


def test_16bit_converted(tmp_path):
    a = np.zeros((6, 6), np.uint16)
    a[:, 3:] = 60000
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    im = Pool.from_paths([p]).image(0)
    assert im.mode == "L" and im.getpixel((0, 0)) == 0 and im.getpixel((5, 0)) == 255


def test_palette_with_transparency_and_alpha_on_white(tmp_path):
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(rgba)  # fully transparent red
    pal = tmp_path / "p.png"
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    im.info["transparency"] = 0
    im.save(pal, transparency=0)
    la = tmp_path / "la.png"
    Image.new("LA", (4, 4), (0, 255)).save(la)
    pool = Pool.from_paths([rgba, pal, la])
    assert pool.image(0).mode == "RGB" and pool.image(0).getpixel((0, 0)) == (255, 255, 255)
    assert pool.image(1).getpixel((0, 0)) == (0, 0, 255)
    assert pool.image(2).getpixel((0, 0)) == (0, 0, 0)


# ---------------------------------------------------------------- fingerprint
def test_fingerprint_tracks_content(folder):
    pool = Pool.from_folder(folder)
    fp = pool.fingerprint()
    assert Pool.from_folder(folder).fingerprint() == fp
    p = folder / "cat" / "a.jpg"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert Pool.from_folder(folder).fingerprint() != fp
    X = np.zeros((3, 4, 4), np.uint8)
    f1 = Pool.from_arrays(X).fingerprint()
    X[1, 2, 2] = 1
    assert Pool.from_arrays(X).fingerprint() != f1


def test_from_arrays_maps_names_through_the_given_classes():
    pool = Pool.from_arrays(np.zeros((3, 4, 4)), y=["cat", "dog", "cat"], classes=["dog", "cat"])
    assert [pool.classes[t] for t in pool.targets] == ["cat", "dog", "cat"]
    with pytest.raises(ValueError, match=r"rows \[1\] holds 'cow'"):
        Pool.from_arrays(np.zeros((3, 4, 4)), y=["cat", "cow", "cat"], classes=["dog", "cat"])
    unknown = Pool.from_arrays(np.zeros((3, 4, 4)), y=["cat", float("nan"), None])
    assert unknown.targets.tolist() == [0, -1, -1] and unknown.classes == ["cat"]   # no class called 'nan'


def test_from_arrays_scales_floats_once_and_survives_nan():
    dark = np.full((2, 4, 4), 10.0)          # a dark 0-255 image among floats
    dark[1] = 200.0
    pool = Pool.from_arrays(dark)
    assert np.asarray(pool.image(0)).max() == 10          # not stretched to white
    X = np.full((1, 4, 4), 0.5)
    X[0, 0, 0] = np.nan
    img = np.asarray(Pool.from_arrays(X).image(0))
    assert img[0, 0] == 0 and img[1, 1] == 128            # one NaN pixel does not blacken the image
    with pytest.raises(TypeError, match="numeric"):
        Pool.from_arrays(np.array([[["a"]]]))
    with pytest.raises(ValueError, match="empty"):
        Pool.from_arrays(np.zeros((50, 0, 4)))


def test_decompression_bomb_is_an_item_error(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "ok.png")
    bomb = tmp_path / "a" / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)            # header claims 400 Mpx
    pool = Pool.from_folder(tmp_path, on_error="skip")
    assert list(pool.errors) == ["a/bomb.png"] and "decompression bomb" in pool.errors["a/bomb.png"].lower()
    with pytest.raises(ValueError, match="bomb.png"):
        Pool.from_folder(tmp_path)
