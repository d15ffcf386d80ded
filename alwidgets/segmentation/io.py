"""Masks in and out of a label store: a folder of index PNGs + a classes file, COCO JSON with RLE.

The hand-off formats of a segmentation session:

- :func:`export_masks` writes ``root/masks/<item_id>.png`` (8-bit index PNG, the
  stored bytes as they are) and ``root/classes.txt`` (one class per line,
  ``# ignore_index=N`` first): the layout :func:`~alwidgets.segmentation.from_segmentation_folder`
  reads, so ``images/`` beside it makes a training set;
- :func:`export_coco` writes COCO JSON: one annotation per (image, class present) with
  the class's pixels as compressed RLE (``pycocotools``; ``pip install 'alwidgets[seg]'``),
  ``iscrowd=0`` as COCO-Stuff does; ignored pixels belong to no annotation;
- :func:`import_masks` reads a folder of masks back into a store (checked like the
  painter's: size against the item's image, values against the classes), in one
  transaction, with ``source="imported"``.

Item ids become file names: an id with ``/`` makes sub-folders; ids that would
leave the folder (``..``, absolute paths) are refused.

>>> import tempfile, pathlib
>>> from alwidgets.store import LabelStore
>>> from alwidgets.segmentation import make_shapes
>>> from alwidgets.segmentation.task import SegmentationTask
>>> data = make_shapes(n_images=2, size=(16, 16))
>>> task = SegmentationTask(data.classes, ignore_index=data.ignore_index)
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with LabelStore(":memory:") as a, LabelStore(":memory:") as b:
...     for s in (a, b):
...         _ = s.attach_pool(data.ids, task.classes)
...     _ = a.add_labels([{"item_id": data.ids[0], **task.encode(data.masks[0])}])
...     _ = export_masks(a, d, task)
...     print(import_masks(b, d, task)); bool((task.decode(None, *b.payload(data.ids[0])) == data.masks[0]).all())
imported 1 labels (0 replaced an earlier label), 0 unchanged, 0 rejected
True
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from .._files import atomic_write
from .data import MASK_EXTENSIONS, MaskError, _class_names, _read_mask_file

MASKS_DIR = "masks"
CLASSES_FILE = "classes.txt"


def _stored_masks(store, task, item_ids=None) -> dict:
    """``item_id -> (png bytes, mask)`` of the current masks in ``store`` (optionally only ``item_ids``)."""
    payloads = store.current_payloads()
    if item_ids is not None:
        wanted = set(item_ids)
        payloads = {k: v for k, v in payloads.items() if k in wanted}
    out = {}
    for item_id, (data, media_type) in payloads.items():
        mask = task.decode(None, data, media_type)
        if mask is not None:
            out[item_id] = (data, mask)
    return out


def _relative(item_id: str) -> PurePosixPath:
    """The file path (without suffix) an item id maps to, or ValueError when it would leave the folder."""
    p = PurePosixPath(item_id)
    if (not item_id or "\\" in item_id or "\x00" in item_id or p.is_absolute()
            or any(part in ("", ".", "..") for part in item_id.split("/"))):
        raise ValueError(f"item id {item_id!r} cannot be a file name inside the export folder")
    return p


def _classes_text(task) -> str:
    for c in task.classes:
        if "\n" in c or "\r" in c or c.lstrip().startswith("#"):
            raise ValueError(f"class name {c!r} cannot be written one per line to {CLASSES_FILE}")
    return f"# ignore_index={task.ignore_index}\n" + "".join(f"{c}\n" for c in task.classes)


def export_masks(store, root, task, *, item_ids=None) -> Path:
    """Write the current masks as ``root/masks/<item_id>.png`` plus ``root/classes.txt``; returns ``root``.

    Each PNG is the stored payload byte for byte (8-bit greyscale, values = class indices,
    ``ignore_index`` where nothing is labelled); files are written atomically. ``item_ids``
    limits the export.
    """
    root = Path(root).expanduser()
    masks = _stored_masks(store, task, item_ids)
    paths = {item_id: root / MASKS_DIR / f"{_relative(item_id)}.png" for item_id in masks}  # refuse before writing
    (root / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    text = _classes_text(task)
    atomic_write(root / CLASSES_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for item_id, (data, _) in masks.items():
        paths[item_id].parent.mkdir(parents=True, exist_ok=True)
        atomic_write(paths[item_id], lambda tmp, data=data: Path(tmp).write_bytes(data))
    return root


def coco_dict(masks: dict, task, *, file_names: dict | None = None) -> dict:
    """COCO ``{"images", "annotations", "categories", "info"}`` for ``masks`` (``item_id -> (H, W) mask``).

    Category ids are class index + 1 (COCO's start at 1); one annotation per image and class
    present, its pixels as compressed RLE; pixels with the ignore index belong to none.
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # pragma: no cover - the dev extra installs it
        raise ImportError("COCO export needs pycocotools: pip install 'alwidgets[seg]'") from None
    images, annotations = [], []
    for image_id, (item_id, m) in enumerate(masks.items(), start=1):
        m = np.asarray(m)
        h, w = m.shape
        name = (file_names or {}).get(item_id) or f"{item_id}.png"
        images.append({"id": image_id, "file_name": name, "width": int(w), "height": int(h),
                       "alwidgets_item_id": item_id})
        counts = np.bincount(m.ravel(), minlength=256)
        for c in np.flatnonzero(counts[: task.n_classes]):
            rle = mask_utils.encode(np.asfortranarray(m == c, dtype=np.uint8))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(c) + 1,
                "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")},
                "area": int(counts[c]), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    return {"info": {"description": "masks exported by alwidgets", "ignore_index": task.ignore_index},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": ""} for k, c in enumerate(task.classes)]}


def export_coco(store, path, task, *, pool=None, item_ids=None) -> Path:
    """Write the current masks as COCO JSON with compressed RLE per class (see :func:`coco_dict`).

    ``file_name`` of each image is its file's name when ``pool`` has paths (else ``<item_id>.png``);
    ``alwidgets_item_id`` keeps the item id. Written atomically; returns the path.
    """
    masks = {k: m for k, (_, m) in _stored_masks(store, task, item_ids).items()}
    names = None
    if pool is not None and getattr(pool, "paths", None) is not None:
        names = {}
        for item_id in masks:
            try:
                names[item_id] = Path(pool.paths[pool.index_of(item_id)]).name
            except KeyError:
                pass
    doc = coco_dict(masks, task, file_names=names)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc), encoding="utf-8"))


def import_masks(store, root, task, *, pool=None, annotator=None, session=None):
    """Add the masks of a folder to ``store``: ``root/masks/<item_id>.<png|bmp|tif>`` (or the masks
    directly under ``root``), paired with items by id (the path without its suffix).

    A ``classes.txt`` beside them must name the same classes (and ignore index) as ``task``, or
    nothing is imported. Each mask is checked: an id not in the pool, an unreadable file, a mode
    other than 8-bit index, values outside the classes, or (with ``pool``) a size other than its
    image's puts it in ``report.rejected`` with the reason; the rest are saved in one
    transaction (``source="imported"``). Masks equal to the current one are left alone.
    Returns an :class:`~alwidgets.store.ImportReport`.
    """
    import pandas as pd

    from ..store.io import ImportReport

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    folder = root / MASKS_DIR if (root / MASKS_DIR).is_dir() else root
    classes_file = folder.parent / CLASSES_FILE if folder != root else root / CLASSES_FILE
    if classes_file.is_file():
        names, ignore = _class_names(classes_file, classes_file.parent)
        if names != list(task.classes):
            raise ValueError(f"{classes_file} names the classes {names}, but this task's are {task.classes}; "
                             "nothing was imported")
        if ignore is not None and ignore != task.ignore_index:
            raise ValueError(f"{classes_file} declares ignore_index={ignore}, but this task's is "
                             f"{task.ignore_index}; nothing was imported")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MASK_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    known = set(store.item_ids) if pool is None else set(pool.ids)
    by_id: dict = {}
    for p in files:
        by_id.setdefault(p.relative_to(folder).with_suffix("").as_posix(), []).append(p)
    records, rejected = [], []
    current = store.current_labels()
    for row, (item_id, paths) in enumerate(by_id.items()):
        if len(paths) > 1:
            rejected.append((row, item_id, paths[0].name, f"{len(paths)} mask files for one item "
                             f"({', '.join(q.name for q in paths)})"))
            continue
        path = paths[0]
        if item_id not in known:
            rejected.append((row, item_id, path.name, "not in the pool"))
            continue
        try:
            shape = None
            if pool is not None:
                from .task import image_shape

                shape = image_shape(pool, pool.index_of(item_id))
            mask = _read_mask_file(path, item_id, task.n_classes, task.ignore_index, shape)
        except (MaskError, ValueError, OSError) as e:
            rejected.append((row, item_id, path.name, getattr(e, "reason", None) or str(e)))
            continue
        records.append({"item_id": item_id, **task.encode(mask, item_id=item_id), "source": "imported",
                        "annotator": annotator})
    ids = store.add_labels(records, session=session, skip_unchanged=True) if records else []
    accepted = [i for i in ids if i is not None]
    replaced = sum(1 for r, i in zip(records, ids) if i is not None and r["item_id"] in current)
    rej = pd.DataFrame(rejected, columns=["row", "item_id", "label", "reason"])
    return ImportReport(len(accepted), replaced, len(ids) - len(accepted), rej, accepted)


__all__ = ["export_masks", "export_coco", "coco_dict", "import_masks"]
