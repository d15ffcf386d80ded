"""The grid's ES module in headless Chromium, without Jupyter: decoding, focus, keys, submit, enlarge.

The page mounts ``alwidgets/widgets/static/labelgrid.js`` with a stand-in for anywidget's
model holding the state a real ``session.label()`` grid has (thumbnails included). With
``ALWIDGETS_SCREENSHOT=path`` the grid is saved there (``docs/labelgrid.png``).
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from alwidgets.widgets.labelgrid import _STATIC

pytestmark = pytest.mark.e2e

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><style>%s
body { margin: 0; padding: 12px; background: #fff; width: 900px; font-family: sans-serif; }</style></head>
<body><div id="app"></div></body></html>"""

MOUNT = """async ({code, state, thumbs, large}) => {
  const mod = await import(URL.createObjectURL(new Blob([code], {type: "text/javascript"})));
  const handlers = {};
  const bytes = (b) => { const s = atob(b); const a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return new DataView(a.buffer); };
  state.items.forEach((it, i) => { it.thumb = bytes(thumbs[i]); });
  const model = {
    state, sent: [], invoked: [],
    get(k) { return this.state[k]; }, set(k, v) { this.state[k] = v; }, save_changes() {},
    send(m) { this.sent.push(m); }, on(e, f) { (handlers[e] ||= []).push(f); }, off() {},
  };
  const experimental = { invoke: async (name, msg) => {
    model.invoked.push([name, msg]);
    return [{ id: msg.id, mime: "image/png" }, [bytes(large)]];
  } };
  mod.default.render({model, el: document.getElementById("app"), experimental});
  window.__model = model;
  await Promise.all([...document.images].map((im) => im.decode().catch(() => null)));
}"""


def _grid_state():
    """The state of a real grid one round into a digits session (tiles carry suggestions)."""
    from alwidgets import Pool, Session

    pool = Pool.digits()
    s = Session(pool, selector="margin", store=":memory:", budget=200, random_state=3)
    s.label(40)
    s.submit({i: s.classes[pool.targets[pool.index_of(i)]] for i in s.batch})
    grid = s.label(16).grid
    state = {k: getattr(grid, k) for k in ("classes", "keymap", "batch", "progress", "status", "notice", "error",
                                           "busy", "assignments", "columns", "autofocus")}
    state["items"] = [{k: v for k, v in it.items() if k != "thumb"} for it in grid.items]
    state["autofocus"] = False   # the test decides when the grid gets the focus
    thumbs = [base64.b64encode(it["thumb"]).decode() for it in grid.items]
    large = base64.b64encode(s.image(grid.items[0]["id"])[0]).decode()
    truth = {i: s.classes[pool.targets[pool.index_of(i)]] for i in (it["id"] for it in grid.items)}
    s.close()
    return state, thumbs, large, truth


def test_grid_in_chromium(browser, tmp_path):
    state, thumbs, large, truth = _grid_state()
    page = browser.new_page(viewport={"width": 930, "height": 900}, device_scale_factor=1)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_content(HARNESS % (_STATIC / "labelgrid.css").read_text())
    page.evaluate(MOUNT, {"code": (_STATIC / "labelgrid.js").read_text(), "state": state, "thumbs": thumbs,
                          "large": large})
    widths = page.eval_on_selector_all(".alw-tile img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == 16 and min(widths) > 0           # every item's own bytes decoded to an image

    # no cursor ring before the grid has the focus, and a hint saying how to get it
    grid = page.locator(".alw-grid")
    assert "alw-active" not in grid.get_attribute("class")
    assert page.locator(".alw-hint").is_visible()
    ring = page.eval_on_selector(".alw-tile.alw-focus", "t => getComputedStyle(t).boxShadow")
    assert ring == "none"
    page.click(".alw-tile >> nth=0")
    assert "alw-active" in grid.get_attribute("class") and not page.locator(".alw-hint").is_visible()
    assert page.eval_on_selector(".alw-tile.alw-focus", "t => getComputedStyle(t).boxShadow") != "none"

    # digit classes: the button of class 6 reads "6", and pressing 6 labels "6"
    assert page.locator(".alw-class").nth(6).inner_text() == "6"
    ids = [it["id"] for it in state["items"]]
    page.keyboard.press("2")
    page.keyboard.press("a")
    page.keyboard.press("Space")
    page.keyboard.press("3")
    page.keyboard.press("z")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("6")
    got = page.evaluate("window.__model.state.assignments")
    assert got == {ids[0]: "2", ids[1]: state["items"][1]["suggestion"], ids[4]: "6"}
    # the suggestion is readable: dark text, at least 12 px
    color, size = page.eval_on_selector(".alw-suggest", "e => [getComputedStyle(e).color, getComputedStyle(e).fontSize]")
    assert color in ("rgb(34, 34, 34)", "rgb(0, 0, 0)") and float(size.rstrip("px")) >= 12
    shot = os.environ.get("ALWIDGETS_SCREENSHOT", str(tmp_path / "grid.png"))
    grid.screenshot(path=shot)

    page.locator(".alw-zoom").first.dispatch_event("click")
    page.wait_for_function("document.querySelector('.alw-overlay-img').naturalWidth >= 32")
    assert page.evaluate("window.__model.invoked") == [["enlarge", {"id": ids[0]}]]
    page.locator(".alw-overlay").click()

    page.keyboard.press("Enter")
    sent = page.evaluate("window.__model.sent")
    assert sent[-1]["type"] == "submit" and sent[-1]["batch"] == state["batch"]
    assert sent[-1]["labels"] == got and sent[-1]["skipped"] == [ids[2]]
    assert not errors, errors
    page.close()
    assert Path(shot).stat().st_size > 10_000
    assert truth  # the tiles are real digits (for the screenshot)
