"""A person paints masks in JupyterLab: polygon + zoomed brush stroke with mouse and keys, Enter, the
session's store holds them exactly; undo after a submit; bad payloads from the browser store nothing
and lose nothing.

The first notebook runs ``session.label(3)`` on a segmentation Session (synthetic shapes, a small
decoder, masks stored as PNG payloads in an SQLite store) and reads the stored masks back; the second
shows the painter for images held in memory (``InMemoryMasks``, the same session interface), one of
them 8000x6000. The
expected pixels are computed here from the documented rules (pixel centres inside the polygon; centres
within the brush radius of the stroke's dabs), at the image points the browser's events give: screen
point minus the viewport's corner, through the painter's zoom and pan (``data-scale``/``data-tx``/``data-ty``).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from .conftest import SLOW, STEP, cell_json, open_notebook, our_errors, run_cell, write_notebook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

W, H = 40, 30

SETUP = """\
import dataclasses, json, numpy as np
from alwidgets import Session
from alwidgets.segmentation import DenseDecoder, make_shapes
from alwidgets.segmentation.features import DenseFeatures
data = make_shapes(n_images=6, size=(30, 40), random_state=0)
data = dataclasses.replace(data, classes=["sky", "road", "<b>car</b>", "tree"])     # ignore index 4
session = Session(data, embeddings=DenseFeatures.from_pixels(data.pool), store="paint.db", cv=2, selector="random",
                  model=DenseDecoder(4, 4, n_components=None, width=16, fine=8, min_steps=8, max_steps=8))
app = session.label(3)
painter = app.painter
app"""

REPORT = """labels, df = session.labels(), session.labels_df()
print("RESULT:" + json.dumps({"masks": {k: labels[data.pool.index_of(k)].tolist() for k in df["item_id"]},
    "seconds": dict(zip(df["item_id"], df["seconds"])), "error": painter.error, "current": painter.current,
    "states": [it["state"] for it in painter.items], "pixels": [int(v) for v in app.trace("balance").y]}))"""

BAD_REPORT = """print("RESULT:" + json.dumps({"masks": {k: m.tolist() for k, m in src.masks.items()},
    "seconds": src.seconds, "error": painter.error, "current": painter.current,
    "states": [it["state"] for it in painter.items]}))"""

# every press, drag and release the painter sees, as image coordinates computed from the event
RECORD = """v => { window.__events = []; for (const type of ["mousedown", "mousemove", "mouseup"]) {
    v.addEventListener(type, e => {
        if (type === "mousemove" && !(e.buttons & 1)) return;
        const r = v.getBoundingClientRect(), s = Number(v.dataset.scale);
        window.__events.push([type, (e.clientX - r.left - v.clientLeft - Number(v.dataset.tx)) / s,
                              (e.clientY - r.top - v.clientTop - Number(v.dataset.ty)) / s]);
    }); } }"""


def _polygon(mask, pts, value):
    """fillPolygon's rule: even-odd, a pixel is inside when its centre is in [left crossing, right crossing)."""
    for py in range(mask.shape[0]):
        yc = py + 0.5
        xs = []
        for i in range(len(pts)):
            (xi, yi), (xj, yj) = pts[i], pts[i - 1]
            if (yi > yc) != (yj > yc):
                xs.append(xi + ((yc - yi) * (xj - xi)) / (yj - yi))
        xs.sort()
        for a, b in zip(xs[::2], xs[1::2]):
            lo, hi = max(0, math.ceil(a - 0.5)), min(mask.shape[1] - 1, math.ceil(b - 0.5) - 1)
            mask[py, lo:hi + 1] = value


def _stroke(mask, pts, r, value):
    """paintStroke's rule: discs of radius r every quarter radius along the polyline; centres within r."""
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]] + 0.5
    dabs = [pts[0]]
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        steps = max(1, math.ceil(math.hypot(bx - ax, by - ay) / max(0.25, r / 4)))
        dabs += [(ax + ((bx - ax) * s) / steps, ay + ((by - ay) * s) / steps) for s in range(1, steps + 1)]
    for x, y in dabs:
        mask[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = value


def _ready(page, item, timeout=STEP):
    page.locator(f".alw-painter[data-ready='{item}']").wait_for(timeout=timeout)


def test_paint_polygon_and_zoomed_brush_then_undo_after_submit(server, page, sync_api):
    expect = sync_api.expect
    write_notebook(server.root, "paint.ipynb", [SETUP, REPORT, REPORT])
    open_notebook(page, server, "lab", "paint.ipynb")
    run_cell(page, 0)
    viewport = page.locator(".alw-painter-viewport")
    expect(viewport).to_be_visible(timeout=SLOW)
    expect(page.locator(".alw-painter-thumb")).to_have_count(3)
    ids = [t.get_attribute("data-id") for t in page.locator(".alw-painter-thumb").all()]
    _ready(page, ids[0])
    names = page.locator(".alw-painter-classes .alw-painter-class-name")
    expect(names.nth(2)).to_have_text("<b>car</b>")                 # the class name with HTML, as text
    assert page.locator(".alw-painter-classes b").count() == 0
    viewport.evaluate(RECORD)
    box = viewport.bounding_box()
    s0 = float(viewport.get_attribute("data-scale"))

    def at(x, y):  # the screen point of image point (x, y) at the current zoom
        s, tx, ty = (float(viewport.get_attribute(f"data-{k}")) for k in ("scale", "tx", "ty"))
        return box["x"] + tx + s * x, box["y"] + ty + s * y

    page.locator(".alw-painter").focus()
    page.keyboard.press("2")                        # class index 1 ("road")
    page.keyboard.press("g")                        # polygon tool
    for x, y in [(5, 5), (20.3, 5), (20.3, 15.6), (5, 15.6)]:
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")                    # closes the polygon
    page.keyboard.press("b")
    page.keyboard.press("3")                        # class index 2
    page.keyboard.press("[")                        # brush radius 8 -> 6
    page.mouse.move(*at(30, 20))
    page.mouse.wheel(0, -300)                       # zoom in about the cursor
    page.wait_for_function("s0 => Number(document.querySelector('.alw-painter-viewport').dataset.scale) > s0", arg=s0)
    expect(page.locator(".alw-painter-info")).to_contain_text("r=6")
    page.mouse.move(*at(27, 18))                    # a stroke near the zoom's centre: inside the viewport
    page.mouse.down()
    page.mouse.move(*at(31.5, 21), steps=4)
    page.mouse.move(*at(33, 18.6), steps=3)
    page.mouse.up()
    page.keyboard.press("Enter")                    # submits (stored; the refit runs in the background), next image
    _ready(page, ids[1], timeout=SLOW)
    expect(page.locator(".alw-painter-status")).to_contain_text(          # saved, then the refit's metrics
        re.compile(r"saved 1 label · refitting in the background|refitted on 1 label · mIoU"), timeout=STEP)
    expect(page.locator(".alw-painter-thumb").first).to_have_attribute("data-state", "done")

    events = page.evaluate("window.__events")
    downs = [i for i, e in enumerate(events) if e[0] == "mousedown"]
    corners = [tuple(events[i][1:]) for i in downs[:4]]
    stroke = [tuple(e[1:]) for e in events[downs[4]:] if e[0] != "mouseup"]
    assert len(downs) == 5 and len(stroke) >= 3
    assert all(abs(a - b) < 0.2 for p, q in zip(corners, [(5, 5), (20.3, 5), (20.3, 15.6), (5, 15.6)])
               for a, b in zip(p, q))
    polygon_only = np.full((H, W), 4, np.uint8)     # the ignore index: unpainted
    _polygon(polygon_only, corners, 1)
    expected = polygon_only.copy()
    _stroke(expected, stroke, 6, 2)
    got = cell_json(page, 1)
    assert got["error"] == {} and got["current"] == ids[1] and got["states"] == ["done", "todo", "todo"]
    np.testing.assert_array_equal(np.array(got["masks"][ids[0]], np.uint8), expected)
    assert 0 < got["seconds"][ids[0]] < 600
    # the live panels below the painter: drawn in the page, the pixel counts those of the saved mask
    panels = page.locator(".alw-panel")
    expect(panels).to_have_count(4)
    for k, title in enumerate(["mIoU vs masks", "IoU per class", "labelled pixels per class", "reliability (pixels)"]):
        expect(panels.nth(k).locator(".gtitle")).to_contain_text(title)
    assert got["pixels"] == np.bincount(expected[expected != 4], minlength=4).tolist()

    # undo after the submit: z on the fresh image reopens the saved one (retracted), z again undoes the stroke
    page.locator(".alw-painter").focus()
    page.keyboard.press("z")
    _ready(page, ids[0], timeout=SLOW)
    expect(page.locator(".alw-painter-thumb").first).to_have_attribute("data-state", "todo")
    page.keyboard.press("z")
    page.keyboard.press("Enter")
    _ready(page, ids[1], timeout=SLOW)
    expect(page.locator(".alw-painter-thumb").first).to_have_attribute("data-state", "done")
    got = cell_json(page, 2)
    np.testing.assert_array_equal(np.array(got["masks"][ids[0]], np.uint8), polygon_only)
    assert our_errors(page) == []


BAD_SETUP = """\
import io, json, numpy as np
from PIL import Image
from alwidgets.segmentation import mask_to_png
from alwidgets.widgets.maskpainter import InMemoryMasks

def png(w, h, mode="L"):
    buf = io.BytesIO(); Image.new(mode, (w, h)).save(buf, "PNG"); return buf.getvalue()

good = mask_to_png(np.zeros((30, 40), np.uint8))
for name, data in {"size": mask_to_png(np.zeros((30, 41), np.uint8)), "values": mask_to_png(np.full((30, 40), 7, np.uint8)),
                   "corrupt": good[:-20], "huge": png(8000, 6000)}.items():
    open(f"payload-{name}.png", "wb").write(data)    # the test hands these to the browser
images = {"im0": np.full((30, 40, 3), 90, np.uint8), "huge": png(8000, 6000, "RGB"),
          "im1": np.full((30, 40, 3), 150, np.uint8)}
src = InMemoryMasks(images, ["sky", "road"], ignore_index=255)
painter = src.label(3)
painter"""


def test_bad_payloads_from_the_browser_store_nothing_and_lose_nothing(server, page, sync_api):
    expect = sync_api.expect
    write_notebook(server.root, "bad.ipynb", [BAD_SETUP, BAD_REPORT, BAD_REPORT])
    open_notebook(page, server, "lab", "bad.ipynb")
    run_cell(page, 0)
    _ready(page, "im0")
    huge = page.locator(".alw-painter-thumb[data-id='huge']")     # the 8000 x 6000 image: marked, not shown
    expect(huge).to_have_attribute("data-state", "error")
    assert "8000x6000" in huge.get_attribute("title")
    viewport = page.locator(".alw-painter-viewport")
    box = viewport.bounding_box()
    page.locator(".alw-painter").focus()
    page.keyboard.press("2")
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)   # a dab of class 1
    alert = page.locator(".alw-painter-error")
    for name, message in [("size", "mask is 41x30 (WxH) but the image is 40x30"),
                          ("values", "values [7] are outside the 2 classes"),
                          ("corrupt", "corrupt mask PNG"),
                          ("huge", "mask is 8000x6000 (WxH) but the image is 40x30")]:
        page.evaluate("""([bytes]) => document.querySelector(".alw-painter")
            .alwSend({type: "submit", seconds: 1}, [new Uint8Array(bytes).buffer])""",
                      [list((server.root / f"payload-{name}.png").read_bytes())])
        expect(alert).to_contain_text(message, timeout=STEP)
        expect(alert).to_contain_text("Not saved")
    got = cell_json(page, 1)
    assert got["masks"] == {} and got["current"] == "im0" and got["error"]["kind"] == "mask"
    page.locator(".alw-painter").focus()
    page.keyboard.press("Enter")                    # the mask painted before is still there: it is saved now
    _ready(page, "im1")
    expect(alert).to_be_hidden()
    got = cell_json(page, 2)
    mask = np.array(got["masks"]["im0"], np.uint8)
    assert got["error"] == {} and set(np.unique(mask)) == {1, 255} and (mask == 1).sum() > 20
    assert got["states"] == ["done", "error", "todo"]
    assert our_errors(page) == []
