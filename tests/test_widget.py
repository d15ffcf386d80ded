"""LabelGrid on the Python side: traits, key map, binary thumbnails, and the message protocol."""
from __future__ import annotations

import re

import pytest
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
