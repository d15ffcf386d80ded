"""LabelGrid on the Python side: traits, key map, binary thumbnails, and the message protocol."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import require
from ipywidgets.widgets.widget import _remove_buffers

from alwidgets.widgets import DEFAULT_KEYMAP, LabelGrid
from alwidgets.widgets.labelgrid import _STATIC, check_keymap


def test_bundle_is_in_the_package_and_has_no_remote_imports():
    js = (_STATIC / "labelgrid.js").read_text()
    assert "render" in js and len(js) > 2000
    assert (_STATIC / "labelgrid.css").is_file()
    # no ESM import from a URL (CDN) and no base64 data URLs
    assert not re.search(r"""(import|from)\s*\(?\s*["']https?:""", js)
    assert "base64" not in js


def test_committed_bundle_matches_the_source(tmp_path):
    """``alwidgets/widgets/static`` must be rebuilt (``cd js && npm run build``) after editing ``js/``."""
    import subprocess

    esbuild = _STATIC.parents[2] / "js" / "node_modules" / ".bin" / "esbuild"
    require(esbuild.exists(), f"esbuild not installed at {esbuild} (cd js && npm ci)")
    out = tmp_path / "labelgrid.js"
    subprocess.run([str(esbuild), "labelgrid.js", "--bundle", "--format=esm", "--minify", "--target=es2020",
                    f"--outfile={out}", "--log-level=error"], cwd=esbuild.parents[2], check=True)
    assert out.read_text() == (_STATIC / "labelgrid.js").read_text(), "stale bundle: run `cd js && npm run build`"


def test_keymap_defaults_cover_the_documented_keys():
    for key in "1234567890":
        assert DEFAULT_KEYMAP[key].startswith("class:")
    assert DEFAULT_KEYMAP["0"] == "class:10"
    assert {DEFAULT_KEYMAP[k] for k in ("ArrowLeft", "h")} == {"left"}
    assert DEFAULT_KEYMAP[" "] == "skip" and DEFAULT_KEYMAP["Backspace"] == DEFAULT_KEYMAP["z"] == "undo"
    assert DEFAULT_KEYMAP["a"] == "accept" and DEFAULT_KEYMAP["Enter"] == "submit"
    assert DEFAULT_KEYMAP["Escape"] == "leave"


def test_keymap_edits_and_errors():
    km = check_keymap({"q": "class:11", "z": None})
    assert km["q"] == "class:11" and "z" not in km and km["Backspace"] == "undo"
    with pytest.raises(ValueError, match=r"keymap\['x'\] = 'jump'"):
        check_keymap({"x": "jump"})
    with pytest.raises(ValueError, match="class:N"):
        check_keymap({"x": "class:0"})
    with pytest.raises(ValueError, match="KeyboardEvent.key"):
        check_keymap({"": "skip"})


def test_thumbnails_travel_as_binary_buffers():
    grid = LabelGrid(["a", "b"])
    thumbs = [b"\xff\xd8" + bytes([i]) * 50 for i in range(3)]
    grid.show_batch([{"id": f"x{i}", "caption": "<b>x</b>"} for i in range(3)], thumbs)
    state = grid.get_state()
    _, paths, buffers = _remove_buffers(state)
    assert [bytes(b) for b in buffers] == thumbs
    assert ["thumbs", 0] in [list(p) for p in paths]
    with pytest.raises(ValueError, match="2 items but 1 thumbnails"):
        grid.show_batch([{"id": "a"}, {"id": "b"}], [b""])
    with pytest.raises(ValueError, match="item 0 has no 'id'"):
        grid.show_batch([{"caption": "a"}], [b""])


def test_submit_message_calls_back_and_reports_status():
    calls = []

    def on_submit(labels, *, sources, seconds, skipped):
        calls.append((labels, sources, seconds, skipped))
        return "saved"

    grid = LabelGrid(["a", "b"], on_submit=on_submit)
    grid.assignments = {"x0": "a"}
    grid._handle_custom_msg({"type": "submit", "labels": {"x0": "a", "x1": "b"}, "sources": {"x1": "accepted"},
                             "skipped": ["x2"], "seconds": {"x0": 1.5}}, [])
    assert calls == [({"x0": "a", "x1": "b"}, {"x1": "accepted"}, {"x0": 1.5}, ["x2"])]
    assert grid.status == "saved" and grid.busy is False


def test_errors_in_callbacks_are_shown_not_lost():
    def boom(labels, **kw):
        raise ValueError("unknown classes ['c']")

    grid = LabelGrid(["a"], on_submit=boom)
    grid._handle_custom_msg({"type": "submit", "labels": {"x": "c"}}, [])
    assert grid.status == "error: unknown classes ['c']" and grid.busy is False
    LabelGrid(["a"])._handle_custom_msg({"type": "submit", "labels": {}}, [])  # unconnected: no raise


def test_enlarge_answers_with_an_image_buffer(monkeypatch):
    grid = LabelGrid(["a"], image=lambda item_id: (b"IMG-" + item_id.encode(), "image/jpeg"))
    sent = []
    monkeypatch.setattr(grid, "send", lambda content, buffers=None: sent.append((content, buffers)))
    grid._handle_custom_msg({"type": "enlarge", "id": "x7"}, [])
    assert sent == [({"type": "image", "id": "x7", "mime": "image/jpeg"}, [b"IMG-x7"])]


def test_undo_message_calls_back():
    grid = LabelGrid(["a"], on_undo=lambda: "retracted x")
    grid._handle_custom_msg({"type": "undo"}, [])
    assert grid.status == "retracted x"


# ---------------------------------------------------------------------- real browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><style>%s
body { margin: 0; padding: 12px; background: #fff; width: 900px; }</style></head>
<body><div id="app"></div></body></html>"""

MOUNT = """async ({code, state, thumbs}) => {
  const mod = await import(URL.createObjectURL(new Blob([code], {type: "text/javascript"})));
  const handlers = {};
  const model = {
    state, sent: [],
    get(k) { return this.state[k]; }, set(k, v) { this.state[k] = v; }, save_changes() {},
    send(m) { this.sent.push(m); }, on(e, f) { (handlers[e] ||= []).push(f); }, off() {},
  };
  state.thumbs = thumbs.map((b) => { const s = atob(b); const a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return new DataView(a.buffer); });
  mod.default.render({model, el: document.getElementById("app")});
  window.__model = model;
  await Promise.all([...document.images].map((im) => im.decode().catch(() => null)));
}"""


def _session_for_screenshot():
    """A session one round in, so tiles show suggestions (CIFAR-10 subset when ../shared has it)."""
    import numpy as np

    from alwidgets import Pool
    from alwidgets.session import Session

    cifar = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-subset" / "test"
    if cifar.is_dir():
        pool = Pool.from_folder(cifar)
        pool = pool.subset(np.concatenate([np.flatnonzero(pool.targets == c)[:30] for c in range(10)]))
    else:
        pool = Pool.digits()
    s = Session(pool, selector="margin", store=":memory:", budget=200, random_state=3)
    s.label(40)
    s.submit({i: s.classes[pool.targets[pool.index_of(i)]] for i in s.batch})
    s.label(16)
    return s


@pytest.mark.e2e
def test_grid_in_chromium(tmp_path):
    """The bundle runs in a real browser: thumbnails decode, keys label, Enter submits. Saves a screenshot."""
    import base64
    import os

    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        require(False, "playwright is not installed (pip install playwright)")
    s = _session_for_screenshot()
    grid = s.app.grid
    state = {k: getattr(grid, k) for k in ("items", "classes", "keymap", "progress", "status", "busy",
                                           "assignments", "columns", "autofocus")}
    state["status"] = ""
    thumbs = [base64.b64encode(t).decode() for t in grid.thumbs]  # the harness only; the widget sends bytes
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 930, "height": 900}, device_scale_factor=1)
        page.set_content(HARNESS % (_STATIC / "labelgrid.css").read_text())
        page.evaluate(MOUNT, {"code": (_STATIC / "labelgrid.js").read_text(), "state": state, "thumbs": thumbs})
        widths = page.eval_on_selector_all(".alw-tile img", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == 16 and min(widths) > 0           # every blob URL decoded to an image
        page.click(".alw-tile >> nth=0")
        page.keyboard.press("2")
        page.keyboard.press("a")
        page.keyboard.press("Space")
        page.keyboard.press("3")
        page.keyboard.press("z")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("1")
        ids = [it["id"] for it in grid.items]
        got = page.evaluate("window.__model.state.assignments")
        assert got == {ids[0]: s.classes[1], ids[1]: grid.items[1]["suggestion"], ids[4]: s.classes[0]}
        shot = os.environ.get("ALWIDGETS_SCREENSHOT", str(tmp_path / "grid.png"))
        page.locator(".alw-grid").screenshot(path=shot)
        page.keyboard.press("Enter")
        sent = page.evaluate("window.__model.sent")
        assert sent[-1]["type"] == "submit" and sent[-1]["labels"] == got and sent[-1]["skipped"] == [ids[2]]
        browser.close()
    assert Path(shot).stat().st_size > 10_000
