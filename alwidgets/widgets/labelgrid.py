"""LabelGrid: one anywidget for a whole batch of images, labelled from the keyboard.

The front end lives in ``js/labelgrid.js`` and is bundled by esbuild into
``static/`` so that an installed package needs neither node nor a CDN.
Thumbnails travel as binary buffers (no base64) and are shown through Blob URLs.

Messages from the browser (custom messages, ``{"type": ...}``):

``submit``  ``{labels: {id: class}, sources: {id: "human"|"accepted"}, skipped: [id], seconds: {id: s}}``
``undo``    the browser has nothing left to undo in the batch: retract the last saved label
``enlarge`` ``{id}``: answered with ``{"type": "image", "id", "mime"}`` and the image as a buffer
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import anywidget
import traitlets

_STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

DEFAULT_KEYMAP = {
    **{str(k): f"class:{k}" for k in range(1, 10)},
    "0": "class:10",
    "ArrowLeft": "left", "ArrowRight": "right", "ArrowUp": "up", "ArrowDown": "down",
    "h": "left", "l": "right", "k": "up", "j": "down",
    " ": "skip", "Backspace": "undo", "z": "undo", "a": "accept", "Enter": "submit", "Escape": "leave",
}
"""Key (``KeyboardEvent.key``) → action. Documented in ``docs/keymap.md``."""

ACTIONS = ("left", "right", "up", "down", "skip", "undo", "accept", "submit", "leave")
_CLASS_ACTION = re.compile(r"^class:([1-9][0-9]*)$")


def check_keymap(keymap: dict | None) -> dict:
    """The default key map updated with ``keymap``; a value of ``None`` unbinds a key."""
    out = dict(DEFAULT_KEYMAP)
    for key, action in (keymap or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"keymap keys are KeyboardEvent.key strings such as 'q' or 'ArrowLeft', got {key!r}")
        if action is None:
            out.pop(key, None)
        elif action in ACTIONS or (isinstance(action, str) and _CLASS_ACTION.match(action)):
            out[key] = action
        else:
            raise ValueError(
                f"keymap[{key!r}] = {action!r} is not an action; use one of {', '.join(ACTIONS)} or 'class:N' (N >= 1)"
            )
    return out


class LabelGrid(anywidget.AnyWidget):
    """A batch of thumbnails to label with the keyboard or the mouse.

    Parameters
    ----------
    classes : list of str
        Class names; keys ``1``-``9``, ``0`` assign the first ten.
    keymap : dict, optional
        Changes to :data:`DEFAULT_KEYMAP`, e.g. ``{"q": "class:1", "z": None}``.
    on_submit : callable, optional
        ``on_submit(labels, sources=, seconds=, skipped=)``; its return value
        (a string) is shown as the status line. Exceptions are shown, not raised.

    Examples
    --------
    >>> grid = LabelGrid(classes=["cat", "dog"], keymap={"q": "class:1"})
    >>> grid.keymap["q"], grid.keymap["1"]
    ('class:1', 'class:1')
    >>> grid.show_batch([{"id": "a.jpg"}], [b"..."])
    >>> grid.items[0]["id"], len(grid.thumbs)
    ('a.jpg', 1)
    """

    _esm = _STATIC / "labelgrid.js"
    _css = _STATIC / "labelgrid.css"

    items = traitlets.List(traitlets.Dict()).tag(sync=True)
    thumbs = traitlets.List(traitlets.Bytes()).tag(sync=True)
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    keymap = traitlets.Dict().tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    assignments = traitlets.Dict().tag(sync=True)
    columns = traitlets.Int(8).tag(sync=True)
    autofocus = traitlets.Bool(True).tag(sync=True)

    def __init__(self, classes=(), *, keymap=None, on_submit=None, on_undo=None, image=None, **kwargs):
        super().__init__(classes=[str(c) for c in classes], keymap=check_keymap(keymap), **kwargs)
        self._on_submit = on_submit
        self._on_undo = on_undo
        self._image = image
        self.on_msg(self._handle_message)

    def show_batch(self, items: list[dict], thumbs: list[bytes]) -> None:
        """Replace the grid with a new batch (items and thumbnails in display order)."""
        if len(items) != len(thumbs):
            raise ValueError(f"{len(items)} items but {len(thumbs)} thumbnails")
        for i, it in enumerate(items):
            if "id" not in it:
                raise ValueError(f"item {i} has no 'id'")
        with self.hold_sync():
            self.assignments = {}
            self.thumbs = [bytes(t) for t in thumbs]
            self.items = [dict(it) for it in items]
            self.busy = False

    def _handle_message(self, _widget, content, buffers):
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "submit":
                self._submit(content)
            elif kind == "undo":
                if self._on_undo is not None:
                    self.status = self._on_undo() or ""
            elif kind == "enlarge":
                if self._image is not None:
                    data, mime = self._image(str(content["id"]))
                    self.send({"type": "image", "id": content["id"], "mime": mime}, buffers=[data])
        except Exception as e:  # shown in the widget: an exception in a comm handler would be lost
            log.exception("LabelGrid %s failed", kind)
            with self.hold_sync():
                self.busy = False
                self.status = f"error: {e}"

    def _submit(self, content):
        labels = {str(k): str(v) for k, v in (content.get("labels") or {}).items()}
        self.busy = True
        self.status = f"saving {len(labels)} labels…"
        if self._on_submit is None:
            raise RuntimeError("this grid is not connected to a session")
        msg = self._on_submit(labels, sources=content.get("sources") or {},
                              seconds=content.get("seconds") or {}, skipped=content.get("skipped") or [])
        with self.hold_sync():
            self.busy = False
            self.status = msg or ""
