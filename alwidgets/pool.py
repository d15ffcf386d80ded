"""A pool: the ordered set of items to label, with stable ids and optional hidden targets."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._validation import duplicates

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ON_ERROR = ("raise", "skip")


class ImageReadError(ValueError):
    """An item's image file is missing, empty or cannot be decoded."""

    def __init__(self, item_id: str, path: str | None, reason: str):
        self.item_id, self.path, self.reason = item_id, path, reason
        where = f" ({path})" if path else ""
        super().__init__(f"cannot read item {item_id!r}{where}: {reason}")


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

    File pools check every file when built (missing, zero-byte, not an image)
    and again when decoded. ``on_error="raise"`` (default) stops at the first
    bad file, naming its id and path; ``on_error="skip"`` records it in
    ``pool.errors`` (``{id: reason}``) and ``pool.usable`` masks it out, so a
    session never selects it.
    """

    def __init__(self, ids, *, paths=None, arrays=None, targets=None, classes=None, name="pool",
                 on_error: str = "raise"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        ids = [str(i) for i in ids]
        if not ids:
            raise ValueError(f"{name}: the pool is empty")
        if len(set(ids)) != len(ids):
            dups = duplicates(ids)
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
        if self.classes is not None and self.targets.max(initial=-1) >= len(self.classes):
            bad = np.flatnonzero(self.targets >= len(self.classes))
            raise ValueError(f"{name}: targets at rows {bad[:10].tolist()} exceed the {len(self.classes)} classes")
        self.name = name
        self.on_error = on_error
        self.root: str | None = None  # folder that paths are shown relative to
        self.errors: dict[str, str] = {}
        self._thumbs: OrderedDict = OrderedDict()
        if self.paths is not None:
            self._check_files()

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

    @property
    def usable(self) -> np.ndarray:
        """Boolean mask of items that can be shown and selected (not in ``errors``)."""
        mask = np.ones(len(self), bool)
        for item_id in self.errors:
            mask[self.index_of(item_id)] = False
        return mask

    def image(self, i: int):
        """Item ``i`` as an RGB or greyscale PIL image (CMYK, 16-bit, palette and alpha converted).

        Raises :class:`ImageReadError` (naming id and path) when the file cannot be decoded.
        """
        from PIL import Image

        if self.arrays is not None:
            return Image.fromarray(_to_uint8_hwc(self.arrays[i], getattr(self, "_pixel_scale", 1.0)))
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                im.load()
                return _normalise_mode(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageReadError(self.ids[i], path, _reason(e)) from None

    def subset(self, indices) -> "Pool":
        """A new pool of the items at ``indices`` (in that order), with their ids, targets and errors.

        >>> from alwidgets import Pool
        >>> Pool.digits().subset([5, 0]).ids
        ['digits-0005', 'digits-0000']
        """
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"{self.name}: indices out of range for a pool of {len(self)} items")
        ids = [self.ids[i] for i in idx]
        new = Pool.__new__(Pool)
        new.__dict__.update(self.__dict__)
        new.ids = ids
        new.paths = None if self.paths is None else [self.paths[i] for i in idx]
        new.arrays = None if self.arrays is None else self.arrays[idx]
        new.targets = self.targets[idx]
        id_set = set(ids)
        new.errors = {k: v for k, v in self.errors.items() if k in id_set}
        new._thumbs = OrderedDict()
        new.__dict__.pop("_index", None)
        if not ids:
            raise ValueError(f"{self.name}: the subset is empty")
        if len(id_set) != len(ids):
            raise ValueError(f"{self.name}: subset indices repeat items")
        return new

    def report_error(self, i: int, reason: str) -> None:
        """Record that item ``i`` is unreadable: raise under ``on_error="raise"``, else skip it."""
        path = self.paths[i] if self.paths is not None else None
        if self.on_error == "raise":
            raise ImageReadError(self.ids[i], path, reason)
        self.errors[self.ids[i]] = reason

    def thumbnail(self, i: int, size: int = 96, format: str = "jpeg") -> bytes:
        """Item ``i`` as JPEG or WebP bytes, longest side ``size`` px, for the widget.

        Encoded once and kept in a small in-memory LRU cache, because a labelling
        grid asks for the same thumbnails again and again.

        >>> from alwidgets import Pool
        >>> Pool.digits().thumbnail(0, size=32)[:2].hex()  # JPEG magic
        'ffd8'
        """
        fmt = format.lower()
        if fmt in ("jpg", "jpeg"):
            fmt = "jpeg"
        elif fmt != "webp":
            raise ValueError(f"thumbnail format must be 'jpeg' or 'webp', got {format!r}")
        if isinstance(size, bool) or int(size) != size or size < 1:
            raise ValueError(f"thumbnail size must be a positive integer, got {size!r}")
        key = (int(i), int(size), fmt)
        hit = self._thumbs.get(key)
        if hit is not None:
            self._thumbs.move_to_end(key)
            return hit
        from PIL import Image

        im = self.image(i)
        w, h = im.size
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        # tiny images (digits, CIFAR) are enlarged without blur so pixels stay crisp
        im = im.resize(new, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format=fmt.upper(), quality=85)
        data = buf.getvalue()
        self._thumbs[key] = data
        if len(self._thumbs) > THUMBNAIL_CACHE_SIZE:
            self._thumbs.popitem(last=False)
        return data

    def fingerprint(self) -> str:
        """Hash of the ids and content (arrays) or size+mtime (files): the cache key of a pool."""
        h = hashlib.sha256()
        h.update("\0".join(self.ids).encode())
        if self.arrays is not None:
            a = np.ascontiguousarray(self.arrays)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            for p in self.paths:
                try:
                    h.update(file_fingerprint(p).encode())
                except OSError:
                    h.update(b"missing")
                h.update(b"\0")
        return h.hexdigest()

    def _check_files(self) -> None:
        """Cheap checks at build time: the file exists, is not empty and has an image header.

        Only headers are read (threads overlap the file-system latency); files that
        are damaged further in are caught when decoded.
        """
        paths = self.paths
        if len(paths) > 256:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as ex:
                reasons = list(ex.map(_file_problem, paths, chunksize=64))
        else:
            reasons = [_file_problem(p) for p in paths]
        for i, reason in enumerate(reasons):
            if reason is not None:
                self.report_error(i, reason)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, X, y=None, *, classes=None, ids=None, name="arrays"):
        """Images from an array: ``(n,h,w)``, ``(n,h,w,3)`` or ``(n,3,h,w)``, uint8 or float.

        Float images in [0, 1] are scaled by 255, others are read as 0-255; the choice is
        made once for the whole array, so a dark image stays dark. ``y`` holds class
        names or indices (into ``classes`` when given); None/NaN mean unknown.

        >>> import numpy as np
        >>> from alwidgets import Pool
        >>> Pool.from_arrays(np.zeros((3, 4, 4)), y=["cat", "dog", "cat"], classes=["dog", "cat"]).targets.tolist()
        [1, 0, 1]
        """
        X = np.asarray(X)
        if X.dtype.kind not in "uifb":
            raise TypeError(f"{name}: images must be numeric arrays, got dtype {X.dtype}")
        if X.ndim == 4 and X.shape[1] in (1, 3) and X.shape[-1] not in (1, 3):
            X = X.transpose(0, 2, 3, 1)
        if X.ndim == 4 and X.shape[-1] == 1:
            X = X[..., 0]
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] != 3):
            raise ValueError(f"images must have shape (n,h,w), (n,h,w,3) or (n,3,h,w); got {X.shape}")
        if 0 in X.shape:
            raise ValueError(f"{name}: images must not be empty, got shape {X.shape}")
        targets = None
        if y is not None:
            targets, classes = _encode_targets(y, classes, len(X), name)
        ids = ids if ids is not None else [f"{name}-{i:0{len(str(len(X) - 1))}d}" for i in range(len(X))]
        pool = cls(ids, arrays=X, targets=targets, classes=classes, name=name)
        if X.dtype.kind == "f":
            finite = X[np.isfinite(X)]
            pool._pixel_scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return pool

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
    def from_paths(cls, paths, ids=None, *, targets=None, classes=None, name="paths", on_error="raise"):
        """Images from file paths; ids default to the paths."""
        paths = [str(p) for p in paths]
        return cls(ids if ids is not None else paths, paths=paths, targets=targets, classes=classes,
                   name=name, on_error=on_error)

    @classmethod
    def from_dataframe(cls, df, path_col: str, label_col: str | None = None, id_col: str | None = None,
                       *, root=None, classes=None, name="dataframe", on_error="raise"):
        """Images listed in a DataFrame: one row per item.

        ``label_col`` may hold class names or integer indices; missing values
        (NaN/None, or -1) mean the target is unknown. Relative paths are
        resolved against ``root``. Ids come from ``id_col``, else the paths.

        >>> import pandas as pd
        >>> from alwidgets import Pool
        >>> df = pd.DataFrame({"file": ["a.png", "b.png"], "label": ["cat", None]})
        >>> Pool.from_dataframe(df, "file", "label", root="imgs", on_error="skip").targets.tolist()
        [0, -1]
        """
        for col in (path_col, label_col, id_col):
            if col is not None and col not in df.columns:
                raise ValueError(f"{name}: no column {col!r} (columns: {', '.join(map(str, df.columns))})")
        raw = df[path_col].tolist()
        bad = [r for r, p in enumerate(raw) if not isinstance(p, (str, os.PathLike)) or not str(p)]
        if bad:
            raise ValueError(f"{name}: column {path_col!r} has no path at rows {bad[:10]}")
        paths = [str(Path(root) / p) if root is not None else str(p) for p in raw]
        ids = [str(v) for v in df[id_col].tolist()] if id_col is not None else [str(p) for p in raw]
        targets = None
        if label_col is not None:
            col = df[label_col]
            known = col.notna().to_numpy().copy()
            values = col[known].to_numpy()
            targets = np.full(len(df), -1, np.int64)
            if values.dtype.kind in "iuf":
                if np.any(values != np.round(values)):
                    raise ValueError(f"{name}: column {label_col!r} has non-integer numeric labels")
                values = values.astype(np.int64)
                known[np.flatnonzero(known)[values < 0]] = False  # -1 = unknown
                values = values[values >= 0]
                if classes is None:
                    uniq = np.unique(values)
                    classes, values = [str(v) for v in uniq], np.searchsorted(uniq, values)
                targets[known] = values
            else:
                names = [str(v) for v in values]
                if classes is None:
                    classes = sorted(set(names))
                index = {c: k for k, c in enumerate(map(str, classes))}
                unknown = sorted(set(names) - set(index))
                if unknown:
                    raise ValueError(f"{name}: labels {unknown[:5]} are not among classes {list(classes)[:10]}")
                targets[known] = [index[c] for c in names]
        pool = cls(ids, paths=paths, targets=targets, classes=classes, name=name, on_error=on_error)
        pool.root = None if root is None else str(root)
        return pool

    @classmethod
    def from_folder(cls, directory, *, on_error="raise"):
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
        pool = cls(ids, paths=files, targets=targets or None, classes=classes, name=root.name, on_error=on_error)
        pool.root = str(root)
        return pool


THUMBNAIL_CACHE_SIZE = 4096
"""Thumbnails kept in memory per pool (a few KB each)."""

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


def _to_uint8_hwc(a: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """One image as uint8: floats times ``scale`` (255 for [0, 1] data), NaN as 0, clipped."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = np.nan_to_num(a.astype(np.float64) * scale, nan=0.0, posinf=255.0, neginf=0.0)
        a = np.clip(a, 0, 255).round().astype(np.uint8)
    return a


def _encode_targets(y, classes, n: int, name: str):
    """``(targets, classes)`` from class names or indices; None/NaN are unknown (-1)."""
    y = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) or y.dtype.kind in "OUS" else y
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name}: {n} images but {len(y) if y.ndim == 1 else np.shape(y)} labels")
    values = y.tolist()
    unknown = [v is None or (isinstance(v, float) and v != v) for v in values]
    if classes is not None:
        classes = [str(c) for c in classes]
    if y.dtype.kind in "iu" or all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v, u in zip(values, unknown) if not u):
        codes = np.array([-1 if u else int(v) for v, u in zip(values, unknown)], np.int64)
        if classes is None:
            uniq = np.unique(codes[codes >= 0])
            classes = [str(v) for v in uniq]
            codes = np.where(codes >= 0, np.searchsorted(uniq, codes), -1)
        bad = np.flatnonzero((codes < -1) | (codes >= len(classes)))
        if len(bad):
            raise ValueError(f"{name}: y at rows {bad[:10].tolist()} is not a class index 0..{len(classes) - 1}")
        return codes, classes
    names = ["" if u else str(v) for v, u in zip(values, unknown)]
    if classes is None:
        classes = sorted({c for c, u in zip(names, unknown) if not u})
    index = {c: k for k, c in enumerate(classes)}
    bad = [r for r, (c, u) in enumerate(zip(names, unknown)) if not u and c not in index]
    if bad:
        raise ValueError(f"{name}: y at rows {bad[:10]} holds {names[bad[0]][:60]!r}, not one of the classes "
                         f"{classes[:10]}")
    return np.array([-1 if u else index[c] for c, u in zip(names, unknown)], np.int64), classes


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


def _file_problem(path: str) -> str | None:
    """Why ``path`` cannot be an image (missing, empty, unknown header), or None."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "zero-byte file"
        with Image.open(path):
            return None
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return _reason(e)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def file_fingerprint(path: str) -> str:
    """``size:mtime_ns`` of a file, for cache keys."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
