"""LabelGrid: one anywidget for a whole batch of images, labelled from the keyboard.

The front end is ``static/labelgrid.js``, a plain ES module with no imports,
shipped as it is (no build step). State goes to the browser as traits; each
item carries its own thumbnail as bytes, which ipywidgets sends as a binary
buffer (no base64, no parallel list of thumbnails).

Traits (Python -> browser unless noted)
    ``items``        ``[{id, caption, thumb: bytes, mime, w, h, suggestion, confidence, error}]``
    ``classes``      class names, in order
    ``keymap``       the full key -> action map (:func:`~alwidgets.widgets.keymap.build_keymap`)
    ``batch``        a number that changes with each batch; submits name it, stale ones are refused
    ``progress``     ``{pool_labelled, pool_size, budget, accuracy, accuracy_std}`` for the header
    ``status``       one short line (what the last action did)
    ``notice``       what to do next when there are no tiles (shown in their place)
    ``error``        ``{}`` or ``{"kind": ..., "message": ...}``; shown as an alert
    ``busy``         a submit is being saved
    ``assignments``  browser -> Python: the pending ``{id: class}`` of the batch

Messages from the browser (custom messages)
    ``{"type": "submit", "batch", "labels": {id: class}, "sources": {id: "human"|"accepted"},
    "skipped": [id], "seconds": {id: s}}`` and ``{"type": "undo"}`` (nothing left to undo in the
    browser: retract the last saved label). Each is checked against the shown batch before a
    callback sees it; a bad one sets ``error`` and forwards nothing.
Command (anywidget ``experimental.invoke``)
    ``enlarge({"id"})`` answers ``({"id", "mime"}, [image bytes])`` or ``({"error": ...}, [])``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import anywidget
import traitlets
from anywidget.experimental import command

from .keymap import build_keymap, check_action

_STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

ECHO_CHARS = 120
"""Longest piece of browser-supplied text (an id, a class name) echoed back in a message."""

SOURCES = ("human", "accepted")
_ITEM_TEXT = ("caption", "mime", "suggestion", "error")


def check_error(e: dict) -> dict:
    """The structured ``error`` trait of the widgets: ``{}`` or ``{"kind": str, "message": str}``."""
    if e and not (isinstance(e.get("message"), str) and isinstance(e.get("kind"), str)):
        raise traitlets.TraitError("error must be {} or {'kind': str, 'message': str}")
    return e


def clip(text, limit: int = ECHO_CHARS) -> str:
    """``text`` as a string of at most about ``limit`` characters (longer text is cut and its length named)."""
    text = text if isinstance(text, str) else repr(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


class MessageError(ValueError):
    """A browser message that does not fit the protocol (nothing of it is forwarded)."""


class LabelGrid(anywidget.AnyWidget):
    """A batch of thumbnails to label with the keyboard or the mouse.

    Parameters
    ----------
    classes : list of str
        Class names.
    keymap : dict, optional
        Changes to the key map (see :func:`~alwidgets.widgets.keymap.build_keymap`),
        e.g. ``{"q": "class:1", "z": None}``.
    on_submit : callable, optional
        ``on_submit(labels, sources=, seconds=, skipped=)`` with a checked submit
        (ids of the shown batch, known classes). An exception it raises is shown
        in ``error`` and the batch stays for a retry.
    on_undo : callable, optional
        ``on_undo()`` -> status line.
    image : callable, optional
        ``image(item_id) -> (bytes, mime)``: the enlarged view of an item of the batch.

    Examples
    --------
    >>> grid = LabelGrid(classes=["cat", "dog"], keymap={"q": "class:1"})
    >>> grid.keymap["q"], grid.keymap["1"], grid.keymap["Enter"]
    ('class:1', 'class:1', 'submit')
    >>> grid.items = [{"id": "a.jpg", "thumb": b"..."}]
    >>> grid.items[0]["thumb"]
    b'...'
    """

    _esm = _STATIC / "labelgrid.js"
    _css = _STATIC / "labelgrid.css"

    items = traitlets.List(traitlets.Dict()).tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    keymap = traitlets.Dict().tag(sync=True)
    batch = traitlets.Int(0).tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Dict().tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    assignments = traitlets.Dict().tag(sync=True)
    columns = traitlets.Int(8).tag(sync=True)
    autofocus = traitlets.Bool(True).tag(sync=True)

    def __init__(self, classes=(), *, keymap=None, on_submit=None, on_undo=None, image=None, **kwargs):
        classes = [str(c) for c in classes]
        super().__init__(classes=classes, keymap=build_keymap(classes, keymap), **kwargs)
        self._on_submit = on_submit
        self._on_undo = on_undo
        self._image = image
        self.on_msg(self._handle_message)

    # ------------------------------------------------------------------ validated traits
    @traitlets.validate("items")
    def _check_items(self, proposal):
        out, seen = [], set()
        for i, it in enumerate(proposal["value"]):
            if not isinstance(it, dict):
                raise traitlets.TraitError(f"items[{i}] must be a dict, got {type(it).__name__}")
            item_id = it.get("id")
            if not isinstance(item_id, str) or not item_id:
                raise traitlets.TraitError(f"items[{i}] has no 'id' (a non-empty string)")
            if item_id in seen:
                raise traitlets.TraitError(f"items[{i}]: id {clip(item_id)!r} is repeated")
            seen.add(item_id)
            thumb = it.get("thumb", b"")
            if not isinstance(thumb, (bytes, bytearray, memoryview)):
                raise traitlets.TraitError(f"items[{i}] ({clip(item_id)}): 'thumb' must be bytes, "
                                           f"got {type(thumb).__name__}")
            for k in _ITEM_TEXT:
                if it.get(k) is not None and not isinstance(it[k], str):
                    raise traitlets.TraitError(f"items[{i}] ({clip(item_id)}): {k!r} must be a string or None")
            item = {"caption": None, "mime": None, "w": None, "h": None, "suggestion": None, "confidence": None,
                    "error": None, **it, "thumb": bytes(thumb)}
            out.append(item)
        return out

    @traitlets.validate("keymap")
    def _check_keymap(self, proposal):
        km = proposal["value"]
        for key, action in km.items():
            if not isinstance(key, str) or not key:
                raise traitlets.TraitError(f"keymap keys must be non-empty strings, got {key!r}")
            try:
                check_action(action, len(self.classes), where=f"keymap[{key!r}]")
            except ValueError as e:
                raise traitlets.TraitError(str(e)) from None
        return km

    @traitlets.validate("error")
    def _check_error(self, proposal):
        return check_error(proposal["value"])

    # ------------------------------------------------------------------ browser messages
    def _handle_custom_msg(self, content, buffers):
        # anywidget answers commands itself and would raise on a malformed one: drop those first
        if isinstance(content, dict) and content.get("kind") == "anywidget-command":
            cid, name = content.get("id"), content.get("name")
            if not (isinstance(cid, str) and 0 < len(cid) <= 100 and isinstance(name, str)
                    and name in getattr(type(self), "_anywidget_commands", {}) and "msg" in content):
                log.warning("LabelGrid: ignored a malformed command message")
                return
        super()._handle_custom_msg(content, buffers)

    def _handle_message(self, _widget, content, buffers):
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "submit":
                self._submit(content)
            elif kind == "undo":
                self._undo()
            # anything else (anywidget commands, unknown types) is not for this handler
        except MessageError as e:
            self._fail("message", str(e))
        except Exception as e:  # never raise out of a comm handler: the user would see nothing
            log.exception("LabelGrid: %s failed", kind)
            self._fail(kind if kind in ("submit", "undo") else "internal", f"{type(e).__name__}: {clip(str(e), 500)}")

    def _fail(self, kind: str, message: str) -> None:
        with self.hold_sync():
            self.busy = False
            self.error = {"kind": kind, "message": message}

    def _ids(self) -> set[str]:
        return {it["id"] for it in self.items}

    def _submit(self, content):
        if isinstance(content.get("batch"), bool) or content.get("batch") != self.batch:
            raise MessageError(f"this submit is for batch {clip(content.get('batch'), 20)}, but batch "
                               f"{self.batch} is shown (already submitted or replaced); nothing was saved")
        ids = self._ids()
        labels = self._mapping(content, "labels", ids)
        bad = [v for v in labels.values() if not isinstance(v, str) or v not in self.classes]
        if bad:
            raise MessageError(f"labels name {len(bad)} unknown class(es), e.g. {clip(bad[0])!r}; nothing was saved")
        sources = self._mapping(content, "sources", ids)
        bad = [v for v in sources.values() if v not in SOURCES]
        if bad:
            raise MessageError(f"sources must be 'human' or 'accepted', got {clip(bad[0])!r}; nothing was saved")
        seconds = {k: float(v) for k, v in self._mapping(content, "seconds", ids).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0}
        skipped = content.get("skipped", [])
        if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
            raise MessageError(f"skipped must be a list of item ids, got {clip(skipped, 60)}; nothing was saved")
        outside = [s for s in skipped if s not in ids]
        if outside:
            raise MessageError(f"skipped names {len(outside)} item(s) not in this batch, e.g. {clip(outside[0])!r}; "
                               "nothing was saved")
        if self._on_submit is None:
            raise RuntimeError("this grid is not connected to a session")
        with self.hold_sync():
            self.busy = True
            self.error = {}
            self.status = f"saving {len(labels)} labels…"
        try:
            self._on_submit(labels, sources=sources, seconds=seconds, skipped=list(dict.fromkeys(skipped)))
        finally:
            self.busy = False

    @staticmethod
    def _mapping(content, field, ids) -> dict:
        value = content.get(field, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise MessageError(f"{field} must be a mapping {{item_id: value}}, got {type(value).__name__}; "
                               "nothing was saved")
        outside = [k for k in value if k not in ids]
        if outside:
            raise MessageError(f"{field} names {len(outside)} item(s) not in this batch, e.g. {clip(outside[0])!r}; "
                               "nothing was saved")
        return dict(value)

    def _undo(self):
        if self._on_undo is None:
            raise RuntimeError("this grid is not connected to a session")
        self.status = clip(self._on_undo() or "", 300)

    @command
    def enlarge(self, msg, buffers):
        """Command: ``{"id"}`` -> the item's enlarged image (an item of the shown batch only)."""
        item_id = msg.get("id") if isinstance(msg, dict) else None
        if not isinstance(item_id, str) or item_id not in self._ids():
            return {"error": f"{clip(item_id)} is not an item of the shown batch"}, []
        if self._image is None:
            return {"id": item_id, "error": "no larger image available"}, []
        try:
            data, mime = self._image(item_id)
        except Exception as e:  # an unreadable file: the overlay keeps the thumbnail and says why
            return {"id": item_id, "error": clip(str(e), 300)}, []
        return {"id": item_id, "mime": mime}, [bytes(data)]
