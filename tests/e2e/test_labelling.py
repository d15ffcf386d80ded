"""A person labels a batch in JupyterLab 4 and Notebook 7; the Python session, the store and the plot agree.

The notebook builds ``Session(Pool.digits(), selector="margin", store=<tmp db>)`` and
shows ``session.label(8)``. The test clicks tiles and class buttons, presses the
documented keys (digits, arrows, z, Space, Enter), shift-clicks a range, and then
runs a following cell that prints what the kernel holds. The classes are the digits
``0``-``9``: pressing a digit gives the class of that name (issue 14, item 2).
"""
from __future__ import annotations

import re
import time

import pytest

from .conftest import SLOW, STEP, cell, cell_json, open_notebook, our_errors, run_cell, write_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a Jupyter server and a kernel: about a minute each

SETUP = """\
import json
from alwidgets import Pool, Session
session = Session(Pool.digits(), selector="margin", store={store!r}, random_state=0)
app = session.label(8)
app"""

REPORT = """\
labels = dict(zip(session.labels_df()["item_id"], session.labels_df()["label"]))
offered = {session.pool.ids[i] for i in session.candidates()}
print("RESULT:" + json.dumps({
    "labels": labels,
    "history": session.history[["n_labels", "n_added", "strategy"]].to_dict("records"),
    "plot_x": list(app.trace("session").x),
    "not_offered": sorted(set(session.pool.ids) - offered - set(labels)),
}))"""


def _tiles(page):
    return page.locator(".alw-grid .alw-tile")


def _press(page, *keys):
    for k in keys:
        page.keyboard.press(k)


@pytest.mark.parametrize("ui", ["lab", "notebook"])
def test_label_batch_in_browser(ui, server, page, sync_api):
    expect = sync_api.expect
    name = f"label-{ui}.ipynb"
    store = server.root / f"labels-{ui}.db"
    write_notebook(server.root, name, [SETUP.format(store=str(store)), REPORT])

    open_notebook(page, server, ui, name)
    run_cell(page, 0)
    tiles = _tiles(page)
    expect(tiles).to_have_count(8, timeout=SLOW)
    expect(page.locator(".alw-tile img").first).to_be_visible()
    ids = [tiles.nth(i).locator(".alw-caption").get_attribute("title") for i in range(8)]
    assert len(set(ids)) == 8 and all(i.startswith("digits-") for i in ids)
    points = page.locator(".js-plotly-plot .scatterlayer .trace .points path")
    expect(page.locator(".js-plotly-plot .main-svg").first).to_be_attached(timeout=SLOW)
    assert points.count() == 0  # no round finished yet

    # the cursor ring shows only while the grid has the focus; without it the grid says "click a tile"
    grid = page.locator(".alw-grid")
    focused, ring, hint = grid.evaluate(
        "g => [g.contains(document.activeElement), g.classList.contains('alw-active'),"
        " !g.querySelector('.alw-hint').hidden]")
    assert ring == focused and hint == (not focused), (focused, ring, hint)

    # Jupyter's own command-mode shortcuts (a/b: insert cell, dd: delete, m: markdown) must not fire
    n_cells = page.locator(".jp-Notebook .jp-Cell").count()
    tiles.nth(0).click()
    expect(grid).to_have_class(re.compile(r"\balw-active\b"))
    expect(grid.locator(".alw-hint")).to_be_hidden()
    _press(page, "b", "d", "d", "m", "a")
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(n_cells)
    expect(cell(page, 0)).to_have_class(re.compile(r"\bjp-CodeCell\b"))
    expect(page.locator(".alw-grid .alw-done")).to_have_count(0)  # 'a' had no suggestion to accept

    # keys: 2 -> class "2" on tile 0; Space skips tile 1; 3 then z (undo) on tile 2; arrow right; 4 on tile 3
    _press(page, "2", "Space", "3", "z", "ArrowRight", "4")
    # mouse: click tile 5, shift-click tile 7, then the class button "9" labels the range
    tiles.nth(5).click()
    tiles.nth(7).click(modifiers=["Shift"])
    expect(page.locator(".alw-grid .alw-selected")).to_have_count(3)
    nine = page.locator(".alw-grid .alw-class").nth(9)
    expect(nine).to_have_text("9")                 # the key is the class name: one keycap, no "0 9"
    nine.click()
    # focus wrapped to the first open tile (2): 5 gives class "5"; then left to tile 3 and 7 relabels it "7"
    # the cursor moved on to tile 4, the last open one: 8 labels it, and the batch is complete
    _press(page, "5", "ArrowLeft", "7", "8")
    want = {ids[0]: "2", ids[2]: "5", ids[3]: "7", ids[4]: "8", ids[5]: "9", ids[6]: "9", ids[7]: "9"}
    shown = {ids[i]: tiles.nth(i).locator(".alw-assigned").inner_text() for i in range(8)}
    assert shown == {**{i: "" for i in ids}, **want, ids[1]: "skipped"}

    page.keyboard.press("Enter")
    expect(page.locator(".alw-grid .alw-status")).to_contain_text("saved 7 labels", timeout=SLOW)
    # no bare "0/0": what happened and what to run next
    expect(page.locator(".alw-grid .alw-notice")).to_contain_text("saved 7 labels — run session.label() again")
    expect(page.locator(".alw-grid .alw-progress")).not_to_contain_text("0/0")
    expect(points).to_have_count(1, timeout=STEP)  # the accuracy plot gained a point

    got = cell_json(page, 1)
    assert got["labels"] == want
    assert got["not_offered"] == [ids[1]]           # the skipped item is not offered again
    assert got["plot_x"] == [7]
    assert [(h["n_labels"], h["n_added"]) for h in got["history"]] == [(7, 7)]
    assert got["history"][0]["strategy"].startswith("random")  # cold start: no model to be uncertain with

    from alwidgets.store import LabelStore

    with LabelStore(store, read_only=True) as s:  # a second reader of the same SQLite file
        assert s.current_labels() == want
    assert not page.dialogs and not our_errors(page)
    if ui == "lab":
        _check_export(page, server.root / name, sync_api, want)


def _check_export(page, path, sync_api, want):
    """Save with widget state (JupyterLab setting saveState on), then export with nbconvert.

    With the state, the HTML carries the last grid and figure models for the widget
    manager to draw; without it (the default), nbconvert falls back to the widget's
    static text/html snapshot: the batch as shown, plain HTML and SVG, no script.
    """
    import json
    import subprocess
    import sys

    page.keyboard.press("Control+s")
    deadline = time.monotonic() + STEP / 1000
    def saved_with_state():
        try:
            nb = json.loads(path.read_text())
        except ValueError:  # caught mid-write
            return False
        return "application/vnd.jupyter.widget-state+json" in nb.get("metadata", {}).get("widgets", {})

    while not saved_with_state():
        assert time.monotonic() < deadline, "the notebook was not saved with widget state"
        page.wait_for_timeout(200)

    def export(nb_path):
        out = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--stdout", str(nb_path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    html = export(path)
    state = json.loads(re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>',
                                 html, re.S).group(1))["state"]
    grids = [m["state"] for m in state.values() if "LabelGrid" in str(m["state"].get("_anywidget_id", ""))]
    assert len(grids) == 1 and "saved 7 labels" in grids[0]["status"]      # the last state of the grid
    traces = [t for m in state.values() if "FigureWidget" in str(m["state"].get("_anywidget_id", ""))
              for t in m["state"]["_widget_data"]]
    assert [t["x"] for t in traces if t.get("meta") == "session"] == [[7]]  # the last accuracy curve

    nb = json.loads(path.read_text())
    del nb["metadata"]["widgets"]
    plain = path.with_name("no-state.ipynb")
    plain.write_text(json.dumps(nb))
    static = path.with_name("no-state.html")
    static.write_text(export(plain))
    view = page.context.new_page()
    view.goto(static.as_uri())
    tiles = view.locator(".alw-static .alw-static-tile img")
    sync_api.expect(tiles).to_have_count(8)
    assert min(tiles.evaluate_all("els => els.map(e => e.naturalWidth)")) > 0
    sync_api.expect(view.locator(".alw-static svg.alw-static-plot")).to_have_count(3)
    view.close()


SIXES = """\
import numpy as np
from alwidgets import Pool, Session
digits = Pool.digits()
pool = digits.subset(np.flatnonzero(digits.targets == 6)[:6])   # every tile shows a six
session = Session(pool, classes=[str(d) for d in range(10)], selector="random", store={store!r})
session.label(6)"""


def test_pressing_6_on_a_six_labels_it_6(server, page, sync_api):
    """Issue 14, item 2: with classes 0-9 the key is the class name (it was off by one)."""
    expect = sync_api.expect
    name = "sixes.ipynb"
    store = server.root / "sixes.db"
    write_notebook(server.root, name, [SIXES.format(store=str(store))])
    open_notebook(page, server, "lab", name)
    run_cell(page, 0)
    tiles = _tiles(page)
    expect(tiles).to_have_count(6, timeout=SLOW)
    expect(page.locator(".alw-grid .alw-class").nth(6)).to_have_text("6")
    tiles.nth(2).click()
    page.keyboard.press("6")
    expect(tiles.nth(2).locator(".alw-assigned")).to_have_text("6")
    item = tiles.nth(2).get_attribute("data-id")
    page.keyboard.press("Enter")
    expect(page.locator(".alw-grid .alw-status")).to_contain_text("saved 1 label ·", timeout=SLOW)
    from alwidgets.store import LabelStore

    with LabelStore(store, read_only=True) as s:
        assert s.current_labels() == {item: "6"}
    assert not page.dialogs and not our_errors(page)
