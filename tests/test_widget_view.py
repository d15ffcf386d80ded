"""SessionView: the widget bound to a Session through its public API only.

``FakeSession`` implements exactly that API (next_batch, submit, undo, on/off, the
read-only state, thumbnail/caption/image) the way :class:`alwidgets.Session` does,
so these tests pin what the view relies on; ``tests/test_widget_session.py`` runs
the same paths against the real Session.
"""
from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

from alwidgets.pool import ImageReadError
from alwidgets.session import Batch
from alwidgets.widgets import SessionView
from alwidgets.widgets.view import NEXT_HINT


def _png(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class FakeSession:
    """The public API SessionView uses, over ``n`` items with tiny PNG thumbnails."""

    def __init__(self, n=20, classes=("cat", "dog", "<b>bird</b>"), *, unreadable=(), keymap=None,
                 calibration=False, earlier_rounds=0):
        self.classes = list(classes)
        self.keymap, self.calibration, self.continuous = keymap, calibration, False
        self.session_id = "now"
        self.ids = [f"item-{i:02d}" for i in range(n)]
        self.unreadable = set(unreadable)
        self.saved: dict[str, str] = {}
        self.order: list[str] = []
        self.skipped: set[str] = set()
        self.rounds = [{"round": r + 1, "strategy": "random", "n_labels": 4 * (r + 1), "n_added": 4,
                        "accuracy": 0.3 + 0.1 * r, "accuracy_std": 0.05, "session_id": "before"}
                       for r in range(earlier_rounds)]
        self.batch = None
        self.metrics_ = None
        self.fail_next = None
        self.submits = []
        self.outside_calls = 0
        self._listeners = {"batch": [], "change": [], "baseline": []}

    # events
    def on(self, event, cb):
        self._listeners[event].append(cb)

    def off(self, event, cb):
        self._listeners[event].remove(cb)

    def _emit(self, event, payload):
        for cb in list(self._listeners[event]):
            cb(payload)

    # the loop
    def next_batch(self, n=16):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        free = [i for i in self.ids if i not in self.saved and i not in self.skipped]
        ids = free[:n]
        k = len(self.saved)
        self.batch = Batch(ids, np.array([self.ids.index(i) for i in ids], np.int64),
                           [self.classes[j % len(self.classes)] if k else None for j in range(len(ids))],
                           [0.5 if k else None for _ in ids], "random", {},
                           "" if len(ids) == n else "every item is labelled" if not free else "no more items")
        self._emit("batch", self.batch)
        return self.batch

    def submit(self, labels, *, sources=None, seconds=None, skipped=(), close=False):
        if not isinstance(labels, dict):
            raise TypeError("labels must be a dict")
        shown = set(self.batch.ids) if self.batch is not None else set()
        outside = [k for k in [*labels, *skipped] if k not in shown]
        self.outside_calls += bool(outside)  # the view must never forward these
        if outside:
            raise ValueError(f"not in the current batch: item ids {outside[:5]}")
        bad = [v for v in labels.values() if v not in self.classes]
        if bad:
            raise ValueError(f"unknown classes {bad[:3]}")
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e
        self.submits.append(dict(labels))
        self.saved.update(labels)
        self.order.extend(labels)
        self.skipped.update(skipped)
        done = set(labels) | set(skipped)
        keep = [j for j, k in enumerate(self.batch.ids) if k not in done]
        self.batch = Batch([self.batch.ids[j] for j in keep], self.batch.indices[keep],
                           [self.batch.suggestions[j] for j in keep], [self.batch.confidences[j] for j in keep],
                           self.batch.strategy, self.batch.info)
        n = len(self.saved)
        self.metrics_ = {"n_labels": n, "accuracy": 0.5 if n > 1 else None, "accuracy_std": 0.1 if n > 1 else None,
                         "source_text": f"cross-validated on {n} labelled items",
                         "per_class": {c: (0.0 if c == "cat" else None) for c in self.classes}}
        if close or not len(self.batch):  # the round ends; the untouched rest goes back to the pool
            self.rounds.append({"round": len(self.rounds) + 1, "strategy": "random", "n_labels": n,
                                "n_added": len(labels), "accuracy": self.metrics_["accuracy"],
                                "accuracy_std": self.metrics_["accuracy_std"], "session_id": self.session_id})
        if close:
            self.batch = None
        msg = f"saved {len(labels)} labels · accuracy 50% ± 10"
        self._emit("change", msg)
        return msg

    def undo(self):
        if not self.order:
            return "nothing to undo"
        item = self.order.pop()
        del self.saved[item]
        msg = f"retracted the label of {item}"
        self._emit("change", msg)
        return msg

    # state
    @property
    def history(self):
        return pd.DataFrame(self.rounds, columns=["round", "strategy", "n_labels", "n_added", "accuracy",
                                                  "accuracy_std", "session_id"])

    def label_counts(self):
        return np.array([sum(v == c for v in self.saved.values()) for c in self.classes])

    def progress(self):
        return {"pool_labelled": len(self.saved), "pool_size": len(self.ids), "budget": None}

    # items
    def thumbnail(self, item_id, size=None):
        if item_id in self.unreadable:
            raise ImageReadError(item_id, f"/data/{item_id}.png", "truncated file")
        return _png(self.ids.index(item_id)), "image/png", (8, 8)

    def caption(self, item_id):
        return f"sub/{item_id}.png"

    def image(self, item_id):
        return _png(self.ids.index(item_id), 64), "image/png"


def _truth(s, ids):
    return {i: s.classes[int(i[-2:]) % len(s.classes)] for i in ids}


def submit(grid, labels, **kw):
    grid._handle_custom_msg({"type": "submit", "batch": grid.batch, "labels": labels, **kw}, [])


# ---------------------------------------------------------------------- showing a batch
def test_show_picks_a_batch_and_each_tile_carries_its_bytes():
    s = FakeSession()
    view = SessionView(s)
    app = view.show(4)
    grid = app.grid
    assert [it["id"] for it in grid.items] == s.batch.ids == s.ids[:4]
    assert grid.items[1]["caption"] == "sub/item-01.png"
    assert grid.items[1]["thumb"] == s.thumbnail("item-01")[0] and grid.items[1]["mime"] == "image/png"
    _, paths, buffers = _remove_buffers(grid.get_state())
    assert [list(p) for p in paths] == [["items", i, "thumb"] for i in range(4)]
    assert grid.progress["pool_size"] == 20 and grid.notice == "" and grid.error == {}
    assert grid.keymap["1"] == "class:1"
    assert view.show(4) is app                      # one widget per view


def test_digit_classes_get_their_own_keys():
    s = FakeSession(classes=[str(d) for d in range(10)])
    grid = SessionView(s).show(2).grid
    assert grid.keymap["6"] == "class:7" and grid.classes[6] == "6"


def test_a_bad_n_is_the_sessions_error():
    with pytest.raises(ValueError, match="positive integer"):
        SessionView(FakeSession()).show(0)


def test_unreadable_items_are_placeholders_and_a_structured_error():
    s = FakeSession(unreadable={"item-01"})
    grid = SessionView(s).show(3).grid
    assert grid.items[1]["error"] == "truncated file" and grid.items[1]["thumb"] == b""
    assert grid.error["kind"] == "unreadable" and "item-01 (truncated file)" in grid.error["message"]
    assert not grid.status.startswith("error")


# ---------------------------------------------------------------------- Enter
def test_enter_without_continuous_says_what_happened_and_what_to_run():
    s = FakeSession()
    view = SessionView(s)
    grid = view.show(4).grid
    ids = [it["id"] for it in grid.items]
    submit(grid, _truth(s, ids[:3]), skipped=[ids[3]])
    assert s.saved == _truth(s, ids[:3]) and s.skipped == {ids[3]}
    assert grid.items == [] and grid.error == {} and grid.busy is False
    assert grid.notice == f"saved 3 labels — {NEXT_HINT}"
    assert grid.status.startswith("saved 3 labels")
    assert grid.progress["pool_labelled"] == 3
    view.show(4)
    assert [it["id"] for it in grid.items] == s.ids[4:8] and grid.notice == ""


def test_enter_ends_the_batch_when_the_session_can():
    s = FakeSession()
    grid = SessionView(s).show(4).grid
    submit(grid, _truth(s, s.ids[:2]))               # two tiles left untouched
    assert s.batch is None and s.history["n_labels"].tolist() == [2]

    class Older(FakeSession):                        # a session whose submit has no close=
        def submit(self, labels, *, sources=None, seconds=None, skipped=()):
            return super().submit(labels, sources=sources, seconds=seconds, skipped=skipped)

    s = Older()
    grid = SessionView(s).show(4).grid
    submit(grid, _truth(s, s.ids[:2]))
    assert grid.error == {} and grid.items == [] and NEXT_HINT in grid.notice
    assert len(s.batch) == 2 and s.history.empty      # kept until the next batch


def test_enter_with_continuous_shows_the_next_batch():
    s = FakeSession(n=6)
    grid = SessionView(s).show(4, continuous=True).grid
    first = grid.batch
    submit(grid, _truth(s, s.ids[:4]))
    assert [it["id"] for it in grid.items] == s.ids[4:6] and grid.batch > first
    assert grid.notice == ""                         # 2 left of 4 asked: tiles, no notice
    submit(grid, _truth(s, s.ids[4:6]))
    assert grid.items == [] and grid.notice == "every item is labelled"


def test_a_refused_submit_keeps_the_batch_for_a_retry():
    from alwidgets.store import StoreError

    s = FakeSession()
    grid = SessionView(s).show(3).grid
    s.fail_next = StoreError("database is locked")
    batch = grid.batch
    submit(grid, _truth(s, s.ids[:3]))
    assert grid.error == {"kind": "submit", "message": "database is locked"}
    assert [it["id"] for it in grid.items] == s.ids[:3] and grid.batch == batch and grid.busy is False
    assert s.saved == {}
    submit(grid, _truth(s, s.ids[:3]))               # the retry goes through and clears the error
    assert s.saved == _truth(s, s.ids[:3]) and grid.error == {} and grid.items == []


def test_the_same_batch_cannot_be_submitted_twice():
    s = FakeSession()
    grid = SessionView(s).show(2).grid
    old = grid.batch
    submit(grid, _truth(s, s.ids[:2]))
    grid._handle_custom_msg({"type": "submit", "batch": old, "labels": _truth(s, s.ids[:2])}, [])
    assert len(s.submits) == 1 and grid.error["kind"] == "message" and "already submitted" in grid.error["message"]


def test_a_submit_from_code_updates_the_grid():
    s = FakeSession()
    grid = SessionView(s).show(4).grid
    s.submit(_truth(s, s.ids[:2]))                   # part of the batch, from another cell
    assert [it["id"] for it in grid.items] == s.ids[2:4]
    assert grid.status.startswith("saved 2 labels")
    s.submit(_truth(s, s.ids[2:4]))
    assert grid.items == [] and NEXT_HINT in grid.notice


def test_undo_from_the_grid_and_from_code():
    s = FakeSession()
    view = SessionView(s)
    grid = view.show(2).grid
    submit(grid, _truth(s, s.ids[:2]))
    grid._handle_custom_msg({"type": "undo"}, [])
    assert grid.status == "retracted the label of item-01" and "item-01" not in s.saved
    s.undo()
    assert grid.status == "retracted the label of item-00" and grid.progress["pool_labelled"] == 0


def test_enlarge_goes_to_session_image_for_shown_items_only(monkeypatch):
    s = FakeSession()
    grid = SessionView(s).show(2).grid
    resp, bufs = grid.enlarge({"id": "item-01"}, [])
    assert resp == {"id": "item-01", "mime": "image/png"} and bufs == [s.image("item-01")[0]]
    assert "error" in grid.enlarge({"id": "item-05"}, [])[0]


def test_close_stops_following_the_session():
    s = FakeSession()
    view = SessionView(s)
    grid = view.show(2).grid
    view.close()
    s.submit(_truth(s, s.ids[:2]))
    assert len(grid.items) == 2


# ---------------------------------------------------------------------- the plots
def test_plots_follow_the_session():
    s = FakeSession(earlier_rounds=2)
    app = SessionView(s).show(4)
    assert app.trace("earlier").x == (4, 8) and app.trace("session").x == ()
    submit(app.grid, _truth(s, s.ids[:4]))
    assert app.trace("session").x == (4,) and app.trace("session").error_y.array == (0.1,)
    assert app.trace("balance").y == (2, 1, 1)
    # a class at 0 % is a bar at 0; a class with no data is marked "no data"
    assert app.trace("per_class").y == (0.0, None, None)
    assert app.trace("per_class_missing").y == (None, 1.0, 1.0)
    title = app.figures["accuracy"].layout.title.text
    assert "50% ± 10" in title


def test_the_figure_widgets_start_empty_and_are_filled_by_messages():
    """Their traces and layout reach the browser as add-traces/relayout messages, which every
    view follows (an initial-state figure can render before its data arrives: an empty plot)."""
    import plotly.graph_objects as go

    s = FakeSession()
    app = SessionView(s).show(4)
    for name, fig in app.figures.items():
        assert fig._widget_data == [] and "title" not in fig._widget_layout, name
        assert fig.data and fig.layout.title.text.startswith(plots_title(name))
    assert isinstance(app.figures["accuracy"], go.FigureWidget)


def plots_title(name):
    from alwidgets.plots import PANEL_TITLES

    return PANEL_TITLES[name]


def test_the_baseline_event_is_drawn():
    s = FakeSession()
    app = SessionView(s).show(2)
    s._emit("baseline", pd.DataFrame({"n_labels": [10, 20], "mean": [0.3, 0.5], "std": [0.05, 0.04]}))
    b = app.trace("baseline")
    assert b.visible and b.x == (10.0, 20.0) and b.y == (0.3, 0.5)


# ---------------------------------------------------------------------- fuzz (issue 13, defect 11)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=12)


@st.composite
def payloads(draw, ids, classes):
    key = st.sampled_from(ids) | st.text(max_size=12)
    value = st.sampled_from(classes) | JSON
    kind = draw(st.sampled_from(["plausible", "submit", "undo", "enlarge", "other"]))
    if kind == "plausible":  # well formed but for a few ids or names: what a buggy or hostile front end sends
        return {"type": "submit", "batch": "CURRENT", "labels": draw(st.dictionaries(key, st.sampled_from(classes),
                                                                                     max_size=4)),
                "skipped": draw(st.lists(key, max_size=2)),
                "sources": draw(st.dictionaries(key, st.sampled_from(["human", "accepted"]), max_size=2))}
    msg = {"type": kind}
    if kind == "submit":
        for field, strat in (("batch", st.just("CURRENT") | JSON),
                             ("labels", st.dictionaries(key, value, max_size=4) | JSON),
                             ("sources", st.dictionaries(key, st.sampled_from(["human", "accepted"]) | JSON,
                                                         max_size=3) | JSON),
                             ("skipped", st.lists(key, max_size=3) | JSON),
                             ("seconds", st.dictionaries(key, st.floats() | JSON, max_size=3) | JSON)):
            if draw(st.booleans()):
                msg[field] = draw(strat)
    return msg


_FUZZ: dict = {}


def _fuzz_view():
    """One long-lived session and view for all examples (building the plots takes ~0.7 s):
    like a notebook that receives message after message. A fresh one once the pool runs low."""
    s = _FUZZ.get("session")
    if s is None or len(s.saved) + len(s.skipped) > len(s.ids) - 20:
        s = _FUZZ["session"] = FakeSession(n=600)
        _FUZZ["view"] = SessionView(s)
        _FUZZ["view"].show(4, continuous=True).grid.send = lambda *a, **k: None
        _FUZZ["shown"] = set(s.batch.ids)
    return s, _FUZZ["view"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_messages_never_raise_never_store_outside_the_batch(data, caplog):
    s, view = _fuzz_view()
    grid = view.grid
    shown = _FUZZ["shown"]
    caplog.set_level(logging.WARNING)
    for _ in range(data.draw(st.integers(1, 6))):
        ids = [it["id"] for it in grid.items] or ["item-00"]
        msg = data.draw(payloads(ids, s.classes))
        if isinstance(msg, dict) and msg.get("batch") == "CURRENT":
            msg["batch"] = grid.batch
        shown |= {it["id"] for it in grid.items}
        grid._handle_custom_msg(msg, [])
        assert s.outside_calls == 0 and set(s.saved) <= shown and grid.busy is False
        assert len(grid.error.get("message", "")) <= 1000
    raised = [r for r in caplog.records if "Exception in callback" in r.getMessage() or r.levelno >= logging.ERROR]
    assert not raised, raised[0].getMessage()
    # the session can still label through the grid
    view.show(2, continuous=True)
    shown |= set(s.batch.ids)
    ids = [it["id"] for it in grid.items]
    submit(grid, _truth(s, ids))
    shown |= {it["id"] for it in grid.items}
    assert grid.error == {} and all(s.saved[i] == _truth(s, ids)[i] for i in ids)
