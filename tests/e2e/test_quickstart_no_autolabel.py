"""A new user opens a demo notebook in JupyterLab, runs all cells and presses no key: nothing is labelled.

The notebooks are what ``alwidgets demo`` copies (the quick start and, with ``segmentation``, the
mask painter's), each into a folder of its own on the test server (its default store,
``alwidgets-<data set>.db``, is created there). "Run All Cells" is chosen from the Run menu with
the mouse; then the store must hold no label at all, in its history included, and the widget must
be on screen (so the cells really ran).
"""
from __future__ import annotations

import os
import re
import time

import pytest

from alwidgets.cli import main

from .conftest import SLOW, open_notebook, our_errors, wait_kernel_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a Jupyter server, a kernel and a whole notebook


@pytest.mark.parametrize("demo, widget, db", [("quickstart", ".alw-grid .alw-tile", "alwidgets-digits.db"),
                                              ("segmentation", ".alw-painter-viewport", "alwidgets-shapes.db")])
def test_run_all_cells_labels_nothing(server, page, sync_api, capsys, demo, widget, db):
    expect = sync_api.expect
    assert "ALWIDGETS_SIMULATE_ANSWERS" not in os.environ  # a person's run: no stand-in answers
    folder = server.root / f"new-user-{demo}"
    folder.mkdir()
    assert main(["demo", demo, "--dir", str(folder), "--no-launch"]) == 0
    name = f"{folder.name}/alwidgets_{demo}.ipynb"

    open_notebook(page, server, "lab", name)
    n_cells = page.locator(".jp-Notebook .jp-Cell").count()
    n_code = page.locator(".jp-Notebook .jp-CodeCell").count()
    assert n_code >= 5
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()

    # every code cell gets its execution count once the kernel has run it; a traceback stops "Run All"
    done = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").filter(has_text=re.compile(r"\[\d+\]"))
    tb = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text=re.compile(r"Traceback|Error\b"))
    deadline = time.monotonic() + 4 * SLOW / 1000
    while done.count() < n_code:
        assert tb.count() == 0, f"a cell raised:\n{tb.first.inner_text()}"
        assert time.monotonic() < deadline, f"only {done.count()} of {n_code} code cells ran"
        page.wait_for_timeout(500)
    wait_kernel_idle(page, server, name)
    assert tb.count() == 0, tb.first.inner_text()
    expect(page.locator(widget).first).to_be_visible(timeout=SLOW)  # the widget is there, waiting
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(n_cells)           # no cell added or removed
    saved = page.locator(".jp-OutputArea-output").filter(has_text=re.compile(r"saved \d+ labels?"))
    assert saved.count() == 0, saved.first.inner_text()

    from alwidgets.store import LabelStore

    page.wait_for_timeout(1000)  # nothing arrives late either
    db = folder / db
    assert db.is_file()  # the session opened its default store next to the notebook
    with LabelStore(db, read_only=True) as store:
        assert len(store.labels_df(history=True)) == 0
        assert store.current_labels() == {}
    assert not our_errors(page)
