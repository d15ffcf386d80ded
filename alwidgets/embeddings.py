"""Embeddings larger than memory: memory-mapped ``.npy`` shards read in row chunks.

A pool of 10 million items with 256-d embeddings is 5 GB in float16 and
10 GB in float32: more than a laptop (or a shared server) should hold. Keep
the embeddings on disk as one or more ``.npy`` files and open them with
:func:`open_embeddings`; :class:`ShardedEmbeddings` behaves like a read-only
``(n, d)`` float32 array for what the selectors need (``len``, ``shape``,
row gathers ``X[rows]``, slices) and never materialises the whole array:
full passes go through :meth:`ShardedEmbeddings.iter_chunks`, which reads
``CHUNK_ROWS`` rows at a time and releases each chunk's pages afterwards (so a
pass does not leave the file resident in the process's memory).

``Session``, ``simulate`` and the selectors accept it wherever they accept
an embedding array; :func:`~alwidgets._validation.check_embeddings` checks it
in one chunked pass (NaN/inf, norms) and remembers that it did.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> for k in range(2):
...     np.save(os.path.join(d, f"part{k}.npy"), np.full((3, 4), k, np.float16))
>>> X = open_embeddings([os.path.join(d, "part0.npy"), os.path.join(d, "part1.npy")])
>>> X
ShardedEmbeddings(n=6, d=4, shards=2, dtype=float16)
>>> X[[0, 5]].tolist()
[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

CHUNK_ROWS = 65536
"""Rows per chunk in full passes over sharded embeddings (65536 x 256 float32 = 64 MiB)."""

MATERIALIZE_LIMIT = 1 << 30
"""Reading rows (``X[rows]``, ``X[a:b]``, ``np.asarray(X)``) builds a float32 copy only up to this
many bytes (1 GiB); above it, ``MemoryError`` names the size, so no code path silently loads 10 GB."""

DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


class ShardedEmbeddings:
    """A read-only ``(n, d)`` embedding matrix stored as row shards (memory maps or arrays).

    Parameters
    ----------
    shards : list of 2-d arrays
        float16 or float32 arrays of the same width, usually ``np.memmap``
        from :func:`open_embeddings`; rows are their concatenation, in order.
    paths : list of str, optional
        The ``.npy`` file of each shard, or None (set by :func:`open_embeddings`): a
        file cut short after it was opened is then reported instead of crashing the map.

    Notes
    -----
    Reading rows (``X[i]``, ``X[a:b]``, ``X[index_array]``, ``X[bool_mask]``)
    returns float32 copies of just those rows.

    Examples
    --------
    >>> import numpy as np
    >>> X = ShardedEmbeddings([np.ones((2, 3), np.float16), np.zeros((1, 3), np.float32)])
    >>> X.shape, X[1:3].sum(axis=1).tolist()
    ((3, 3), [3.0, 0.0])
    >>> sum(len(block) for _, block in X.iter_chunks(2))
    3
    """

    ndim = 2

    def __init__(self, shards, paths=None):
        shards = list(shards)
        if not shards:
            raise ValueError("ShardedEmbeddings needs at least one shard")
        width = None
        for k, s in enumerate(shards):
            if not isinstance(s, np.ndarray) or s.ndim != 2:
                raise ValueError(f"shard {k} must be a 2-d array (rows, features), got "
                                 f"{getattr(s, 'shape', type(s).__name__)}")
            if s.dtype not in DTYPES:
                raise TypeError(f"shard {k} has dtype {s.dtype}; embeddings shards must be float16 or float32")
            if width is None:
                width = s.shape[1]
            elif s.shape[1] != width:
                raise ValueError(f"shard {k} has {s.shape[1]} features but shard 0 has {width}")
        if paths is not None and len(paths) != len(shards):
            raise ValueError(f"{len(paths)} paths for {len(shards)} shards")
        self.shards = shards
        self.paths = None if paths is None else [None if p is None else str(p) for p in paths]
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(width))
        self.checked = False   # set by check_embeddings after a successful chunked pass

    # ------------------------------------------------------------------ array-like
    @property
    def dtype(self) -> np.dtype:
        """The storage dtype (float16 if any shard is float16); rows read are float32."""
        return np.dtype(np.float16) if any(s.dtype == np.float16 for s in self.shards) else np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes on disk (or in memory) of all shards."""
        return int(sum(s.nbytes for s in self.shards))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedEmbeddings(n={self.shape[0]}, d={self.shape[1]}, shards={len(self.shards)}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        out = self[0:len(self)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            raise TypeError("ShardedEmbeddings supports row indexing only (X[rows]); select columns afterwards")
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if int(key) < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {int(key)} is out of range for {n} rows")
            return self._gather(np.array([i]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self._gather(np.arange(start, stop, step))
            return self._read(start, max(start, stop))
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"boolean row mask has shape {rows.shape}, expected ({n},)")
            rows = np.flatnonzero(rows)
        elif rows.dtype.kind not in "iu":
            raise IndexError(f"rows must be integers, a slice or a boolean mask, got dtype {rows.dtype}")
        if rows.ndim != 1:
            raise IndexError(f"row index must be 1-d, got shape {rows.shape}")
        rows = rows.astype(np.int64, copy=False)
        bad = (rows < -n) | (rows >= n)
        if bad.any():
            raise IndexError(f"rows {rows[bad][:10].tolist()} are out of range for {n} rows")
        return self._gather(np.where(rows < 0, rows + n, rows))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        self._check_size_of(len(rows))
        out = np.empty((len(rows), self.shape[1]), np.float32)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            local = rows[sel] - self.offsets[k]
            order = np.argsort(local, kind="stable")   # sorted reads: page-friendly on a memory map
            out[sel[order]] = self.shards[k][local[order]]
            # scattered rows fault in whole neighbourhoods of pages (fault-around): drop them again
            _release(self.shards[k], 0, len(self.shards[k]))
        return out

    def _check_size_of(self, n_rows: int) -> None:
        size = n_rows * self.shape[1] * 4
        if size > MATERIALIZE_LIMIT:
            raise MemoryError(f"refusing to load {n_rows} rows of {self!r} into memory as float32 "
                              f"({size / 2**30:.1f} GiB > MATERIALIZE_LIMIT); read them in chunks (iter_chunks)")

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32."""
        self._check_size_of(stop - start)
        out = np.empty((stop - start, self.shape[1]), np.float32)
        k = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pos = start
        while pos < stop:
            lo = pos - int(self.offsets[k])
            hi = min(stop, int(self.offsets[k + 1])) - int(self.offsets[k])
            self._check_size(k)
            out[pos - start:pos - start + hi - lo] = self.shards[k][lo:hi]
            _release(self.shards[k], lo, hi)
            pos += hi - lo
            k += 1
        return out

    def _check_size(self, k: int) -> None:
        """A shard file cut short after it was opened: a clear error, not a crash (SIGBUS) on the map."""
        p, sh = (None if self.paths is None else self.paths[k]), self.shards[k]
        if p is not None and isinstance(sh, np.memmap) and os.path.getsize(p) < sh.offset + sh.nbytes:
            raise ValueError(f"embeddings shard {p} is truncated: it was {sh.offset + sh.nbytes} bytes when opened, "
                             f"now {os.path.getsize(p)}")

    def iter_raw_chunks(self, rows: int = CHUNK_ROWS):
        """Yield ``(start, block)`` in each shard's own dtype (float16 stays float16), never across shards.

        Blocks are views of the memory maps, valid until the next block: their pages are released
        (``madvise(MADV_DONTNEED)``) once the caller moves on, so a pass does not grow the
        process's memory by the size of the file.
        """
        for k, sh in enumerate(self.shards):
            self._check_size(k)
            base = int(self.offsets[k])
            for s in range(0, len(sh), rows):
                e = min(s + rows, len(sh))
                yield base + s, sh[s:e]
                _release(sh, s, e)

    def iter_chunks(self, rows: int = CHUNK_ROWS):
        """Yield ``(start, block)``: consecutive float32 blocks of at most ``rows`` rows."""
        for s in range(0, len(self), rows):
            yield s, self._read(s, min(s + rows, len(self)))


def _release(arr, lo: int, hi: int) -> None:
    """Drop the resident pages of rows ``lo:hi`` of a memory map (they are re-read from the file if needed)."""
    m = getattr(arr, "_mmap", None)
    if m is None or not hasattr(m, "madvise"):
        return
    row = arr.shape[1] * arr.dtype.itemsize
    delta = arr.offset % mmap.ALLOCATIONGRANULARITY     # where the array starts inside the map
    a = delta + lo * row
    a -= a % mmap.PAGESIZE
    b = min(delta + hi * row, len(m))
    if b > a:
        m.madvise(mmap.MADV_DONTNEED, a, b - a)


def open_embeddings(paths) -> ShardedEmbeddings:
    """Open one ``.npy`` file or a list of them (row shards, in order) as memory-mapped embeddings.

    Each file must hold a 2-d float16 or float32 array, all of the same
    width. A file shorter than its header says (a shard truncated on disk,
    a copy cut off half-way) is refused with its name and the missing
    bytes, never read as a short array. Nothing is loaded into memory.

    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "emb.npy")
    >>> np.save(p, np.zeros((5, 8), np.float16))
    >>> with open(p, "r+b") as f:
    ...     _ = f.truncate(os.path.getsize(p) - 3)
    >>> open_embeddings(p)
    Traceback (most recent call last):
    ...
    ValueError: embeddings shard ...emb.npy is truncated: its header says (5, 8) float16 (80 bytes of data) but the file has 77
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("open_embeddings needs at least one .npy file")
    shards = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"embeddings shard {p} does not exist")
        with open(p, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f)
            except ValueError as e:
                raise ValueError(f"embeddings shard {p} is not a .npy file: {e}") from None
            offset = f.tell()
        if len(shape) != 2:
            raise ValueError(f"embeddings shard {p} holds an array of shape {shape}; expected (rows, features)")
        if np.dtype(dtype) not in DTYPES:
            raise TypeError(f"embeddings shard {p} has dtype {np.dtype(dtype)}; use float16 or float32")
        if fortran:
            raise ValueError(f"embeddings shard {p} is Fortran-ordered; save it C-ordered (np.ascontiguousarray)")
        need = int(np.prod(shape)) * np.dtype(dtype).itemsize
        have = os.path.getsize(p) - offset
        if have < need:
            raise ValueError(f"embeddings shard {p} is truncated: its header says {tuple(shape)} {np.dtype(dtype)} "
                             f"({need} bytes of data) but the file has {have}")
        shards.append(np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=tuple(shape)) if need
                      else np.empty(shape, dtype))
    return ShardedEmbeddings(shards, paths=paths)


def take_rows(X, rows) -> np.ndarray:
    """Rows ``rows`` of an embedding matrix (array, memory map or :class:`ShardedEmbeddings`) as float32."""
    return np.ascontiguousarray(X[np.asarray(rows, dtype=np.int64)], dtype=np.float32)


def as_dense(X) -> np.ndarray:
    """``X`` as an in-memory float32 array (a no-op for one; for sharded embeddings see ``MATERIALIZE_LIMIT``)."""
    return np.asarray(X, dtype=np.float32) if isinstance(X, ShardedEmbeddings) else X
