"""Pools with masks: images paired with per-pixel class maps, a synthetic set, mask PNG bytes.

A segmentation data set is a :class:`~alwidgets.Pool` (the images, with stable
ids) plus one mask per image: a ``(H, W)`` uint8 array of class indices where
``ignore_index`` marks pixels that never train and never score. Masks are the
hidden targets of a simulation; a labelling session fills them in.

>>> from alwidgets.segmentation import make_shapes
>>> data = make_shapes(n_images=4, size=(24, 32), random_state=0)
>>> data
SegmentationData('shapes', n=4, classes=4, ignore_index=4, masks_known=4)
>>> data.mask(0).shape, data.mask(0).dtype
((24, 32), dtype('uint8'))
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pool import IMAGE_EXTENSIONS, ON_ERROR, ImageReadError, Pool

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
"""CamVid's 11 classes in index order (SegNet version); index 11 is Unlabelled (void)."""
CAMVID_IGNORE_INDEX = 11
CAMVID_RARE = ["Pole", "SignSymbol", "Pedestrian", "Bicyclist"]
"""The four rarest CamVid classes (under 1.2 % of train pixels each)."""

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
MAX_MASK_PIXELS = 40_000_000
"""Masks larger than this (e.g. 8000 x 6000) are refused: a labelling tool never needs them."""


class MaskError(ValueError):
    """A mask is missing, unreadable, of the wrong size or holds values outside the classes."""

    def __init__(self, item_id: str | None, path: str | None, reason: str):
        self.item_id, self.path, self.reason = item_id, path, reason
        who = f"item {item_id!r}" if item_id is not None else "mask"
        where = f" ({path})" if path else ""
        super().__init__(f"{who}{where}: {reason}")


# ------------------------------------------------------------------------------ checks and PNG codec
def check_mask(mask, *, n_classes: int, ignore_index: int | None = None, shape=None,
               item_id: str | None = None, path: str | None = None) -> np.ndarray:
    """Return ``mask`` as a 2-d uint8 array after checking its size and values.

    Values must lie in ``[0, n_classes)`` or equal ``ignore_index``. ``shape`` is
    the expected ``(H, W)`` (the image's). Raises :class:`MaskError` naming the
    item, the file and the offending values.

    >>> import numpy as np
    >>> check_mask(np.array([[0, 1], [2, 255]]), n_classes=3, ignore_index=255).dtype
    dtype('uint8')
    >>> check_mask(np.array([[0, 7]]), n_classes=3, ignore_index=255)
    Traceback (most recent call last):
    ...
    alwidgets.segmentation.data.MaskError: mask: values [7] are outside the 3 classes (0-2) and not the ignore index 255
    """
    a = np.asarray(mask)
    if a.ndim != 2:
        raise MaskError(item_id, path, f"a mask must be 2-d (H, W) class indices, got shape {a.shape}")
    if a.dtype.kind not in "iub":
        raise MaskError(item_id, path, f"a mask must hold integers, got dtype {a.dtype}")
    if a.size > MAX_MASK_PIXELS:
        raise MaskError(item_id, path, f"mask of {a.shape[1]}x{a.shape[0]} pixels is larger than the limit "
                                       f"of {MAX_MASK_PIXELS:,} pixels")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise MaskError(item_id, path, f"mask is {a.shape[1]}x{a.shape[0]} (WxH) but the image is "
                                       f"{shape[1]}x{shape[0]}")
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            bad = np.unique(a[(a < 0) | (a > 255)])[:10].tolist()
            raise MaskError(item_id, path, f"values {bad} do not fit an 8-bit index mask")
        a = a.astype(np.uint8)
    counts = np.bincount(a.ravel(), minlength=256)
    allowed = np.zeros(256, bool)
    allowed[:n_classes] = True
    if ignore_index is not None:
        allowed[ignore_index] = True
    bad = np.flatnonzero((counts > 0) & ~allowed)
    if bad.size:
        ign = f" and not the ignore index {ignore_index}" if ignore_index is not None else ""
        raise MaskError(item_id, path, f"values {bad[:10].tolist()} are outside the {n_classes} classes "
                                       f"(0-{n_classes - 1}){ign}")
    return np.ascontiguousarray(a)


def mask_to_png(mask) -> bytes:
    """Encode a 2-d class-index mask as 8-bit greyscale PNG bytes (lossless).

    >>> import numpy as np
    >>> m = np.array([[0, 1, 2], [11, 3, 0]], np.uint8)
    >>> data = mask_to_png(m)
    >>> data[:4]
    b'\\x89PNG'
    >>> bool((mask_from_png(data, n_classes=11, ignore_index=11) == m).all())
    True
    """
    from PIL import Image

    a = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"a mask must be 2-d (H, W), got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "iub" or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError(f"a mask must hold integers 0-255, got dtype {a.dtype} with range "
                             f"{a.min() if a.size else 0}..{a.max() if a.size else 0}")
        a = a.astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), "L").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def mask_from_png(data: bytes, *, n_classes: int, ignore_index: int | None = None, shape=None,
                  item_id: str | None = None) -> np.ndarray:
    """Decode and check 8-bit index PNG bytes (mode ``L`` or palette ``P``): the inverse of :func:`mask_to_png`.

    Corrupt bytes, other image modes (RGB colours are not class indices), a size
    other than ``shape`` or values outside the classes raise :class:`MaskError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MaskError(item_id, None, f"mask payload must be PNG bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise MaskError(item_id, None, "mask payload is not a PNG file (bad signature)")
    a = _decode_index_image(io.BytesIO(data), item_id, None, "corrupt mask PNG")
    return check_mask(a, n_classes=n_classes, ignore_index=ignore_index, shape=shape, item_id=item_id)


def _decode_index_image(source, item_id, path: str | None, failure: str) -> np.ndarray:
    """Class indices of an 8-bit greyscale or palette image (bytes or a file); ``failure`` prefixes read errors."""
    from PIL import Image

    try:
        with Image.open(source) as im:
            if im.width * im.height > MAX_MASK_PIXELS:
                raise MaskError(item_id, path, f"mask of {im.width}x{im.height} pixels is larger than the "
                                               f"limit of {MAX_MASK_PIXELS:,} pixels")
            if im.mode not in ("L", "P"):
                raise MaskError(item_id, path, f"mask must be 8-bit greyscale or palette (class indices), "
                                               f"got mode {im.mode}")
            im.load()
            return np.array(im, dtype=np.uint8)
    except MaskError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise MaskError(item_id, path, f"{failure}: {why}") from None


def _read_mask_file(path: Path, item_id: str, n_classes: int | None, ignore_index, shape):
    try:
        empty = path.stat().st_size == 0
    except OSError as e:
        raise MaskError(item_id, str(path), f"cannot read mask: {e.strerror or e}") from None
    if empty:
        raise MaskError(item_id, str(path), "zero-byte mask file")
    a = _decode_index_image(path, item_id, str(path), "cannot read mask")
    if n_classes is None:  # classes not known yet: only the size is checked here
        if shape is not None and a.shape != tuple(shape):
            raise MaskError(item_id, str(path), f"mask is {a.shape[1]}x{a.shape[0]} (WxH) but the image is "
                                                f"{shape[1]}x{shape[0]}")
        return a
    return check_mask(a, n_classes=n_classes, ignore_index=ignore_index, shape=shape, item_id=item_id,
                      path=str(path))


# ------------------------------------------------------------------------------ the data set
@dataclass
class SegmentationData:
    """A pool of images with their masks, class names and ignore index.

    Attributes
    ----------
    pool : Pool
        The images (stable ids; unreadable items in ``pool.errors``).
    masks : list of (H, W) uint8 arrays or None
        The mask of each pool item, ``None`` where unknown (or unusable).
    classes : list of str
    ignore_index : int or None
        Mask value that is never trained on or scored (CamVid: 11).
    mask_paths : list of str or None
    """

    pool: Pool
    masks: list
    classes: list
    ignore_index: int | None = None
    mask_paths: list | None = None
    name: str = field(default="")

    def __post_init__(self):
        if len(self.masks) != len(self.pool):
            raise ValueError(f"{len(self.masks)} masks for a pool of {len(self.pool)} items")
        if not self.name:
            self.name = self.pool.name
        if self.ignore_index is not None and 0 <= self.ignore_index < len(self.classes):
            raise ValueError(f"ignore_index {self.ignore_index} is one of the {len(self.classes)} classes; "
                             "use a value outside 0..n_classes-1 (e.g. 255)")

    def __len__(self) -> int:
        return len(self.pool)

    def __repr__(self) -> str:
        known = sum(m is not None for m in self.masks)
        return (f"SegmentationData({self.name!r}, n={len(self)}, classes={len(self.classes)}, "
                f"ignore_index={self.ignore_index}, masks_known={known})")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def ids(self) -> list:
        return self.pool.ids

    def mask(self, i: int) -> np.ndarray:
        """The mask of item ``i``; ``ValueError`` if it is unknown."""
        m = self.masks[i]
        if m is None:
            raise ValueError(f"item {self.pool.ids[i]!r} has no mask")
        return m

    def image_array(self, i: int) -> np.ndarray:
        """Item ``i`` as an ``(H, W, 3)`` uint8 RGB array."""
        return np.asarray(self.pool.image(i).convert("RGB"))

    def subset(self, indices) -> "SegmentationData":
        """The items at ``indices`` with their masks (same classes and ignore index)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        pool = self.pool.subset(idx)
        mp = None if self.mask_paths is None else [self.mask_paths[i] for i in idx]
        return SegmentationData(pool, [self.masks[i] for i in idx], list(self.classes), self.ignore_index,
                                mp, self.name)

    def pixel_counts(self) -> np.ndarray:
        """Labelled pixels per class over all known masks (the ignore index is not counted)."""
        counts = np.zeros(self.n_classes, np.int64)
        for m in self.masks:
            if m is not None:
                counts += np.bincount(m.ravel(), minlength=256)[: self.n_classes]
        return counts


def from_segmentation_folder(root, *, images: str = "images", masks: str = "masks", classes=None,
                             ignore_index: int | None = None, on_error: str = "raise",
                             name: str | None = None) -> SegmentationData:
    """Images under ``root/images`` paired by file stem with masks under ``root/masks``.

    Parameters
    ----------
    root : path
        A folder with the two sub-folders (CamVid's ``train/``, ``test/``).
    images, masks : str
        Sub-folder names (or absolute paths).
    classes : list of str or path, optional
        Class names in index order, or a text file with one per line. Default:
        ``root/classes.txt`` when present, else the names of ``0..max value``.
    ignore_index : int, optional
        Mask value that never trains or scores (e.g. 11 for CamVid, 255).
    on_error : {"raise", "skip"}
        A missing mask, an unreadable image or mask, a size mismatch or a
        value outside the classes stops with an error naming the file
        (``"raise"``), or is recorded in ``pool.errors`` and the item left out
        of training, selection and scoring (``"skip"``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from alwidgets.segmentation import make_shapes, save_segmentation_folder, from_segmentation_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = save_segmentation_folder(make_shapes(n_images=3, size=(16, 16)), root)
    >>> from_segmentation_folder(root).classes
    ['background', 'disc', 'box', 'triangle']
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    root = Path(root)
    img_dir = root / images
    msk_dir = root / masks
    for d, what in ((img_dir, "images"), (msk_dir, "masks")):
        if not d.is_dir():
            raise FileNotFoundError(f"no {what} folder {d} (expected {root}/{images}/ and {root}/{masks}/)")
    img_files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not img_files:
        raise ValueError(f"{img_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    by_stem: dict[str, Path] = {}
    for p in sorted(msk_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in MASK_EXTENSIONS:
            if p.stem in by_stem:
                raise ValueError(f"{msk_dir}: two masks for stem {p.stem!r} ({by_stem[p.stem].name}, {p.name})")
            by_stem[p.stem] = p
    stems = [p.stem for p in img_files]
    if len(set(stems)) != len(stems):
        seen, dup = set(), None
        for s in stems:
            if s in seen:
                dup = s
                break
            seen.add(s)
        raise ValueError(f"{img_dir}: two images share the stem {dup!r}; masks are paired by stem")
    orphans = sorted(set(by_stem) - set(stems))
    if orphans and on_error == "raise":
        raise MaskError(None, str(by_stem[orphans[0]]),
                        f"mask has no image of the same stem in {img_dir} ({len(orphans)} such masks)")
    class_names, file_ignore = _class_names(classes, root)
    if ignore_index is None:
        ignore_index = file_ignore
    if ignore_index is not None and not 0 <= int(ignore_index) <= 255:
        raise ValueError(f"ignore_index must be an 8-bit mask value 0-255, got {ignore_index}")
    if class_names is not None and ignore_index is not None and ignore_index < len(class_names):
        raise ValueError(f"ignore_index {ignore_index} is one of the {len(class_names)} classes; "
                         "use a value outside 0..n_classes-1 (e.g. 255)")
    pool = Pool.from_paths([str(p) for p in img_files], ids=stems, name=name or root.name, on_error=on_error)
    mask_list: list = [None] * len(pool)
    mask_paths: list = [None] * len(pool)
    raw_max = -1
    for i, (stem, img) in enumerate(zip(stems, img_files)):
        if stem in pool.errors:
            continue
        mp = by_stem.get(stem)
        if mp is None:
            _fail(pool, i, MaskError(stem, str(img), f"no mask named {stem}.* in {msk_dir}"))
            continue
        mask_paths[i] = str(mp)
        try:
            shape = _image_shape(img, stem)
            m = _read_mask_file(mp, stem, None if class_names is None else len(class_names), ignore_index, shape)
        except (MaskError, ImageReadError) as e:
            _fail(pool, i, e)
            continue
        if class_names is None:
            vals = np.flatnonzero(np.bincount(m.ravel(), minlength=256))
            vals = vals[vals != ignore_index] if ignore_index is not None else vals
            raw_max = max(raw_max, int(vals.max(initial=-1)))
        mask_list[i] = m
    if class_names is None:
        if raw_max < 0:
            raise ValueError(f"{msk_dir}: no class values found in the masks")
        class_names = [str(k) for k in range(raw_max + 1)]
    return SegmentationData(pool, mask_list, class_names, ignore_index, mask_paths, name or root.name)


def _fail(pool: Pool, i: int, err: Exception) -> None:
    if pool.on_error == "raise":
        raise err
    pool.errors[pool.ids[i]] = getattr(err, "reason", str(err))


def _image_shape(path: Path, item_id: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(item_id, str(path), str(e).splitlines()[0][:200] if str(e) else type(e).__name__) from None


def _class_names(classes, root: Path):
    """``(names or None, ignore index from the classes file or None)``.

    A classes file has one name per line; ``# ignore_index=N`` declares the ignore
    index and other lines starting with ``#`` are comments.
    """
    ignore = None
    if classes is None:
        f = root / "classes.txt"
        if not f.is_file():
            return None, None
        classes = f
    if isinstance(classes, (str, Path)):
        names = []
        for ln in Path(classes).read_text().splitlines():
            ln = ln.strip()
            m = re.fullmatch(r"#\s*ignore_index\s*=\s*(\d+)", ln)
            if m:
                ignore = int(m.group(1))
            elif ln and not ln.startswith("#"):
                names.append(ln)
        if not names:
            raise ValueError(f"{classes}: no class names (one per line)")
    else:
        names = [str(c) for c in classes]
    if not names:
        raise ValueError("classes is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"classes repeat a name: {names}")
    return names, ignore


def save_segmentation_folder(data: SegmentationData, root) -> Path:
    """Write ``root/images/<id>.png``, ``root/masks/<id>.png`` and ``root/classes.txt``.

    Items without a mask get no mask file. Returns ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    ign = "" if data.ignore_index is None else f"# ignore_index={data.ignore_index}\n"
    (root / "classes.txt").write_text(ign + "\n".join(data.classes) + "\n")
    for i, item in enumerate(data.pool.ids):
        data.pool.image(i).save(root / "images" / f"{item}.png")
        if data.masks[i] is not None:
            (root / "masks" / f"{item}.png").write_bytes(mask_to_png(data.masks[i]))
    return root


def camvid(root, split: str = "train", *, on_error: str = "raise") -> SegmentationData:
    """CamVid (SegNet version) from ``root/<split>/{images,masks}``: 11 classes, ignore index 11."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return from_segmentation_folder(Path(root) / split, classes=CAMVID_CLASSES, ignore_index=CAMVID_IGNORE_INDEX,
                                    on_error=on_error, name=f"camvid-{split}")


# ------------------------------------------------------------------------------ synthetic shapes
SHAPE_CLASSES = ["background", "disc", "box", "triangle"]


def make_shapes(n_images: int = 32, size=(48, 64), *, n_shapes: int = 3, noise: float = 0.25,
                void_border: bool = True, random_state=0) -> SegmentationData:
    """Discs, boxes and triangles on a noisy background: a tiny segmentation set for tests.

    Each class has its own colour plus Gaussian noise, so a model on simple
    features can learn it; with ``void_border`` a one-pixel ring around every
    shape is marked with the ignore index (``4``), as hand-painted masks leave
    uncertain edges unlabelled.

    >>> d = make_shapes(n_images=2, size=(20, 20), random_state=1)
    >>> d.classes, d.ignore_index, d.pool.arrays.shape
    (['background', 'disc', 'box', 'triangle'], 4, (2, 20, 20, 3))
    """
    from scipy import ndimage

    rng = np.random.default_rng(random_state)
    H, W = int(size[0]), int(size[1])
    if H < 8 or W < 8:
        raise ValueError(f"size must be at least 8x8, got {size}")
    colours = np.array([[0.45, 0.45, 0.45], [0.9, 0.25, 0.2], [0.2, 0.75, 0.3], [0.25, 0.35, 0.9]])
    ignore = len(SHAPE_CLASSES)
    yy, xx = np.mgrid[0:H, 0:W]
    images = np.empty((n_images, H, W, 3), np.uint8)
    masks = []
    for k in range(n_images):
        m = np.zeros((H, W), np.uint8)
        for _ in range(n_shapes):
            c = int(rng.integers(1, 4))
            r = rng.uniform(0.1, 0.25) * min(H, W)
            cy, cx = rng.uniform(r, H - r), rng.uniform(r, W - r)
            if c == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif c == 2:
                inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r * 0.8)
            else:
                inside = (yy <= cy + r) & (yy - (cy - r) >= 2 * np.abs(xx - cx))
            m[inside] = c
        img = colours[m] + noise * rng.standard_normal((H, W, 3))
        images[k] = np.clip(img * 255, 0, 255).astype(np.uint8)
        if void_border:
            edge = ndimage.morphological_gradient(m, size=2) > 0
            m = m.copy()
            m[edge] = ignore
        masks.append(m)
    pool = Pool.from_arrays(images, name="shapes", ids=[f"shapes-{k:04d}" for k in range(n_images)])
    return SegmentationData(pool, masks, list(SHAPE_CLASSES), ignore, None, "shapes")
