"""LabelGrid on the Python side: the shipped ES module, the key map, the traits and the message protocol."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

from alwidgets.widgets import LabelGrid, build_keymap
from alwidgets.widgets.keymap import ACTION_KEYS, class_keys
from alwidgets.widgets.labelgrid import _STATIC, clip

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the shipped front end
def test_the_esm_is_shipped_as_written_with_no_imports_and_no_build():
    js = (_STATIC / "labelgrid.js").read_text()
    assert "export default { render }" in js
    # no import at all: nothing to bundle, nothing fetched from a CDN
    assert not re.search(r"^\s*import\b|\bimport\s*\(|\brequire\s*\(", js, re.M)
    assert "base64" not in js
    assert (_STATIC / "labelgrid.css").is_file()
    # one copy: no second source in js/, no build script, no bundler
    assert not (ROOT / "js" / "labelgrid.js").exists() and not (ROOT / "js" / "labelgrid.css").exists()
    pkg = json.loads((ROOT / "js" / "package.json").read_text())
    assert "build" not in pkg["scripts"] and "esbuild" not in pkg.get("devDependencies", {})
    assert str(LabelGrid._esm) == js                      # the widget serves this very file


def test_the_js_has_no_key_map_of_its_own():
    js = (_STATIC / "labelgrid.js").read_text()
    assert "DEFAULT_KEYMAP" not in js
    assert not re.search(r"""["']?ArrowLeft["']?\s*:\s*["']left""", js)   # no key -> action table
    assert not re.search(r"""["']\d["']\s*:\s*["']class:""", js)


# ---------------------------------------------------------------------- the key map
def test_digit_class_names_are_their_keys():
    km = build_keymap([str(d) for d in range(10)])
    assert {k: km[k] for k in "0123456789"} == {str(d): f"class:{d + 1}" for d in range(10)}
    # some digit names: digits are never positional, so no key labels a class other than its name
    km = build_keymap(["1", "2", "3", "other"])
    assert km["1"] == "class:1" and km["3"] == "class:3" and "4" not in km and "0" not in km


def test_other_names_get_positional_digits_and_letter_names_their_letter():
    km = build_keymap(["cat", "dog", "bird"])
    assert (km["1"], km["2"], km["3"]) == ("class:1", "class:2", "class:3") and "4" not in km
    assert build_keymap([f"c{i}" for i in range(12)])["0"] == "class:10"
    km = build_keymap(["a", "b", "x", "long name"])
    assert km["a"] == "class:1" and km["x"] == "class:3"      # the class takes 'a' from accept
    assert "accept" not in km.values()
    assert km["4"] == "class:4" and km["z"] == "undo" and km["Enter"] == "submit"
    assert class_keys(["<b>", "é"]) == {"1": 1, "2": 2, "é": 2}  # one visible character only


def test_keymap_changes_and_errors():
    km = build_keymap(["a1", "b1"], {"q": "class:2", "z": None})
    assert km["q"] == "class:2" and "z" not in km and km["Backspace"] == "undo"
    assert set(ACTION_KEYS) - {"z"} <= set(km)
    with pytest.raises(ValueError, match=r"keymap\['x'\] = 'jump' is not an action"):
        build_keymap(["a1"], {"x": "jump"})
    with pytest.raises(ValueError, match=r"keymap\['x'\] = 'class:3': there are only 2 classes"):
        build_keymap(["a1", "b1"], {"x": "class:3"})
    with pytest.raises(ValueError, match="class:N"):
        build_keymap(["a1"], {"x": "class:0"})
    with pytest.raises(ValueError, match="KeyboardEvent.key"):
        build_keymap(["a1"], {"": "skip"})
    with pytest.raises(TypeError, match="keymap must be a dict"):
        build_keymap(["a1"], [("q", "skip")])


def test_the_grid_sends_the_whole_map_and_validates_edits():
    grid = LabelGrid(["0", "1", "2"], keymap={"s": "submit"})
    assert grid.keymap == build_keymap(["0", "1", "2"], {"s": "submit"})
    with pytest.raises(traitlets.TraitError, match="there are only 3 classes"):
        grid.keymap = {"q": "class:4"}


def test_the_js_tests_use_the_maps_python_sends():
    """js/test/keymaps.json is what build_keymap gives (regenerate: python js/test/keymaps.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("keymaps", ROOT / "js" / "test" / "keymaps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "js" / "test" / "keymaps.json").read_text(encoding="utf-8") == mod.text(), \
        "stale js/test/keymaps.json: run python js/test/keymaps.py"


# ---------------------------------------------------------------------- items and their bytes
def _items(n=3):
    return [{"id": f"x{i}", "caption": "<b>x</b>", "thumb": b"\xff\xd8" + bytes([i]) * 50} for i in range(n)]


def test_each_item_carries_its_thumbnail_as_a_binary_buffer():
    grid = LabelGrid(["a", "b"])
    grid.items = _items()
    state = grid.get_state()
    stripped, paths, buffers = _remove_buffers(state)
    assert [list(p) for p in paths] == [["items", i, "thumb"] for i in range(3)]
    assert [bytes(b) for b in buffers] == [it["thumb"] for it in _items()]
    json.dumps(stripped)  # everything else is JSON
    assert "thumbs" not in state


def test_items_are_validated():
    grid = LabelGrid(["a"])
    with pytest.raises(traitlets.TraitError, match=r"items\[0\] has no 'id'"):
        grid.items = [{"caption": "a", "thumb": b""}]
    with pytest.raises(traitlets.TraitError, match="id 'x' is repeated"):
        grid.items = [{"id": "x"}, {"id": "x"}]
    with pytest.raises(traitlets.TraitError, match="'thumb' must be bytes, got str"):
        grid.items = [{"id": "x", "thumb": "aGVsbG8="}]
    with pytest.raises(traitlets.TraitError, match="'caption' must be a string"):
        grid.items = [{"id": "x", "caption": 3}]
    grid.items = [{"id": "x", "thumb": memoryview(b"ab")}]
    assert grid.items[0]["thumb"] == b"ab" and grid.items[0]["error"] is None


def test_error_is_structured():
    grid = LabelGrid(["a"])
    grid.error = {"kind": "submit", "message": "locked"}
    with pytest.raises(traitlets.TraitError):
        grid.error = {"message": "no kind"}


# ---------------------------------------------------------------------- messages
class Recorder:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def __call__(self, labels, *, sources, seconds, skipped):
        self.calls.append((labels, sources, seconds, skipped))
        if self.fail:
            raise self.fail


def _grid(on_submit=None, **kw):
    grid = LabelGrid(["a", "b"], on_submit=on_submit, **kw)
    grid.items = _items()
    grid.batch = 4
    return grid


def test_a_submit_is_checked_then_forwarded():
    rec = Recorder()
    grid = _grid(rec)
    grid._handle_custom_msg({"type": "submit", "batch": 4, "labels": {"x0": "a", "x1": "b"},
                             "sources": {"x1": "accepted"}, "skipped": ["x2"],
                             "seconds": {"x0": 1.5, "x1": float("nan"), "x2": -1}}, [])
    assert rec.calls == [({"x0": "a", "x1": "b"}, {"x1": "accepted"}, {"x0": 1.5}, ["x2"])]
    assert grid.error == {} and grid.busy is False


@pytest.mark.parametrize("content, match", [
    ({"labels": {"elsewhere": "a"}}, "labels names 1 item.* not in this batch, e.g. 'elsewhere'"),
    ({"labels": {"x0": "c"}}, "unknown class"),
    ({"labels": {"x0": ["a"]}}, "unknown class"),
    ({"labels": [["x0", "a"]]}, "labels must be a mapping"),
    ({"skipped": "x0"}, "skipped must be a list"),
    ({"skipped": ["x9"]}, "skipped names 1 item"),
    ({"sources": {"x0": "robot"}}, "sources must be 'human' or 'accepted'"),
    ({"batch": 3}, "this submit is for batch 3, but batch 4 is shown"),
    ({"batch": None}, "this submit is for batch None"),
])
def test_a_bad_submit_forwards_nothing_and_says_why(content, match):
    rec = Recorder()
    grid = _grid(rec)
    grid._handle_custom_msg({"type": "submit", "batch": 4, **content}, [])
    assert rec.calls == []
    assert grid.error["kind"] == "message" and re.search(match, grid.error["message"]), grid.error
    assert "nothing was saved" in grid.error["message"] and grid.busy is False


def test_a_huge_class_name_is_not_echoed_whole():
    grid = _grid(Recorder())
    huge = "x" * 50_000_000
    grid._handle_custom_msg({"type": "submit", "batch": 4, "labels": {"x0": huge}}, [])
    assert len(grid.error["message"]) < 400 and "50,000,000 characters" in grid.error["message"]
    grid._handle_custom_msg({"type": "submit", "batch": 4, "labels": {huge: "a"}}, [])
    assert len(grid.error["message"]) < 400
    assert clip("abc") == "abc" and clip(None) == "None"


def test_a_failing_callback_is_shown_and_the_batch_kept():
    grid = _grid(Recorder(fail=ValueError("the store is read-only")))
    grid._handle_custom_msg({"type": "submit", "batch": 4, "labels": {"x0": "a"}}, [])
    assert grid.error == {"kind": "submit", "message": "ValueError: the store is read-only"}
    assert len(grid.items) == 3 and grid.busy is False
    unconnected = LabelGrid(["a"])
    unconnected._handle_custom_msg({"type": "submit", "batch": 0, "labels": {}}, [])
    assert "not connected" in unconnected.error["message"]


def test_undo_message_calls_back():
    grid = _grid(on_undo=lambda: "retracted x")
    grid._handle_custom_msg({"type": "undo"}, [])
    assert grid.status == "retracted x"


def test_enlarge_is_an_anywidget_command(monkeypatch):
    grid = _grid(image=lambda item_id: (b"IMG-" + item_id.encode(), "image/png"))
    sent = []
    monkeypatch.setattr(grid, "send", lambda content, buffers=None: sent.append((content, buffers)))
    grid._handle_custom_msg({"kind": "anywidget-command", "id": "r1", "name": "enlarge", "msg": {"id": "x1"}}, [])
    assert sent == [({"id": "r1", "kind": "anywidget-command-response",
                      "response": {"id": "x1", "mime": "image/png"}}, [b"IMG-x1"])]
    sent.clear()
    grid._handle_custom_msg({"kind": "anywidget-command", "id": "r2", "name": "enlarge", "msg": {"id": "secret"}}, [])
    assert sent[0][0]["response"] == {"error": "secret is not an item of the shown batch"} and sent[0][1] == []


@pytest.mark.parametrize("content", [
    {"kind": "anywidget-command", "id": "r", "name": "nope", "msg": {}},
    {"kind": "anywidget-command", "name": "enlarge", "msg": {}},
    {"kind": "anywidget-command", "id": ["r"], "name": "enlarge", "msg": {}},
    {"kind": "anywidget-command", "id": "r" * 1000, "name": "enlarge", "msg": {}},
    {"kind": "anywidget-command", "id": "r", "name": "enlarge"},
])
def test_malformed_commands_are_dropped_not_raised(content, monkeypatch, caplog):
    grid = _grid(image=lambda item_id: (b"", "image/png"))
    sent = []
    monkeypatch.setattr(grid, "send", lambda c, buffers=None: sent.append(c))
    grid._handle_custom_msg(content, [])
    assert sent == []
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]


def test_an_unreadable_image_answers_an_error():
    def boom(item_id):
        raise OSError("truncated file")

    grid = _grid(image=boom)
    assert grid.enlarge({"id": "x0"}, []) == ({"id": "x0", "error": "truncated file"}, [])
    assert grid.enlarge("x0", [])[0]["error"].endswith("not an item of the shown batch")
