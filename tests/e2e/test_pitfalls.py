"""Hostile names, a damaged image and typing in the widget, in JupyterLab 4.

A class and a file are named ``<img src=x onerror=alert(1)>``: both must show as text
and no dialog may open. One JPEG is cut short after its header, so the pool accepts it
and decoding fails only when the grid asks for its thumbnail: it must become a
placeholder tile. With more than ten classes the grid has a search box; typing in it
(and in the grid) must not trigger Jupyter's notebook shortcuts.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from .conftest import SLOW, cell, cell_json, open_notebook, our_errors, run_cell, write_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a Jupyter server and a kernel: about a minute each

XSS = "<img src=x onerror=alert(1)>"
CLASSES = [XSS, "ant", "bee", "bird", "cat", "cow", "deer", "dog", "eel", "fox", "gnu"]  # 11: a searchable palette

SETUP = """\
import json
import numpy as np
from alwidgets import Pool, Session
pool = Pool.from_folder({folder!r}, on_error="skip")
# embeddings given: nothing decodes the images before the grid asks for thumbnails
session = Session(pool, classes={classes!r}, embeddings=np.random.default_rng(0).random((len(pool), 4)),
                  selector="random", store=":memory:")
session.label(len(pool))"""

REPORT = """\
print("RESULT:" + json.dumps({"labels": dict(zip(session.labels_df()["item_id"], session.labels_df()["label"])),
                              "errors": pool.errors}))"""


def _images(folder):
    rng = np.random.default_rng(1)
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / sub / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "b" / f"{XSS}.jpg")
    data = (folder / "a" / "0.jpg").read_bytes()
    (folder / "a" / "broken.jpg").write_bytes(data[: int(len(data) * 0.6)])  # a valid header, truncated data


def test_hostile_names_broken_image_and_typing(server, page, sync_api):
    expect = sync_api.expect
    folder = server.root / "pitfall-images"
    _images(folder)
    name = "pitfalls.ipynb"
    write_notebook(server.root, name, [SETUP.format(folder=str(folder), classes=CLASSES), REPORT])

    open_notebook(page, server, "lab", name)
    run_cell(page, 0)
    tiles = page.locator(".alw-grid .alw-tile")
    expect(tiles).to_have_count(8, timeout=SLOW)
    grid = page.locator(".alw-grid")

    # names are text: the class button and the caption show the markup literally, no <img src=x> exists
    expect(grid.locator(".alw-class span").first).to_have_text(XSS)
    expect(grid.locator(".alw-caption", has_text=f"{XSS}.jpg")).to_have_count(1)
    assert page.locator("img[src='x']").count() == 0

    # the truncated JPEG is a placeholder tile; every other tile decoded its thumbnail
    broken = tiles.filter(has=page.locator(".alw-caption[title='a/broken.jpg']"))
    expect(broken.locator(".alw-placeholder")).to_have_count(1)
    expect(broken.locator(".alw-placeholder")).to_have_attribute("title", re.compile("truncated"))
    expect(grid.locator(".alw-placeholder")).to_have_count(1)
    widths = grid.locator(".alw-tile img").evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : -1)")
    assert len(widths) == 7 and min(widths) > 0, widths

    ids = [tiles.nth(i).locator(".alw-caption").get_attribute("title") for i in range(8)]
    n_cells = page.locator(".jp-Notebook .jp-Cell").count()
    tiles.nth(0).click()
    page.keyboard.press("1")                       # the hostile class, on tile 0
    expect(tiles.nth(0).locator(".alw-assigned")).to_have_text(XSS)
    page.keyboard.press("/")                       # search box: type letters that are Jupyter shortcuts
    search = grid.locator(".alw-search")
    expect(search).to_be_focused()
    page.keyboard.type("dd")
    expect(grid.locator(".alw-class")).to_have_count(0)  # nothing matches "dd"
    page.keyboard.press("Escape")
    page.keyboard.press("/")
    page.keyboard.type("bee")
    page.keyboard.press("Enter")                   # first match "bee", on tile 1
    expect(tiles.nth(1).locator(".alw-assigned")).to_have_text("bee")
    page.keyboard.press("b")                       # Jupyter: insert a cell below (must not happen)
    page.keyboard.press("m")                       # Jupyter: make the cell markdown (must not happen)
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(n_cells)
    expect(cell(page, 0)).to_have_class(re.compile(r"\bjp-CodeCell\b"))

    page.keyboard.press("Enter")
    expect(grid.locator(".alw-status")).to_contain_text("saved 2 labels", timeout=SLOW)
    got = cell_json(page, 1)
    assert got["labels"] == {ids[0]: XSS, ids[1]: "bee"}
    assert list(got["errors"]) == ["a/broken.jpg"]
    assert page.locator("img[src='x']").count() == 0

    # plots: class names are text in the tick labels too; at 700 px the panels wrap instead of being cut
    ticks = page.locator(".js-plotly-plot .xtick text").evaluate_all("els => els.map(e => e.textContent)")
    assert XSS in ticks and "bee" in ticks
    page.set_viewport_size({"width": 700, "height": 1000})
    page.wait_for_timeout(500)
    area = page.locator(".jp-OutputArea-output").filter(has=page.locator(".alw-grid")).first.bounding_box()
    boxes = [p.bounding_box() for p in page.locator(".alw-panel").all()]
    assert len(boxes) == 3 and all(b["x"] + b["width"] <= area["x"] + area["width"] + 1 for b in boxes), (area, boxes)
    assert len({round(b["y"]) for b in boxes}) >= 2          # more than one row
    assert not page.dialogs, page.dialogs
    assert not our_errors(page), our_errors(page)
