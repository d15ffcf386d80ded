"""A person paints a mask in JupyterLab: polygon + brush with mouse and keys, Enter, the kernel holds it exactly.

The notebook shows a ``MaskPainter`` on a 40x30 image; its ``on_submit`` keeps the
checked masks. The test fills a polygon (g, four clicks, Enter), paints a brush dot
of class 3 (key 3, one click), submits with Enter, and compares the stored mask with
the pixels the documented rules give (pixel centres inside the polygon; centres
within the brush radius). Then it undoes and submits again (the mask is back to the
polygon only), and checks that a class name holding HTML is shown as text.
"""
from __future__ import annotations

import numpy as np
import pytest

from .conftest import SLOW, STEP, cell_json, open_notebook, our_errors, run_cell, write_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SETUP = """\
import json, numpy as np
from alwidgets.widgets.maskpainter import MaskPainter
stored = []
painter = MaskPainter(["sky", "road", "<b>car</b>"], ignore_index=255,
                      on_submit=lambda m, seconds: stored.append(m) or f"saved {len(stored)}")
painter.show(np.full((30, 40, 3), 90, np.uint8))
painter"""

REPORT = """print("RESULT:" + json.dumps({"n": len(stored), "masks": [m.tolist() for m in stored],
                                   "error": painter.error}))"""


def _expected(corners, dot=None) -> np.ndarray:
    """The documented rules, computed here from where the browser says the clicks landed: pixels whose
    centre lies in [x0, x1) x [y0, y1) of the rectangle polygon; centres within 8 px of the brush dot."""
    m = np.full((30, 40), 255, np.uint8)
    yy, xx = np.mgrid[0:30, 0:40] + 0.5
    (x0, y0), (x1, y1) = corners[0], corners[2]
    m[(xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)] = 1
    if dot is not None:
        m[(xx - dot[0]) ** 2 + (yy - dot[1]) ** 2 <= 8 ** 2] = 2
    return m


def test_paint_polygon_and_brush_then_undo(server, page, sync_api):
    expect = sync_api.expect
    write_notebook(server.root, "paint.ipynb", [SETUP, REPORT, REPORT])
    open_notebook(page, server, "lab", "paint.ipynb")
    run_cell(page, 0)
    canvas = page.locator(".alw-painter canvas")
    expect(canvas).to_be_visible(timeout=SLOW)
    expect(page.locator(".alw-painter-class").nth(2)).to_contain_text("<b>car</b>")
    assert page.locator(".alw-painter-class b").count() == 0
    box = canvas.bounding_box()
    assert round(box["width"]) == 40 and round(box["height"]) == 30     # shown 1:1

    def click(x, y):
        page.mouse.click(box["x"] + x, box["y"] + y)

    # record where each press lands in canvas pixels, as the browser reports it (sub-pixel offsets of the
    # page layout are rounded away by the input pipeline, so the exact centre is read, not assumed)
    canvas.evaluate("""c => { window.__presses = []; c.addEventListener("mousedown", e => {
        const r = c.getBoundingClientRect(); window.__presses.push([e.clientX - r.left, e.clientY - r.top]); }); }""")

    canvas.click(position={"x": 1, "y": 1})        # focus (a brush dot of class 1 at (1, 1) ...)
    page.keyboard.press("z")                        # ... undone
    page.keyboard.press("2")                        # class index 1 ("road")
    page.keyboard.press("g")                        # polygon tool
    for x, y in [(5, 5), (20, 5), (20, 15), (5, 15)]:
        click(x, y)
    page.keyboard.press("Enter")                    # closes the polygon
    page.keyboard.press("b")
    page.keyboard.press("3")                        # class index 2
    assert page.locator(".alw-painter-info").inner_text().startswith("brush r=8")
    click(30, 20)
    page.keyboard.press("Enter")                    # submits
    expect(page.locator(".alw-painter-status")).to_have_text("saved 1", timeout=STEP)
    presses = page.evaluate("window.__presses")
    corners, dot = presses[1:5], presses[5]
    assert all(abs(a - b) < 1 for p, q in zip(corners, [(5, 5), (20, 5), (20, 15), (5, 15)]) for a, b in zip(p, q))
    got = cell_json(page, 1)
    assert got["n"] == 1 and got["error"] == {}
    np.testing.assert_array_equal(np.array(got["masks"][0], np.uint8), _expected(corners, dot))

    page.locator(".alw-painter").focus()
    page.keyboard.press("z")                        # undo the brush dot after the submit
    page.keyboard.press("Enter")
    expect(page.locator(".alw-painter-status")).to_have_text("saved 2", timeout=STEP)
    got = cell_json(page, 2)
    np.testing.assert_array_equal(np.array(got["masks"][1], np.uint8), _expected(corners))
    assert our_errors(page) == []
