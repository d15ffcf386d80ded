"""A pool: the ordered set of items to label, with stable ids and optional hidden targets."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class Pool:
    """An ordered set of images with stable string ids.

    Build one with a constructor (``Pool.from_folder``, ``Pool.from_arrays``,
    ``Pool.digits()``, ...). Targets, when known, are hidden ground truth for
    simulation (``-1`` where unknown); the session never shows them.

    Examples
    --------
    >>> from alwidgets import Pool
    >>> pool = Pool.digits()
    >>> len(pool), pool.ids[0], pool.classes[:3]
    (1797, 'digits-0000', ['0', '1', '2'])
    """

    def __init__(self, ids, *, paths=None, arrays=None, targets=None, classes=None, name="pool"):
        ids = [str(i) for i in ids]
        if not ids:
            raise ValueError(f"{name}: the pool is empty")
        if len(set(ids)) != len(ids):
            seen, dups = set(), []
            for i in ids:
                if i in seen:
                    dups.append(i)
                seen.add(i)
            raise ValueError(f"{name}: duplicate item ids {dups[:5]}{' ...' if len(dups) > 5 else ''}")
        if (paths is None) == (arrays is None):
            raise ValueError("a pool needs exactly one of paths= or arrays=")
        n = len(ids)
        if paths is not None and len(paths) != n:
            raise ValueError(f"{name}: {len(paths)} paths for {n} ids")
        if arrays is not None and len(arrays) != n:
            raise ValueError(f"{name}: {len(arrays)} images for {n} ids")
        self.ids: list[str] = ids
        self.paths: list[str] | None = None if paths is None else [str(p) for p in paths]
        self.arrays: np.ndarray | None = arrays
        self.targets = np.full(n, -1, np.int64) if targets is None else np.asarray(targets, np.int64)
        if self.targets.shape != (n,):
            raise ValueError(f"{name}: targets have shape {self.targets.shape}, expected ({n},)")
        self.classes: list[str] | None = None if classes is None else [str(c) for c in classes]
        self.name = name

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        src = "arrays" if self.arrays is not None else "files"
        known = int(np.count_nonzero(self.targets >= 0))
        classes = f", classes={len(self.classes)}" if self.classes else ""
        return f"Pool({self.name!r}, n={len(self)}, source={src}{classes}, targets_known={known})"

    def index_of(self, item_id: str) -> int:
        """Position of ``item_id`` in the pool."""
        if not hasattr(self, "_index"):
            self._index = {k: i for i, k in enumerate(self.ids)}
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"item id {item_id!r} is not in {self.name}") from None

    def image(self, i: int):
        """Item ``i`` as an RGB or greyscale PIL image."""
        from PIL import Image

        if self.arrays is not None:
            return Image.fromarray(_to_uint8_hwc(self.arrays[i]))
        path = self.paths[i]
        with Image.open(path) as im:
            im.load()
            return _normalise_mode(im)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, X, y=None, *, classes=None, ids=None, name="arrays"):
        """Images from an array: ``(n,h,w)``, ``(n,h,w,3)`` or ``(n,3,h,w)``, uint8 or float in [0, 1]."""
        X = np.asarray(X)
        if X.ndim == 4 and X.shape[1] in (1, 3) and X.shape[-1] not in (1, 3):
            X = X.transpose(0, 2, 3, 1)
        if X.ndim == 4 and X.shape[-1] == 1:
            X = X[..., 0]
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] != 3):
            raise ValueError(f"images must have shape (n,h,w), (n,h,w,3) or (n,3,h,w); got {X.shape}")
        targets = None
        if y is not None:
            y = np.asarray(y)
            if len(y) != len(X):
                raise ValueError(f"{len(X)} images but {len(y)} labels")
            if y.dtype.kind in "iu" and classes is not None:
                targets = y.astype(np.int64)
            else:
                values, targets = np.unique(y, return_inverse=True)
                classes = [str(v) for v in values] if classes is None else classes
        ids = ids if ids is not None else [f"{name}-{i:0{len(str(len(X) - 1))}d}" for i in range(len(X))]
        return cls(ids, arrays=X, targets=targets, classes=classes, name=name)

    @classmethod
    def digits(cls):
        """scikit-learn's 8x8 handwritten digits (1,797 items, 10 classes); ships with sklearn."""
        from sklearn.datasets import load_digits

        d = load_digits()
        X = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
        return cls.from_arrays(X, d.target, classes=[str(c) for c in d.target_names], name="digits")

    @classmethod
    def fashion_mnist(cls, directory, split: str = "train"):
        """Fashion-MNIST from its original IDX files (``train-*`` or ``t10k-*``, gzip or not)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        prefix = "train" if split == "train" else "t10k"
        directory = Path(directory)
        X = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"), 3)
        y = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"), 1)
        if len(X) != len(y):
            raise ValueError(f"{directory}: {len(X)} images but {len(y)} labels")
        return cls.from_arrays(X, y.astype(np.int64), classes=FASHION_MNIST_CLASSES, name=f"fashion-mnist-{split}")

    @classmethod
    def from_npz(cls, path):
        """Arrays ``X`` (images or features) and optional ``y`` from an ``.npz`` file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f:
                raise ValueError(f"{path}: needs an array named 'X' (found {', '.join(f.files) or 'none'})")
            X = f["X"]
            y = f["y"] if "y" in f else None
        return cls.from_arrays(X, y, name=path.stem)

    @classmethod
    def from_paths(cls, paths, ids=None, *, targets=None, classes=None, name="paths"):
        """Images from file paths; ids default to the paths."""
        paths = [str(p) for p in paths]
        return cls(ids if ids is not None else paths, paths=paths, targets=targets, classes=classes, name=name)

    @classmethod
    def from_folder(cls, directory):
        """Images under ``directory``: class sub-folders give targets and class names.

        Ids are paths relative to ``directory`` (``cat/0001.jpg``), so they stay
        stable when the folder moves.
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, targets, classes = [], [], None
        if subdirs:
            classes = [d.name for d in subdirs]
            for c, d in enumerate(subdirs):
                found = _images_under(d)
                files += found
                targets += [c] * len(found)
        else:
            files = _images_under(root)
        if not files:
            raise ValueError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        ids = [p.relative_to(root).as_posix() for p in files]
        return cls(ids, paths=files, targets=targets or None, classes=classes, name=root.name)


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _images_under(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: p.as_posix(),
    )


def _find(directory: Path, stem: str) -> Path:
    for cand in (directory / f"{stem}.gz", directory / stem):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{directory}: missing {stem}.gz (Fashion-MNIST IDX file)")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"{path}: not a uint8 IDX file with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {len(data) - offset} bytes")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def _to_uint8_hwc(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) * (255.0 if a.max(initial=0) <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return a


def _normalise_mode(im):
    """Convert any PIL mode (CMYK, 16-bit, palette, alpha) to RGB or L."""
    if im.mode in ("RGB", "L"):
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.max() > 0 else 1.0
        from PIL import Image

        return Image.fromarray((a / hi * 255).round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        from PIL import Image

        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns`` of a file, for cache keys."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
