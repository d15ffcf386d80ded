"""Refit in the background: the labeller never waits for the model.

A segmentation decoder takes seconds to refit and longer to score; the mask painter should
show the next image at once. :class:`BackgroundWork` runs the session's refits on one worker
thread. The newest request wins: a request made while a job runs replaces any request not
started yet, so work never queues up behind a fast labeller. What a job finds is *applied*
on the thread that owns the session (its store, its events):

- in a notebook kernel, through the kernel's event loop (``call_soon_threadsafe``), so the
  plots and the painter update as soon as a refit lands, between cell executions and comm
  messages;
- otherwise (a script, a test) at the next :meth:`BackgroundWork.wait`, which every session
  method that needs a fresh fit calls first.

>>> applied = []
>>> work = BackgroundWork(lambda job, publish: publish("done", job * 2), lambda kind, value: applied.append(value))
>>> work.request(21)
>>> work.wait()
True
>>> applied
[42]
"""
from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class BackgroundWork:
    """One worker thread for ``run(job, publish)``; ``apply(kind, value)`` on the owner's thread.

    ``run`` calls ``publish(kind, value)`` for each result (a job may publish several, e.g. the
    fitted model first and its scores later); ``has_newer()`` inside ``run`` says whether a newer
    request is waiting (a job may then skip optional work). An exception in ``run`` is published
    as ``("error", exception)``.
    """

    def __init__(self, run, apply):
        self._run = run
        self._apply = apply
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = None      # (job,) not started yet; the newest request
        self._results: list = []  # (kind, value) published, not applied
        self._thread = None
        self._loop = None         # the owner's running event loop (a kernel), or None

    @property
    def busy(self) -> bool:
        """A job is running or waiting to run."""
        return not self._idle.is_set()

    def has_newer(self) -> bool:
        return self._pending is not None

    def request(self, job) -> None:
        """Run ``job`` after the running one (replacing any request not started yet)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        with self._lock:
            self._pending = (job,)
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="alwidgets-refit", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._pending is None:
                    self._thread = None
                    self._idle.set()
                    return
                (job,), self._pending = self._pending, None
            try:
                self._run(job, self._publish)
            except BaseException as e:  # handed to the owner: never lost in a thread
                self._publish("error", e)

    def _publish(self, kind, value) -> None:
        with self._lock:
            self._results.append((kind, value))
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self.apply_results)
            except RuntimeError:  # the loop closed: the next wait() applies it
                pass

    def apply_results(self) -> None:
        """Apply what the worker published so far, in order (on the owner's thread)."""
        with self._lock:
            results, self._results = self._results, []
        for kind, value in results:
            try:
                self._apply(kind, value)
            except Exception:  # an event listener failing must not lose the other results
                log.exception("applying a background %s failed", kind)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job runs or waits, then apply every result; False if ``timeout`` passed first."""
        done = self._idle.wait(timeout)
        self.apply_results()
        return done
