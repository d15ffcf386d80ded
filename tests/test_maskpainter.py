"""MaskPainter's Python side: what the browser sends is checked before anything is stored, and the
batch view (MaskSessionView) moves through a batch, undoes after a submit and takes corrections."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from alwidgets.segmentation import SegmentationTask, mask_to_png
from alwidgets.widgets.keymap import build_painter_keymap
from alwidgets.widgets.maskpainter import (MAX_IMAGE_PIXELS, InMemoryMasks, MaskPainter, PainterImageError,
                                           browser_image)
from alwidgets.widgets.view import MaskSessionView, SessionView, view_for


def _png(w, h, mode="L", value=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), value).save(buf, "PNG")
    return buf.getvalue()


def _decoded(png: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(png)))


def _painter():
    stored = []
    p = MaskPainter(["road", "<b>car</b>"], ignore_index=255,
                    on_submit=lambda item, m, seconds: stored.append((item, m, seconds)) or f"saved {seconds or 0:.0f}s")
    p.set_image("img", np.zeros((6, 8, 3), np.uint8))
    return p, stored


def _send(p, buffers=(), **content):
    msg = {"type": "submit", "batch": p.batch, "item": p.current, "seconds": 2.0, **content}
    p._handle_message(p, msg, list(buffers))


# ---------------------------------------------------------------------------------- the widget's checks
def test_a_good_mask_reaches_on_submit_with_its_seconds():
    p, stored = _painter()
    m = np.full((6, 8), 255, np.uint8)
    m[2:4, 1:5] = 1
    ack = p.ack
    _send(p, [mask_to_png(m)], seconds=12.5)
    assert len(stored) == 1 and stored[0][0] == "img" and stored[0][2] == 12.5
    np.testing.assert_array_equal(stored[0][1], m)
    assert p.status == "saved 12s" and p.error == {} and p.ack == ack + 1


@pytest.mark.parametrize("payload, message", [
    (mask_to_png(np.zeros((6, 9), np.uint8)), r"mask is 9x6 \(WxH\) but the image is 8x6"),
    (_png(8000, 6000), r"mask is 8000x6000 \(WxH\) but the image is 8x6"),
    (mask_to_png(np.full((6, 8), 7, np.uint8)), r"values \[7\] are outside the 2 classes"),
    (_png(8, 6, "RGB"), "8-bit greyscale or palette"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt mask PNG"),
    (mask_to_png(np.zeros((6, 8), np.uint8))[:60], "corrupt mask PNG"),
    (b"not a png", "not a PNG"),
])
def test_bad_payloads_store_nothing_and_say_why(payload, message):
    p, stored = _painter()
    _send(p, [payload])
    assert stored == [] and p.error["kind"] == "mask" and re.search(message, p.error["message"]), p.error
    _send(p, [mask_to_png(np.zeros((6, 8), np.uint8))])              # the next good mask still goes through
    assert len(stored) == 1 and p.error == {}


def test_an_8000x6000_payload_is_refused_from_its_header(monkeypatch):
    from alwidgets.segmentation import data

    def boom(*a, **k):  # the pixels are never decoded
        raise AssertionError("decoded")

    monkeypatch.setattr(data, "mask_from_png", boom)
    p, stored = _painter()
    _send(p, [_png(8000, 6000)])
    assert "8000x6000" in p.error["message"] and stored == []


def test_protocol_errors_name_the_problem():
    p, stored = _painter()
    good = [mask_to_png(np.zeros((6, 8), np.uint8))]
    _send(p, good, batch=p.batch - 1)
    assert p.error["kind"] == "message" and "batch" in p.error["message"]
    _send(p, good, item="elsewhere")
    assert "not an item of the shown batch" in p.error["message"]
    _send(p, [])
    assert "no PNG buffer" in p.error["message"]
    _send(p, good, seconds=float("nan"))
    assert stored[-1][2] is None and p.error == {}               # a bad duration is dropped, the mask kept
    p._handle_message(p, {"type": "open", "batch": p.batch, "item": "img"}, [])
    assert "not connected" in p.error["message"]
    p._handle_message(p, {"type": "something else"}, [])         # not for this handler: ignored
    p._handle_message(p, "junk", [])


def test_callback_errors_are_shown_and_the_widget_survives():
    def refuse(item, mask, seconds):
        raise RuntimeError("database is locked")

    p = MaskPainter(["a", "b"], on_submit=refuse)
    p.set_image("x", np.zeros((2, 3), np.uint8))
    _send(p, [mask_to_png(np.zeros((2, 3), np.uint8))])
    assert p.error == {"kind": "submit", "message": "database is locked"}


def test_construction_and_set_image_checks():
    p, _ = _painter()
    with pytest.raises(PainterImageError, match="8000x6000 pixels is larger than the painter's limit"):
        p.set_image("big", _png(8000, 6000))
    assert (p.current, p.width, p.height) == ("img", 8, 6)       # the shown image is unchanged
    pred = np.ones((6, 8), np.uint8)
    p.set_image("img", np.zeros((6, 8, 3), np.uint8), prediction=pred)
    np.testing.assert_array_equal(_decoded(p.prediction), pred)
    with pytest.raises(ValueError, match="mask is 7x6"):
        p.set_image("img", np.zeros((6, 8, 3), np.uint8), prediction=np.ones((6, 7), np.uint8))
    with pytest.raises(ValueError, match="ignore_index must be an 8-bit value outside 0..1"):
        MaskPainter(["a", "b"], ignore_index=1)
    with pytest.raises(ValueError, match=r"keymap\['q'\] = 'accept' is not an action"):
        MaskPainter(["a", "b"], keymap={"q": "accept"})


def test_painter_keymap():
    km = build_painter_keymap([f"c{i}" for i in range(12)], {"q": "class:12", "Delete": None})
    assert km["1"] == "class:1" and km["0"] == "class:10" and km["q"] == "class:12" and "Delete" not in km
    assert km["Enter"] == "submit" and km["["] == "smaller" and km[" "] == "pan" and km["p"] == "prefill"
    with pytest.raises(ValueError, match="there are only 2 classes"):
        build_painter_keymap(["a", "b"], {"x": "class:3"})


def test_browser_image_sends_files_as_they_are_and_reencodes_the_rest(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 48, 3), np.uint8))
    buf = io.BytesIO()
    rgb.save(buf, "JPEG")
    jpeg = buf.getvalue()
    img = browser_image(jpeg)
    assert (img.data, img.mime, img.width, img.height) == (jpeg, "image/jpeg", 48, 36)
    exif = Image.Exif()
    exif[0x0112] = 6                                             # rotated: the browser would turn it
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    turned = browser_image(buf.getvalue())
    assert turned.mime == "image/png" and (turned.width, turned.height) == (48, 36)
    buf = io.BytesIO()
    rgb.save(buf, "TIFF")
    path = tmp_path / "x.tif"
    path.write_bytes(buf.getvalue())
    assert browser_image(path).mime == "image/png"
    assert browser_image(np.zeros((1200, 1000), np.uint8)).mime == "image/jpeg"
    with pytest.raises(PainterImageError, match="cannot decode"):
        browser_image(b"garbage")
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    with pytest.raises(PainterImageError, match="larger than the painter's limit"):
        browser_image(Image.new("L", (side, side)))


# ---------------------------------------------------------------------------------- the batch view
def _source(n=3, **kw):
    rng = np.random.default_rng(1)
    images = {f"im{i}": rng.integers(0, 255, (6, 8, 3), np.uint8) for i in range(n)}
    return InMemoryMasks(images, ["road", "car"], ignore_index=255, **kw)


def _submit_current(p, value, seconds=1.0):
    m = np.full((p.height, p.width), value, np.uint8)
    _send(p, [mask_to_png(m)], seconds=seconds)
    return m


def test_enter_saves_and_moves_to_the_next_image_with_its_prediction():
    pred = np.ones((6, 8), np.uint8)
    src = _source(predictions={"im1": pred})
    p = src.label(3)
    assert p.current == "im0" and [it["state"] for it in p.items] == ["todo"] * 3 and p.prediction == b""
    assert all(it["thumb"][:2] == b"\xff\xd8" for it in p.items)  # JPEG thumbnails in the strip
    m0 = _submit_current(p, 0, seconds=7.5)
    assert p.current == "im1" and [it["state"] for it in p.items] == ["done", "todo", "todo"]
    np.testing.assert_array_equal(src.masks["im0"], m0)
    assert src.seconds == {"im0": 7.5} and p.status == "saved 1 mask"
    np.testing.assert_array_equal(_decoded(p.prediction), pred)
    p._handle_message(p, {"type": "skip", "batch": p.batch, "item": "im1"}, [])
    assert p.current == "im2" and p.items[1]["state"] == "skipped"
    _submit_current(p, 1)
    assert p.current == "" and "batch finished: 2 of 3 masks saved" in p.notice
    assert sorted(src.masks) == ["im0", "im2"] and src._skipped == {"im1"}    # the skip reached the session


def test_undo_after_submit_retracts_the_mask_and_reopens_it_then_a_correction_is_saved():
    src = _source()
    p = src.label(3)
    _submit_current(p, 1)
    assert p.current == "im1"
    p._handle_message(p, {"type": "undo", "batch": p.batch}, [])
    assert p.current == "im0" and p.items[0]["state"] == "todo" and "im0" not in src.masks
    np.testing.assert_array_equal(_decoded(p.initial), np.ones((6, 8), np.uint8))   # it starts from its mask
    fixed = _submit_current(p, 0)
    np.testing.assert_array_equal(src.masks["im0"], fixed)
    assert p.current == "im1"
    p._handle_message(p, {"type": "open", "batch": p.batch, "item": "im0"}, [])   # a done image, opened again
    assert p.current == "im0" and p.items[0]["state"] == "done"
    again = _submit_current(p, 1)
    np.testing.assert_array_equal(src.masks["im0"], again)
    p._handle_message(p, {"type": "undo", "batch": p.batch}, [])
    p._handle_message(p, {"type": "undo", "batch": p.batch}, [])
    assert p.status in ("nothing to undo", "retracted the label of im0")


def test_a_refused_submit_keeps_the_image_and_says_why():
    src = _source()
    p = src.label(2)

    def locked(*a, **k):
        raise RuntimeError("the store is read-only")

    src.submit = locked
    _submit_current(p, 1)
    assert p.error == {"kind": "submit", "message": "the store is read-only"}
    assert p.current == "im0" and p.items[0]["state"] == "todo" and src.masks == {}


def test_an_image_too_large_or_unreadable_is_marked_and_skipped_nothing_else_lost():
    images = {"ok": np.zeros((6, 8, 3), np.uint8), "huge": _png(8000, 6000), "bad": b"\x89PNG junk",
              "ok2": np.zeros((6, 8, 3), np.uint8)}
    src = InMemoryMasks(images, ["road", "car"])
    p = src.label(4)
    states = {it["id"]: it["state"] for it in p.items}
    assert states == {"ok": "todo", "huge": "error", "bad": "error", "ok2": "todo"}
    assert "8000x6000" in next(it["error"] for it in p.items if it["id"] == "huge")
    _submit_current(p, 1)
    assert p.current == "ok2"
    _submit_current(p, 0)
    assert sorted(src.masks) == ["ok", "ok2"] and {"huge", "bad"} <= src._skipped


def test_continuous_shows_the_next_batch_and_the_end():
    src = _source(n=3)
    p = src.label(2, continuous=True)
    b = p.batch
    _submit_current(p, 1)
    _submit_current(p, 1)
    assert p.batch == b + 1 and [it["id"] for it in p.items] == ["im2"] and p.current == "im2"
    _submit_current(p, 0)
    assert p.items == [] and p.notice == "every image has a mask"


def test_view_for_picks_the_painter_for_segmentation():
    from types import SimpleNamespace

    src = _source()
    assert isinstance(view_for(src), MaskSessionView)
    grid_like = SimpleNamespace(task=SimpleNamespace(name="classification"), on=lambda *a: None)
    assert isinstance(view_for(grid_like), SessionView)
    assert SegmentationTask(["a", "b"]).name == "segmentation"


def test_prediction_from_the_sessions_probabilities():
    from types import SimpleNamespace

    from alwidgets.widgets.view import upsample_argmax

    probs = np.zeros((2, 3, 4), np.float32)
    probs[1, :, 2:] = 1.0
    probs[0, :, :2] = 1.0
    got = upsample_argmax(probs, (6, 8))
    assert got.shape == (6, 8) and (got[:, :3] == 0).all() and (got[:, 5:] == 1).all()
    view = MaskSessionView.__new__(MaskSessionView)
    view.classes = ["a", "b"]
    view.session = SimpleNamespace(probs_=probs[None], pool=SimpleNamespace(index_of=lambda k: 0))
    assert view._prediction("x", SimpleNamespace(height=6, width=8)).shape == (6, 8)


def test_session_resubmit_corrects_labels_saved_since_the_last_batch():
    from alwidgets import Pool, Session

    s = Session(Pool.digits(), selector="random", store=":memory:")
    batch = s.next_batch(2)
    a = batch.ids[0]
    s.submit({a: "3"})
    with pytest.raises(ValueError, match="not in the current batch"):
        s.submit({a: "4"})
    s.submit({a: "4"}, resubmit=True)
    assert s.labels_df().set_index("item_id").loc[a, "label"] == "4"
    s.next_batch(1)
    with pytest.raises(ValueError, match="not in the current batch"):
        s.submit({a: "5"}, resubmit=True)                         # only since the last next_batch
    s.close()


# ---------------------------------------------------------------------------------- a real Session
def _seg_session(store=":memory:"):
    from alwidgets import Session
    from alwidgets.segmentation import DenseDecoder, make_shapes
    from alwidgets.segmentation.features import DenseFeatures

    data = make_shapes(n_images=10, size=(24, 32), random_state=0)
    model = DenseDecoder(4, 4, n_components=None, width=16, fine=8, min_steps=8, max_steps=8, random_state=0)
    s = Session(data, embeddings=DenseFeatures.from_pixels(data.pool), model=model, store=store, cv=2,
                selector="random")
    return s, data


def test_session_label_shows_the_painter_and_a_refused_mask_stores_nothing():
    from alwidgets.widgets.app import MaskApp

    s, data = _seg_session()
    app = s.label(3)
    p = app.painter                                  # the painter above the session's live panels
    assert isinstance(app, MaskApp) and isinstance(p, MaskPainter) and p.current in data.ids
    assert (p.width, p.height) == (32, 24) and isinstance(InMemoryMasks(
        {"a": np.zeros((4, 4, 3), np.uint8)}, ["x", "y"]).label(1), MaskPainter)   # no rounds: the painter alone
    assert p.classes == data.classes and p.ignore_index == data.ignore_index
    assert [it["state"] for it in p.items] == ["todo"] * 3 and p.prediction == b""   # no model yet
    _send(p, [mask_to_png(np.zeros((24, 31), np.uint8))])
    assert p.error["kind"] == "mask" and s.labels_df().empty
    _send(p, [mask_to_png(np.full((24, 32), 9, np.uint8))])
    assert "values [9]" in p.error["message"] and s.labels_df().empty and p.items[0]["state"] == "todo"
    s.close()


def test_session_stores_each_mask_undoes_after_submit_and_takes_a_correction(tmp_path):
    s, data = _seg_session(tmp_path / "masks.db")
    p = s.label(3).painter
    ids = [it["id"] for it in p.items]
    first = p.current
    m = data.masks[data.pool.index_of(first)]
    _send(p, [mask_to_png(m)], seconds=4.0)
    assert p.error == {} and p.status.startswith("saved 1 label") and p.current == ids[1]
    assert p.items[0]["state"] == "done"
    pred = _decoded(p.prediction)                                # the refitted model's map of the next image
    np.testing.assert_array_equal(pred, s.predicted_mask(ids[1]))
    df = s.labels_df(history=True)
    assert df["item_id"].tolist() == [first] and df["seconds"].tolist() == [4.0]
    np.testing.assert_array_equal(s.labels()[data.pool.index_of(first)], m)
    p._handle_message(p, {"type": "undo", "batch": p.batch}, [])   # undo after the submit: retracted, reopened
    assert p.current == first and p.items[0]["state"] == "todo" and s.labels_df().empty
    np.testing.assert_array_equal(_decoded(p.initial), m)         # it starts from the mask it had
    fixed = m.copy()
    fixed[:4] = data.ignore_index
    _send(p, [mask_to_png(fixed)])
    assert p.error == {} and p.items[0]["state"] == "done" and p.current == ids[1]
    np.testing.assert_array_equal(s.labels()[data.pool.index_of(first)], fixed)
    p._handle_message(p, {"type": "open", "batch": p.batch, "item": first}, [])   # corrected again, once saved
    _send(p, [mask_to_png(m)])
    assert p.error == {}
    np.testing.assert_array_equal(s.labels()[data.pool.index_of(first)], m)
    assert len(s.labels_df(history=True)) >= 3                    # the store keeps every version
    p._handle_message(p, {"type": "skip", "batch": p.batch, "item": ids[1]}, [])
    _send(p, [mask_to_png(data.masks[data.pool.index_of(ids[2])])])
    assert [it["state"] for it in p.items] == ["done", "skipped", "done"] and "batch finished" in p.notice
    assert s.batch is not None and len(s.batch) == 0              # the round is over, the skip handed back
    s.close()


def test_shown_is_a_notice_that_calls_back_without_an_acknowledgement():
    seen = []
    p = MaskPainter(["road", "car"], on_shown=lambda: seen.append("shown"))
    ack = p.ack
    p._handle_message(p, {"type": "shown", "batch": 7, "item": "im0"}, [])   # any batch: it asks for nothing
    assert seen == ["shown"] and p.ack == ack and p.error == {}
    MaskPainter(["road", "car"])._handle_message(None, {"type": "shown"}, [])   # no callback: nothing happens


def test_a_session_shown_again_hides_its_panels_until_the_image_is_up(monkeypatch):
    from alwidgets.widgets import view as view_mod

    later = []
    monkeypatch.setattr(view_mod.MaskSessionView, "_after_image", staticmethod(lambda fn, wait=5.0: later.append(fn)))
    s, data = _seg_session()
    app = s.label(3)
    assert not app.panels_shown and len(later) == 1            # the first label(): the plots wait for the image
    app.painter._handle_message(app.painter, {"type": "shown"}, [])
    assert app.panels_shown and len(app.figures) == 4
    assert s.label(3) is app and not app.panels_shown             # shown again in a new cell: hidden again ...
    later[-1]()                                                   # ... until the image (or the fallback)
    assert app.panels_shown
    s.close()
