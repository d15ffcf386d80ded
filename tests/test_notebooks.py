"""The notebooks run top to bottom headless (nbclient).

Nobody is at the keyboard here, so the runs set ``ALWIDGETS_SIMULATE_ANSWERS=1``: the
notebooks then answer from the known classes through ``session.submit(...,
sources={id: "simulated"})`` under annotator ``"simulated"``, and these tests check that
every stored label says so. Unset (a person pressing "Run all"), they label nothing.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_notebook(name: str, cwd: Path, monkeypatch, timeout: int = 300, simulate: bool = True):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    if simulate:
        monkeypatch.setenv("ALWIDGETS_SIMULATE_ANSWERS", "1")
    else:
        monkeypatch.delenv("ALWIDGETS_SIMULATE_ANSWERS", raising=False)
    monkeypatch.setenv("ALWIDGETS_SHARED", str(SHARED))
    # the kernel imports this checkout's alwidgets, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")        # a busy 2-core CI box: no spinning BLAS threads
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(nb):
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            elif "data" in o:
                out.append(o["data"].get("text/plain", ""))
    return "\n".join(out)


def stored_labels(path: Path):
    from alwidgets import LabelStore

    with LabelStore(path) as store:
        return store.labels_df(history=True)


def shows_widget(nb) -> bool:
    """A widget view (the grid, the painter, the plots) is among the notebook's outputs."""
    return any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


def only_simulated(nb, n: int) -> bool:
    """The notebook's last cell shows ``labels_df()["source"].value_counts()``: ``n`` labels, all simulated."""
    last = nb.cells[-1]
    assert "value_counts" in last.source
    counts = last.outputs[0]["data"]["text/plain"]
    rows = [line.split() for line in counts.splitlines()[1:] if line.strip() and not line.startswith("Name")]
    return rows == [["simulated", str(n)]]


@pytest.mark.slow  # ~35 s on 2 busy cores
def test_01_quickstart(tmp_path, monkeypatch):
    nb = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    db = tmp_path / "alwidgets-digits.db"                     # the default store, next to the notebook
    assert text.count("saved 16 labels") == 5 + 1
    # every stored label is marked as the stand-in's, never as a person's
    labels = stored_labels(db)
    assert len(labels) == 80
    assert set(labels["source"]) == {"simulated"} and set(labels["annotator"]) == {"simulated"}
    # the honest test set: its items are never candidates, never picked
    assert "1497 items can be offered; 0 of them are test items" in text
    assert "test items picked so far: 0" in text
    assert "test set, 300 items" in text
    # the history table shows five rounds ending at 80 labels
    history = [c for c in nb.cells if c.source.strip() == "session.history"][0]
    assert "80" in history.outputs[0]["data"]["text/plain"]
    # widgets were displayed (grid + plots)
    assert shows_widget(nb)


@pytest.mark.slow  # ~25 s
def test_01_quickstart_labels_nothing_by_itself(tmp_path, monkeypatch):
    """"Run all" with nobody at the keyboard: the grids are shown, no label is stored."""
    nb = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch, simulate=False)
    assert "saved" not in outputs(nb)
    assert len(stored_labels(tmp_path / "alwidgets-digits.db")) == 0
    assert shows_widget(nb)


@pytest.mark.slow  # ~20 s
def test_02_compare_strategies(tmp_path, monkeypatch):
    nb = run_notebook("02_compare_strategies.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    assert "| margin |" in text and "| entropy |" in text and "| random |" in text
    assert "margin            A=" in text and "-> asks about A" in text and "-> asks about B" in text
    history = [c for c in nb.cells if "session.history" in c.source][0]
    assert "margin" in history.outputs[0]["data"]["text/plain"]
    assert only_simulated(nb, 50)


@pytest.mark.slow  # ~50 s on CPU (embeds 200 images)
def test_03_images_with_timm(tmp_path, monkeypatch):
    nb = run_notebook("03_images_with_timm.ipynb", tmp_path, monkeypatch, timeout=600)
    text = outputs(nb)
    assert text.count("saved 12 labels") == 3
    assert only_simulated(nb, 36)
    assert ("mobilenetv1_100" in text) == (SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors").is_file()


@pytest.mark.slow  # ~100 s on the 2 shared cores at load 5 (the first run also embeds 40 CamVid frames)
def test_04_segmentation(tmp_path, monkeypatch):
    nb = run_notebook("04_segmentation.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    real = (SHARED / "data" / "camvid").is_dir() and (SHARED / "weights").is_dir()
    db = tmp_path / ("alwidgets-camvid-train.db" if real else "alwidgets-shapes.db")
    assert text.count("saved 4 labels · refitting in the background") == 3     # a kernel refits in the background
    assert text.count("refitted on 4 labels · mIoU") == 1 and text.count("refitted on 12 labels · mIoU") == 1
    assert text.count(f"(test set, {9 if real else 12} items)") == 3
    labels = stored_labels(db)
    assert len(labels) == 12 and set(labels["media_type"]) == {"image/png"}     # masks as PNG payloads
    assert set(labels["source"]) == {"simulated"} and set(labels["annotator"]) == {"simulated"}
    assert only_simulated(nb, 12)
    assert len(list((tmp_path / "masks-export" / "masks").glob("*.png"))) == 12
    assert (tmp_path / "masks-coco.json").is_file()
    figs = [o["data"]["application/vnd.plotly.v1+json"] for c in nb.cells for o in c.get("outputs", [])
            if "application/vnd.plotly.v1+json" in o.get("data", {})]
    names = [[t.get("name") for t in f["data"]] for f in figs]
    assert "random (simulated)" in names[0] and "session" in names[0]
    assert names[1] == ["IoU", "weakest", "no data"] and names[2] == ["pixels"]
    assert shows_widget(nb)


@pytest.mark.slow  # ~30 s
def test_04_segmentation_paints_nothing_by_itself(tmp_path, monkeypatch):
    nb = run_notebook("04_segmentation.ipynb", tmp_path, monkeypatch, simulate=False)
    assert "saved" not in outputs(nb)
    dbs = list(tmp_path.glob("alwidgets-*.db"))
    assert len(dbs) == 1 and len(stored_labels(dbs[0])) == 0


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), path.name


def _table(text: str, title: str) -> dict:
    """A table the notebook printed with ``DataFrame.to_string``: {column: [values per round]}."""
    lines = text[text.index(title):].splitlines()
    head = lines[0][len(title):]
    cols = [c.strip() for c in re.split(r"\s{2,}", head.strip())]
    out = {c: [] for c in cols}
    for line in lines[2:]:
        cells = line.split()
        if not cells or not cells[0].isdigit():
            break
        for c, v in zip(cols, cells[1:]):
            out[c].append(float(v.rstrip("%")))
    return out


@pytest.mark.slow  # ~40 s
def test_05_how_selection_works(tmp_path, monkeypatch):
    nb = run_notebook("05_how_selection_works.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    assert not list(tmp_path.glob("*.db"))  # a teaching replay: nothing stored
    gap = _table(text, "picks minus pool uncertainty")
    assert set(gap) == {"coverage", "margin", "random", "uncertainty + diversity"}
    # margin asks about the items the model is torn on; random about average ones
    assert min(gap["margin"][1:]) > 0.3 and max(abs(v) for v in gap["random"]) < 0.3
    assert len(_table(text, "accuracy on the rest")["coverage"]) == 5
    # the map: four panels, one slider step per round, each step showing that round's traces only
    (fig,) = [o["data"]["application/vnd.plotly.v1+json"] for c in nb.cells for o in c.get("outputs", [])
              if "application/vnd.plotly.v1+json" in o.get("data", {})]
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["random", "margin", "coverage", "uncertainty + diversity"]
    steps = fig["layout"]["sliders"][0]["steps"]
    assert [s["label"] for s in steps] == ["1", "2", "3", "4", "5", "6"]
    shown = [set(k for k, v in enumerate(s["args"][0]["visible"]) if v) for s in steps]
    assert all(a != b for a, b in zip(shown, shown[1:]))
    kinds = [{fig["data"][k]["type"] for k in s} for s in shown]
    assert "heatmap" not in kinds[0] and all("heatmap" in k for k in kinds[1:])  # no model before the first labels
    picks = [[t for k, t in enumerate(fig["data"]) if k in s and t.get("marker", {}).get("color") == "orange"]
             for s in shown]
    assert all(len(p) == 4 and all(len(t["text"]) == 10 for t in p) for p in picks)  # 10 picks per panel per round
