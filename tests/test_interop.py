"""Hand-off exports (ImageFolder, Hugging Face datasets, Label Studio) and the Label Studio import, round trip."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alwidgets import Pool, Session
from alwidgets.interop import (
    from_label_studio,
    label_studio_config,
    to_hf_dataset,
    to_imagefolder,
    to_label_studio,
)

from conftest import require


def truth(session, ids):
    pool = session.pool
    return {i: pool.classes[pool.targets[pool.index_of(i)]] for i in ids}


def label_rounds(session, rounds=2, n=8):
    """Label ``rounds`` batches with the true classes (half accepted, half typed)."""
    for _ in range(rounds):
        batch = session.next_batch(n)
        ids = list(batch)
        session.submit(truth(session, ids), sources={i: "accepted" for i in ids[::2]}, seconds={i: 1.5 for i in ids})
    return session.labels_df()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c, base in (("dark", 40), ("light", 210)):
        (root / c / "sub").mkdir(parents=True)
        for k in range(10):
            a = np.clip(base + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            where = root / c / ("sub" if k % 2 else "") / f"{k:02d}.png"
            Image.fromarray(a).save(where)
    return root


@pytest.fixture
def folder_session(folder):
    s = Session(Pool.from_folder(folder), selector="random", store=":memory:", annotator="ana")
    yield s
    s.close()


@pytest.fixture
def digits_session():
    s = Session(Pool.digits(), selector="random", store=":memory:", annotator="ana")
    yield s
    s.close()


# ---------------------------------------------------------------------- ImageFolder
def test_imagefolder_links_round_trip(folder_session, tmp_path):
    from torchvision.datasets import ImageFolder

    labels = label_rounds(folder_session, rounds=2, n=4)
    out = to_imagefolder(folder_session, tmp_path / "train")
    ds = ImageFolder(str(out))
    assert ds.classes == sorted(set(labels["label"])) and len(ds) == len(labels) == 8
    manifest = pd.read_csv(out / "labels.csv")
    assert dict(zip(manifest["item_id"], manifest["label"])) == dict(zip(labels["item_id"], labels["label"]))
    pool = folder_session.pool
    for rec in manifest.itertuples():
        f = out / rec.file
        assert f.is_symlink() and f.resolve() == Path(pool.paths[pool.index_of(rec.item_id)]).resolve()
        assert f.parent.name == rec.label
    # read back as a pool: the same class for every item
    back = Pool.from_folder(out)
    got = {f: back.classes[t] for f, t in zip(back.ids, back.targets)}
    assert got == dict(zip(manifest["file"], manifest["label"]))


def test_imagefolder_copies_in_memory_images(digits_session, tmp_path):
    labels = label_rounds(digits_session, rounds=1, n=6)
    out = to_imagefolder(digits_session, tmp_path / "d", mode="copy")
    pool = digits_session.pool
    for item_id, label in zip(labels["item_id"], labels["label"]):
        f = out / label / f"{item_id}.png"
        assert f.is_file() and not f.is_symlink()
        np.testing.assert_array_equal(np.asarray(Image.open(f)), np.asarray(pool.image(pool.index_of(item_id))))


def test_imagefolder_refuses_and_never_overwrites(folder_session, tmp_path):
    with pytest.raises(ValueError, match="no labels to export yet"):
        to_imagefolder(folder_session, tmp_path / "a")
    label_rounds(folder_session, rounds=1, n=2)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="busy: the folder is not empty"):
        to_imagefolder(folder_session, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="mode must be 'symlink' or 'copy'"):
        to_imagefolder(folder_session, tmp_path / "b", mode="hardlink")
    with pytest.raises(ValueError, match="does not exist"):
        to_imagefolder(folder_session, tmp_path / "no" / "such")


def test_imagefolder_class_names_become_safe_folders(tmp_path):
    X = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    pool = Pool.from_arrays(X, y=[0, 1, 0, 1, 0, 1], classes=["T-shirt/top", ".."])
    with Session(pool, selector="random", store=":memory:") as s:
        b = s.next_batch(4)
        s.submit(truth(s, b))
        out = to_imagefolder(s, tmp_path / "o")
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["T-shirt_top", "_"]
        manifest = pd.read_csv(out / "labels.csv")
        assert set(manifest["label"]) <= {"T-shirt/top", ".."}
    clash = Pool.from_arrays(X, y=[0, 1, 0, 1, 0, 1], classes=["a/b", "a_b"])
    with Session(clash, selector="random", store=":memory:") as s:
        s.submit(truth(s, s.next_batch(2)))
        with pytest.raises(ValueError, match="classes 'a/b' and 'a_b' would share the folder 'a_b'"):
            to_imagefolder(s, tmp_path / "c")


# ---------------------------------------------------------------------- Hugging Face datasets
def hf_datasets():
    """The ``datasets`` module (CI installs it with the dev extra; locally the test skips without it)."""
    import importlib.util

    require(importlib.util.find_spec("datasets") is not None,
            'the Hugging Face datasets package is not installed (pip install "alwidgets[hf]")')
    import datasets

    return datasets


def test_hf_dataset_round_trip(digits_session, tmp_path):
    datasets = hf_datasets()

    labels = label_rounds(digits_session, rounds=2, n=5)
    to_hf_dataset(digits_session, tmp_path / "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 10 and ds.features["label"].names == digits_session.classes
    assert isinstance(ds.features["image"], datasets.Image)
    names = [ds.features["label"].int2str(v) for v in ds["label"]]
    assert dict(zip(ds["item_id"], names)) == dict(zip(labels["item_id"], labels["label"]))
    assert set(ds["source"]) == {"human", "accepted"} and set(ds["annotator"]) == {"ana"}
    pool = digits_session.pool
    for row in ds.select(range(3)):
        np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(pool.image(pool.index_of(row["item_id"]))))
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        to_hf_dataset(digits_session, tmp_path / "hf")


def test_hf_dataset_keeps_file_bytes(folder_session):
    datasets = hf_datasets()
    label_rounds(folder_session, rounds=1, n=3)
    ds = to_hf_dataset(folder_session)
    pool = folder_session.pool
    raw = ds.cast_column("image", datasets.Image(decode=False))
    for row in raw:
        assert row["image"]["bytes"] == Path(pool.paths[pool.index_of(row["item_id"])]).read_bytes()


# ---------------------------------------------------------------------- Label Studio
# Label Studio's documented task format (labelstud.io/guide/task_format and /guide/predictions):
# a task is an object with "data" (the values the labelling config's $variables name), and
# optional "annotations" and "predictions", each a list of objects whose "result" is a list of
# regions {from_name, to_name, type, value}; for a Choices control, value = {"choices": [...]}.
_REGION = {
    "type": "object", "required": ["from_name", "to_name", "type", "value"],
    "properties": {"id": {"type": "string"}, "from_name": {"type": "string"}, "to_name": {"type": "string"},
                   "type": {"const": "choices"}, "score": {"type": "number", "minimum": 0, "maximum": 1},
                   "value": {"type": "object", "required": ["choices"], "additionalProperties": False,
                             "properties": {"choices": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}},
    "additionalProperties": False,
}
LS_TASK = {
    "type": "object", "required": ["data"], "additionalProperties": False,
    "properties": {
        "id": {"type": "integer"}, "data": {"type": "object"}, "meta": {"type": "object"},
        "annotations": {"type": "array", "items": {
            "type": "object", "required": ["result"],
            "properties": {"result": {"type": "array", "items": _REGION}, "was_cancelled": {"type": "boolean"},
                           "ground_truth": {"type": "boolean"}, "lead_time": {"type": "number", "minimum": 0},
                           "completed_by": {}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}},
        "predictions": {"type": "array", "items": {
            "type": "object", "required": ["result"], "additionalProperties": False,
            "properties": {"result": {"type": "array", "items": _REGION}, "score": {"type": "number"},
                           "model_version": {"type": "string"}}}},
    },
}


def validate_tasks(tasks, config: str):
    """Check ``tasks`` against the documented task format and the labelling ``config`` they are for."""
    import jsonschema

    jsonschema.validate(tasks, {"type": "array", "items": LS_TASK})
    view = ET.fromstring(config)
    image = view.find("Image")
    choices = view.find("Choices")
    allowed = {c.get("value") for c in choices.findall("Choice")}
    var = image.get("value").lstrip("$")
    for t in tasks:
        assert isinstance(t["data"][var], str) and t["data"][var]
        for region in [r for key in ("annotations", "predictions") for a in t.get(key, []) for r in a["result"]]:
            assert region["from_name"] == choices.get("name") and region["to_name"] == image.get("name")
            assert set(region["value"]["choices"]) <= allowed


def test_label_studio_config_is_xml_for_the_classes():
    cfg = label_studio_config(["cat", 'say "hi" & <bye>'])
    view = ET.fromstring(cfg)
    assert [c.get("value") for c in view.iter("Choice")] == ["cat", 'say "hi" & <bye>']
    assert view.find("Choices").get("toName") == view.find("Image").get("name") == "image"


def test_label_studio_export_matches_the_task_format(folder_session, tmp_path):
    labels = label_rounds(folder_session, rounds=1, n=6)
    tasks = to_label_studio(folder_session, tmp_path / "tasks.json")
    assert json.loads((tmp_path / "tasks.json").read_text()) == tasks
    validate_tasks(tasks, label_studio_config(folder_session.classes))
    pool = folder_session.pool
    assert [t["data"]["item_id"] for t in tasks] == pool.ids  # every item, so the team can go on
    done = {t["data"]["item_id"]: t["annotations"][0]["result"][0]["value"]["choices"][0]
            for t in tasks if "annotations" in t}
    assert done == dict(zip(labels["item_id"], labels["label"]))
    # predictions: the model's class and probability for every item
    probs = folder_session.probs_
    for i, t in enumerate(tasks):
        (pred,) = t["predictions"]
        assert pred["result"][0]["value"]["choices"] == [folder_session.classes[int(probs[i].argmax())]]
        assert pred["score"] == pytest.approx(probs[i].max(), abs=1e-4)
        assert "random" in pred["model_version"]
    # local-file URLs relative to the folder holding the images
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=" + Path(pool.paths[0]).relative_to(
        Path(pool.paths[0]).parents[1]).as_posix()
    custom = to_label_studio(folder_session, image_url="https://cdn.example/{item_id}", predictions=False)
    assert custom[0]["data"]["image"] == f"https://cdn.example/{pool.ids[0]}" and "predictions" not in custom[0]


def test_label_studio_in_memory_pool_needs_images_dir(digits_session, tmp_path):
    with pytest.raises(ValueError, match="pool digits has no image files .* pass images_dir="):
        to_label_studio(digits_session)
    tasks = to_label_studio(digits_session, images_dir=tmp_path / "png", predictions=False)
    assert tasks[5]["data"]["image"] == "/data/local-files/?d=digits-0005.png"
    assert (tmp_path / "png" / "digits-0005.png").is_file()
    validate_tasks(tasks, label_studio_config(digits_session.classes))


def _as_label_studio_export(tasks):
    """What Label Studio's JSON export of these tasks looks like after a team worked on them."""
    out = []
    for k, t in enumerate(tasks):
        t = json.loads(json.dumps(t))
        t["id"] = 100 + k
        for a in t.get("annotations", []):
            a.update(completed_by={"id": 1, "email": "ana@lab"}, created_at="2026-01-01T10:00:00Z")
        out.append(t)
    return out


def test_label_studio_round_trip(folder_session, tmp_path):
    labels = label_rounds(folder_session, rounds=1, n=6)
    export = _as_label_studio_export(to_label_studio(folder_session))
    unlabelled = [t for t in export if "annotations" not in t]
    classes = folder_session.classes
    # the team labels two more items there, one of them twice (the later annotation counts) ...
    region = lambda c: {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [c]}}
    unlabelled[0]["annotations"] = [
        {"result": [region(classes[0])], "completed_by": 7, "created_at": "2026-01-02T10:00:00Z", "lead_time": 3.0},
        {"result": [region(classes[1])], "completed_by": 7, "created_at": "2026-01-03T10:00:00Z", "lead_time": 2.0}]
    unlabelled[1]["annotations"] = [{"result": [region(classes[0])], "completed_by": 8}]
    # ... cancels one, and leaves one with two choices; predictions alone are never labels
    unlabelled[2]["annotations"] = [{"result": [region(classes[1])], "was_cancelled": True}]
    unlabelled[3]["annotations"] = [{"result": [{**region(classes[0]), "value": {"choices": classes}}]}]
    validate_tasks(export, label_studio_config(classes))
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))

    # into a fresh session on the same pool: everything annotated comes back
    with Session(folder_session.pool, selector="random", store=":memory:") as fresh:
        report = from_label_studio(path, fresh)
        got = dict(zip(fresh.labels_df()["item_id"], fresh.labels_df()["label"]))
        want = {**dict(zip(labels["item_id"], labels["label"])),
                unlabelled[0]["data"]["item_id"]: classes[1], unlabelled[1]["data"]["item_id"]: classes[0]}
        assert got == want and report.accepted == len(want)
        df = fresh.labels_df().set_index("item_id")
        assert set(df["source"]) == {"imported"}
        assert df.loc[unlabelled[0]["data"]["item_id"], "annotator"] == "label-studio:7"
        assert df.loc[labels["item_id"].iloc[0], "annotator"] == "label-studio:ana@lab"
        assert df.loc[unlabelled[0]["data"]["item_id"], "seconds"] == 2.0
        assert report.rejected["reason"].tolist() == ["the annotation holds 2 choices, not one class"]
        assert report.rejected["item_id"].tolist() == [unlabelled[3]["data"]["item_id"]]
        # a second import adds nothing
        again = from_label_studio(path, fresh)
        assert again.accepted == 0 and len(fresh.labels_df(history=True)) == len(want)


def test_label_studio_import_keeps_labels_and_names_bad_input(folder_session, tmp_path):
    labels = label_rounds(folder_session, rounds=1, n=4)
    before = dict(zip(labels["item_id"], labels["label"]))
    bad = [{"data": {"item_id": "not/in/pool.png"}, "annotations": [
               {"result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                            "value": {"choices": [folder_session.classes[0]]}}]}]},
           {"data": {"image": "x.png"}, "annotations": [{"result": []}]},
           {"data": {"item_id": folder_session.pool.ids[0]}, "annotations": [
               {"result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                            "value": {"choices": ["zebra"]}}]}]}]
    report = from_label_studio(bad, folder_session)
    assert report.accepted == 0 and len(report.rejected) == 3
    reasons = " | ".join(report.rejected["reason"])
    assert "not in the pool" in reasons and "has no data.item_id" in reasons and "unknown class" in reasons
    after = folder_session.labels_df()
    assert dict(zip(after["item_id"], after["label"])) == before
    with pytest.raises(FileNotFoundError, match="no such file"):
        from_label_studio(tmp_path / "missing.json", folder_session)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a Label Studio JSON export"):
        from_label_studio(tmp_path / "broken.json", folder_session)
    with pytest.raises(ValueError, match="expected a list of Label Studio tasks"):
        from_label_studio(["a", "b"], folder_session)


def test_label_studio_import_into_a_store(folder_session, tmp_path):
    from alwidgets import LabelStore

    label_rounds(folder_session, rounds=1, n=3)
    export = _as_label_studio_export(to_label_studio(folder_session))
    with LabelStore(tmp_path / "s.db") as store:
        store.attach_pool(folder_session.pool.ids, folder_session.classes)
        report = from_label_studio(export, store)
        assert report.accepted == 3 and len(store.current_labels()) == 3
