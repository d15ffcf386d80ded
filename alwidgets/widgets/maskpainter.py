"""MaskPainter: paint segmentation masks over a batch of images in the notebook (anywidget, one ESM file).

The front end (``static/maskpainter.js``, plain ESM: no build step) shows the
current image of the batch with its mask as a translucent overlay, a strip of the
batch's thumbnails with their state, the class palette and the tools (brush,
eraser, void, polygon/lasso fill, undo/redo, clear, zoom and pan, pre-fill from
the model's prediction). Its keys are computed here
(:func:`~alwidgets.widgets.keymap.build_painter_keymap`, ``docs/keymap.md``).

The widget is thin: it holds the state Python writes (traits) and checks each
message from the browser before a callback sees it. What a submit, a skip or an
undo *means* (storing, moving on, refitting) is the business of the view that
owns it, :class:`~alwidgets.widgets.view.MaskSessionView`.

Traits (Python -> browser)
    ``items``       ``[{id, caption, thumb: bytes, mime, state, error}]``, state ``todo|done|skipped|error``
    ``batch``       a number that changes with each batch; messages name it, stale ones are refused
    ``current``     id of the shown image; ``image``, ``mime``, ``width``, ``height``: that image
    ``prediction``  the model's predicted mask of that image, an 8-bit index PNG (``b""``: none)
    ``initial``     a mask to start from (8-bit index PNG: the one saved earlier), ``b""``: unpainted
    ``classes``, ``ignore_index``, ``keymap``, ``status``, ``notice``, ``error`` (``{}`` or ``{kind, message}``)
    ``ack``         changes after each message is handled (the browser then accepts the next one)
Messages (browser -> Python)
    ``{"type": "submit", "batch", "item", "seconds"}`` with the mask as an 8-bit index PNG in the one
    binary buffer: the PNG is checked (signature, size in its header before any pixel is decoded,
    mode, values) by :func:`alwidgets.segmentation.mask_from_png`; a bad one sets ``error`` and
    nothing is stored. ``{"type": "skip" | "open", "batch", "item"}`` and ``{"type": "undo", "batch"}``.

>>> import numpy as np
>>> from alwidgets.segmentation import mask_to_png
>>> saved = {}
>>> p = MaskPainter(["road", "car"], ignore_index=255,
...                 on_submit=lambda item, mask, seconds: saved.update({item: mask}) or "saved")
>>> p.set_image("a", np.zeros((4, 6, 3), np.uint8))
>>> (p.current, p.width, p.height)
('a', 6, 4)
>>> p._handle_message(p, {"type": "submit", "batch": p.batch, "item": "a", "seconds": 3.5},
...                   [mask_to_png(np.ones((4, 6), np.uint8))])
>>> p.status, saved["a"].shape, p.error
('saved', (4, 6), {})
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from .keymap import PAINTER_ACTIONS, build_painter_keymap, check_action
from .labelgrid import check_error, clip

_STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096
"""Images larger than this are refused (an 8000 x 6000 photo: resize it and its mask first)."""
MAX_PNG_BYTES = 64 * 1024 * 1024
"""Largest mask payload accepted from the browser (a 4096 x 4096 mask compresses far below this)."""
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                   "BMP": "image/bmp"}
STATES = ("todo", "done", "skipped", "error")


class PainterImageError(ValueError):
    """An image the painter cannot show (unreadable, or larger than :data:`MAX_IMAGE_PIXELS`)."""


@dataclass
class BrowserImage:
    data: bytes
    mime: str
    width: int
    height: int


def _too_large(w: int, h: int) -> None:
    if w * h > MAX_IMAGE_PIXELS:
        raise PainterImageError(f"image of {w}x{h} pixels is larger than the painter's limit of "
                                f"{MAX_IMAGE_PIXELS:,} pixels; resize it (and its mask) first")


def browser_image(image) -> BrowserImage:
    """``image`` (file bytes, a path, a PIL image or an ``(H, W[, 3])`` uint8 array) as bytes a browser shows.

    Encoded files the browser can show pixel for pixel (JPEG, PNG, GIF, WebP, BMP without an EXIF
    rotation) are sent as they are: no decoding, no re-encoding. Anything else is decoded and sent
    as PNG (up to 1 megapixel) or JPEG (quality 92). The size is read from the header first and an
    image over :data:`MAX_IMAGE_PIXELS` raises :class:`PainterImageError` before any pixel is decoded.
    """
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                _too_large(w, h)
                fmt = im.format
                rotated = int(im.getexif().get(0x0112, 1) or 1) != 1
                if fmt in BROWSER_FORMATS and not rotated and im.mode not in ("CMYK", "I;16", "I", "F"):
                    return BrowserImage(data, BROWSER_FORMATS[fmt], w, h)
                im.load()
                from ..pool import _normalise_mode

                pil = _normalise_mode(im)
        except PainterImageError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise PainterImageError(f"cannot decode the image: {clip(str(e) or type(e).__name__, 200)}") from None
    elif isinstance(image, Image.Image):
        _too_large(*image.size)
        pil = image if image.mode in ("RGB", "L") else image.convert("RGB")
    else:
        a = np.asarray(image)
        if a.ndim not in (2, 3) or a.dtype != np.uint8:
            raise PainterImageError(f"an image array must be (H, W) or (H, W, 3) uint8, got {a.dtype} {a.shape}")
        _too_large(a.shape[1], a.shape[0])
        pil = Image.fromarray(a)
    w, h = pil.size
    buf = io.BytesIO()
    if w * h <= 1_000_000:
        pil.save(buf, format="PNG", compress_level=1)
        return BrowserImage(buf.getvalue(), "image/png", w, h)
    pil.convert("RGB").save(buf, format="JPEG", quality=92)
    return BrowserImage(buf.getvalue(), "image/jpeg", w, h)


def index_png(mask, *, n_classes: int, ignore_index: int, shape) -> bytes:
    """``mask`` (array or PNG bytes; None -> ``b""``) checked (size ``shape``, values) as 8-bit index PNG bytes."""
    from PIL import Image

    from ..segmentation.data import check_mask, mask_from_png

    if mask is None:
        return b""
    kw = dict(n_classes=n_classes, ignore_index=ignore_index, shape=tuple(shape))
    a = mask_from_png(bytes(mask), **kw) if isinstance(mask, (bytes, bytearray, memoryview)) else check_mask(mask, **kw)
    buf = io.BytesIO()  # for the wire: fast compression (a 480 x 360 map in about 1 ms)
    Image.fromarray(a, "L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class MessageError(ValueError):
    """A browser message that does not fit the protocol (nothing of it is forwarded)."""


class MaskPainter(anywidget.AnyWidget):
    """A batch of images to paint masks on; each Enter sends one checked mask to ``on_submit``.

    Parameters
    ----------
    classes : list of str
        Class names (shown as text, never as HTML); keys ``1``-``9``, ``0`` pick the first ten,
        the searchable palette (``/``) the rest.
    ignore_index : int
        Value of unpainted, erased and void pixels (never trains or scores), e.g. 255 or CamVid's 11.
    keymap : dict, optional
        Changes to the key map (:func:`~alwidgets.widgets.keymap.build_painter_keymap`).
    on_submit : callable
        ``on_submit(item_id, mask (H, W) uint8, seconds=float) -> status``. An exception it raises
        is shown in ``error`` (kind ``"submit"``) and the browser keeps the mask for a retry.
    on_skip, on_open : callable, optional
        ``on_skip(item_id)``, ``on_open(item_id)``: an item of the shown batch.
    on_undo : callable, optional
        ``on_undo()``: the browser has nothing left to undo on the shown image (undo after a submit).
    on_shown : callable, optional
        ``on_shown()``: a view has shown its first image (what should not compete with it for the
        browser, such as a session's plots, can follow now).
    """

    _esm = _STATIC / "maskpainter.js"
    _css = _STATIC / "maskpainter.css"

    items = traitlets.List(traitlets.Dict()).tag(sync=True)
    batch = traitlets.Int(0).tag(sync=True)
    current = traitlets.Unicode("").tag(sync=True)
    image = traitlets.Bytes(b"").tag(sync=True)
    mime = traitlets.Unicode("image/png").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    height = traitlets.Int(0).tag(sync=True)
    prediction = traitlets.Bytes(b"").tag(sync=True)
    initial = traitlets.Bytes(b"").tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    ignore_index = traitlets.Int(255).tag(sync=True)
    keymap = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Dict().tag(sync=True)
    ack = traitlets.Int(0).tag(sync=True)

    def __init__(self, classes=(), *, ignore_index: int = 255, keymap=None, on_submit=None, on_skip=None,
                 on_open=None, on_undo=None, on_shown=None, **kwargs):
        classes = [str(c) for c in classes]
        if not classes:
            raise ValueError("MaskPainter needs at least one class name")
        if isinstance(ignore_index, bool) or not 0 <= int(ignore_index) <= 255 or int(ignore_index) < len(classes):
            raise ValueError(f"ignore_index must be an 8-bit value outside 0..{len(classes) - 1}, got {ignore_index}")
        super().__init__(classes=classes, ignore_index=int(ignore_index),
                         keymap=build_painter_keymap(classes, keymap), **kwargs)
        self._on_submit, self._on_skip, self._on_open, self._on_undo = on_submit, on_skip, on_open, on_undo
        self._on_shown = on_shown
        self.on_msg(self._handle_message)

    # ------------------------------------------------------------------ validated traits
    @traitlets.validate("items")
    def _check_items(self, proposal):
        out, seen = [], set()
        for i, it in enumerate(proposal["value"]):
            item_id = it.get("id") if isinstance(it, dict) else None
            if not isinstance(item_id, str) or not item_id:
                raise traitlets.TraitError(f"items[{i}] must be a dict with an 'id' (a non-empty string)")
            if item_id in seen:
                raise traitlets.TraitError(f"items[{i}]: id {clip(item_id)!r} is repeated")
            seen.add(item_id)
            state = it.get("state", "todo")
            if state not in STATES:
                raise traitlets.TraitError(f"items[{i}]: state must be one of {STATES}, got {state!r}")
            thumb = it.get("thumb") or b""
            if not isinstance(thumb, (bytes, bytearray, memoryview)):
                raise traitlets.TraitError(f"items[{i}]: 'thumb' must be bytes")
            out.append({"caption": None, "mime": None, "error": None, **it, "state": state, "thumb": bytes(thumb)})
        return out

    @traitlets.validate("keymap")
    def _check_keymap(self, proposal):
        for key, action in proposal["value"].items():
            if not isinstance(key, str) or not key:
                raise traitlets.TraitError(f"keymap keys must be non-empty strings, got {key!r}")
            try:
                check_action(action, len(self.classes), where=f"keymap[{key!r}]", actions=PAINTER_ACTIONS)
            except ValueError as e:
                raise traitlets.TraitError(str(e)) from None
        return proposal["value"]

    @traitlets.validate("error")
    def _check_error(self, proposal):
        return check_error(proposal["value"])

    # ------------------------------------------------------------------ showing an image
    def set_image(self, item_id: str, image, *, prediction=None, initial=None) -> None:
        """Show ``image`` as the current item (a one-item batch if ``item_id`` is not in ``items``).

        ``prediction`` and ``initial`` are ``(H, W)`` class maps (or their PNG bytes), checked
        against the image's size and the classes. Raises :class:`PainterImageError` or
        :class:`~alwidgets.segmentation.MaskError`; the shown image is then unchanged.
        """
        img = browser_image(image)
        pred, init = (self.mask_png(m, img) for m in (prediction, initial))
        with self.hold_sync():
            if item_id not in {it["id"] for it in self.items}:
                self.items = [{"id": item_id, "caption": item_id, "state": "todo"}]
                self.batch += 1
            self.show_image(item_id, img, pred, init)

    def mask_png(self, mask, img: BrowserImage) -> bytes:
        """``mask`` (array or PNG bytes; None -> ``b""``) checked against ``img`` as 8-bit index PNG bytes."""
        return index_png(mask, n_classes=len(self.classes), ignore_index=self.ignore_index,
                         shape=(img.height, img.width))

    def show_image(self, item_id: str, img: BrowserImage | None, prediction: bytes = b"", initial: bytes = b"") -> None:
        """Write the current item's traits (``img`` None: no image is shown)."""
        with self.hold_sync():
            self.current = item_id if img is not None else ""
            self.width, self.height = (img.width, img.height) if img is not None else (0, 0)
            self.mime = img.mime if img is not None else "image/png"
            self.prediction = bytes(prediction or b"")
            self.initial = bytes(initial or b"")
            self.image = img.data if img is not None else b""

    # ------------------------------------------------------------------ browser messages
    def _handle_custom_msg(self, content, buffers):
        if isinstance(content, dict) and content.get("kind") == "anywidget-command":
            log.warning("MaskPainter: ignored a command message (the painter has no commands)")
            return
        super()._handle_custom_msg(content, buffers)

    def _handle_message(self, _widget, content, buffers):
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "shown":   # a notice, not a request: no acknowledgement, nothing to check
            if self._on_shown is not None:
                try:
                    self._on_shown()
                except Exception:  # never raise out of a comm handler
                    log.exception("MaskPainter: on_shown failed")
            return
        if kind not in ("submit", "skip", "open", "undo"):
            return
        try:
            self._check_batch(content)
            if kind == "submit":
                self._submit(content, buffers)
            elif kind == "undo":
                self._call(self._on_undo)
            else:
                item = self._item(content)
                self._call(self._on_skip if kind == "skip" else self._on_open, item)
        except MessageError as e:
            self.error = {"kind": "message", "message": str(e)}
        except Exception as e:  # never raise out of a comm handler: the user would see nothing
            from ..segmentation.data import MaskError

            if not isinstance(e, MaskError):
                log.exception("MaskPainter: %s failed", kind)
            self.error = {"kind": "mask" if isinstance(e, MaskError) else kind,
                          "message": clip(str(e) or type(e).__name__, 500)}
        finally:
            self.ack += 1

    def _check_batch(self, content) -> None:
        b = content.get("batch")
        if isinstance(b, bool) or b != self.batch:
            raise MessageError(f"this message is for batch {clip(b, 20)}, but batch {self.batch} is shown "
                               "(replaced meanwhile); nothing was saved")

    def _item(self, content) -> str:
        item = content.get("item")
        if not isinstance(item, str) or item not in {it["id"] for it in self.items}:
            raise MessageError(f"{clip(item)!r} is not an item of the shown batch; nothing was saved")
        return item

    def _call(self, fn, *args):
        """Call a callback with a checked message (an earlier error is cleared first: the callback may set its own)."""
        if fn is None:
            raise RuntimeError("this painter is not connected to a session")
        self.error = {}
        return fn(*args)

    def _submit(self, content, buffers) -> None:
        from PIL import Image

        from ..segmentation.data import MaskError, mask_from_png

        item = self._item(content)
        if item != self.current:
            raise MessageError(f"the mask is for {clip(item)!r}, but {clip(self.current)!r} is shown; "
                               "nothing was saved")
        if not buffers:
            raise MaskError(item, None, "the submit message carries no PNG buffer")
        data = bytes(buffers[0])
        if len(data) > MAX_PNG_BYTES:
            raise MaskError(item, None, f"the mask payload is {len(data):,} bytes, over the limit of "
                                        f"{MAX_PNG_BYTES:,}")
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            # the size from the header before any pixel is decoded (an 8000 x 6000 mask costs nothing),
            # then every chunk's CRC and the end of the file: a truncated or damaged payload is refused
            try:
                with Image.open(io.BytesIO(data)) as im:
                    if im.size != (self.width, self.height):
                        raise MaskError(item, None, f"mask is {im.size[0]}x{im.size[1]} (WxH) but the image is "
                                                    f"{self.width}x{self.height}")
                    im.verify()
            except MaskError:
                raise
            except Exception as e:
                why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise MaskError(item, None, f"corrupt mask PNG: {why}") from None
        mask = mask_from_png(data, n_classes=len(self.classes), ignore_index=self.ignore_index,
                             shape=(self.height, self.width), item_id=item)
        seconds = content.get("seconds")
        seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) \
            and math.isfinite(seconds) and 0 <= seconds < 1e7 else None
        status = self._call(self._on_submit, item, mask, seconds)
        if isinstance(status, str):
            self.status = clip(status, 300)


class InMemoryMasks:
    """Images in memory to paint masks on, without a Session or a store: the painter's session interface.

    ``label(n)`` shows the painter for the next ``n`` images without a mask; each Enter saves one
    into ``masks`` (``{item_id: (H, W) uint8}``) and its seconds into ``seconds``. A
    :class:`~alwidgets.Session` with a segmentation task offers the same interface (see
    :class:`~alwidgets.widgets.view.MaskSessionView`) and stores the masks with their history.

    Parameters
    ----------
    images : dict of item id -> image, or a list (ids ``"0"``, ``"1"``, ...)
        PIL images, ``(H, W[, 3])`` uint8 arrays, encoded bytes or file paths.
    classes : list of str
    ignore_index : int
    predictions : dict of item id -> (H, W) class map, optional
        What ``p`` pre-fills.

    Examples
    --------
    >>> import numpy as np
    >>> src = InMemoryMasks({"a": np.zeros((4, 6, 3), np.uint8)}, ["road", "car"])
    >>> painter = src.label(4)
    >>> painter.current, painter.items[0]["state"]
    ('a', 'todo')
    >>> src.submit({"a": np.ones((4, 6), np.uint8)}, seconds={"a": 2.0})
    'saved 1 mask'
    >>> sorted(src.masks), src.seconds
    (['a'], {'a': 2.0})
    """

    def __init__(self, images, classes, *, ignore_index: int = 255, predictions=None, thumbnail_size: int = 96):
        from ..segmentation.task import SegmentationTask

        if not isinstance(images, dict):
            images = {str(i): im for i, im in enumerate(images)}
        self.images = {str(k): v for k, v in images.items()}
        self.task = SegmentationTask(classes, ignore_index=ignore_index)
        self.classes = self.task.classes
        self.predictions = dict(predictions or {})
        self.thumbnail_size = int(thumbnail_size)
        self.masks: dict = {}
        self.seconds: dict = {}
        self.batch = None
        self._skipped: set = set()
        self._undo: list = []
        self._listeners = {"batch": [], "change": []}
        self._view = None

    def on(self, event, fn):
        self._listeners[event].append(fn)

    def off(self, event, fn):
        if fn in self._listeners.get(event, []):
            self._listeners[event].remove(fn)

    def _emit(self, event, payload):
        for fn in list(self._listeners[event]):
            fn(payload)

    def label(self, n: int = 8, *, continuous: bool = False):
        """Show the painter for the next ``n`` images; returns the widget."""
        from .view import MaskSessionView

        if self._view is None:
            self._view = MaskSessionView(self)
        return self._view.show(n, continuous=continuous)

    def next_batch(self, n: int = 8):
        from types import SimpleNamespace

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        ids = [k for k in self.images if k not in self.masks and k not in self._skipped][:n]
        self.batch = SimpleNamespace(ids=ids, info={}, reason="" if ids else "every image has a mask")
        self._emit("batch", self.batch)
        return self.batch

    def _size(self, item_id):
        from PIL import Image

        im = self.images[item_id]
        if isinstance(im, Image.Image):
            return im.size[::-1]
        if isinstance(im, (bytes, bytearray, memoryview, str, Path)):
            with Image.open(io.BytesIO(bytes(im)) if not isinstance(im, (str, Path)) else im) as pil:
                return pil.size[::-1]
        return np.asarray(im).shape[:2]

    def submit(self, labels: dict, *, seconds=None, skipped=(), close: bool = False, resubmit: bool = False) -> str:
        from ..segmentation.data import check_mask

        unknown = [k for k in [*labels, *skipped] if k not in self.images]
        if unknown:
            raise ValueError(f"not images of this set: {', '.join(clip(k, 40) for k in unknown[:5])}")
        checked = {k: check_mask(m, n_classes=len(self.classes), ignore_index=self.task.ignore_index,
                                 shape=self._size(k), item_id=k) for k, m in labels.items()}
        for k, m in checked.items():  # all checked before any is kept
            self.masks[k] = m
            if seconds and seconds.get(k) is not None:
                self.seconds[k] = float(seconds[k])
            self._undo.append(k)
        self._skipped.update(skipped)
        msg = f"saved {len(checked)} mask{'s' * (len(checked) != 1)}"
        self._emit("change", msg)
        return msg

    def undo(self) -> str:
        if not self._undo:
            return "nothing to undo"
        k = self._undo.pop()
        self.masks.pop(k, None)
        msg = f"retracted the label of {k}"
        self._emit("change", msg)
        return msg

    def thumbnail(self, item_id: str, size: int | None = None):
        from PIL import Image

        img = browser_image(self.images[item_id])
        side = size or self.thumbnail_size
        with Image.open(io.BytesIO(img.data)) as im:
            im.draft("RGB", (2 * side, 2 * side))   # a JPEG is decoded at a fraction of its size
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
        return buf.getvalue(), "image/jpeg", (img.width, img.height)

    def caption(self, item_id: str) -> str:
        return str(item_id)

    def painter_image(self, item_id: str):
        return self.images[item_id]

    def predicted_mask(self, item_id: str):
        return self.predictions.get(item_id)
