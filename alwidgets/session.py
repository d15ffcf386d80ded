"""Session: the state of labelling one pool — headless; the notebook widget binds to it.

Every label goes through a :class:`~alwidgets.LabelStore` and is acknowledged only
once the store has committed it; labels, rounds and history are read back from
the store, so a restarted notebook picks up where it stopped. The learning loop
itself (fit → predict → select) is :class:`~alwidgets.loop.Loop`; what a label is
belongs to the :mod:`~alwidgets.tasks` task. The widget (``session.label()``)
lives in :mod:`alwidgets.widgets` and talks to the Session only through the
public methods below and its events, so everything here works without it.
"""
from __future__ import annotations

import io
import re
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._validation import check_positive_int
from .loop import Loop
from .tasks import Classification

EVENTS = ("batch", "change", "baseline", "fit")
REFIT_MODES = ("auto", "now", "background")
_MAX_SHOWN = 80  # characters of a user-given value echoed back in a message


@dataclass
class Batch:
    """The items picked for one round, best first.

    Iterating a batch gives its item ids. ``reason`` says why it is empty or
    shorter than asked ('' otherwise); ``info`` is the selector's explanation.
    """

    ids: list
    indices: np.ndarray
    suggestions: list
    confidences: list
    strategy: str = ""
    info: dict = field(default_factory=dict)
    reason: str = ""
    round_id: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(self.ids)

    def __contains__(self, item_id) -> bool:
        return item_id in self.ids


class Session:
    """Label a pool: pick a batch, record labels, refit, measure — one round per call.

    Parameters
    ----------
    pool : Pool or SegmentationData
        The items to label (``Pool.digits()``, ``Pool.from_folder(...)``, ...). A
        :class:`~alwidgets.segmentation.SegmentationData` (images + masks) makes a
        segmentation session: its classes and ignore index set the task, its known
        masks serve ``test=`` item ids and the simulated baseline (never the labels).
    classes : list of str, optional
        Class names; default ``pool.classes``.
    embeddings : array (n_items, d) or DenseFeatures, optional
        Features of the pool; computed with ``embedder`` when not given. For
        segmentation: :class:`~alwidgets.segmentation.DenseFeatures`.
    embedder : object with ``embed(pool)``, optional
        Default :class:`~alwidgets.embed.PixelEmbedder` (fine for small images); a
        segmentation session needs dense features (``DenseEmbedder``) and has no default.
    selector : str or Selector
        Strategy name (``"auto"``, ``"margin"``, ``"random"``, ...) or a selector; the
        task's names (segmentation: ``auto``, ``coverage``, ``class_weighted``, ...).
    model : estimator, optional
        Default: the task's (:class:`~alwidgets.models.LinearProbe` for classes).
    store : LabelStore, path, URL or None
        Where labels live. ``None`` uses ``alwidgets-<pool name>.db`` in the current
        directory; ``":memory:"`` keeps them in memory only. An existing store resumes.
    test : (X_test, y_test), Pool, or list of pool item ids, optional
        Held-out items with known classes; accuracy is measured there when given
        (otherwise cross-validated on the labelled items). Item ids of this pool
        are never offered for labelling. Segmentation: ``(DenseFeatures, masks)``,
        a ``SegmentationData`` (embedded with ``embedder``), or item ids of a
        ``SegmentationData`` pool.
    budget : int, optional
        Labels you intend to give in total.
    calibration : bool
        Also measure calibration (reliability table, ECE).
    keymap : dict, optional
        Changes to the grid's key map (``docs/keymap.md``).
    annotator : str, optional
        Name recorded with each label; default the store's (the OS user).
    attach : {"fingerprint", "ids"}
        A store made for another pool is refused unless ``"ids"`` (labels matched by id).
    lease_ttl : float
        Seconds a picked batch stays reserved for *this session*: no other session
        on the store (another kernel of the same user included) gets its items.
    task : Task or "segmentation", optional
        Default :class:`~alwidgets.tasks.Classification` of ``classes``;
        ``"segmentation"`` is a :class:`~alwidgets.segmentation.SegmentationTask` of
        ``classes`` (or the data's). Masks are submitted as ``{item_id: (H, W) array}``
        (or 8-bit PNG bytes) and stored as PNG payloads.
    cv : int, optional
        Folds of the cross-validation when there is no test set; default the task's
        (5 for classes, 3 for masks).
    refit : {"auto", "now", "background"}
        When the model is refitted after a submit. ``"now"``: before ``submit`` returns.
        ``"background"``: on a worker thread — ``submit`` returns once the store has committed,
        the painter moves on at once, and the fit, the metrics and the ``"fit"``/``"change"``
        events follow when the refit lands (in a notebook, by the kernel's event loop; elsewhere
        at :meth:`wait`, which every method needing a fresh fit calls). Refits never queue up: a
        submit during a refit replaces any refit not started yet. ``"auto"`` (default):
        background for tasks whose fits take seconds (segmentation) when called in a notebook
        kernel (a running event loop), now otherwise.

    Examples
    --------
    >>> from alwidgets import Pool, Session
    >>> s = Session(Pool.digits(), selector="margin", store=":memory:")
    >>> batch = s.next_batch(4)
    >>> len(batch)
    4
    >>> s.submit({i: "3" for i in batch})
    'saved 4 labels · accuracy 100% ± 0 (cross-validated on 4 labelled items)'
    >>> s.labels_df()["label"].tolist()
    ['3', '3', '3', '3']
    >>> s.close()
    """

    def __init__(self, pool, classes=None, embeddings=None, embedder=None, selector="auto", model=None,
                 store=None, test=None, *, budget=None, calibration=False, keymap=None, annotator=None,
                 cv=None, thumbnail_size=96, random_state=0, attach="fingerprint", lease_ttl=1800.0, task=None,
                 refit="auto"):
        from .background import BackgroundWork
        from .pool import Pool

        if refit not in REFIT_MODES:
            raise ValueError(f"refit must be one of {', '.join(map(repr, REFIT_MODES))}, got {refit!r}")
        self.refit = refit
        self._work = BackgroundWork(self._refit_job, self._refit_landed)

        self.data = None          # a SegmentationData given as the pool: its known masks
        if _is_segmentation_data(pool):
            self.data, pool = pool, pool.pool
            if task is None or task == "segmentation":
                from .segmentation.task import SegmentationTask

                task = SegmentationTask(self.data.classes if classes is None else classes,
                                        ignore_index=self.data.ignore_index)
        if not isinstance(pool, Pool):
            raise TypeError(f"pool must be an alwidgets.Pool (e.g. Pool.from_arrays(X)), got {type(pool).__name__}")
        if attach not in ("fingerprint", "ids"):
            raise ValueError(f"attach must be 'fingerprint' or 'ids', got {attach!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)) or not 0 < lease_ttl < np.inf:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.pool = pool
        if task is None:
            classes = pool.classes if classes is None else classes
            if classes is None or (not isinstance(classes, str) and len(classes) == 0):
                raise ValueError(f"{pool.name} has no class names; pass classes=['cat', 'dog', ...]")
            task = Classification(classes, calibration=calibration)
        elif task == "segmentation":
            from .segmentation.task import SegmentationTask

            if classes is None:
                raise ValueError("task='segmentation' needs classes=[...] (or pass a SegmentationData as the pool)")
            task = SegmentationTask(classes)
        elif isinstance(task, str):
            raise ValueError(f"unknown task {task!r}; give 'segmentation' or a Task object")
        self.task = task
        self.classes = list(getattr(task, "classes", []))
        self.embedder = embedder
        if embeddings is None:
            if embedder is None:
                if task.payload_labels:
                    raise ValueError(f"a {task.name} session needs features: embeddings=DenseEmbedder(...).embed(pool) "
                                     "or embedder=DenseEmbedder(...)")
                from .embed import PixelEmbedder

                self.embedder = PixelEmbedder()
            embeddings = self.embedder.embed(pool)
        self.embeddings = task.check_features(embeddings, n_items=len(pool))
        self.loop = Loop(task, task.default_model() if model is None else model, selector)
        self.budget = None if budget is None else check_positive_int(budget, "budget")
        self.calibration = bool(calibration)
        self.keymap = keymap
        self.annotator = annotator
        self.attach = attach
        self.lease_ttl = float(lease_ttl)
        self.cv = check_positive_int(getattr(task, "default_cv", 5) if cv is None else cv, "cv")
        self.thumbnail_size = check_positive_int(thumbnail_size, "thumbnail_size")
        self.random_state = random_state
        self._rng = np.random.default_rng(random_state)
        self.session_id = uuid.uuid4().hex
        self.test, self._test_rows = self._check_test(test)
        self.store, self._owns_store = self._open_store(store)
        self._listeners = {e: [] for e in EVENTS}
        self._labels_cache = (None, None)  # (store change counter, labels)
        self._labels_raw = None            # what the store held at the last read: (labels, payloads)
        self._labels_version = 0           # grows only when the labels themselves changed
        try:
            self.attach_report = self._attach()
        except BaseException:
            self.close()
            raise
        self.fitted_ = None       # the loop's last Fitted
        self._newest_model = None # the last fitted model (ahead of fitted_ while a background refit predicts)
        self._fitted_at = None    # the labels' version it was made from
        self.batch: Batch | None = None
        self.batch_size = 16
        self.continuous = False
        self._round = None        # the open round: {"id", "shown", "timings"}
        self._skipped: set[str] = set()
        self._undo: list[str] = []
        self._saved_since_batch: set[str] = set()  # submit(resubmit=True) may correct these
        self._leased: list[str] = []
        self._view = None
        self.metrics_ = self._last_metrics()  # resuming: the plots start from the last finished round
        self.status_ = ""                      # the last status line (a "change" event's): what the widget shows

    # ------------------------------------------------------------------ properties
    @property
    def model(self):
        """The (unfitted) model the loop refits each round; the fitted one is ``session.model_``."""
        return self.loop.model

    @property
    def selector(self):
        """The strategy picking the next batches (change it with :meth:`use`)."""
        return self.loop.selector

    @property
    def model_(self):
        return None if self.fitted_ is None else self.fitted_.model

    @property
    def probs_(self):
        """Predictions for every pool item from the last fit (class probabilities), or None."""
        return None if self.fitted_ is None else self.fitted_.predictions

    @property
    def store_path(self) -> str:
        """Where the labels are saved."""
        return str(getattr(self.store, "path", "?"))

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback) -> None:
        """Call ``callback(payload)`` after ``event``: ``"batch"`` (the new :class:`Batch`),
        ``"change"`` (the status line after a submit, undo, import or a background refit),
        ``"baseline"`` (a DataFrame ``n_labels, mean, std`` of the simulated random baseline),
        ``"fit"`` (the newly fitted model, before it has predicted the pool)."""
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; choose from {', '.join(EVENTS)}")
        if callback not in self._listeners[event]:
            self._listeners[event].append(callback)

    def off(self, event: str, callback) -> None:
        """Stop calling ``callback`` after ``event``."""
        if callback in self._listeners.get(event, []):
            self._listeners[event].remove(callback)

    def _emit(self, event: str, payload) -> None:
        if event == "change":
            self.status_ = payload
        for cb in list(self._listeners[event]):
            cb(payload)

    # ------------------------------------------------------------------ set-up helpers
    def _open_store(self, store):
        from .store import LabelStore

        if isinstance(store, LabelStore):
            return store, False
        if store is None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.pool.name).strip("-") or "pool"
            store = Path.cwd() / f"alwidgets-{slug}.db"
        return LabelStore(store, annotator=self.annotator), True

    def _attach(self):
        """Bind the store to this pool (refusing another pool's store unless ``attach="ids"``)."""
        from .store import StoreMismatchError, pool_fingerprint

        ids = list(self.pool.ids)
        try:
            return self.store.attach_pool(ids, self.classes, match=self.attach)
        except StoreMismatchError as e:
            if self.attach == "fingerprint" and self.store.fingerprint not in (None, pool_fingerprint(ids)):
                raise StoreMismatchError(f"{e} In a Session: Session(..., attach='ids').", e.path) from None
            raise

    def _last_metrics(self):
        """Metrics of the last finished round (a resumed session shows them before its first fit)."""
        h = self.store.rounds_df()
        for m in reversed([m for m in h["metrics"] if isinstance(m, dict) and "n_labels" in m]):
            m = dict(m)
            m.pop("n_added", None)
            m["source_text"] = _source_text(m.get("source"), m.get("n_eval"), m["n_labels"])
            return m
        return None

    def _check_test(self, test):
        """``(X_test, y_test codes)`` and the pool rows held out for testing (never offered)."""
        none = np.empty(0, np.int64)
        if test is None:
            return None, none
        from .pool import Pool

        if _is_segmentation_data(test):
            if self.embedder is None:
                raise ValueError("test=SegmentationData(...) needs embedder= to embed it the same way as the pool; "
                                 "or pass test=(test_features, test_masks)")
            X, y, rows = self.embedder.embed(test.pool), test.masks, none
        elif isinstance(test, Pool):
            if self.embedder is None:
                raise ValueError("test=Pool(...) needs embedder= to embed it the same way as the pool; "
                                 "or pass test=(X_test, y_test) with embeddings")
            unknown = np.flatnonzero(test.targets < 0)
            if len(unknown):
                raise ValueError(f"test pool {test.name}: items without a class at rows {unknown[:10].tolist()}")
            names = [test.classes[t] for t in test.targets] if test.classes else test.targets
            X, y, rows = self.embedder.embed(test), names, none
        elif isinstance(test, (list, np.ndarray)) and np.ndim(test) == 1 and len(test) and \
                all(isinstance(t, str) for t in test):
            rows = []
            for t in test:
                try:
                    rows.append(self.pool.index_of(t))
                except KeyError:
                    raise ValueError(f"test item {t[:_MAX_SHOWN]!r} is not in pool {self.pool.name}") from None
            rows = np.unique(np.asarray(rows, np.int64))
            if self.data is not None:  # masks known to the data set
                missing = [self.pool.ids[r] for r in rows if self.data.masks[r] is None]
                if missing:
                    raise ValueError(f"test items need known masks; {missing[0]!r} has none")
                y = [self.data.masks[r] for r in rows]
            else:
                if np.any(self.pool.targets[rows] < 0):
                    raise ValueError(f"test items need known classes; "
                                     f"{self.pool.ids[rows[self.pool.targets[rows] < 0][0]]!r} has none")
                y = self.pool.targets[rows]
                if self.pool.classes:
                    y = [self.pool.classes[t] for t in y]
            X = self.task.subset_features(self.embeddings, rows)
        else:
            try:
                X, y = test
            except (TypeError, ValueError):
                raise TypeError("test must be (X_test, y_test), a Pool with targets, or a list of pool item ids") \
                    from None
            rows = none
        X = self.task.check_features(X, like=self.embeddings, name="test X")
        y = list(y) if self.task.payload_labels else list(np.asarray(y, dtype=object))
        if len(y) != len(X):
            raise ValueError(f"test has {len(X)} rows of X but {len(y)} labels")
        return (X, self.task.check_targets(y, name="test labels")), rows

    # ------------------------------------------------------------------ state from the store
    def labels(self) -> np.ndarray:
        """Label per pool item as the task holds it (class index, ``-1`` = unlabelled), read from the
        store; re-read only when the store changed (and decoded again only when its labels did: rounds
        and leases also change the store)."""
        changes = getattr(self.store, "changes", None)
        if changes is not None and self._labels_cache[0] == changes:
            return self._labels_cache[1].copy()
        payloads = self.store.current_payloads() if self.task.payload_labels else {}
        current = self.store.current_labels()
        if self._labels_raw is not None and self._labels_raw == (current, payloads):
            self._labels_cache = (changes, self._labels_cache[1])
            return self._labels_cache[1].copy()
        self._labels_raw = (current, payloads)
        self._labels_version += 1
        out = self.task.empty_labels(len(self.pool))
        for item_id, name in current.items():
            try:
                i = self.pool.index_of(item_id)
            except KeyError:
                continue  # the store knows ids beyond this pool (attached by ids)
            value = self.task.decode(name, *payloads.get(item_id, (None, None)))
            if value is not None:
                self.task.set_label(out, i, value)
        self._labels_cache = (changes, out)
        return out.copy()

    def label_counts(self) -> np.ndarray:
        """Labelled items per class (segmentation: labelled pixels per class)."""
        return self.task.label_counts(self.labels())

    def progress(self) -> dict:
        """``{"pool_labelled", "pool_size", "budget"}``."""
        n = int(np.count_nonzero(self.task.is_labelled(self.labels())))
        return {"pool_labelled": n, "pool_size": len(self.pool), "budget": self.budget}

    def labels_df(self, history: bool = False) -> pd.DataFrame:
        """Labels as a table (item_id, label, annotator, created_at, seconds, round, source)."""
        return self.store.labels_df(history=history)

    @property
    def history(self) -> pd.DataFrame:
        """One row per finished round: strategy, n_labels, accuracy (± std), how it was measured,
        times, and the session that labelled it."""
        rounds = self.store.rounds_df()
        extra = list(getattr(self.task, "metric_keys", ()))
        cols = ["round", "strategy", "n_labels", "n_added", "accuracy", "accuracy_std", "accuracy_source",
                *extra, "select_s", "label_s", "fit_s", "session_id"]
        rows = []
        for r in rounds.to_dict("records"):
            m, t, p = r.get("metrics") or {}, r.get("timings") or {}, r.get("params") or {}
            if "n_labels" not in m:
                continue  # not finished, or written by another tool
            rows.append({"round": r["round"], "strategy": r.get("strategy"),
                         "n_labels": m["n_labels"], "n_added": m.get("n_added"),
                         "accuracy": m.get("accuracy"), "accuracy_std": m.get("accuracy_std"),
                         "accuracy_source": m.get("source"), **{k: m.get(k) for k in extra},
                         "select_s": t.get("select_s"), "label_s": t.get("label_s"), "fit_s": t.get("fit_s"),
                         "session_id": p.get("session") if isinstance(p, dict) else None})
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------------ items
    def thumbnail(self, item_id: str, size: int | None = None):
        """``(bytes, mime, (w, h))`` of an item's thumbnail.

        An unreadable item raises :class:`~alwidgets.pool.ImageReadError` and is recorded in
        ``pool.errors``, so it is never offered again.
        """
        from PIL import Image

        from .pool import ImageReadError

        i = self.pool.index_of(item_id)
        try:
            data = self.pool.thumbnail(i, size=size or self.thumbnail_size)
        except ImageReadError as e:
            self.pool.errors[self.pool.ids[i]] = e.reason
            raise
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            fmt, wh = im.format, im.size
        return data, f"image/{(fmt or 'jpeg').lower()}", wh

    def image(self, item_id: str):
        """``(bytes, mime)`` of a larger view of an item (for the enlarged tile)."""
        data, mime, _ = self.thumbnail(item_id, 4 * self.thumbnail_size)
        return data, mime

    def caption(self, item_id: str) -> str:
        """How an item is named on screen: its path relative to the pool's root, else its id."""
        i = self.pool.index_of(item_id)
        if self.pool.paths is not None:
            root = getattr(self.pool, "root", None)
            p = Path(self.pool.paths[i])
            if root is not None:
                try:
                    return str(p.relative_to(root))
                except ValueError:
                    pass
        return str(self.pool.ids[i])

    # ------------------------------------------------------------------ model
    def fit(self):
        """Refit the model on every label in the store; predict the pool (and the test set)."""
        self.wait()
        self._fit(self.labels())
        return self

    def _fit(self, labels):
        fitted = self.loop.fit(self.embeddings, labels, X_eval=None if self.test is None else self.test[0])
        self._use_fit(fitted, self._labels_version)
        self._use_model(fitted.model)
        return fitted

    def _use_fit(self, fitted, version) -> None:
        self.fitted_ = fitted
        self._fitted_at = version   # the labels' version it was fitted on

    def _use_model(self, model) -> None:
        """The newest fitted model (a background refit hands it over before it predicts the pool);
        what the painter pre-fills from. Emits ``"fit"``."""
        self._newest_model = model
        self._emit("fit", model)

    # ------------------------------------------------------------------ background refits
    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background refit (``refit="background"``) to land and apply it: the fit, the
        metrics, the round's record, the events (``status_`` then says "refitted on N labels · ...").
        Returns False if ``timeout`` seconds passed first.

        >>> from alwidgets import Pool, Session
        >>> s = Session(Pool.digits(), selector="margin", store=":memory:", refit="background")
        >>> s.submit({i: "3" for i in s.next_batch(4)})
        'saved 4 labels · refitting in the background'
        >>> s.wait()
        True
        >>> s.status_
        'refitted on 4 labels · accuracy 100% ± 0 (cross-validated on 4 labelled items)'
        >>> s.close()
        """
        return self._work.wait(timeout)

    def _background(self) -> bool:
        if self.refit != "auto":
            return self.refit == "background"
        if not self.task.slow_fit:
            return False
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def _refit_job(self, job: dict, publish) -> None:
        """On the worker thread: fit a fork of the model on ``job["labels"]``, publish it, then score it
        (skipped when a newer refit waits and no round needs its metrics). Touches no store."""
        t0 = time.perf_counter()
        model = self.task.fork_model(self.loop.model)
        fitted = self.loop.fit(self.embeddings, job["labels"], X_eval=None if self.test is None else self.test[0],
                               model=model, on_fit=lambda m: publish("model", (job, m)))
        self.loop.model = model   # the next refit warm-starts from this one (only this thread fits meanwhile)
        publish("fit", (job, fitted, time.perf_counter() - t0))
        if job["round"] is None and self._work.has_newer():
            return
        publish("scores", (job, self._evaluate(job["labels"], fitted)))

    def _refit_landed(self, kind: str, value) -> None:
        """On the session's thread: use what a background refit found."""
        if kind == "error":
            msg = f"the labels are saved, but the background refit failed: {type(value).__name__}: {value}"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            self._emit("change", msg)
            return
        job = value[0]
        if kind == "model":
            self._use_model(value[1])
            return
        if kind == "fit":
            _, fitted, job["fit_s"] = value
            self._use_fit(fitted, job["version"])
            return
        self.metrics_ = value[1]
        if job["round"] is not None:
            self._record_round(job["round"], job.get("fit_s"))
        n = int(np.count_nonzero(self.task.is_labelled(job["labels"])))
        self._emit("change", f"refitted on {n} label{'s' * (n != 1)} · " + self._metrics_text() + self._lift_note())

    def _fit_fresh(self, labels):
        """The current fit if the labels have not changed since it was made, else a new one."""
        if self.fitted_ is not None and self._fitted_at is not None and self._fitted_at == self._labels_version:
            return self.fitted_
        return self._fit(labels)

    def evaluate(self) -> dict:
        """Quality of the current model: on the test set if given, else cross-validated (seeded
        folds) on the labelled items.

        Returns a dict with ``accuracy``, ``accuracy_std`` (spread over the folds; 0 on a test
        set), ``source`` (``"test"`` or ``"cv"``), ``source_text``, ``n_eval``, ``n_labels``,
        ``per_class`` and, with ``calibration=True``, ``reliability`` and ``ece``.
        """
        self.wait()
        return self._evaluate(self.labels())

    def _evaluate(self, labels, fitted=None) -> dict:
        """Metrics of the fit on ``labels`` (``fitted``, else the session's, refitted if stale)."""
        n = int(np.count_nonzero(self.task.is_labelled(labels)))
        if self.test is not None:
            fitted = self._fit_fresh(labels) if fitted is None else fitted
            y_true, source = self.test[1], "test"
            m = None if fitted.eval_predictions is None else \
                {**self.task.score(y_true, fitted.eval_predictions), "score_std": 0.0}
        else:
            y_true, source = None, "cv"
            m = self.task.cross_validate(self.model, self.embeddings, labels, cv=self.cv,
                                         random_state=self.random_state)
        n_eval = len(y_true) if y_true is not None else n
        out = {"n_labels": n, "source": source, "source_text": _source_text(source, n_eval, n), "n_eval": n_eval}
        if m is None:
            out.update(accuracy=None, accuracy_std=None, per_class={c: None for c in self.classes})
            return out
        out.update({k: v for k, v in m.items() if k not in ("score", "score_std")})
        out["accuracy"], out["accuracy_std"] = m["score"], m["score_std"]
        return out

    # ------------------------------------------------------------------ rounds
    def candidates(self, labels=None) -> np.ndarray:
        """Pool indices the next batch may come from: unlabelled, readable, not skipped in this
        session, not held out as test items."""
        labels = self.labels() if labels is None else labels
        ok = ~self.task.is_labelled(labels)
        for k in (*self._skipped, *self.pool.errors):
            ok[self.pool.index_of(k)] = False
        ok[self._test_rows] = False
        return np.flatnonzero(ok)

    def next_batch(self, n: int | None = None, **inputs) -> Batch:
        """Pick the next ``n`` items (best first), reserve them for this session, open a round.

        ``inputs`` are extra per-call selector inputs (e.g. ``costs=`` for ``"cost_aware"``).
        An empty batch says why in ``batch.reason``. Emits ``"batch"``.
        """
        if n is not None:
            self.batch_size = check_positive_int(n, "n")
        self.wait()   # a background refit lands first: the picks use it
        labels = self.labels()
        n_done = int(np.count_nonzero(self.task.is_labelled(labels)))
        if self._round is not None:  # a batch was shown and replaced without a submit
            self._finish_round(n_added=0, labels=labels)
        self._release()
        k = self.batch_size if self.budget is None else min(self.batch_size, self.budget - n_done)
        t0 = time.perf_counter()
        fitted = None
        if n_done:
            fitted = self._fit_fresh(labels)
        idx, info, n_refused = self._pick(k, labels, fitted, inputs) if k > 0 else (np.empty(0, np.int64), {}, 0)
        t1 = time.perf_counter()
        probs = None if fitted is None else self.task.selector_probs(fitted.predictions)
        strategy = info.get("picked_by", self.selector.name)
        if "cold_start" in info:
            strategy = f"{strategy} (cold start)"
        suggestions, confidences = [], []
        for i in idx.tolist():
            if probs is None:
                suggestions.append(None)
                confidences.append(None)
            else:
                sug, conf = self.task.suggest(probs[i])
                suggestions.append(sug)
                confidences.append(conf)
        batch = Batch([self.pool.ids[i] for i in idx], idx, suggestions, confidences, strategy, info)
        if len(idx):
            params = {"n": int(k), "selector": self.selector.name, "session": self.session_id,
                      **_jsonable(self.selector.get_params())}
            batch.round_id = self.store.start_round(strategy, params, type(self.model).__name__)
            self._round = {"id": batch.round_id, "shown": time.perf_counter(), "timings": {"select_s": t1 - t0}}
        if len(idx) < k or not k:
            batch.reason = self._why_short(labels, n_done, n_refused)
        self.batch = batch
        self._saved_since_batch = set()
        self._emit("batch", batch)
        return batch

    def _why_short(self, labels, n_done, n_refused) -> str:
        if self.budget is not None and n_done >= self.budget:
            return "budget reached"
        if n_done == len(self.pool):
            return "every item is labelled"
        unl = ~self.task.is_labelled(labels)
        why = [f"{n_refused} reserved by other sessions"] if n_refused else []
        n_bad = sum(1 for k in self.pool.errors if unl[self.pool.index_of(k)])
        why += [f"{n_bad} unreadable"] if n_bad else []
        n_skip = sum(1 for k in self._skipped if unl[self.pool.index_of(k)])
        why += [f"{n_skip} skipped"] if n_skip else []
        n_test = int(np.count_nonzero(unl[self._test_rows]))
        why += [f"{n_test} held out as test items"] if n_test else []
        return "no more items to offer" + (f" ({', '.join(why)})" if why else "")

    def _pick(self, n, labels, fitted, inputs):
        """Up to ``n`` pool indices, best first, leased to this session in the store.

        The selector chooses among the candidates; items another session holds are
        dropped from the candidates and the selector picks again for the rest.
        Returns ``(indices, selection info, number refused)``.
        """
        candidates = self.candidates(labels)
        got, refused, info = [], 0, {}
        while len(got) < n and len(candidates):
            sel = self.loop.select(n - len(got), self.embeddings, labels, fitted, candidates=candidates,
                                   random_state=self._rng, **inputs)
            info = info or sel.info
            if not len(sel):
                break
            picked = sel.indices.tolist()
            ids = [self.pool.ids[i] for i in picked]
            granted = set(self.store.lease(ids, session=self.session_id, annotator=self.annotator,
                                           ttl=self.lease_ttl))
            for i, item_id in zip(picked, ids):
                if item_id in granted:
                    got.append(i)
                    self._leased.append(item_id)
                else:
                    refused += 1
            candidates = np.setdiff1d(candidates, picked, assume_unique=True)
        return np.asarray(got, np.int64), info, refused

    def _release(self) -> None:
        """Give back this session's leases on the shown batch (saving a label already ended its lease)."""
        from .store import StoreError

        ids, self._leased = self._leased, []
        if ids:
            try:
                self.store.release(ids, session=self.session_id)
            except StoreError as e:  # leases also expire after lease_ttl: nothing is lost
                warnings.warn(f"could not release {len(ids)} leased items ({e}); they are freed after "
                              f"lease_ttl={self.lease_ttl:g} s", RuntimeWarning, stacklevel=3)

    def submit(self, labels: dict, *, sources=None, seconds=None, skipped=(), close: bool = False,
               resubmit: bool = False) -> str:
        """Record ``{item_id: class_name}`` for items of the current batch; refit; returns a status line.

        Returns once the store has committed the labels. ``skipped`` ids (of the batch)
        are not offered again in this session. The batch stays open for its other items
        unless ``close=True`` (the grid's Enter): then they are given back and the round ends. With
        ``resubmit=True`` items this session saved since its last :meth:`next_batch` may be submitted
        again (the mask painter's corrections: the new label supersedes). Bad input raises ``ValueError``/``TypeError``
        naming it, and nothing is saved; a store failure raises
        :class:`~alwidgets.store.StoreError` and nothing is saved either. Items another
        session took over meanwhile are not saved and the status says so. Emits ``"change"``.
        """
        from .store import LeaseConflictError

        records, skipped = self._check_submit(labels, sources, seconds, skipped, resubmit)
        conflicts = {}
        if records:
            try:
                self.store.add_labels(records, session=self.session_id)  # committed when this returns
            except LeaseConflictError as e:
                conflicts = dict(e.conflicts)
                records = [r for r in records if r["item_id"] not in conflicts]
                if records:
                    self.store.add_labels(records, session=self.session_id)
        saved = [r["item_id"] for r in records]
        self._saved_since_batch.update(saved)
        self._undo.extend(saved)
        self._skipped.update(skipped)
        self._skipped.difference_update(saved)
        done = set(saved) | set(conflicts) | set(skipped)
        if self.batch is not None:
            self.batch = _subset(self.batch, [] if close else
                                 [j for j, k in enumerate(self.batch.ids) if k not in done])
        self._leased = [k for k in self._leased if k not in set(saved)]  # saving a label ended its lease
        if not len(self.batch or ()):
            self._release()  # the batch is done: skipped and untouched items go back to the others
        try:
            labels_now = self.labels()
            msg = self._after_change(len(saved), labels_now, round_done=not len(self.batch or ()))
        except Exception as e:  # the labels are committed: never let a caller offer them as unsaved
            raise RuntimeError(f"saved {len(saved)} labels (they are in the store), but then "
                               f"{type(e).__name__}: {e}") from e
        if conflicts:
            msg += f" · {len(conflicts)} not saved: {next(iter(conflicts.values()))}"
        self._emit("change", msg)
        return msg

    def _check_submit(self, labels, sources, seconds, skipped, resubmit=False):
        """Validate a submit against the current batch; returns ``(records, skipped ids)``."""
        if not isinstance(labels, dict):
            raise TypeError(f"labels must be a dict {{item_id: class_name}}, got {type(labels).__name__}")
        sources = sources if isinstance(sources, dict) else {}
        seconds = seconds if isinstance(seconds, dict) else {}
        if isinstance(skipped, (str, bytes)) or not isinstance(skipped, (list, tuple, set, frozenset)):
            raise TypeError(f"skipped must be a list of item ids, got {type(skipped).__name__}")
        shown = set(self.batch.ids) if self.batch is not None else set()
        if resubmit:
            shown |= self._saved_since_batch
        outside = [k for k in [*labels, *skipped] if not isinstance(k, str) or k not in shown]
        if outside:
            raise ValueError(f"not in the current batch: item ids [{', '.join(_short(k) for k in outside[:5])}]"
                             + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
                             + "; only the batch from next_batch() can be submitted (session.import_labels "
                               "takes labels from elsewhere)")
        rid = self._round["id"] if self._round else None
        records = []
        for k, v in labels.items():
            enc = self.task.encode_item(v, item_id=k, pool=self.pool, index=self.pool.index_of(k))  # ValueError

            records.append({"item_id": k, **{f: x for f, x in enc.items() if x is not None}, "round": rid,
                            "seconds": seconds.get(k), "annotator": self.annotator,
                            "source": "accepted" if sources.get(k) == "accepted" else
                            "simulated" if sources.get(k) == "simulated" else "human"})
        return records, [str(s) for s in skipped]

    def _after_change(self, n_added: int, labels, round_done: bool = True) -> str:
        saved = f"saved {n_added} label{'s' * (n_added != 1)} · "
        if self._background():
            # the round is recorded once the refit has scored it
            rnd = self._detach_round(n_added) if self._round is not None and round_done else None
            self._work.request({"labels": labels, "version": self._labels_version, "round": rnd})
            return saved + "refitting in the background"
        self.wait()
        t0 = time.perf_counter()
        self._fit(labels)
        fit_s = time.perf_counter() - t0
        if self._round is not None and round_done:
            self._finish_round(n_added=n_added, labels=labels, fit_s=fit_s)
        else:
            self.metrics_ = self._evaluate(labels)
        return saved + self._metrics_text() + self._lift_note()

    def _metrics_text(self) -> str:
        m = self.metrics_
        name = self.task.score_name
        if m is None or m.get("accuracy") is None:
            return f"{name} n/a ({m['source_text'] if m else 'no labels'})"
        std = m.get("accuracy_std")
        pm = f" ± {std * 100:.0f}" if std is not None and m.get("source") == "cv" else ""
        return f"{name} {m['accuracy']:.0%}{pm} ({m['source_text']})"

    def _round_metrics(self, n_added) -> dict:
        """The current metrics as a finished round records them (no ``source_text``, with ``n_added``)."""
        metrics = {k: v for k, v in self.metrics_.items() if k != "source_text"}
        metrics["n_added"] = int(n_added)
        return metrics

    def _finish_round(self, n_added, labels, fit_s=None):
        n = int(np.count_nonzero(self.task.is_labelled(labels)))
        if n_added or self.metrics_ is None or self.metrics_["n_labels"] != n:
            self.metrics_ = self._evaluate(labels)  # an abandoned batch changes nothing: keep the metrics
        self._record_round(self._detach_round(n_added), fit_s)

    def _detach_round(self, n_added) -> dict:
        """End the open round's labelling time; it is no longer open (recorded by :meth:`_record_round`)."""
        rnd, self._round = self._round, None
        return {"id": rnd["id"], "n_added": n_added,
                "timings": {**rnd["timings"], "label_s": time.perf_counter() - rnd["shown"]}}

    def _record_round(self, rnd: dict, fit_s=None) -> None:
        """Write a detached round with the current metrics (and the fit's time) to the store."""
        timings = rnd["timings"] if fit_s is None else {**rnd["timings"], "fit_s": fit_s}
        self.store.finish_round(rnd["id"], self._round_metrics(rnd["n_added"]), timings)

    def undo(self) -> str:
        """Retract the last label *this session* saved (the store keeps the history). Emits ``"change"``."""
        if not self._undo:
            return "nothing to undo"
        self.wait()
        item_id = self._undo[-1]
        if item_id not in self.store.current_labels():  # already retracted
            self._undo.pop()
            return f"{item_id} has no label to retract"
        from .store import LeaseConflictError

        try:
            self.store.undo(item_id, session=self.session_id)  # popped only once committed
        except LeaseConflictError:
            self._undo.pop()
            return f"{item_id} was relabelled by another session; its label stays"
        self._undo.pop()
        self._fit(self.labels())
        self.metrics_ = self._evaluate(self.labels())
        msg = f"retracted the label of {item_id}"
        self._emit("change", msg)
        return msg

    # ------------------------------------------------------------------ import, export, annotators
    def import_labels(self, df_or_csv, *, annotator: str | None = None):
        """Add labels from a DataFrame or a CSV / Parquet / JSON-lines file (columns ``item_id, label``).

        Rows with an id not in the pool, an unknown class, a missing value or a
        repeated id are rejected, never written; the rest are saved in one
        transaction with ``source="imported"``. Returns the store's
        :class:`~alwidgets.store.ImportReport` (``report.rejected`` lists rejected rows).
        Emits ``"change"``.
        """
        from .store.io import import_labels

        if self.task.payload_labels:
            raise TypeError(f"a {self.task.name} session imports masks, not class names: "
                            "session.import_masks(folder)")
        report = import_labels(self.store, df_or_csv, annotator=annotator or self.annotator)
        self._after_import(report)
        return report

    # ------------------------------------------------------------------ masks (segmentation sessions)
    def _require_masks(self, what: str):
        if not self.task.payload_labels or not hasattr(self.task, "ignore_index"):
            raise TypeError(f"session.{what} is for segmentation sessions (Session(..., task='segmentation'))")

    def predicted_mask(self, item_id: str):
        """The current model's class map for ``item_id``: an ``(H, W)`` uint8 array at its image's size
        (what the mask painter pre-fills with ``p``), or ``None`` while no mask is labelled.

        Uses the last fit (refitted first if the store changed since). With background refits it
        does not wait for a refit under way: the newest fit that has landed answers (the painter
        then shows the next image at once; the ``"fit"`` event tells when a newer one is there)."""
        self._require_masks("predicted_mask")
        from .segmentation.task import image_shape

        i = self.pool.index_of(item_id)
        labels = self.labels()
        if not self.task.is_labelled(labels).any():
            return None
        self._work.apply_results()
        model = self._newest_model if self._work.busy else None
        if model is None:
            self.wait()
            model = self._fit_fresh(labels).model
        return model.predict(self.embeddings, [i], size=image_shape(self.pool, i))[0]

    def export_masks(self, root, *, item_ids=None):
        """Write the current masks as ``root/masks/<item_id>.png`` (8-bit index PNGs) and
        ``root/classes.txt``; see :func:`alwidgets.segmentation.io.export_masks`. Returns ``root``."""
        self._require_masks("export_masks")
        from .segmentation.io import export_masks

        return export_masks(self.store, root, self.task, item_ids=item_ids)

    def to_coco(self, path, *, item_ids=None):
        """Write the current masks as COCO JSON, compressed RLE per class (needs ``pycocotools``);
        see :func:`alwidgets.segmentation.io.export_coco`. Returns the path."""
        self._require_masks("to_coco")
        from .segmentation.io import export_coco

        return export_coco(self.store, path, self.task, pool=self.pool, item_ids=item_ids)

    def import_masks(self, root, *, annotator: str | None = None):
        """Add the masks of a folder (``root/masks/<item_id>.png`` or masks directly in ``root``), each
        checked against its image's size and the classes; rejected files are listed in
        ``report.rejected``, the rest saved in one transaction (``source="imported"``). Refits and
        emits ``"change"`` like :meth:`import_labels`. Returns the
        :class:`~alwidgets.store.ImportReport`."""
        self._require_masks("import_masks")
        from .segmentation.io import import_masks

        report = import_masks(self.store, root, self.task, pool=self.pool, annotator=annotator or self.annotator)
        self._after_import(report)
        return report

    def _after_import(self, report) -> None:
        msg = str(report).splitlines()[0].rstrip(":") + (" (see report.rejected)" if len(report.rejected) else "")
        print(msg)
        if report.accepted:
            self.wait()
            rid = self.store.start_round("import", {"n": int(report.accepted), "session": self.session_id},
                                         type(self.model).__name__)
            labels = self.labels()
            self._fit(labels)
            self.metrics_ = self._evaluate(labels)
            self.store.finish_round(rid, self._round_metrics(int(report.accepted)), {})
            if self.batch is not None:  # imported items leave the shown batch
                done = self.store.current_labels()
                self.batch = _subset(self.batch, [j for j, k in enumerate(self.batch.ids) if k not in done])
            self._emit("change", msg)

    def annotators(self) -> pd.DataFrame:
        """Per annotator: labels given, items labelled, seconds per label, Cohen's kappa against each other."""
        from .store.agreement import annotators

        return annotators(self.store)

    def to_csv(self, path, *, history: bool = False):
        """Write :meth:`labels_df` to a CSV file (atomically); returns its path."""
        from .store.io import export_labels

        return export_labels(self.store, path, format="csv", history=history)

    def to_parquet(self, path, *, history: bool = False):
        """Write :meth:`labels_df` to a Parquet file (needs ``pyarrow``); returns its path."""
        from .store.io import export_labels

        return export_labels(self.store, path, format="parquet", history=history)

    def to_jsonl(self, path, *, history: bool = False):
        """Write one JSON object per label per line, the format labelling tools import; returns its path."""
        from .store.io import export_labels

        return export_labels(self.store, path, format="jsonl", history=history)

    def report(self, path="report.html", **kwargs):
        """Write a standalone HTML report; see :func:`alwidgets.report.write_report`. Returns its path."""
        from .report import write_report

        return write_report(self, path, **kwargs)

    # ------------------------------------------------------------------ the notebook widget
    def label(self, n: int = 16, *, continuous: bool = False):
        """Show the next ``n`` items in the labelling grid; returns the widget.

        Label with the keyboard (``docs/keymap.md``) and press Enter: the labels are
        saved, the model refit and the plots redrawn in place. With ``continuous=True``
        the next batch then loads in the same grid.
        """
        from .widgets.view import view_for

        self.continuous = bool(continuous)
        if self._view is None:
            self._view = view_for(self)  # the label grid, or the mask painter for segmentation
        return self._view.show(check_positive_int(n, "n"), continuous=self.continuous)

    # ------------------------------------------------------------------ strategy advice
    def recommend(self, **kwargs):
        """Replay strategies on your labelled items; which would have needed the fewest labels?

        See :func:`alwidgets.recommend.recommend`. Needs a few labels per class. Switch with :meth:`use`.
        """
        from .recommend import recommend

        if self.task.payload_labels:
            raise TypeError(f"recommend replays classification strategies; for a {self.task.name} session compare "
                            "strategies with alwidgets.simulate(features, masks, task='segmentation') or "
                            "'alwidgets simulate --task segmentation'")
        self.recommendation_ = recommend(self, **kwargs)
        return self.recommendation_

    def use(self, strategy) -> str:
        """Select the next batches with ``strategy`` (a name such as ``"margin"`` or a selector)."""
        self.loop.selector = self.task.make_selector(strategy)
        return f"next batches are picked by {self.selector.name!r}"

    def _lift_note(self) -> str:
        """Advice to switch strategy when the last round lifted accuracy by < 1 point — only when
        that is more than the noise of the estimate (spread over the folds)."""
        from .stopping import AccuracyLift

        h = self.history
        h = h[(h["n_added"].fillna(0) > 0) & h["accuracy"].notna()]
        if len(h) < 2:
            return ""
        d = AccuracyLift().check(h["accuracy"].to_numpy(float))
        if d.action != "switch_strategy":
            return ""
        std = h["accuracy_std"].fillna(0.0).to_numpy(float)[-2:]
        change = float(h["accuracy"].iloc[-1] - h["accuracy"].iloc[-2])
        if change + float(np.hypot(*std)) >= 0.01:  # within the noise: no advice
            return ""
        rec = getattr(self, "recommendation_", None)
        if rec is not None and rec.best != self.selector.name:
            return f" · try session.use({rec.best!r})"
        return " · little gain: see session.recommend()"

    # ------------------------------------------------------------------ baseline
    def show_baseline(self, repeats: int = 3, budget: int | None = None) -> pd.DataFrame:
        """Simulate random sampling on the pool's known targets (demos, benchmarks); emits
        ``"baseline"`` with the mean ± std curve (the widget draws it). Returns the curves."""
        from .simulate import simulate

        if self.task.payload_labels:
            return self._mask_baseline(repeats, budget)
        known = np.flatnonzero(self.pool.targets >= 0)
        if len(known) < len(self.pool):
            raise ValueError(f"{self.pool.name}: the random baseline needs the true class of every item "
                             f"({len(self.pool) - len(known)} unknown)")
        budget = budget or self.budget or max(100, 4 * self.batch_size)
        kw = {} if self.test is None else {"X_test": self.test[0], "y_test": self.test[1]}
        res = simulate(self.embeddings, self.pool.targets, ["random"], model=self.model, target_acc=None,
                       batch_size=self.batch_size, seed_per_class=0, budget=budget,
                       repeats=repeats, progress=False, **kw)
        stats = res.curves.groupby("n_labels")["accuracy"].agg(["mean", "std"]).reset_index()
        stats["std"] = stats["std"].fillna(0.0)
        self._emit("baseline", stats)
        return res.curves

    def _mask_baseline(self, repeats, budget):
        """Random image picks on the data set's known masks, scored on the test set (segmentation)."""
        from sklearn.base import clone

        from .segmentation.simulate import simulate_segmentation

        if self.data is None or self.test is None:
            raise ValueError("the random baseline of a segmentation session needs the masks of every pool item "
                             "(Session(SegmentationData, ...)) and a test set (test=...)")
        rows = np.setdiff1d(np.arange(len(self.pool)), self._test_rows)
        missing = [self.pool.ids[r] for r in rows if self.data.masks[r] is None]
        if missing:
            raise ValueError(f"{self.pool.name}: the random baseline needs the mask of every item "
                             f"({len(missing)} unknown, e.g. {missing[0]!r})")
        step = self.batch_size
        top = min(budget or self.budget or 5 * step, len(rows))
        budgets = sorted({min(b, top) for b in range(step, top + step, step)})
        sub = self.embeddings if len(rows) == len(self.pool) else self.embeddings.subset(rows)
        res = simulate_segmentation(
            sub, [self.data.masks[r] for r in rows], self.test[0], self.test[1], n_classes=self.task.n_classes,
            ignore_index=self.task.ignore_index, model=clone(self.model), strategies=["random"], budgets=budgets,
            splits=repeats, pool_fraction=1.0, calibrate=False, classes=self.classes,
            reference={"miou": float("nan"), "n_masks": len(rows)}, random_state=self.random_state, progress=False)
        curves = res.curves.rename(columns={"n_masks": "n_labels", "split": "repeat"})
        curves["accuracy"] = curves["miou"] / 100
        stats = curves.groupby("n_labels")["accuracy"].agg(["mean", "std"]).reset_index()
        stats["std"] = stats["std"].fillna(0.0)
        self._emit("baseline", stats)
        return curves

    # ------------------------------------------------------------------ misc
    def close(self) -> None:
        """Give back this session's leases and close the store if this session opened it."""
        if getattr(self, "_work", None) is not None:
            self.wait()
        if getattr(self, "_leased", None):
            self._release()
        if getattr(self, "_owns_store", False):
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        n = int(np.count_nonzero(self.task.is_labelled(self.labels())))
        return (f"Session({self.pool.name!r}, {n}/{len(self.pool)} labelled, classes={len(self.classes)}, "
                f"selector={self.selector.name!r}, store={self.store_path!r})")


# ---------------------------------------------------------------------- helpers
def _is_segmentation_data(obj) -> bool:
    """A :class:`~alwidgets.segmentation.SegmentationData` (checked without importing torch)."""
    return type(obj).__name__ == "SegmentationData" and hasattr(obj, "masks") and hasattr(obj, "pool")


def _subset(batch: Batch, keep: list[int]) -> Batch:
    return Batch([batch.ids[j] for j in keep], batch.indices[keep], [batch.suggestions[j] for j in keep],
                 [batch.confidences[j] for j in keep], batch.strategy, batch.info, batch.reason, batch.round_id)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def _source_text(source, n_eval, n_labels) -> str:
    """How an accuracy was measured, in words (``metrics["source_text"]``)."""
    return f"test set, {n_eval} items" if source == "test" else f"cross-validated on {n_labels} labelled items"


def _jsonable(params: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in params.items()}
