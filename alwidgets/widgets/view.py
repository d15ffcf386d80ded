"""SessionView and MaskSessionView: the notebook faces of a headless :class:`~alwidgets.Session`.

``session.label(n)`` shows a :class:`SessionView` (the label grid with live plots) or, for a
segmentation task, a :class:`MaskSessionView` (the mask painter); :func:`view_for` picks.

The view talks to the session only through its public API: ``next_batch``,
``submit``, ``undo``, ``thumbnail``/``caption``/``image``, the ``"batch"``,
``"change"`` and ``"baseline"`` events and the read-only state (``metrics_``, ``history``,
``label_counts()``, ``progress()``, ``batch``). The widget (:class:`LabelApp`:
grid + plots) is built on first use, and :meth:`SessionView._push` is the one
path that writes state into it, whatever changed the session (the grid, or
code in another cell).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .labelgrid import clip

log = logging.getLogger(__name__)

NEXT_HINT = "run session.label() again (or pass continuous=True) for the next batch"
PANELS_WAIT_S = 5.0   # a segmentation session's plots follow its first image, or come after this long


class SessionView:
    """Grid + live plots for ``session``; ``show(n)`` picks a batch and returns the widget.

    Parameters
    ----------
    session : Session
        Anything with the Session's public API (see the module docstring).

    Notes
    -----
    ``session.label(n, continuous=...)`` makes one view per session and calls
    :meth:`show`; the grid's Enter goes to ``session.submit``, Backspace with
    nothing left to undo in the browser to ``session.undo``, the enlarged view
    to ``session.image``.
    """

    def __init__(self, session):
        self.session = session
        self.continuous = False
        self.n = 16
        self._app = None
        self._shown = None       # the Batch on the grid (None: no tiles)
        self._announced = None   # the last Batch a "batch" event brought (empty ones too)
        self._items: list[dict] = []
        self._batch_no = 0
        self._status = ""
        self._notice = ""
        self._error: dict = {}
        self._held = 0           # > 0 while a grid action runs: it pushes once at its end
        self._baseline = None    # the last "baseline" event's curve, drawn once the widget exists
        session.on("batch", self._on_batch)
        session.on("change", self._on_change)
        session.on("baseline", self._on_baseline)

    def close(self) -> None:
        """Stop following the session's events (the widget stays as it is)."""
        self.session.off("batch", self._on_batch)
        self.session.off("change", self._on_change)
        self.session.off("baseline", self._on_baseline)

    # ------------------------------------------------------------------ the widget
    @property
    def app(self):
        """The :class:`LabelApp` (grid + plots), built on first use."""
        if self._app is None:
            from .app import LabelApp
            from .labelgrid import LabelGrid

            s = self.session
            grid = LabelGrid(s.classes, keymap=s.keymap, on_submit=self._submit, on_undo=self._undo,
                             image=self._image)
            self._app = LabelApp(grid, s.classes, calibration=bool(s.calibration))
            self._push()
            if self._baseline is not None:
                self._on_baseline(self._baseline)
        return self._app

    @property
    def grid(self):
        return self.app.grid

    def show(self, n: int = 16, *, continuous: bool = False):
        """Pick the next ``n`` items (``session.next_batch(n)``), show them, return the widget.

        With ``continuous=True`` each Enter saves the batch and shows the next one.
        """
        app = self.app
        batch = self.session.next_batch(n)  # validates n; its "batch" event shows it
        self.n, self.continuous = n, bool(continuous)
        if batch is not self._announced:    # a session that did not announce it
            self._on_batch(batch)
        return app

    # ------------------------------------------------------------------ session events
    def _on_batch(self, batch) -> None:
        self._announced = batch
        self._shown = batch if len(batch) else None
        self._items = self._tiles(batch)
        self._batch_no += 1
        self._notice = "" if len(batch) else (batch.reason or "no items to label")
        bad = [it for it in self._items if it["error"]]
        self._error = {} if not bad else {
            "kind": "unreadable",
            "message": f"{len(bad)} image(s) could not be read and show a placeholder: "
                       + "; ".join(f"{clip(it['id'], 60)} ({clip(it['error'], 80)})" for it in bad[:3])
                       + (" …" if len(bad) > 3 else "") + "; skip them (Space)"}
        self._push()

    def _on_change(self, status: str) -> None:
        self._status = clip(status or "", 300)
        current = self.session.batch
        if self._shown is not None and current is not self._shown:
            if current is not None and len(current):
                self._follow(current)   # part of the batch was saved from code: the rest stays open
            else:
                self._finished()        # submitted (or replaced) from code: no tiles are open
        self._push()

    def _on_baseline(self, stats) -> None:
        """The simulated random baseline (``n_labels``, ``mean``, ``std``), drawn on the accuracy panel."""
        if self._app is not None:
            self._app.show_baseline(stats["n_labels"], stats["mean"], stats["std"])
        self._baseline = stats

    def _follow(self, batch) -> None:
        """Show ``batch``, a part of the shown one, reusing its tiles (no thumbnail is read again)."""
        tiles = {it["id"]: it for it in self._items}
        self._shown = batch
        self._items = [tiles[i] for i in batch.ids] if set(batch.ids) <= tiles.keys() else self._tiles(batch)
        self._batch_no += 1

    def _finished(self, n_saved: int | None = None) -> None:
        self._shown, self._items = None, []
        self._batch_no += 1
        what = "the batch was saved" if n_saved is None else f"saved {n_saved} label{'s' * (n_saved != 1)}"
        self._notice = f"{what} — {NEXT_HINT}"

    # ------------------------------------------------------------------ the one path to the widget
    def _push(self) -> None:
        """Write the session's state and the view's into the grid and the plots."""
        if self._app is None or self._held:
            return
        s = self.session
        metrics = s.metrics_ or {}
        progress = {k: v for k, v in dict(s.progress()).items() if k in ("pool_labelled", "pool_size", "budget")}
        progress["accuracy"] = metrics.get("accuracy")
        progress["accuracy_std"] = metrics.get("accuracy_std")
        grid = self._app.grid
        with grid.hold_sync():
            grid.items = self._items
            grid.batch = self._batch_no
            grid.notice = self._notice
            grid.status = self._status
            grid.error = self._error
            grid.progress = progress
            grid.busy = False
        self._app.update(s.history, s.metrics_, s.label_counts(), session_id=getattr(s, "session_id", None))

    # ------------------------------------------------------------------ grid callbacks
    def _submit(self, labels, *, sources, seconds, skipped) -> None:
        s = self.session
        self._held += 1
        try:
            try:  # Enter ends the batch: the session finishes the round and frees the untouched rest
                self._status = clip(s.submit(labels, sources=sources, seconds=seconds, skipped=skipped, close=True)
                                    or "", 300)
            except Exception as e:  # the session refused it (it saves nothing then): keep the batch for a retry
                self._error = {"kind": "submit", "message": clip(str(e) or type(e).__name__, 500)}
                return
            self._error = {}
            self._finished(len(labels))
            if self.continuous:  # an empty batch (budget reached, nothing left) says why in its reason
                try:
                    batch = s.next_batch(self.n)
                except Exception as e:  # the labels are saved; only the next pick failed
                    self._error = {"kind": "next_batch",
                                   "message": clip(f"saved {len(labels)} labels, but picking the next batch "
                                                   f"failed: {e}", 500)}
                else:
                    if batch is not self._announced:
                        self._on_batch(batch)
        finally:
            self._held -= 1
            self._push()

    def _undo(self) -> str:
        self._held += 1
        try:
            try:
                self._status = clip(self.session.undo() or "", 300)
                self._error = {}
            except Exception as e:
                self._error = {"kind": "undo", "message": clip(str(e) or type(e).__name__, 500)}
            return self._status
        finally:
            self._held -= 1
            self._push()

    def _image(self, item_id: str):
        return self.session.image(item_id)

    # ------------------------------------------------------------------ tiles
    def _tiles(self, batch) -> list[dict]:
        """The grid's items for ``batch``: id, caption, thumbnail bytes, suggestion, or why it is unreadable."""
        from ..pool import ImageReadError

        s = self.session
        known = dict((batch.info or {}).get("errors") or {})
        items = []
        for k, item_id in enumerate(batch.ids):
            error = known.get(item_id)
            thumb, mime, (w, h) = b"", None, (None, None)
            if error is None:
                try:
                    thumb, mime, (w, h) = s.thumbnail(item_id)
                except ImageReadError as e:  # damaged beyond its header: a placeholder tile, not a dead grid
                    error = e.reason
            conf = batch.confidences[k] if k < len(batch.confidences) else None
            items.append({
                "id": item_id, "caption": s.caption(item_id), "thumb": thumb, "mime": mime, "w": w, "h": h,
                "suggestion": batch.suggestions[k] if k < len(batch.suggestions) else None,
                "confidence": None if conf is None else round(float(conf), 4),
                "error": None if error is None else clip(str(error), 300),
            })
        return items


# ============================================================================== the mask painter
PAINT_NEXT_HINT = "run session.label() again (or pass continuous=True) for the next images"


def view_for(session):
    """The notebook view of ``session``: the mask painter for segmentation, the label grid otherwise."""
    if getattr(getattr(session, "task", None), "name", None) == "segmentation":
        return MaskSessionView(session)
    return SessionView(session)


class MaskSessionView:
    """The mask painter for a segmentation session; ``show(n)`` picks a batch and returns the painter
    above the session's live panels (:class:`~alwidgets.widgets.app.MaskApp`), or the painter alone
    for a source without rounds (:class:`InMemoryMasks`).

    Each Enter in the painter saves one mask (``session.submit``, acknowledged once the store has
    committed it; the session refits) and shows the next image of the batch, pre-filled from the
    refitted model on ``p``. :meth:`_push` is the one path that writes into the widget.

    The session interface it uses (a :class:`~alwidgets.Session` with a segmentation task has it;
    :class:`InMemoryMasks` is a stand-alone one):

    - ``session.task.classes``, ``session.task.ignore_index``;
    - ``session.next_batch(n)`` -> a batch with ``ids`` (and ``reason`` when empty);
    - ``session.submit({item_id: mask}, seconds={item_id: s}, skipped=[ids], close=bool)`` -> status
      line; raises and saves nothing when it refuses. With ``resubmit=True`` (passed only then) a
      mask saved since the last ``next_batch`` is submitted again: a correction supersedes it;
    - ``session.undo()`` -> status line: retracts the last label the session saved;
    - ``session.thumbnail(item_id)`` -> ``(bytes, mime, (w, h))``, ``session.caption(item_id)``;
    - the image: ``session.painter_image(item_id)`` if it has one, else its pool's file (sent as it is
      when the browser can show it) or ``pool.image(i)``;
    - the prediction: ``session.predicted_mask(item_id)`` -> ``(H, W)`` class map or None, if it has
      one, else ``session.probs_[i]`` (``(C, h, w)`` probabilities) upsampled and arg-maxed;
    - optional: ``session.painter_keymap`` (changes to the painter's keys), ``session.on/off`` of the
      ``"batch"``, ``"change"``, ``"fit"`` and ``"baseline"`` events;
    - for the live panels: ``session.history``, ``session.metrics_``, ``session.label_counts()``
      (labelled pixels per class), ``session.progress()``.
    """

    def __init__(self, session):
        task = session.task
        self.session = session
        self.classes = [str(c) for c in task.classes]
        self.ignore_index = int(task.ignore_index)
        self.continuous = False
        self.n = 8
        self._painter = None
        self._announced = None
        self._batch_no = 0
        self._items: list[dict] = []
        self._current: str | None = None
        self._img = None            # (BrowserImage, prediction PNG, initial PNG) of the current item
        self._status = ""
        self._notice = ""
        self._error: dict = {}
        self._masks: dict = {}      # masks saved from this batch: reopening one starts from it
        self._saved: list[str] = [] # ids saved from this batch, oldest first (undo after a submit)
        self._skipped: list[str] = []  # skipped, not yet told to the session
        self._held = 0
        self._app = None
        self._drawn = None          # what the panels show: (rounds, metrics, masks), redrawn when it changes
        self._baseline = None       # the last "baseline" event's curve, drawn once the panels exist
        if hasattr(session, "on"):
            session.on("batch", self._on_batch)
            session.on("change", self._on_change)
            for event, fn in (("fit", self._on_fit), ("baseline", self._on_baseline)):
                try:
                    session.on(event, fn)
                except (KeyError, ValueError):   # a session without the event: nothing to follow
                    pass

    def close(self) -> None:
        """Stop following the session's events (the widget stays as it is)."""
        if hasattr(self.session, "off"):
            self.session.off("batch", self._on_batch)
            self.session.off("change", self._on_change)
            self.session.off("fit", self._on_fit)
            try:
                self.session.off("baseline", self._on_baseline)
            except (KeyError, ValueError):
                pass

    @property
    def painter(self):
        """The :class:`~alwidgets.widgets.maskpainter.MaskPainter`, built on first use."""
        if self._painter is None:
            from .maskpainter import MaskPainter

            self._painter = MaskPainter(self.classes, ignore_index=self.ignore_index,
                                        keymap=getattr(self.session, "painter_keymap", None),
                                        on_submit=self._submit, on_skip=self._skip, on_open=self._open,
                                        on_undo=self._undo, on_shown=self._show_panels)
            self._push()
        return self._painter

    @property
    def app(self):
        """The :class:`~alwidgets.widgets.app.MaskApp` (painter + live panels), built on first use;
        None for a source without rounds to plot."""
        if self._app is None and hasattr(self.session, "history"):
            from .app import MaskApp

            self._app = MaskApp(self.painter, self.classes, defer=True)
        return self._app

    @staticmethod
    def _after_image(fn, wait: float = PANELS_WAIT_S) -> None:
        """Run ``fn`` ``wait`` seconds after the cell that shows the painter returned, at once without an
        event loop (a script); the painter's ``on_shown`` (its view has shown the first image) runs the
        same ``fn`` sooner, and ``fn`` does its work once.

        The browser renders plotly's four panels in one go, seconds on a busy 2-core machine, and an
        image arriving meanwhile waits for them: 227 ms -> 5.4 s from ``label()`` to the image shown
        (``benchmarks/painter_latency.py --browser --session``) when the panels came with the painter.
        """
        MaskSessionView._later(fn, delay=wait)

    def _show_panels(self) -> None:
        if self._app is None or self._app.panels_shown:
            return   # shown already (the image came before the fallback's time, or the other way round)
        self._app.build_panels()
        self._drawn = None
        self._draw()
        if self._baseline is not None:
            self._on_baseline(self._baseline)

    def show(self, n: int = 8, *, continuous: bool = False):
        """Pick the next ``n`` images (``session.next_batch(n)``), show the first, return the widget:
        the painter above the live panels (:attr:`app`), or the painter alone without them."""
        app = self.app
        widget = app if app is not None else self.painter
        if app is not None:   # shown again in a new cell: its panels follow its first image there too
            app.hide_panels()
            self._after_image(self._show_panels)
        batch = self.session.next_batch(n)  # validates n; its "batch" event shows it
        self.n, self.continuous = n, bool(continuous)
        if batch is not self._announced:    # a session that did not announce it
            self._on_batch(batch)
        return widget

    # ------------------------------------------------------------------ session events
    def _on_batch(self, batch) -> None:
        self._announced = batch
        self._batch_no += 1
        self._items = self._tiles(batch, thumbs=False)
        self._masks, self._saved = {}, []
        self._skipped = [it["id"] for it in self._items if it["state"] == "error"]  # never offered again
        self._error = {}
        self._notice = "" if len(batch.ids) else (getattr(batch, "reason", "") or "no images to paint")
        self._goto(self._next_todo(None))
        self._push()
        self._later(self._fill_thumbs, self._batch_no)

    @staticmethod
    def _later(fn, *args, delay: float = 0.0) -> None:
        """Run ``fn`` once the cell that showed the painter has returned (in a kernel; ``delay`` seconds
        after), else now.

        The first image is what the labeller waits for: the strip's thumbnails follow it.
        """
        import asyncio

        try:
            asyncio.get_running_loop().call_later(delay, fn, *args)
        except RuntimeError:  # no event loop running (a script, a test): now
            fn(*args)

    def _fill_thumbs(self, batch_no: int) -> None:
        from ..pool import ImageReadError

        if batch_no != self._batch_no:
            return  # another batch meanwhile
        for it in self._items:
            if it["thumb"] or it["state"] == "error":
                continue
            try:
                it["thumb"], it["mime"], _ = self.session.thumbnail(it["id"])
            except (ImageReadError, ValueError, OSError) as e:
                reason = clip(str(getattr(e, "reason", None) or e), 300)
                if it["state"] == "todo" and it["id"] != self._current:
                    it["state"], it["error"] = "error", reason
                    self._skipped.append(it["id"])
        self._push()

    def _on_change(self, status: str) -> None:
        if self._held:
            return  # our own submit: it pushes once at its end
        self._status = clip(status or "", 300)
        self._push()
        self._draw()

    def _on_baseline(self, stats) -> None:
        """The simulated random curve (``n_labels``, ``mean``, ``std``), drawn on the mIoU panel."""
        self._baseline = stats
        if self._app is not None:
            self._app.show_baseline(stats["n_labels"], stats["mean"], stats["std"])

    def _on_fit(self, model) -> None:
        """A refit landed (in the background while the labeller paints): the shown image's prediction
        (what ``p`` pre-fills) is now the new model's; the labeller's mask is untouched."""
        if self._held or self._current is None or self._img is None:
            return  # our own submit or a new image: _load makes the prediction then
        img, _, init = self._img
        self._img = (img, self._prediction_png(self._current, img), init)
        self._push()

    # ------------------------------------------------------------------ the one path to the widget
    def _push(self) -> None:
        if self._painter is None or self._held:
            return
        p = self._painter
        img, pred, init = self._img if self._img is not None else (None, b"", b"")
        with p.hold_sync():
            p.items = [dict(it) for it in self._items]
            p.batch = self._batch_no
            p.show_image(self._current or "", img, pred, init)
            p.status = self._status
            p.notice = self._notice
            p.error = self._error

    def _draw(self) -> None:
        """Redraw the live panels when the session's rounds, metrics or masks changed since the last
        draw (a painter action alone leaves them as they are)."""
        if self._app is None or self._held:
            return
        s = self.session
        history, m = s.history, s.metrics_ or {}
        key = (len(history), s.progress().get("pool_labelled"), m.get("n_labels"), m.get("accuracy"), m.get("ece"))
        if key == self._drawn:
            return
        self._drawn = key
        self._app.update(history, s.metrics_, s.label_counts(), session_id=getattr(s, "session_id", None))

    # ------------------------------------------------------------------ painter callbacks
    def _submit(self, item_id: str, mask, seconds=None) -> None:
        self._held += 1
        try:
            close = not any(it["state"] == "todo" and it["id"] != item_id for it in self._items)
            try:
                again = {"resubmit": True} if item_id in self._masks else {}  # a correction of a saved mask
                msg = self.session.submit({item_id: mask}, seconds=None if seconds is None else {item_id: seconds},
                                          skipped=list(self._skipped), close=close, **again)
            except Exception as e:  # refused (nothing saved): the browser keeps the mask for a retry
                self._error = {"kind": "submit", "message": clip(str(e) or type(e).__name__, 500)}
                return
            self._skipped = []
            self._status = clip(msg or "", 300)
            self._error = {}
            if " not saved: " in (msg or ""):  # another session took the item over meanwhile
                self._set_state(item_id, "error", msg)
            else:
                self._masks[item_id] = mask
                self._saved = [k for k in self._saved if k != item_id] + [item_id]
                self._set_state(item_id, "done")
            self._advance(item_id)
        finally:
            self._held -= 1
            self._push()
            self._draw()   # after the next image is on its way

    def _skip(self, item_id: str) -> None:
        self._held += 1
        try:
            if self._state(item_id) == "todo":
                self._set_state(item_id, "skipped")
                self._skipped.append(item_id)
            self._advance(item_id)
        finally:
            self._held -= 1
            self._push()

    def _open(self, item_id: str) -> None:
        self._held += 1
        try:
            self._goto(item_id, onward=False)
        finally:
            self._held -= 1
            self._push()

    def _undo(self) -> None:
        """Nothing left to undo on the shown image: retract the last mask saved from this batch and reopen it."""
        self._held += 1
        try:
            if not self._saved:
                self._status = "nothing to undo"
                return
            item_id = self._saved[-1]
            try:
                msg = self.session.undo() or ""
            except Exception as e:
                self._error = {"kind": "undo", "message": clip(str(e) or type(e).__name__, 500)}
                return
            self._status = clip(msg, 300)
            if msg.startswith("retracted") and item_id in msg:
                self._saved.pop()
                self._set_state(item_id, "todo")
                self._goto(item_id, onward=False)
        finally:
            self._held -= 1
            self._push()
            self._draw()

    # ------------------------------------------------------------------ moving through the batch
    def _state(self, item_id):
        return next((it["state"] for it in self._items if it["id"] == item_id), None)

    def _set_state(self, item_id: str, state: str, error: str | None = None) -> None:
        for it in self._items:
            if it["id"] == item_id:
                it["state"] = state
                if error is not None:
                    it["error"] = clip(error, 300)

    def _next_todo(self, after: str | None):
        ids = [it["id"] for it in self._items]
        k = ids.index(after) + 1 if after in ids else 0
        return next((ids[j % len(ids)] for j in range(k, k + len(ids))
                     if self._items[j % len(ids)]["state"] == "todo"), None)

    def _advance(self, item_id: str) -> None:
        nxt = self._next_todo(item_id)
        if nxt is not None:
            self._goto(nxt)
            return
        if self._skipped:  # the batch is over: skipped images go back to the others
            try:
                self.session.submit({}, skipped=list(self._skipped), close=True)
                self._skipped = []
            except Exception as e:
                log.warning("MaskSessionView: could not hand back skipped images: %s", e)
        self._current, self._img = None, None
        done = sum(it["state"] == "done" for it in self._items)
        self._notice = f"batch finished: {done} of {len(self._items)} masks saved — {PAINT_NEXT_HINT}"
        if self.continuous:
            try:
                batch = self.session.next_batch(self.n)
            except Exception as e:
                self._error = {"kind": "next_batch", "message": clip(f"the masks are saved, but picking the next "
                                                                      f"images failed: {e}", 500)}
            else:
                if batch is not self._announced:
                    self._on_batch(batch)

    def _goto(self, item_id, *, onward: bool = True) -> None:
        """Show ``item_id``; an image that cannot be shown is marked and skipped (``onward``: the next todo)."""
        from .maskpainter import PainterImageError

        while item_id is not None:
            try:
                img = self._load(item_id)
            except (PainterImageError, ValueError, OSError) as e:
                reason = clip(str(e) or type(e).__name__, 300)
                self._set_state(item_id, "error", reason)
                if item_id not in self._skipped:
                    self._skipped.append(item_id)
                self._error = {"kind": "image", "message": f"{clip(item_id, 60)} cannot be painted: {reason}"}
                if not onward:
                    return
                item_id = self._next_todo(item_id)
                continue
            self._current, self._img = item_id, img
            return
        self._current, self._img = None, None

    def _load(self, item_id: str):
        from .maskpainter import browser_image, index_png

        s = self.session
        getter = getattr(s, "painter_image", None)
        if getter is not None:
            img = browser_image(getter(item_id))
        else:
            pool = s.pool
            i = pool.index_of(item_id)
            path = pool.paths[i] if pool.paths is not None else None
            img = browser_image(Path(path) if path is not None and "://" not in path else pool.image(i))
        kw = dict(n_classes=len(self.classes), ignore_index=self.ignore_index, shape=(img.height, img.width))
        return img, self._prediction_png(item_id, img), index_png(self._masks.get(item_id), **kw)

    def _prediction_png(self, item_id: str, img) -> bytes:
        """The model's mask of ``item_id`` as an index PNG, ``b""`` when there is none."""
        from .maskpainter import index_png

        try:
            return index_png(self._prediction(item_id, img), n_classes=len(self.classes),
                             ignore_index=self.ignore_index, shape=(img.height, img.width))
        except Exception as e:  # a prediction is a help, never a reason not to paint
            log.warning("MaskSessionView: no prediction for %s: %s", item_id, e)
            return b""

    def _prediction(self, item_id: str, img):
        s = self.session
        fn = getattr(s, "predicted_mask", None)
        if fn is not None:
            return fn(item_id)
        probs = getattr(s, "probs_", None)
        pool = getattr(s, "pool", None)
        if probs is None or pool is None:
            return None
        p = np.asarray(probs[pool.index_of(item_id)], dtype=np.float32)
        if p.ndim != 3 or p.shape[0] != len(self.classes):
            return None
        return upsample_argmax(p, (img.height, img.width))

    def _tiles(self, batch, thumbs: bool = True) -> list[dict]:
        from ..pool import ImageReadError

        s = self.session
        known = dict((getattr(batch, "info", None) or {}).get("errors") or {})
        items = []
        for item_id in batch.ids:
            error, thumb, mime = known.get(item_id), b"", None
            if error is None and thumbs:
                try:
                    thumb, mime, _ = s.thumbnail(item_id)
                except (ImageReadError, ValueError, OSError) as e:
                    error = getattr(e, "reason", None) or str(e)
            items.append({"id": item_id, "caption": s.caption(item_id), "thumb": thumb, "mime": mime,
                          "state": "todo" if error is None else "error",
                          "error": None if error is None else clip(str(error), 300)})
        return items


def upsample_argmax(probs, shape) -> np.ndarray:
    """The class map ``(H, W)`` of probabilities ``(C, h, w)``: bilinear to ``shape``, then arg-max (as scored)."""
    import torch
    import torch.nn.functional as F

    z = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    if tuple(z.shape[-2:]) != tuple(shape):
        z = F.interpolate(z, size=tuple(shape), mode="bilinear", align_corners=False)
    return z[0].argmax(0).numpy().astype(np.uint8)
