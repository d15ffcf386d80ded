"""On-disk embedding cache: compute a pool's embeddings once, resume after an interruption.

An entry is a folder named by the hash of everything that decides the numbers
(model, weights, preprocessing, precision, the pool's ids and file
size/mtime or array content). Rows are written in chunks as they finish, each
chunk atomically (temporary file + ``os.replace``), so a killed run resumes
from the last finished chunk; when every chunk is there they are joined into
one ``embeddings.npy`` and ``meta.json`` is written last, marking the entry
complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .._files import atomic_write

ENV_VAR = "ALWIDGETS_CACHE"
DEFAULT_CHUNK = 1024
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$ALWIDGETS_CACHE`` if set, else ``~/.cache/alwidgets/embeddings``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alwidgets" / "embeddings"


def cache_key(parts: dict) -> str:
    """Stable hash of a JSON-able dict (key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so big checkpoints are read once."""
    st = os.stat(path)
    memo = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


class CacheEntry:
    """The cached embeddings of one (embedder, pool) pair.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from alwidgets.embed.cache import CacheEntry
    >>> e = CacheEntry(tempfile.mkdtemp(), "demo", n=3, chunk_size=2)
    >>> e.missing_chunks()
    [0, 1]
    >>> e.save_chunk(0, np.ones((2, 4), np.float32))
    >>> e.missing_chunks()
    [1]
    """

    def __init__(self, root, key: str, n: int, chunk_size: int = DEFAULT_CHUNK, meta: dict | None = None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.dir = Path(root) / key
        self.n = int(n)
        self.chunk_size = int(chunk_size)
        self.meta = dict(meta or {})

    # ------------------------------------------------------------ complete entries
    @property
    def _final(self) -> Path:
        return self.dir / "embeddings.npy"

    @property
    def _meta(self) -> Path:
        return self.dir / "meta.json"

    def load(self):
        """``(embeddings, {row: reason})`` when the entry is complete and intact, else ``None``."""
        try:
            meta = json.loads(self._meta.read_text())
            X = np.load(self._final, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if meta.get("format") != FORMAT_VERSION or X.ndim != 2 or X.shape[0] != self.n:
            return None
        return X, {int(k): v for k, v in meta.get("errors", {}).items()}

    # --------------------------------------------------------------------- chunks
    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk_rows(self, c: int) -> range:
        return range(c * self.chunk_size, min((c + 1) * self.chunk_size, self.n))

    def _chunk_path(self, c: int) -> Path:
        return self.dir / f"chunk{self.chunk_size}-{c:06d}.npz"

    def missing_chunks(self) -> list[int]:
        """Chunks not yet on disk (or on disk but broken: then deleted), in order.

        A chunk file cut short on disk (its zip directory, at the end, is gone) or with a member
        past the end of the file is broken; a broken one that passes this cheap check (flipped
        bytes) is caught when :meth:`finish` reads it (:class:`BrokenChunk`).
        """
        out = []
        for c in range(self.n_chunks):
            path = self._chunk_path(c)
            if path.is_file() and not _zip_intact(path):
                path.unlink(missing_ok=True)
            if not path.is_file():
                out.append(c)
        return out

    def save_chunk(self, c: int, X: np.ndarray, errors: dict[int, str] | None = None) -> None:
        """Write chunk ``c`` (rows ``chunk_rows(c)``) atomically; ``errors`` maps pool rows to reasons."""
        rows = self.chunk_rows(c)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != len(rows):
            raise ValueError(f"chunk {c} needs {len(rows)} rows, got an array of shape {X.shape}")
        self.dir.mkdir(parents=True, exist_ok=True)
        err = errors or {}
        err_rows = np.array(sorted(err), dtype=np.int64)
        err_msgs = np.array([err[r] for r in err_rows.tolist()], dtype=str)
        atomic_write(self._chunk_path(c), _to_file(np.savez, X=X, err_rows=err_rows, err_msgs=err_msgs))

    def load_chunk(self, c: int):
        """``(X, {row: reason})`` of a finished chunk; :class:`BrokenChunk` (the file deleted) when it
        cannot be read or does not hold ``len(chunk_rows(c))`` rows."""
        path = self._chunk_path(c)
        try:
            with np.load(path, allow_pickle=False) as z:
                X, errors = z["X"], dict(zip(z["err_rows"].tolist(), z["err_msgs"].tolist()))
            if X.ndim != 2 or X.shape[0] != len(self.chunk_rows(c)):
                raise ValueError(f"{X.shape[0] if X.ndim else 0} rows instead of {len(self.chunk_rows(c))}")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            path.unlink(missing_ok=True)
            raise BrokenChunk(c, f"{path.name}: {type(e).__name__}: {e}") from None
        return X, errors

    def finish(self):
        """Join the chunks into the final file, write ``meta.json`` last, drop the chunks.

        Returns ``(embeddings, {row: reason})``. Raises :class:`BrokenChunk` naming the chunks that
        could not be read (they are deleted, so computing :meth:`missing_chunks` again repairs the
        entry) or whose width differs from the others'.
        """
        parts, errors, broken = [], {}, []
        for c in range(self.n_chunks):
            try:
                X, err = self.load_chunk(c)
            except BrokenChunk as e:
                broken.append(e)
                continue
            if parts and X.shape[1] != parts[0].shape[1]:
                self._chunk_path(c).unlink(missing_ok=True)
                broken.append(BrokenChunk(c, f"{X.shape[1]} columns, the others {parts[0].shape[1]}"))
                continue
            parts.append(X)
            errors.update(err)
        if broken:
            raise BrokenChunk([b.chunks[0] for b in broken], "; ".join(b.reason for b in broken))
        X = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        atomic_write(self._final, _to_file(np.save, X, allow_pickle=False))
        meta = dict(self.meta, format=FORMAT_VERSION, n=self.n, dim=int(X.shape[1]),
                    errors={str(k): v for k, v in sorted(errors.items())})
        text = json.dumps(meta, indent=1, sort_keys=True, default=str).encode()
        atomic_write(self._meta, lambda tmp: Path(tmp).write_bytes(text))
        for c in range(self.n_chunks):
            self._chunk_path(c).unlink(missing_ok=True)
        return X, errors

    def clear(self) -> None:
        """Delete this entry."""
        shutil.rmtree(self.dir, ignore_errors=True)


class BrokenChunk(RuntimeError):
    """Cached chunk file(s) that could not be read (truncated, corrupt); they have been deleted."""

    def __init__(self, chunks, reason: str):
        self.chunks = [chunks] if isinstance(chunks, int) else list(chunks)
        self.reason = reason
        super().__init__(f"cache chunk(s) {self.chunks} unreadable and deleted: {reason}")


def _zip_intact(path: Path) -> bool:
    """Cheap check of an ``.npz`` chunk: its zip directory (at the end) reads, and every member
    lies inside the file. Does not read the data."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            return all(i.header_offset + i.compress_size <= size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _to_file(save, *args, **kwargs):
    """A writer for :func:`~alwidgets._files.atomic_write` that calls ``save(file, ...)`` on an open file.

    (``np.save``/``np.savez`` given a *path* would append ``.npy``/``.npz`` to the temporary name.)
    """
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            save(f, *args, **kwargs)

    return write
