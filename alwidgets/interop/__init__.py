"""Hand the labels of a pilot to a full pipeline, and take labels back.

A quick pilot in the notebook often ends in a bigger project elsewhere. These
functions write the labels of a :class:`~alwidgets.Session` to

* an **ImageFolder** tree (:func:`to_imagefolder`): one sub-folder per class,
  the images linked or copied in, as ``torchvision.datasets.ImageFolder`` and
  most training scripts read it;
* a **Hugging Face** ``datasets.Dataset`` (:func:`to_hf_dataset`): image, class
  (a ``ClassLabel``), item id, annotator and source, saved with ``save_to_disk``
  (needs the optional extra ``alwidgets[hf]``);
* **Label Studio** tasks (:func:`to_label_studio`, with the labelling config from
  :func:`label_studio_config`): every item, the labels given so far as
  annotations and the model's predictions as pre-annotations, so a team can
  continue there;

and read a Label Studio JSON export back into the store
(:func:`from_label_studio`). They use only the public API of the session
(``labels_df()``, ``pool``, ``classes``, ``probs_``, ``import_labels``).

Examples
--------
>>> import tempfile, pathlib
>>> from alwidgets import Pool, Session
>>> from alwidgets.interop import to_imagefolder
>>> session = Session(Pool.digits(), store=":memory:")
>>> _ = session.import_labels(pd.DataFrame({"item_id": ["digits-0000", "digits-0001"], "label": ["0", "1"]}))
imported 2 labels (0 replaced an earlier label), 0 unchanged, 0 rejected
>>> out = to_imagefolder(session, pathlib.Path(tempfile.mkdtemp()) / "train")
>>> sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
['0/digits-0000.png', '1/digits-0001.png']
>>> session.close()
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .._files import atomic_write

__all__ = ["to_imagefolder", "to_hf_dataset", "to_label_studio", "label_studio_config", "from_label_studio"]

MANIFEST = "labels.csv"
"""The table :func:`to_imagefolder` writes beside the class folders (item id, class, file)."""
_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


# ---------------------------------------------------------------------- shared helpers
def _labelled(session) -> pd.DataFrame:
    """Current labels with the pool row of each item: ``item_id, label, annotator, source, seconds, row``.

    Items the store knows but this pool does not (a store attached by ids) are left out.
    """
    df = session.labels_df()
    rows = []
    for item_id in df["item_id"]:
        try:
            rows.append(session.pool.index_of(item_id))
        except KeyError:
            rows.append(-1)
    df = df.assign(row=rows)
    return df[df["row"] >= 0].reset_index(drop=True)


def _safe_name(text: str, what: str) -> str:
    """``text`` as one file-name component (separators and control characters become ``_``)."""
    name = _UNSAFE.sub("_", str(text)).strip().rstrip(".")
    if not name or name in (".", ".."):
        name = "_" + name.replace(".", "_")
    if len(name.encode("utf-8")) > 200:
        raise ValueError(f"{what} {str(text)[:60]!r}... is too long for a file name")
    return name


def _folder_names(classes) -> dict[str, str]:
    """Class name -> folder name; refuses two classes that would share a folder."""
    out, seen = {}, {}
    for c in classes:
        folder = _safe_name(c, "class name")
        key = folder.casefold()  # case-insensitive file systems (macOS, Windows)
        if key in seen:
            raise ValueError(f"classes {seen[key]!r} and {c!r} would share the folder {folder!r}; rename one")
        seen[key] = c
        out[c] = folder
    return out


def _image_bytes(pool, row: int) -> tuple[bytes, str]:
    """``(bytes, suffix)`` of an item: its file as it is, or a PNG of an in-memory image."""
    if pool.paths is not None:
        path = Path(pool.paths[row])
        return path.read_bytes(), path.suffix.lower()
    buf = io.BytesIO()
    pool.image(row).save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _file_name(pool, row: int) -> str:
    """File name for an item: its id made safe (``cat/0001.jpg`` -> ``cat__0001.jpg``), with a suffix."""
    stem = _safe_name(pool.ids[row].replace("/", "__"), "item id")
    suffix = Path(pool.paths[row]).suffix.lower() if pool.paths is not None else ".png"
    return stem if stem.lower().endswith(suffix) else stem + suffix


def _empty_dir(path, what: str) -> Path:
    """``path`` as a new or empty folder (never writes into a folder that holds files)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path}: is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{what} {path}: the folder is not empty; give a new one (nothing is overwritten)")
    if not path.parent.is_dir():
        raise ValueError(f"{what} {path}: folder {path.parent} does not exist")
    path.mkdir(exist_ok=True)
    return path.absolute()


# ---------------------------------------------------------------------- ImageFolder
def to_imagefolder(session, directory, *, mode: str = "symlink") -> Path:
    """Write the labelled items as an ImageFolder tree: ``directory/<class>/<item>``.

    Parameters
    ----------
    session : Session
        Its current labels are written (one file per labelled item).
    directory : path
        A new or empty folder (nothing is ever overwritten).
    mode : {"symlink", "copy"}
        Image files are linked (absolute symbolic links, no extra space) or copied.
        Items held in memory (``Pool.from_arrays``, ``Pool.digits()``) are always
        written as PNG files.

    Returns
    -------
    Path
        The folder. Beside the class folders it holds ``labels.csv`` (``item_id,
        label, file, annotator, source``). Class names are made safe as folder
        names (``T-shirt/top`` -> ``T-shirt_top``); the manifest keeps the real
        names. ``torchvision.datasets.ImageFolder(directory)`` and
        ``Pool.from_folder(directory)`` read it back.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    labels = _labelled(session)
    if labels.empty:
        raise ValueError("no labels to export yet: label some items first")
    folders = _folder_names(session.classes)
    out = _empty_dir(directory, "directory")
    pool, manifest = session.pool, []
    for rec in labels.itertuples():
        folder = out / folders[rec.label]
        folder.mkdir(exist_ok=True)
        target = folder / _file_name(pool, rec.row)
        if pool.paths is not None and mode == "symlink":
            os.symlink(Path(pool.paths[rec.row]).absolute(), target)
        elif pool.paths is not None:
            shutil.copyfile(pool.paths[rec.row], target)
        else:
            target.write_bytes(_image_bytes(pool, rec.row)[0])
        manifest.append({"item_id": rec.item_id, "label": rec.label, "file": target.relative_to(out).as_posix(),
                         "annotator": rec.annotator, "source": rec.source})
    atomic_write(out / MANIFEST, lambda tmp: pd.DataFrame(manifest).to_csv(tmp, index=False))
    return out


# ---------------------------------------------------------------------- Hugging Face datasets
def to_hf_dataset(session, path=None):
    """The labelled items as a Hugging Face ``datasets.Dataset``; saved with ``save_to_disk(path)`` if given.

    Columns: ``image`` (an ``Image`` feature holding the file's bytes, so the
    dataset is self-contained), ``label`` (a ``ClassLabel`` over ``session.classes``),
    ``item_id``, ``annotator``, ``source`` and ``created_at`` (ISO 8601 text).
    Open a saved one with ``datasets.load_from_disk(path)``. Needs the optional
    extra: ``pip install "alwidgets[hf]"``.
    """
    try:
        import datasets
    except ImportError:
        raise ImportError('to_hf_dataset needs the Hugging Face datasets package: pip install "alwidgets[hf]"') \
            from None
    labels = _labelled(session)
    if labels.empty:
        raise ValueError("no labels to export yet: label some items first")
    if path is not None:
        path = Path(path).expanduser()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"path {path}: exists and is not an empty folder (nothing is overwritten)")
        if not path.parent.is_dir():
            raise ValueError(f"path {path}: folder {path.parent} does not exist")
    pool, images = session.pool, []
    for row in labels["row"]:
        data, _ = _image_bytes(pool, int(row))
        images.append({"bytes": data, "path": None})
    df = pd.DataFrame({
        "image": images,
        "label": [session.classes.index(c) for c in labels["label"]],
        "item_id": labels["item_id"].astype(str),
        "annotator": labels["annotator"].astype(str),
        "source": labels["source"].astype(str),
        "created_at": [t.isoformat() if hasattr(t, "isoformat") else str(t) for t in labels["created_at"]],
    })
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(session.classes)),
        "item_id": datasets.Value("string"),
        "annotator": datasets.Value("string"),
        "source": datasets.Value("string"),
        "created_at": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_pandas(df, features=features, preserve_index=False)
    if path is not None:
        ds.save_to_disk(str(path))
    return ds


# ---------------------------------------------------------------------- Label Studio
def label_studio_config(classes, *, from_name: str = "choice", to_name: str = "image") -> str:
    """The Label Studio labelling config (XML) for single-choice image classification over ``classes``.

    >>> print(label_studio_config(["cat", "dog"]))
    <View>
      <Image name="image" value="$image"/>
      <Choices name="choice" toName="image" choice="single" showInLine="true">
        <Choice value="cat"/>
        <Choice value="dog"/>
      </Choices>
    </View>
    """
    from xml.sax.saxutils import quoteattr

    lines = ["<View>", f"  <Image name={quoteattr(to_name)} value=\"${to_name}\"/>",
             f"  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice=\"single\" showInLine=\"true\">"]
    lines += [f"    <Choice value={quoteattr(str(c))}/>" for c in classes]
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines)


def _choice(label: str, from_name: str, to_name: str) -> dict:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [str(label)]}}


def to_label_studio(session, path=None, *, image_url: str = "/data/local-files/?d={relpath}", image_root=None,
                    images_dir=None, predictions: bool = True, from_name: str = "choice",
                    to_name: str = "image") -> list[dict]:
    """Every usable pool item as a Label Studio task; written as JSON to ``path`` if given.

    Each task is ``{"data": {"image": URL, "item_id": ID}, "annotations": [...],
    "predictions": [...]}`` in Label Studio's documented task format: items
    labelled so far carry their label as an annotation (choices), and with
    ``predictions=True`` every item carries the model's predicted class and its
    probability as a pre-annotation (``model_version`` names the strategy and
    model), so the team can review suggestions and continue labelling there.
    Create the project with :func:`label_studio_config` (``from_name``/``to_name``
    must match).

    Parameters
    ----------
    image_url : str
        How Label Studio finds an image: a format string with ``{relpath}`` (the
        file relative to ``image_root``), ``{path}`` (absolute) or ``{item_id}``.
        The default suits Label Studio's local-file serving, started with
        ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
        ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<image_root>``.
    image_root : path, optional
        Folder the ``relpath`` is taken from; default the folder holding all the images.
    images_dir : path, optional
        For pools held in memory (no image files): a new or empty folder where
        the images are written as PNG (and ``image_root`` defaults to it).
    """
    pool = session.pool
    if pool.paths is None:
        if images_dir is None:
            raise ValueError(f"pool {pool.name} has no image files for Label Studio to show; pass images_dir= "
                             "(a new folder) to write them as PNG")
        images_dir = _empty_dir(images_dir, "images_dir")
    usable = [i for i in range(len(pool)) if pool.ids[i] not in pool.errors]
    files = {}
    for i in usable:
        if pool.paths is not None:
            files[i] = Path(pool.paths[i]).absolute()
        else:
            files[i] = images_dir / _file_name(pool, i)
            files[i].write_bytes(_image_bytes(pool, i)[0])
    root = Path(image_root).expanduser().absolute() if image_root is not None else \
        images_dir if images_dir is not None else Path(os.path.commonpath([str(p.parent) for p in files.values()]))
    labels = {rec.item_id: rec for rec in _labelled(session).itertuples()}
    probs = None
    if predictions:
        if session.probs_ is None and labels:
            session.fit()
        probs = session.probs_
    version = f"alwidgets {session.selector.name} / {type(session.model).__name__} / {len(labels)} labels"
    tasks = []
    for i in usable:
        item_id = pool.ids[i]
        try:
            rel = files[i].relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"image_root {root} does not contain {files[i]} (item {item_id!r})") from None
        task = {"data": {to_name: image_url.format(relpath=rel, path=files[i].as_posix(), item_id=item_id),
                         "item_id": item_id}}
        rec = labels.get(item_id)
        if rec is not None:
            ann = {"result": [_choice(rec.label, from_name, to_name)], "was_cancelled": False,
                   "ground_truth": False}
            if rec.seconds == rec.seconds and rec.seconds is not None:  # not NaN
                ann["lead_time"] = float(rec.seconds)
            task["annotations"] = [ann]
            task["meta"] = {"annotator": str(rec.annotator), "source": str(rec.source)}
        if probs is not None:
            c = int(np.argmax(probs[i]))
            score = round(float(probs[i][c]), 4)
            task["predictions"] = [{"model_version": version, "score": score,
                                    "result": [{**_choice(session.classes[c], from_name, to_name), "score": score}]}]
        tasks.append(task)
    if path is not None:
        text = json.dumps(tasks, indent=1, ensure_ascii=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return tasks


def _annotator(ann: dict) -> str:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"label-studio:{who}" if who not in (None, "") else "label-studio"


def from_label_studio(source, target, *, from_name: str | None = None, id_key: str = "item_id"):
    """Import a Label Studio JSON export (or a list of its tasks) into a session or label store.

    For each task, the item is ``task["data"][id_key]`` (tasks written by
    :func:`to_label_studio` carry it), and its label the ``choices`` result of the
    latest annotation that was not cancelled (``from_name`` picks the control
    when the config has several). Predictions are never imported: only what a
    person annotated. Each label is stored with ``source="imported"``, annotator
    ``label-studio:<user>`` and ``lead_time`` as its seconds.

    ``target`` is a :class:`~alwidgets.Session` (it refits) or a
    :class:`~alwidgets.LabelStore`. Returns the store's import report: tasks
    without an annotation are not counted; tasks whose annotation cannot be read
    as one class are listed in ``report.rejected`` with the reason, beside the
    ones the store rejected (unknown ids or classes); there ``row`` is the
    task's position in the export. Nothing is written for them, and labels
    already in the store are kept.
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"no such file: {p}")
        try:
            tasks = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not a Label Studio JSON export ({e})") from None
        name = str(p)
    else:
        tasks, name = source, "the tasks"
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError(f"{name}: expected a list of Label Studio tasks (JSON objects)")
    rows, problems = [], []
    for k, task in enumerate(tasks):
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        item_id = data.get(id_key)
        anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not anns:
            continue
        ann = max(enumerate(anns), key=lambda ja: (str(ja[1].get("updated_at") or ja[1].get("created_at") or ""),
                                                   ja[0]))[1]
        choices = [c for r in ann.get("result") or [] if isinstance(r, dict) and r.get("type") == "choices"
                   and (from_name is None or r.get("from_name") == from_name)
                   for c in (r.get("value") or {}).get("choices") or []]
        if item_id is None:
            problems.append((k, None, None, f"task {task.get('id', k)} has no data.{id_key}"))
        elif len(choices) != 1:
            problems.append((k, str(item_id), "|".join(map(str, choices)) or None,
                             f"the annotation holds {len(choices)} choices, not one class"))
        else:
            seconds = ann.get("lead_time")
            rows.append({"item_id": str(item_id), "label": str(choices[0]), "annotator": _annotator(ann),
                         "seconds": seconds if isinstance(seconds, (int, float)) and seconds >= 0 else None,
                         "_task": k})
    df = pd.DataFrame(rows, columns=["item_id", "label", "annotator", "seconds", "_task"])
    if hasattr(target, "import_labels") and hasattr(target, "pool"):  # a Session
        report = target.import_labels(df.drop(columns="_task"))
    else:
        from ..store.io import import_labels

        report = import_labels(target, df.drop(columns="_task"))
    rejected = report.rejected.copy()
    if len(rejected):  # rows of the table -> tasks of the export
        rejected["row"] = [int(df["_task"].iloc[r]) for r in rejected["row"]]
    if problems:
        rejected = pd.concat([rejected, pd.DataFrame(problems, columns=["row", "item_id", "label", "reason"])],
                             ignore_index=True).sort_values("row", kind="stable").reset_index(drop=True)
    report.rejected = rejected
    return report
