"""MaskPainter: paint a segmentation mask over an image in the notebook (anywidget, one ESM file).

The front end (``static/maskpainter.js``, plain ESM: no build step) shows the
image with the mask as a translucent overlay: brush (``[``/``]`` size), eraser
(back to the ignore index), polygon fill (click points, Enter or double-click
closes), classes on ``1``-``9``, ``0``, undo/redo, clear, show/hide, opacity,
and pre-fill from the model's prediction (``p``). Enter submits: the mask
travels to Python as an 8-bit index PNG in a binary buffer and is checked
(PNG, size, values) by :func:`alwidgets.segmentation.mask_from_png` before
``on_submit`` sees it; a bad payload sets ``error`` and stores nothing.

>>> import numpy as np
>>> from alwidgets.widgets.maskpainter import MaskPainter
>>> got = []
>>> p = MaskPainter(["road", "car"], ignore_index=255, on_submit=lambda m, seconds: got.append(m) or "saved")
>>> p.show(np.zeros((4, 6, 3), np.uint8))
>>> (p.width, p.height)
(6, 4)
>>> from alwidgets.segmentation import mask_to_png
>>> p._handle_message(p, {"type": "submit", "seconds": 3.5}, [mask_to_png(np.ones((4, 6), np.uint8))])
>>> p.status, got[0].shape, p.error
('saved', (4, 6), {})
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import anywidget
import numpy as np
import traitlets

_STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096
"""Images larger than this are refused by :meth:`MaskPainter.show` (an 8000 x 6000 photo: resize it first)."""


class MaskPainter(anywidget.AnyWidget):
    """Paint one image's class-index mask; ``on_submit(mask, seconds=)`` receives the checked mask.

    Parameters
    ----------
    classes : list of str
        Class names (shown as text, never as HTML); keys ``1``-``9``, ``0`` pick the first ten.
    ignore_index : int
        Value of unpainted and erased pixels (never trains or scores), e.g. 255 or CamVid's 11.
    on_submit : callable, optional
        ``on_submit(mask (H, W) uint8, seconds=float)``; its return value (a string) becomes ``status``.
    """

    _esm = _STATIC / "maskpainter.js"
    _css = _STATIC / "maskpainter.css"

    image = traitlets.Bytes(b"").tag(sync=True)
    mime = traitlets.Unicode("image/png").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    height = traitlets.Int(0).tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    ignore_index = traitlets.Int(255).tag(sync=True)
    prediction = traitlets.Bytes(b"").tag(sync=True)
    keymap = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Dict().tag(sync=True)

    def __init__(self, classes=(), *, ignore_index: int = 255, on_submit=None, **kwargs):
        classes = [str(c) for c in classes]
        if not classes:
            raise ValueError("MaskPainter needs at least one class name")
        if not 0 <= int(ignore_index) <= 255 or int(ignore_index) < len(classes):
            raise ValueError(f"ignore_index must be an 8-bit value outside 0..{len(classes) - 1}, got {ignore_index}")
        super().__init__(classes=classes, ignore_index=int(ignore_index), **kwargs)
        self._on_submit = on_submit
        self.on_msg(self._handle_message)

    def show(self, image, prediction=None) -> None:
        """Show ``image`` (PIL image, ``(H, W[, 3])`` uint8 array or encoded bytes) with an empty mask;
        ``prediction`` (an ``(H, W)`` class map) is what ``p`` pre-fills."""
        from PIL import Image

        if isinstance(image, (bytes, bytearray)):
            try:
                with Image.open(io.BytesIO(image)) as im:
                    w, h = im.size
                    fmt = (im.format or "PNG").lower()
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise ValueError(f"cannot decode the image bytes: {e}") from None
            data, mime = bytes(image), f"image/{fmt}"
        else:
            im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            w, h = im.size
            if w * h <= MAX_IMAGE_PIXELS:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data, mime = buf.getvalue(), "image/png"
        if w * h > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {w}x{h} pixels is larger than the painter's limit of {MAX_IMAGE_PIXELS:,} "
                             "pixels; resize it (and its mask) first")
        pred = b""
        if prediction is not None:
            from ..segmentation.data import check_mask

            pred = check_mask(prediction, n_classes=len(self.classes), ignore_index=self.ignore_index,
                              shape=(h, w), item_id="prediction").tobytes()
        with self.hold_sync():
            self.error = {}
            self.width, self.height, self.mime = int(w), int(h), mime
            self.prediction = pred
            self.image = data

    def _handle_message(self, _widget, content, buffers):
        if not isinstance(content, dict) or content.get("type") != "submit":
            return
        from ..segmentation.data import MaskError, mask_from_png

        try:
            if not buffers:
                raise MaskError(None, None, "the submit message carries no PNG buffer")
            mask = mask_from_png(bytes(buffers[0]), n_classes=len(self.classes), ignore_index=self.ignore_index,
                                 shape=(self.height, self.width))
            seconds = float(content.get("seconds") or 0.0)
            if self._on_submit is None:
                raise RuntimeError("this painter is not connected to a session")
            msg = self._on_submit(mask, seconds=seconds)
            with self.hold_sync():
                self.error = {}
                self.status = msg or ""
        except Exception as e:  # shown in the widget: an exception in a comm handler would be lost
            log.exception("MaskPainter submit failed")
            with self.hold_sync():
                self.error = {"kind": type(e).__name__, "message": str(e)}
                self.status = f"not saved: {e}"
