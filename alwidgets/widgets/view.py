"""SessionView: the notebook face of a headless :class:`~alwidgets.Session`.

The view talks to the session only through its public API: ``next_batch``,
``submit``, ``undo``, ``thumbnail``/``caption``/``image``, the ``"batch"``,
``"change"`` and ``"baseline"`` events and the read-only state (``metrics_``, ``history``,
``label_counts()``, ``progress()``, ``batch``). The widget (:class:`LabelApp`:
grid + plots) is built on first use, and :meth:`SessionView._push` is the one
path that writes state into it, whatever changed the session (the grid, or
code in another cell).
"""
from __future__ import annotations

import inspect
import logging

from .labelgrid import clip

log = logging.getLogger(__name__)

NEXT_HINT = "run session.label() again (or pass continuous=True) for the next batch"


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
        if batch is not self._shown:        # a session that did not announce it
            self._on_batch(batch)
        return app

    # ------------------------------------------------------------------ session events
    def _on_batch(self, batch) -> None:
        self._shown = batch if len(batch) else None
        self._items = self._tiles(batch)
        self._batch_no += 1
        self._notice = "" if len(batch) else (batch.reason or "no items to label")
        bad = [it for it in self._items if it["error"]]
        self._error = {} if not bad else {
            "kind": "unreadable",
            "message": f"{len(bad)} image(s) could not be read and show a placeholder: "
                       + "; ".join(f"{clip(it['id'], 60)} ({clip(it['error'], 80)})" for it in bad[:3])
                       + (" …" if len(bad) > 3 else "") + "; skip them (Space) or label them by name"}
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
        self._items = [tiles[i] for i in batch.ids if i in tiles] if all(i in tiles for i in batch.ids) \
            else self._tiles(batch)
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
            # Enter ends the batch: with close=True the session finishes the round and frees the
            # untouched rest of it (a session without it keeps them until the next batch)
            close = {"close": True} if _takes_close(s) else {}
            try:
                self._status = clip(s.submit(labels, sources=sources, seconds=seconds, skipped=skipped, **close)
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
                    if batch is not self._shown:
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


def _takes_close(session) -> bool:
    """Whether ``session.submit`` accepts ``close=`` (end the batch with this submit)."""
    try:
        return "close" in inspect.signature(session.submit).parameters
    except (TypeError, ValueError):
        return False
