"""The embedder protocol: ``embed(pool) -> (n, d) float32``, cached, chunked, resumable, on any executor.

An embedder subclasses :class:`Embedder` and writes what is specific to it:

- ``_embed_batches(pool, chunks)``: compute the rows of ``chunks`` (``{chunk: range of pool
  rows}``) and yield ``(rows, X, errors)`` per batch: ``rows`` a list of pool rows, ``X`` their
  ``(len(rows), d)`` embeddings, ``errors`` ``{row: reason}`` for the unreadable ones;
- ``_identity()``: a JSON-able dict of everything besides the pool that decides the numbers
  (model, weights, preprocessing, precision); it names the cache entry. Only needed when the
  embedder caches (``cache_dir`` not ``False``).

:meth:`Embedder.embed` owns the rest, once for every embedder: the cache lookup, the split of the
pool into chunks, assembling batches into chunks in any order, reporting unreadable items to the
pool (``pool.report_error``: raise or skip), the progress bar, writing each finished chunk
atomically (so a killed run resumes from the last finished chunk) and joining them at the end.

*Where* ``_embed_batches`` runs is the executor's business (:class:`Executor`):
:class:`LocalExecutor` runs it in this process; another backend (a cluster) is a new
:class:`Executor` subclass in its own file, registered in :data:`EXECUTORS`, that yields the same
``(rows, X, errors)`` triples; the run loop does not change.
"""
from __future__ import annotations

import abc
import contextlib
import importlib
import inspect
from pathlib import Path

import numpy as np

from .cache import DEFAULT_CHUNK, BrokenChunk, CacheEntry, cache_key, default_cache_dir


class Executor(abc.ABC):
    """Where an embedding run computes its rows.

    ``run(embedder, pool, chunks)`` yields ``(rows, X, errors)`` until every row of
    ``chunks`` (``{chunk index: range of pool rows}``) has come back exactly once: ``rows`` a
    sequence of pool rows, ``X`` a ``(len(rows), d)`` array, ``errors`` ``{row: reason}`` for rows
    that could not be read (their ``X`` rows are ignored and set to zero). Batches may arrive in
    any order and a chunk may arrive in several batches. The run loop
    (:meth:`Embedder.embed`) does caching, error reporting and progress; an executor only computes.
    ``prepare(embedder)`` (optional) returns the embedder to run, with settings resolved for where
    it runs, before the cache key is taken.

    Examples
    --------
    >>> from alwidgets import Pool
    >>> from alwidgets.embed import PixelEmbedder
    >>> from alwidgets.embed.base import Executor
    >>> class Reversed(Executor):  # a toy executor: the local batches, last one first
    ...     name = "reversed"
    ...     def run(self, embedder, pool, chunks):
    ...         yield from reversed(list(embedder._embed_batches(pool, chunks)))
    >>> pool = Pool.digits().subset(range(600))  # PixelEmbedder works in batches of 256
    >>> emb = PixelEmbedder()
    >>> bool((emb.embed(pool, executor=Reversed()) == emb.embed(pool)).all())
    True
    """

    name: str = ""

    def prepare(self, embedder: "Embedder") -> "Embedder":
        """The embedder this executor will run, settings resolved where it runs (before the cache
        key is taken). The default is ``embedder`` itself; a cluster executor may pin ``device``."""
        return embedder

    @abc.abstractmethod
    def run(self, embedder: "Embedder", pool, chunks: dict[int, range]):
        """Yield ``(rows, X, errors)`` covering every row of ``chunks`` once."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LocalExecutor(Executor):
    """Compute in this process, with the embedder's own batching, workers and device."""

    name = "local"

    def run(self, embedder, pool, chunks):
        yield from embedder._embed_batches(pool, chunks)


EXECUTORS: dict[str, str] = {"local": "alwidgets.embed.base:LocalExecutor", "ray": "alwidgets.embed.ray:RayExecutor"}
"""Executor names accepted by ``embed(pool, executor=NAME)``, as ``"module:class"`` (imported on use)."""


def get_executor(executor) -> Executor:
    """An :class:`Executor` from a name in :data:`EXECUTORS` or an executor instance.

    >>> get_executor("local")
    LocalExecutor()
    """
    if isinstance(executor, Executor):
        return executor
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {sorted(EXECUTORS)} or an Executor instance, got {executor!r}")
    module, cls = EXECUTORS[executor].split(":")
    return getattr(importlib.import_module(module), cls)()


class Embedder(abc.ABC):
    """Base of every embedder: ``embed(pool) -> (n, d) float32`` with the shared cached run loop.

    Subclasses set these attributes (usually as constructor parameters): ``cache_dir``
    (``None`` = ``$ALWIDGETS_CACHE`` or ``~/.cache/alwidgets/embeddings``, a path, or
    ``False`` = no cache; the default here is ``False``), ``progress`` (a tqdm bar) and
    ``cache_chunk`` (rows per cached chunk, the unit of resumption).
    """

    cache_dir = False
    progress = False
    cache_chunk = DEFAULT_CHUNK

    # ------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _embed_batches(self, pool, chunks: dict[int, range]):
        """Yield ``(rows, X, errors)`` for the rows of ``chunks`` (see the module docstring)."""

    def _identity(self) -> dict:
        """Everything besides the pool that decides the numbers (JSON-able): the cache key's parts."""
        raise NotImplementedError(f"{type(self).__name__} defines no _identity(), so it cannot cache; "
                                  "pass cache_dir=False")

    def _label(self) -> str:
        """Name on the progress bar."""
        return type(self).__name__

    # ------------------------------------------------------------------- identity
    def cache_key(self, pool) -> str:
        """Hash of the embedder's identity and the pool's fingerprint: the name of the cache entry."""
        return cache_key(self._cache_parts(pool))

    def _cache_parts(self, pool) -> dict:
        return dict(self._identity(), pool=pool.fingerprint(), n=len(pool))

    def __repr__(self) -> str:
        """The constructor call, with the parameters that differ from their defaults."""
        args = []
        params = list(inspect.signature(type(self).__init__).parameters.values())[1:]
        for p in params:
            if p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                args += [f"{k}={v!r}" for k, v in (getattr(self, p.name, None) or {}).items()]
                continue
            value = getattr(self, p.name, p.default)
            if p.default is p.empty:
                args.append(repr(value))
            elif not _same(value, p.default):
                args.append(f"{p.name}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -------------------------------------------------------------------- the run
    def embed(self, pool, executor="local") -> np.ndarray:
        """Return an ``(n, d)`` float32 array, one row per pool item, in pool order.

        Unreadable items raise under ``pool.on_error="raise"``; under ``"skip"`` their rows are
        zeros and they are listed in ``pool.errors``. ``executor`` picks where the rows are
        computed (``"local"``, another name in :data:`EXECUTORS`, or an :class:`Executor`).
        """
        if len(pool) == 0:
            raise ValueError("the pool is empty")
        runner = get_executor(executor)
        emb = runner.prepare(self)
        entry = emb._cache_entry(pool)
        if entry is not None:
            hit = entry.load()
            if hit is not None:
                return _reported(pool, *hit)
            for attempt in range(3):
                emb._run(pool, runner, entry, {c: entry.chunk_rows(c) for c in entry.missing_chunks()})
                try:
                    # rows embedded by an earlier, interrupted run report their errors here
                    return _reported(pool, *entry.finish())
                except BrokenChunk as e:  # a chunk file broken on disk (truncated): compute it again
                    if attempt == 2:
                        raise RuntimeError(f"the embedding cache at {entry.dir} keeps losing chunks: {e}") from e
        # no cache: the whole pool is one chunk, kept in memory
        return emb._run(pool, runner, None, {0: range(len(pool))})

    def _run(self, pool, runner, entry, chunks: dict[int, range]):
        """Compute ``chunks`` on ``runner``; save each finished chunk to ``entry`` (or return the
        one in-memory chunk when ``entry`` is None)."""
        emb = self
        if not chunks:
            return None
        size = entry.chunk_size if entry is not None else len(pool)
        kept: dict[int, np.ndarray] = {}
        save = entry.save_chunk if entry is not None else (lambda c, X, errors: kept.__setitem__(c, X))
        done = len(pool) - sum(len(r) for r in chunks.values())
        chunker = _Chunks(chunks, size, runner)
        with _progress(emb.progress, len(pool), done, emb._label()) as bar:
            batches = runner.run(emb, pool, chunks)
            try:
                for rows, X, errors in batches:
                    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
                    X = np.array(X, dtype=np.float32, copy=True)
                    if X.ndim != 2 or X.shape[0] != len(rows):
                        raise RuntimeError(f"{runner!r} returned {X.shape} embeddings for {len(rows)} rows")
                    for r, reason in (errors or {}).items():
                        pool.report_error(int(r), reason)  # raises under on_error="raise"
                        X[rows == int(r)] = 0.0
                    bar.update(len(rows))
                    for c, Xc, err in chunker.add(rows, X, errors or {}):
                        save(c, Xc, err)
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # stop the executor's workers and restore its settings now, not at GC
        chunker.check_complete()
        return kept[0] if entry is None else None

    def _cache_entry(self, pool):
        if self.cache_dir is False:
            return None
        parts = self._cache_parts(pool)
        root = default_cache_dir() if self.cache_dir is None else Path(self.cache_dir).expanduser()
        return CacheEntry(root, cache_key(parts), len(pool), self.cache_chunk, meta=dict(parts, pool_name=pool.name))


class _Chunks:
    """Assembles batches (in any order) into whole chunks; refuses rows that were not asked for or came twice."""

    def __init__(self, chunks: dict[int, range], size: int, runner):
        self.chunks, self.size, self.runner = chunks, size, runner
        self.remaining = set(chunks)
        self.buf: dict[int, np.ndarray] = {}
        self.filled: dict[int, np.ndarray] = {}
        self.errors: dict[int, dict[int, str]] = {}

    def add(self, rows: np.ndarray, X: np.ndarray, errors: dict):
        """Place the batch; yield ``(chunk, X, errors)`` for each chunk it completes."""
        cs = rows // self.size
        for c in np.unique(cs).tolist():
            sel = cs == c
            if c not in self.remaining:
                raise RuntimeError(f"{self.runner!r} returned rows {rows[sel][:5].tolist()} that were not asked for")
            rng = self.chunks[c]
            if c not in self.buf:
                self.buf[c] = np.zeros((len(rng), X.shape[1]), np.float32)
                self.filled[c] = np.zeros(len(rng), bool)
            pos = rows[sel] - rng.start
            if pos.min() < 0 or pos.max() >= len(rng) or self.filled[c][pos].any() or len(np.unique(pos)) != len(pos):
                raise RuntimeError(f"{self.runner!r} returned rows of chunk {c} twice or out of range")
            if X.shape[1] != self.buf[c].shape[1]:
                raise RuntimeError(f"{self.runner!r} returned {X.shape[1]}-d rows after {self.buf[c].shape[1]}-d ones")
            self.buf[c][pos] = X[sel]
            self.filled[c][pos] = True
            err = self.errors.setdefault(c, {})
            err.update({int(r): v for r, v in errors.items() if int(r) // self.size == c})
            if self.filled[c].all():
                del self.filled[c]
                self.remaining.discard(c)
                yield c, self.buf.pop(c), self.errors.pop(c)

    def check_complete(self) -> None:
        if self.remaining:
            missing = sum(len(self.chunks[c]) for c in self.remaining) - sum(int(f.sum()) for f in self.filled.values())
            raise RuntimeError(f"{self.runner!r} stopped with {missing} rows not embedded")


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arrays and the like
        return a is b


def _reported(pool, X, errors):
    """``X``, after recording the unreadable rows ``errors`` ({row: reason}) on ``pool``."""
    for row, reason in errors.items():
        pool.report_error(row, reason)
    return X


@contextlib.contextmanager
def _progress(enabled, total, initial, desc):
    if not enabled:
        yield _NoBar(initial)
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, unit="img", desc=f"embed {desc}", smoothing=0.1, leave=False)
    try:
        yield bar
    finally:
        bar.close()


class _NoBar:
    def __init__(self, initial):
        self.n = self.initial = initial

    def update(self, k):
        self.n += k
