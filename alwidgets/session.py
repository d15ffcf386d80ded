"""Session: the notebook's state for labelling a pool, one batch per cell.

Every label goes through a :class:`~alwidgets.LabelStore` (SQLite) and is
acknowledged only once the store has committed it; the label array, the
history of rounds and the labels table are all read back from the store, so a
notebook that is restarted picks up where it stopped.
"""
from __future__ import annotations

import io
import numbers
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ._validation import UNLABELED, check_batch_size, check_embeddings
from .models import default_model, fit_predict_proba
from .select.random import Random
from .select.registry import make_selector

_BINS = 10


class Session:
    """Label a pool in a notebook: pick a batch, label it in a grid, refit, watch accuracy.

    Parameters
    ----------
    pool : Pool
        The items to label (``Pool.digits()``, ``Pool.from_folder(...)``, ...).
    classes : list of str, optional
        Class names; default ``pool.classes``.
    embeddings : array (n_items, d), optional
        Features of the pool; computed with ``embedder`` when not given.
    embedder : object with ``embed(pool)``, optional
        Default :class:`~alwidgets.embed.PixelEmbedder` (fine for small images).
    selector : str or Selector
        Strategy name (``"auto"``, ``"margin"``, ``"random"``, ...) or a selector.
        Strategies that need a model take a random batch until there is one.
    model : scikit-learn classifier, optional
        Default :class:`~alwidgets.models.LinearProbe`.
    store : LabelStore, path or None
        Where labels live. ``None`` uses ``alwidgets-<pool name>.db`` in the
        current directory; ``":memory:"`` keeps them in memory only. An
        existing store resumes: labelled items are not offered again and the
        history and plots come back.
    test : (X_test, y_test) or Pool, optional
        Held-out items with known classes. Accuracy is measured there when
        given; otherwise by cross-validation on the labelled items.
    budget : int, optional
        Labels you intend to give in total; shown in the progress line.
    calibration : bool
        Also plot a reliability diagram.
    keymap : dict, optional
        Changes to the grid's key map (see ``docs/keymap.md``).
    annotator : str, optional
        Name recorded with each label and lease; default the store's (the OS user).
    attach : {"fingerprint", "ids"}
        A store made for another pool is refused (``"fingerprint"``) unless
        ``"ids"``: then labels are matched by item id, and labelled ids missing
        from this pool are kept in the store and listed in ``attach_report.orphaned``.
    lease_ttl : float
        Seconds a shown batch stays reserved for this annotator, so that another
        kernel on the same store is never shown the same items.

    Examples
    --------
    >>> from alwidgets import Pool, Session
    >>> s = Session(Pool.digits(), selector="margin", store=":memory:")
    >>> app = s.label(4)                       # shows the grid in a notebook
    >>> len(s.batch)
    4
    >>> s.submit({i: "3" for i in s.batch})    # what the grid sends on Enter
    'saved 4 labels; accuracy 100% (cross-validated on 4 labelled items)'
    >>> s.labels_df()["label"].tolist()
    ['3', '3', '3', '3']
    >>> s.close()
    """

    def __init__(self, pool, classes=None, embeddings=None, embedder=None, selector="auto", model=None,
                 store=None, test=None, *, budget=None, calibration=False, keymap=None, annotator=None,
                 cv=5, thumbnail_size=96, random_state=0, attach="fingerprint", lease_ttl=1800.0):
        from .pool import Pool

        if not isinstance(pool, Pool):
            raise TypeError(f"pool must be an alwidgets.Pool (e.g. Pool.from_arrays(X)), got {type(pool).__name__}")
        if attach not in ("fingerprint", "ids"):
            raise ValueError(f"attach must be 'fingerprint' or 'ids', got {attach!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)) or not 0 < lease_ttl < np.inf:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        self.pool = pool
        classes = pool.classes if classes is None else classes
        if classes is None or (not isinstance(classes, str) and len(classes) == 0):
            raise ValueError(f"{pool.name} has no class names; pass classes=['cat', 'dog', ...]")
        self.classes = _check_class_names(classes)
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self.embedder = embedder
        if embeddings is None:
            if embedder is None:
                from .embed import PixelEmbedder

                self.embedder = PixelEmbedder()
            embeddings = self.embedder.embed(pool)
        self.embeddings = check_embeddings(embeddings, n_items=len(pool))
        self.selector = make_selector(selector)
        self.model = default_model(len(self.classes)) if model is None else model
        self.test = self._check_test(test)
        self.budget = None if budget is None else check_batch_size(budget, "budget")
        self.calibration = bool(calibration)
        self.keymap = keymap
        self.annotator = annotator
        self.attach = attach
        self.lease_ttl = float(lease_ttl)
        self.cv = check_batch_size(cv, "cv")
        self.thumbnail_size = check_batch_size(thumbnail_size, "thumbnail_size")
        self._rng = np.random.default_rng(random_state)
        self.store, self._owns_store = self._open_store(store)
        try:
            self.attach_report = self._attach()
        except BaseException:
            self.close()
            raise

        self.model_ = None
        self.probs_ = None        # (n_items, n_classes) for the pool, from the last fit
        self._test_probs = None
        self._fit_n = -1          # labelled count the current fit saw
        self.batch: list[str] = []
        self.continuous = False
        self._round = None        # the open round: {"id", "strategy", "timings"}
        self._skipped: set[str] = set()
        self._undo: list[str] = []
        self._leased: list[str] = []  # ids of the shown batch leased in the store
        self._app = None
        self.metrics_ = self._last_metrics()  # resuming: the plots start from the last finished round

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
        if test is None:
            return None
        from .pool import Pool

        if isinstance(test, Pool):
            if self.embedder is None:
                raise ValueError("test=Pool(...) needs embedder= to embed it the same way as the pool; "
                                 "or pass test=(X_test, y_test) with embeddings")
            unknown = np.flatnonzero(test.targets < 0)
            if len(unknown):
                raise ValueError(f"test pool {test.name}: items without a class at rows {unknown[:10].tolist()}")
            names = [test.classes[t] for t in test.targets] if test.classes else test.targets
            X, y = self.embedder.embed(test), names
        else:
            try:
                X, y = test
            except (TypeError, ValueError):
                raise TypeError("test must be (X_test, y_test) or a Pool with targets") from None
        X = check_embeddings(X, name="test X")
        if X.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"test X has {X.shape[1]} features but the pool's embeddings have {self.embeddings.shape[1]}")
        y = np.asarray(y).tolist()
        if len(y) != len(X):
            raise ValueError(f"test has {len(X)} rows of X but {len(y)} labels")
        codes = np.empty(len(y), np.int64)
        bad = []
        for r, v in enumerate(y):
            if isinstance(v, str):
                codes[r] = self._class_index.get(v, -1)
            elif isinstance(v, int) and 0 <= v < len(self.classes):
                codes[r] = v
            else:
                codes[r] = -1
            if codes[r] < 0:
                bad.append(r)
        if bad:
            raise ValueError(f"test labels at rows {bad[:10]} are not classes of this session ({', '.join(self.classes)})")
        return X, codes

    @property
    def app(self):
        """The composed widget (grid + live plots), created on first use."""
        if self._app is None:
            from .widgets.app import LabelApp
            from .widgets.labelgrid import LabelGrid

            grid = LabelGrid(self.classes, keymap=self.keymap, on_submit=self.submit,
                             on_undo=self.undo, image=self._large_image)
            self._app = LabelApp(grid, self.classes, calibration=self.calibration)
            self._refresh_plots()
        return self._app

    # ------------------------------------------------------------------ state from the store
    def labels(self) -> np.ndarray:
        """Class index per pool item (``-1`` = unlabelled), read from the store."""
        out = np.full(len(self.pool), UNLABELED, dtype=np.int64)
        for item_id, name in self.store.current_labels().items():
            cls = self._class_index.get(name)
            try:
                i = self.pool.index_of(item_id)
            except KeyError:
                continue  # the store knows ids beyond this pool (attached by ids)
            if cls is not None:
                out[i] = cls
        return out

    def labels_df(self, history: bool = False) -> pd.DataFrame:
        """Labels as a table (item_id, label, annotator, created_at, seconds, round, source)."""
        return self.store.labels_df(history=history)

    @property
    def history(self) -> pd.DataFrame:
        """One row per finished round: strategy, n_labels, accuracy, how it was measured, times."""
        rounds = self.store.rounds_df()
        cols = ["round", "strategy", "n_labels", "n_added", "accuracy", "accuracy_source",
                "select_s", "label_s", "fit_s"]
        rows = []
        for r in rounds.to_dict("records"):
            m, t = r.get("metrics") or {}, r.get("timings") or {}
            if "n_labels" not in m:
                continue  # not finished, or written by another tool
            rows.append({"round": r["round"], "strategy": r.get("strategy"),
                         "n_labels": m["n_labels"], "n_added": m.get("n_added"),
                         "accuracy": m.get("accuracy"), "accuracy_source": m.get("source"),
                         "select_s": t.get("select_s"), "label_s": t.get("label_s"), "fit_s": t.get("fit_s")})
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------------ import, export, annotators
    def import_labels(self, df_or_csv, *, annotator: str | None = None):
        """Add labels from a DataFrame or a CSV / Parquet / JSON-lines file (columns ``item_id, label``).

        Rows with an id not in the pool, an unknown class, a missing value or a
        repeated id are rejected, never written; the rest are saved in one
        transaction with ``source="imported"``. Prints a one-line summary, refits
        and redraws the plots; returns the store's
        :class:`~alwidgets.store.ImportReport` (``report.rejected`` lists the
        rejected rows with a reason).
        """
        report = self.store.import_labels(df_or_csv, annotator=annotator or self.annotator)
        print(str(report).splitlines()[0].rstrip(":") + (" (see report.rejected)" if len(report.rejected) else ""))
        if report.accepted:
            rid = self.store.start_round("import", {"n": int(report.accepted)}, type(self.model).__name__)
            self._refit(self.labels(), n_added=int(report.accepted), round_id=rid)
            if self._app is not None and self.batch:  # imported items leave the shown batch
                done = self.store.current_labels()
                keep = [k for k, it in enumerate(self._app.grid.items) if it["id"] not in done]
                if len(keep) < len(self.batch):
                    grid = self._app.grid
                    grid.show_batch([grid.items[k] for k in keep], [grid.thumbs[k] for k in keep])
                    self.batch = [it["id"] for it in grid.items]
        return report

    def annotators(self) -> pd.DataFrame:
        """Per annotator: labels given, items currently labelled, seconds per label, and Cohen's kappa
        against each other annotator on the items both labelled (``kappa_<name>`` columns)."""
        return self.store.annotators()

    def to_csv(self, path, *, history: bool = False):
        """Write :meth:`labels_df` to a CSV file (atomically); returns its path."""
        return self.store.export_csv(path, history=history)

    def to_parquet(self, path, *, history: bool = False):
        """Write :meth:`labels_df` to a Parquet file (needs ``pyarrow``); returns its path."""
        return self.store.export_parquet(path, history=history)

    def to_jsonl(self, path, *, history: bool = False):
        """Write one JSON object per label per line, the format labelling tools import; returns its path."""
        return self.store.export_jsonl(path, history=history)

    def report(self, path="report.html", **kwargs):
        """Write a standalone HTML report (learning curve, per-class metrics, label counts, rounds);
        see :func:`alwidgets.report.write_report`. Returns its path."""
        from .report import write_report

        return write_report(self, path, **kwargs)

    # ------------------------------------------------------------------ model
    def fit(self):
        """Refit the model on every label in the store; predict the pool (and the test set)."""
        return self._fit(self.labels())

    def _fit(self, labels):
        """:meth:`fit` on ``labels`` (from :meth:`labels`, read once per change)."""
        n = int(np.count_nonzero(labels != UNLABELED))
        if n == 0:
            self.model_, self.probs_, self._test_probs, self._fit_n = None, None, None, 0
            return self
        X_eval = self.embeddings if self.test is None else np.concatenate([self.embeddings, self.test[0]])
        self.model_, probs = fit_predict_proba(self.model, self.embeddings, labels, len(self.classes), X_eval=X_eval)
        self.probs_ = probs[: len(self.pool)]
        self._test_probs = None if self.test is None else probs[len(self.pool):]
        self._fit_n = n
        return self

    def evaluate(self) -> dict:
        """Accuracy of the current model: on the test set if given, else cross-validated on labelled items.

        Returns a dict with ``accuracy``, ``source`` (``"test"`` or ``"cv"``),
        ``source_text``, ``n_eval``, ``n_labels``, ``per_class`` (accuracy per
        class name, None where no item of the class was evaluated) and, with
        ``calibration=True``, a ``reliability`` table and ``ece``.
        """
        return self._evaluate(self.labels())

    def _evaluate(self, labels) -> dict:
        """:meth:`evaluate` on ``labels`` (from :meth:`labels`, read once per change)."""
        lab = np.flatnonzero(labels != UNLABELED)
        if self.test is not None:
            if self._fit_n != len(lab):
                self._fit(labels)
            y_true = self.test[1]
            probs = self._test_probs
            source = "test"
        else:
            y_true = labels[lab]
            probs = self._cross_val_probs(lab, y_true)
            source = "cv"
        m = {"n_labels": int(len(lab)), "source": source, "source_text": _source_text(source, len(y_true), len(lab)),
             "n_eval": int(len(y_true))}
        if probs is None:
            m.update(accuracy=None, per_class={c: None for c in self.classes})
            return m
        pred = probs.argmax(axis=1)
        hit = pred == y_true
        m["accuracy"] = float(hit.mean())
        m["per_class"] = {c: (float(hit[y_true == k].mean()) if np.any(y_true == k) else None)
                          for k, c in enumerate(self.classes)}
        if self.calibration:
            from .calibrate import expected_calibration_error, reliability_data

            table = reliability_data(probs, y_true, n_bins=_BINS)
            table = table[table["count"] > 0]
            m["reliability"] = {k: table[k].tolist() for k in ("confidence", "accuracy", "count")}
            m["ece"] = expected_calibration_error(probs, y_true, n_bins=_BINS)
        return m

    def _cross_val_probs(self, lab, y):
        from sklearn.model_selection import KFold, StratifiedKFold

        if len(lab) < 2:
            return None
        counts = np.bincount(y)
        smallest = counts[counts > 0].min()
        seed = int(self._rng.integers(2**31 - 1))
        if smallest >= 2 and len(np.unique(y)) > 1:
            folds = StratifiedKFold(n_splits=min(self.cv, int(smallest)), shuffle=True, random_state=seed)
        else:  # a class with a single label: held out, it is honestly missed
            folds = KFold(n_splits=min(self.cv, len(lab)), shuffle=True, random_state=seed)
        X = self.embeddings[lab]
        out = np.zeros((len(lab), len(self.classes)))
        for tr, te in folds.split(X, y):
            _, out[te] = fit_predict_proba(self.model, X[tr], y[tr], len(self.classes), X_eval=X[te])
        return out

    # ------------------------------------------------------------------ rounds
    def label(self, n: int = 16, *, continuous: bool = False):
        """Pick a batch of ``n`` items and show it in the grid; returns the widget.

        Label with the keyboard (``docs/keymap.md``) and press Enter: the labels
        are saved, the model refit and the plots redrawn in place. With
        ``continuous=True`` the next batch then loads in the same grid.
        """
        self.batch_size = check_batch_size(n)
        self.continuous = bool(continuous)
        app = self.app
        self._next_batch()
        return app

    def _next_batch(self, labels=None) -> str:
        """Show the next batch; ``labels`` (default: read from the store) as :meth:`labels` returns them."""
        grid = self.app.grid
        labels = self.labels() if labels is None else labels
        n_done = int(np.count_nonzero(labels != UNLABELED))
        if self._round is not None:  # a batch was shown and replaced without a submit
            self._finish_round(n_added=0, labels=labels)
        self._release()
        n = self.batch_size
        if self.budget is not None:
            n = min(n, self.budget - n_done)
        t0 = time.perf_counter()
        if n_done and self._fit_n != n_done:
            self._fit(labels)
        probs = self.probs_ if n_done else None
        chooser = self.selector
        if probs is None and "probs" in self.selector.requires:
            chooser = Random()  # cold start: nothing to be uncertain about yet
        idx, n_refused = self._pick(chooser, n, labels, probs) if n > 0 else (np.empty(0, np.int64), 0)
        t1 = time.perf_counter()
        items, thumbs = self._batch_items(idx, probs)
        t2 = time.perf_counter()
        self.batch = [self.pool.ids[i] for i in idx]
        strategy = chooser.name if chooser is self.selector else f"{chooser.name} (cold start)"
        if len(idx):
            params = {"n": int(n), "selector": self.selector.name, **_jsonable(self.selector.get_params())}
            rid = self.store.start_round(strategy, params, type(self.model).__name__)
            self._round = {"id": rid, "strategy": strategy, "shown": time.perf_counter(),
                           "timings": {"select_s": t1 - t0, "thumbs_s": t2 - t1}}
        grid.show_batch(items, thumbs)
        self._set_progress(n_done)
        if not len(idx):
            n_bad = sum(1 for k in self.pool.errors if labels[self.pool.index_of(k)] == UNLABELED)
            why = [f"{n_refused} reserved by other annotators"] if n_refused else []
            why += [f"{n_bad} unreadable"] if n_bad else []
            grid.status = ("budget reached" if self.budget is not None and n_done >= self.budget
                           else "every item is labelled" if n_done == len(self.pool)
                           else "no unskipped items left" + (f" ({', '.join(why)})" if why else ""))
        elif any(it["error"] for it in items):
            bad = [f"{it['id']} ({self.pool.errors.get(it['id'], it['error'])})" for it in items if it["error"]]
            grid.status = (f"error: {len(bad)} image(s) could not be read and show a placeholder: "
                           f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; skip them (space)")
        elif self._owns_store and grid.status == "":
            grid.status = f"labels are saved in {self.store_path}"
        return grid.status

    def _pick(self, chooser, n, labels, probs):
        """Up to ``n`` pool indices, best first, leased to this annotator in the store.

        Skipped and unreadable items are never offered. Items another annotator
        holds are passed over and the batch is topped up from the selector's
        next-best candidates, so two kernels on one store are never shown the
        same item. Returns ``(indices, number passed over)``.
        """
        unl = labels == UNLABELED
        taken = {i for i in (self.pool.index_of(k) for k in (*self._skipped, *self.pool.errors)) if unl[i]}
        n_free = int(np.count_nonzero(unl))
        got, refused = [], 0
        while len(got) < n:
            k = min(n_free, len(taken) + n - len(got))
            if k <= len(taken):
                break  # every unlabelled item was considered
            sel = chooser.select(k, labels=labels, embeddings=self.embeddings, probs=probs, random_state=self._rng)
            fresh = [i for i in sel.indices.tolist() if i not in taken][: n - len(got)]
            if not fresh:
                break
            ids = [self.pool.ids[i] for i in fresh]
            leased = set(self.store.lease(ids, annotator=self.annotator, ttl=self.lease_ttl))
            for i, item_id in zip(fresh, ids):
                taken.add(i)
                if item_id in leased:
                    got.append(i)
                    self._leased.append(item_id)
                else:
                    refused += 1
        return np.asarray(got, np.int64), refused

    def _release(self) -> None:
        """Give back this session's leases on the shown batch (saving a label already ended its lease)."""
        from .store import StoreError

        ids, self._leased = self._leased, []
        if ids:
            try:
                self.store.release(ids, annotator=self.annotator)
            except StoreError as e:  # leases also expire after lease_ttl: nothing is lost
                warnings.warn(f"could not release {len(ids)} leased items ({e}); they are freed after "
                              f"lease_ttl={self.lease_ttl:g} s", RuntimeWarning, stacklevel=3)

    @property
    def store_path(self) -> str:
        """Where the labels are saved."""
        return str(getattr(self.store, "path", "?"))

    def _batch_items(self, idx, probs):
        items, thumbs = [], []
        from .pool import ImageReadError

        for i in idx.tolist():
            error = None
            try:
                data, mime, (w, h) = _thumbnail(self.pool, i, self.thumbnail_size)
            except ImageReadError as e:  # damaged beyond its header: a placeholder tile, not a dead grid
                self.pool.errors[self.pool.ids[i]] = e.reason
                data, mime, (w, h), error = b"", None, (None, None), e.reason
            item = {"id": self.pool.ids[i], "caption": _caption(self.pool, i), "mime": mime, "w": w, "h": h,
                    "suggestion": None, "confidence": None, "error": error}
            if probs is not None:
                k = int(probs[i].argmax())
                item["suggestion"], item["confidence"] = self.classes[k], round(float(probs[i, k]), 4)
            items.append(item)
            thumbs.append(data)
        return items, thumbs

    def _set_progress(self, n_done: int) -> None:
        self.app.grid.progress = {"pool_labelled": n_done, "pool_size": len(self.pool), "budget": self.budget}

    def submit(self, labels: dict, *, sources=None, seconds=None, skipped=()) -> str:
        """Record ``{item_id: class_name}``, refit, update the plots; returns a status line.

        Returns once the store has committed the labels. ``skipped`` ids are not
        offered again in this session. Raises ``ValueError`` naming unknown ids or
        classes, or :class:`~alwidgets.store.StoreError` (locked, read-only, full
        disk); nothing is saved then and the grid keeps the batch to retry.
        """
        if not isinstance(labels, dict):
            raise TypeError(f"labels must be a dict {{item_id: class_name}}, got {type(labels).__name__}")
        sources, seconds = sources or {}, seconds or {}
        bad_ids, bad_classes = [], []
        for item_id, name in labels.items():
            try:
                self.pool.index_of(item_id)
            except KeyError:
                bad_ids.append(item_id)
            if str(name) not in self._class_index:
                bad_classes.append(name)
        if bad_ids:
            raise ValueError(f"not in pool {self.pool.name}: item ids {bad_ids[:10]}")
        if bad_classes:
            raise ValueError(f"unknown classes {sorted(set(map(str, bad_classes)))[:10]}; "
                             f"this session's classes are {', '.join(self.classes)}")
        if self._round is None and labels:
            rid = self.store.start_round("manual", {}, type(self.model).__name__)
            self._round = {"id": rid, "strategy": "manual", "shown": time.perf_counter(), "timings": {}}
        rid = self._round["id"] if self._round else None
        records = [{"item_id": str(k), "label": str(v), "seconds": _seconds(seconds.get(k)), "round": rid,
                    "source": "accepted" if sources.get(k) == "accepted" else "human",
                    "annotator": self.annotator} for k, v in labels.items()]
        if records:
            self.store.add_labels(records)  # committed when this returns
        self._undo.extend(str(k) for k in labels)
        self._skipped.update(str(s) for s in skipped)
        self._skipped.difference_update(labels)
        try:
            if self._app is not None:
                self._app.grid.status = f"saved {len(records)} labels; refitting…"
            labels_now = self.labels()  # read once: the refit, the round, the plots and the next batch share it
            msg = self._after_change(len(records), labels_now)
            if self._app is not None:
                if self.continuous and (self.budget is None or self.metrics_["n_labels"] < self.budget):
                    self._next_batch(labels_now)
                else:
                    self._clear_grid()
        except Exception as e:  # the labels are committed: never let the grid offer them as unsaved
            if self._app is not None:
                self.batch = []
                self._app.grid.show_batch([], [])
            raise RuntimeError(f"saved {len(records)} labels (they are in the store), but then "
                               f"{type(e).__name__}: {e}") from e
        if self._app is not None:
            self._app.grid.status = msg
        return msg

    def _clear_grid(self):
        self.batch = []
        self.app.grid.show_batch([], [])
        self._release()

    def _after_change(self, n_added: int, labels) -> str:
        history = self._refit(labels, n_added=n_added, round_id=None if self._round is None else self._round["id"])
        m = self.metrics_
        acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.0%}"
        note = self._lift_note(self.history if history is None else history)
        return f"saved {n_added} labels; accuracy {acc} ({m['source_text']})" + note

    def _refit(self, labels, *, n_added=0, round_id=None):
        """Refit on ``labels``, measure, finish round ``round_id`` (if any) and redraw the plots.

        The shown batch's round (``self._round``) is finished with its timings
        and keeps the last metrics when an abandoned batch changed nothing; any
        other round gets fresh metrics and no timings. Returns the history the
        plots were drawn from (None without a grid).
        """
        t0 = time.perf_counter()
        self._fit(labels)
        fit_s = time.perf_counter() - t0
        if self._round is not None and round_id == self._round["id"]:
            self._finish_round(n_added=n_added, labels=labels, fit_s=fit_s)
        else:
            self.metrics_ = self._evaluate(labels)
            if round_id is not None:
                self.store.finish_round(round_id, self._round_metrics(n_added), {})
        return self._refresh_plots(labels)

    def _round_metrics(self, n_added) -> dict:
        """The current metrics as a finished round records them (no ``source_text``, with ``n_added``)."""
        metrics = {k: v for k, v in self.metrics_.items() if k != "source_text"}
        metrics["n_added"] = int(n_added)
        return metrics

    def _finish_round(self, n_added, labels, fit_s=None):
        if n_added or self.metrics_ is None or self.metrics_["n_labels"] != int(np.count_nonzero(labels >= 0)):
            self.metrics_ = self._evaluate(labels)  # an abandoned batch changes nothing: keep the metrics
        timings = dict(self._round["timings"])
        timings["label_s"] = time.perf_counter() - self._round["shown"]
        if fit_s is not None:
            timings["fit_s"] = fit_s
        self.store.finish_round(self._round["id"], self._round_metrics(n_added), timings)
        self._round = None

    def _refresh_plots(self, labels=None, history=None):
        """Redraw the plots and the progress line; returns the history drawn (None without a grid)."""
        if self._app is None:
            return None
        labels = self.labels() if labels is None else labels
        history = self.history if history is None else history
        counts = np.bincount(labels[labels != UNLABELED], minlength=len(self.classes))
        self._app.update(history, self.metrics_, counts)
        self._set_progress(int(counts.sum()))
        return history

    def undo(self) -> str:
        """Retract the last label saved in this session (the store keeps the history)."""
        if not self._undo:
            return "nothing to undo"
        item_id = self._undo[-1]
        if item_id not in self.store.current_labels():  # already retracted (here or by another kernel)
            self._undo.pop()
            return f"{item_id} has no label to retract"
        self.store.undo(item_id, annotator=self.annotator)  # popped only once committed
        self._undo.pop()
        self._refit(self.labels())
        return f"retracted the label of {item_id}"

    def _large_image(self, item_id: str):
        data, mime, _ = _thumbnail(self.pool, self.pool.index_of(item_id), 4 * self.thumbnail_size)
        return data, mime

    # ------------------------------------------------------------------ strategy advice
    def recommend(self, **kwargs):
        """Replay strategies on your labelled items; which would have needed the fewest labels?

        See :func:`alwidgets.recommend.recommend` (keyword arguments pass
        through). Needs a few labels per class. Switch with :meth:`use`.
        """
        from .recommend import recommend

        self.recommendation_ = recommend(self, **kwargs)
        return self.recommendation_

    def use(self, strategy) -> str:
        """Select the next batches with ``strategy`` (a name such as ``"margin"`` or a selector)."""
        self.selector = make_selector(strategy)
        return f"next batches are picked by {self.selector.name!r}"

    def _lift_note(self, history=None) -> str:
        """A suggestion to switch when the last round lifted accuracy by < 1 point (:class:`AccuracyLift`).

        ``history``: :attr:`history` if already read (default: read it)."""
        from .stopping import AccuracyLift

        h = self.history if history is None else history
        h = h[(h["n_added"].fillna(0) > 0) & h["accuracy"].notna()]
        if len(h) < 2:
            return ""
        d = AccuracyLift().check(h["accuracy"].to_numpy(float))
        if d.action != "switch_strategy":
            return ""
        rec = getattr(self, "recommendation_", None)
        if rec is not None and rec.best != self.selector.name:
            return f"; {d.reason}, e.g. session.use({rec.best!r}) (best in session.recommend())"
        return f"; {d.reason}; session.recommend() shows which strategy would have needed fewer labels"

    # ------------------------------------------------------------------ baseline
    def show_baseline(self, repeats: int = 3, budget: int | None = None) -> pd.DataFrame:
        """Simulate random sampling on the pool's known targets and draw it on the accuracy plot.

        Only for pools whose true classes are known (demos, benchmarks): the
        simulation replays random picks with the labels hidden. Returns its curves.
        """
        from .simulate import simulate

        known = np.flatnonzero(self.pool.targets >= 0)
        if len(known) < len(self.pool):
            raise ValueError(f"{self.pool.name}: the random baseline needs the true class of every item "
                             f"({len(self.pool) - len(known)} unknown)")
        batch_size = getattr(self, "batch_size", 16)
        budget = budget or self.budget or max(100, 4 * batch_size)
        kw = {} if self.test is None else {"X_test": self.test[0], "y_test": self.test[1]}
        res = simulate(self.embeddings, self.pool.targets, ["random"], model=self.model, target_acc=None,
                       batch_size=batch_size, seed_per_class=0, budget=budget,
                       repeats=repeats, progress=False, **kw)
        stats = res.curves.groupby("n_labels")["accuracy"].agg(["mean", "std"]).reset_index()
        self.app.show_baseline(stats["n_labels"], stats["mean"], stats["std"].fillna(0.0))
        return res.curves

    # ------------------------------------------------------------------ misc
    def close(self) -> None:
        """Give back the shown batch's leases and close the store if this session opened it."""
        if getattr(self, "_leased", None):
            self._release()
        if self._owns_store:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        n = int(np.count_nonzero(self.labels() != UNLABELED))
        return (f"Session({self.pool.name!r}, {n}/{len(self.pool)} labelled, classes={len(self.classes)}, "
                f"selector={self.selector.name!r}, store={self.store_path!r})")


# ---------------------------------------------------------------------- helpers
def _check_class_names(classes) -> list[str]:
    """Class names as unique, non-empty strings (numbers are turned into their text)."""
    from .store import check_classes

    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a list of names, not the single string {classes!r}")
    classes = list(classes)
    bad = [c for c in classes if not isinstance(c, (str, numbers.Integral)) or isinstance(c, bool)]
    if bad:
        raise ValueError(f"class names must be strings (or integers); got {bad[:10]}")
    return check_classes([c if isinstance(c, str) else str(c) for c in classes])


def _thumbnail(pool, i: int, size: int):
    """(bytes, mime, (w, h)) of item ``i`` from ``pool.thumbnail`` (cached there)."""
    from PIL import Image

    data = pool.thumbnail(i, size=size)
    with Image.open(io.BytesIO(data)) as im:  # reads the header only
        fmt, wh = im.format, im.size
    return data, f"image/{(fmt or 'jpeg').lower()}", wh


def _caption(pool, i: int) -> str:
    if pool.paths is not None:
        return Path(pool.paths[i]).name
    return pool.ids[i]


def _source_text(source, n_eval, n_labels) -> str:
    """How an accuracy was measured, in words (``metrics["source_text"]``)."""
    return f"test set, {n_eval} items" if source == "test" else f"cross-validated on {n_labels} labelled items"


def _seconds(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v >= 0 else None


def _jsonable(params: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in params.items()}
