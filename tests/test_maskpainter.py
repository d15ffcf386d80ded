"""MaskPainter's Python side: what the browser sends is checked before anything is stored."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alwidgets.segmentation import mask_to_png
from alwidgets.widgets.maskpainter import MaskPainter


def _painter():
    stored = []
    p = MaskPainter(["road", "<b>car</b>"], ignore_index=255,
                    on_submit=lambda m, seconds: stored.append((m, seconds)) or f"saved {seconds:.0f}s")
    p.show(np.zeros((6, 8, 3), np.uint8))
    return p, stored


def _submit(p, buffers, seconds=2.0):
    p._handle_message(p, {"type": "submit", "seconds": seconds}, buffers)


def test_a_good_mask_reaches_on_submit_with_its_seconds():
    p, stored = _painter()
    m = np.full((6, 8), 255, np.uint8)
    m[2:4, 1:5] = 1
    _submit(p, [mask_to_png(m)], seconds=12.5)
    assert len(stored) == 1 and stored[0][1] == 12.5
    np.testing.assert_array_equal(stored[0][0], m)
    assert p.status == "saved 12s" and p.error == {}


@pytest.mark.parametrize("payload, message", [
    (mask_to_png(np.zeros((6, 9), np.uint8)), "mask is 9x6"),
    (mask_to_png(np.full((6, 8), 7, np.uint8)), r"values \[7\] are outside the 2 classes"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt mask PNG"),
    (b"not a png", "not a PNG"),
])
def test_bad_payloads_store_nothing_and_say_why(payload, message):
    import re

    p, stored = _painter()
    _submit(p, [payload])
    assert stored == [] and p.error["kind"] == "MaskError" and re.search(message, p.error["message"])
    assert p.status.startswith("not saved")
    _submit(p, [mask_to_png(np.zeros((6, 8), np.uint8))])          # the next good mask still goes through
    assert len(stored) == 1 and p.error == {}


def test_missing_buffer_and_unconnected_painter():
    p, stored = _painter()
    _submit(p, [])
    assert "no PNG buffer" in p.error["message"] and stored == []
    q = MaskPainter(["a"])
    q.show(np.zeros((2, 2), np.uint8))
    _submit(q, [mask_to_png(np.zeros((2, 2), np.uint8))])
    assert "not connected" in q.error["message"]


def test_show_checks_sizes_and_prediction():
    p, _ = _painter()
    with pytest.raises(ValueError, match="8000x6000 pixels is larger than the painter's limit"):
        buf = io.BytesIO()
        Image.new("L", (8000, 6000)).save(buf, "PNG")
        p.show(buf.getvalue())
    assert (p.width, p.height) == (8, 6)                            # the shown image is unchanged
    pred = np.ones((6, 8), np.uint8)
    p.show(np.zeros((6, 8, 3), np.uint8), prediction=pred)
    assert p.prediction == pred.tobytes()
    with pytest.raises(ValueError, match="mask is 7x6"):
        p.show(np.zeros((6, 8, 3), np.uint8), prediction=np.ones((6, 7), np.uint8))
    with pytest.raises(ValueError, match="ignore_index must be an 8-bit value outside 0..1"):
        MaskPainter(["a", "b"], ignore_index=1)
