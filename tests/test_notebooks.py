"""The notebooks run top to bottom headless (nbclient); labels are given through ``session.submit``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_notebook(name: str, cwd: Path, monkeypatch, timeout: int = 300):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("ALWIDGETS_HEADLESS", "1")
    monkeypatch.setenv("ALWIDGETS_SHARED", str(SHARED))
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


@pytest.mark.slow  # ~35 s on 2 busy cores
def test_01_quickstart(tmp_path, monkeypatch):
    nb = run_notebook("01_quickstart.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    assert (tmp_path / "alwidgets-digits.db").is_file()       # the default store, next to the notebook
    assert text.count("saved 16 labels") == 5 + 1
    assert "test set, 300 items" in text
    # the history table shows five rounds ending at 80 labels
    history = [c for c in nb.cells if c.source.strip() == "session.history"][0]
    assert "80" in history.outputs[0]["data"]["text/plain"]
    # widgets were displayed (grid + plots)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow  # ~20 s
def test_02_compare_strategies(tmp_path, monkeypatch):
    nb = run_notebook("02_compare_strategies.ipynb", tmp_path, monkeypatch)
    text = outputs(nb)
    assert "| margin |" in text and "| entropy |" in text and "| random |" in text
    assert "margin            A=" in text and "-> asks about A" in text and "-> asks about B" in text
    history = [c for c in nb.cells if "session.history" in c.source][0]
    assert "margin" in history.outputs[0]["data"]["text/plain"]


@pytest.mark.slow  # ~50 s on CPU (embeds 200 images)
def test_03_images_with_timm(tmp_path, monkeypatch):
    nb = run_notebook("03_images_with_timm.ipynb", tmp_path, monkeypatch, timeout=600)
    text = outputs(nb)
    assert text.count("saved 12 labels") == 3
    assert ("mobilenetv1_100" in text) == (SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors").is_file()


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), path.name
