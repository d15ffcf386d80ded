"""The grid's ES module in headless Chromium, without Jupyter: decoding, focus, keys, submit, enlarge.

The page mounts ``alwidgets/widgets/static/labelgrid.js`` with a stand-in for anywidget's
model holding the state a real ``session.label()`` grid has (thumbnails included), on
CIFAR-10 photos when ``../shared/data`` has them, else on the digits. With
``ALWIDGETS_SCREENSHOT=path`` the grid is saved there: ``docs/labelgrid.png`` is made with
``ALWIDGETS_SCREENSHOT=docs/labelgrid.png pytest tests/e2e/test_grid_browser.py``.
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


CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-subset" / "test"


def _pool():
    """CIFAR-10 photos when the shared data is there (the README's picture), else the digits."""
    import numpy as np

    from alwidgets import Pool

    if CIFAR.is_dir():
        pool = Pool.from_folder(CIFAR)
        return pool.subset(np.concatenate([np.flatnonzero(pool.targets == c)[:30] for c in range(10)]))
    return Pool.digits()


def _grid_state():
    """The state of a real grid one round into a session (tiles carry suggestions)."""
    from alwidgets import Session

    pool = _pool()
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
    s.close()
    return state, thumbs, large


def _key(keymap, number):
    """The first key of class number ``number`` (1-based) in the map Python sent."""
    return next(k for k, action in keymap.items() if action == f"class:{number}")


def test_grid_in_chromium(browser, tmp_path):
    state, thumbs, large = _grid_state()
    classes, keymap = state["classes"], state["keymap"]
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

    # the buttons show the keys of the map: the name itself for digit classes ("6"), else "3 bird"
    six = page.locator(".alw-class").nth(6).inner_text()
    assert six == (classes[6] if classes[6] == _key(keymap, 7) else f"{_key(keymap, 7)}{classes[6]}")
    ids = [it["id"] for it in state["items"]]
    for key in (_key(keymap, 3), "a", "Space", _key(keymap, 4), "z", "ArrowRight", _key(keymap, 7)):
        page.keyboard.press(key)
    got = page.evaluate("window.__model.state.assignments")
    assert got == {ids[0]: classes[2], ids[1]: state["items"][1]["suggestion"], ids[4]: classes[6]}
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
