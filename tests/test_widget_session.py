"""session.label() with the real headless Session: the binding end to end (no browser).

The grid is driven the way the browser drives it: custom messages through
``_handle_custom_msg`` and anywidget commands; the Session only through its public API.
"""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alwidgets import Pool, Session

from test_widget_view import payloads


def _truth(s, ids):
    return {i: s.classes[s.pool.targets[s.pool.index_of(i)]] for i in ids}


def submit(grid, labels, **kw):
    grid._handle_custom_msg({"type": "submit", "batch": grid.batch, "labels": labels, **kw}, [])


@pytest.fixture
def session():
    s = Session(Pool.digits(), selector="margin", store=":memory:", random_state=0)
    yield s
    s.close()


def test_label_builds_the_widget_from_the_public_api(session):
    app = session.label(6)
    grid = app.grid
    assert "alwidgets.widgets.view" in sys.modules
    assert [it["id"] for it in grid.items] == session.batch.ids
    assert grid.items[0]["caption"] == session.caption(session.batch.ids[0])
    assert grid.items[0]["thumb"] == session.thumbnail(session.batch.ids[0])[0]
    assert grid.classes == [str(d) for d in range(10)]
    assert grid.keymap["6"] == "class:7"               # digit classes: the key is the class name
    assert grid.progress["pool_size"] == 1797 and grid.error == {}
    assert session.label(6) is app


def test_enter_saves_and_says_what_next(session):
    grid = session.label(8).grid
    ids = [it["id"] for it in grid.items]
    submit(grid, _truth(session, ids[:6]), skipped=ids[6:7], sources={ids[0]: "accepted"},
           seconds={ids[1]: 2.5})
    df = session.labels_df()
    assert dict(zip(df["item_id"], df["label"])) == _truth(session, ids[:6])
    assert df.set_index("item_id").loc[ids[0], "source"] == "accepted"
    assert grid.items == [] and grid.notice.startswith("saved 6 labels — run session.label() again")
    assert grid.status.startswith("saved 6 labels") and "±" in grid.status
    assert grid.progress["pool_labelled"] == 6 and grid.progress["accuracy"] is not None
    app = session.label(4)
    assert len(app.grid.items) == 4 and ids[6] not in [it["id"] for it in app.grid.items]  # skipped stays out


def test_continuous_labels_batch_after_batch_and_plots_follow(session):
    app = session.label(5, continuous=True)
    grid = app.grid
    seen = []
    for _ in range(3):
        ids = [it["id"] for it in grid.items]
        seen += ids
        submit(grid, _truth(session, ids))
        assert grid.error == {}
    assert len(set(seen)) == 15 and len(grid.items) == 5 and grid.notice == ""
    assert app.trace("session").x == (5, 10, 15)
    assert sum(app.trace("balance").y) == 15
    assert len(session.history) == 3


@pytest.mark.filterwarnings("ignore:could not release:RuntimeWarning")
def test_a_refused_submit_shows_the_error_and_keeps_the_batch(session):
    grid = session.label(4).grid
    ids = [it["id"] for it in grid.items]
    other = next(i for i in session.pool.ids if i not in ids)
    batch = grid.batch
    # the grid refuses an id outside the batch itself; a class the session refuses comes back as an error
    submit(grid, {other: "3"})
    assert grid.error["kind"] == "message" and session.labels_df().empty
    session.store.close()                               # the store is gone: submit raises, nothing saved
    submit(grid, _truth(session, ids))
    assert grid.error["kind"] == "submit" and grid.error["message"]
    assert [it["id"] for it in grid.items] == ids and grid.batch == batch and grid.busy is False


def test_a_submit_from_code_updates_the_grid(session):
    grid = session.label(4).grid
    ids = list(session.batch.ids)
    session.submit(_truth(session, ids[:2]))
    assert [it["id"] for it in grid.items] == ids[2:]
    session.submit(_truth(session, ids[2:]))
    assert grid.items == [] and "session.label() again" in grid.notice


def test_undo_from_the_grid(session):
    grid = session.label(3).grid
    ids = [it["id"] for it in grid.items]
    submit(grid, _truth(session, ids))
    grid._handle_custom_msg({"type": "undo"}, [])
    assert grid.status == f"retracted the label of {ids[-1]}"
    assert grid.progress["pool_labelled"] == 2


def test_enlarge_command_answers_with_the_session_image(session, monkeypatch):
    grid = session.label(2).grid
    sent = []
    monkeypatch.setattr(grid, "send", lambda content, buffers=None: sent.append((content, buffers)))
    item = grid.items[1]["id"]
    grid._handle_custom_msg({"kind": "anywidget-command", "id": "q1", "name": "enlarge", "msg": {"id": item}}, [])
    (content, buffers), = sent
    assert content["response"]["id"] == item and buffers == [session.image(item)[0]]


def test_captions_are_paths_relative_to_the_pool_root(tmp_path):
    for sub in ("cat", "dog"):
        (tmp_path / sub).mkdir()
        for i in range(2):
            Image.new("RGB", (12, 12), (40 * i, 90, 200)).save(tmp_path / sub / f"0070{i}.jpg")
    s = Session(Pool.from_folder(tmp_path), selector="random", store=":memory:",
                embeddings=np.random.default_rng(0).random((4, 3)))
    grid = s.label(4).grid
    assert sorted(it["caption"] for it in grid.items) == ["cat/00700.jpg", "cat/00701.jpg",
                                                          "dog/00700.jpg", "dog/00701.jpg"]
    s.close()


def test_unreadable_image_is_a_placeholder_tile(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    data = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "broken.jpg").write_bytes(data[: int(len(data) * 0.6)])  # a valid header, truncated data
    s = Session(Pool.from_folder(tmp_path, on_error="skip"), classes=["a", "b"], selector="random",
                store=":memory:", embeddings=np.random.default_rng(0).random((4, 3)))
    grid = s.label(4).grid
    broken = [it for it in grid.items if it["error"]]
    assert [it["caption"] for it in broken] == ["broken.jpg"] and broken[0]["thumb"] == b""
    assert grid.error["kind"] == "unreadable" and "broken.jpg" in grid.error["message"]
    submit(grid, {it["id"]: "a" for it in grid.items if not it["error"]}, skipped=[broken[0]["id"]])
    assert grid.error == {} and len(s.labels_df()) == 3
    s.close()


# ---------------------------------------------------------------------- fuzz with the real Session
_REAL: dict = {}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_messages_leave_the_real_session_able_to_label(data, caplog):
    """Issue 13: random submit/undo/enlarge payloads never raise out of the handler, never store
    an id outside the batch shown, and the session labels normally afterwards."""
    if "s" not in _REAL or len(_REAL["s"].labels_df()) > 1500:
        _REAL["s"] = Session(Pool.digits(), selector="random", store=":memory:", random_state=1)
        _REAL["shown"] = set()
        _REAL["s"].label(4, continuous=True).grid.send = lambda *a, **k: None
    s, shown = _REAL["s"], _REAL["shown"]
    grid = s.label(4, continuous=True).grid
    caplog.set_level(logging.WARNING)
    for _ in range(data.draw(st.integers(1, 5))):
        ids = [it["id"] for it in grid.items] or [s.pool.ids[0]]
        msg = data.draw(payloads(ids, s.classes))
        if isinstance(msg, dict) and msg.get("batch") == "CURRENT":
            msg["batch"] = grid.batch
        shown |= {it["id"] for it in grid.items}
        grid._handle_custom_msg(msg, [])
        assert set(s.labels_df(history=True)["item_id"]) <= shown and grid.busy is False
    raised = [r for r in caplog.records if "Exception in callback" in r.getMessage() or r.levelno >= logging.ERROR]
    assert not raised, raised[0].getMessage()
    grid = s.label(3, continuous=True).grid
    ids = [it["id"] for it in grid.items]
    shown |= set(ids)
    submit(grid, _truth(s, ids))
    assert grid.error == {}
    current = dict(zip(s.labels_df()["item_id"], s.labels_df()["label"]))
    assert all(current[i] == v for i, v in _truth(s, ids).items())
