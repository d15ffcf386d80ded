"""One way to write a file so that a crash never leaves half of it: write beside, fsync, rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write, *, mode: int | None = None) -> Path:
    """Write ``path`` atomically: ``write(tmp_path)`` fills a temporary file beside it, then it is
    fsynced and renamed over ``path``. Returns the absolute path.

    ``write`` receives the temporary file's *path* (a ``str``), so any writer works
    (``df.to_csv(tmp)``, ``np.save(tmp, X)``, ``Path(tmp).write_bytes(b)``). The file gets
    ``mode`` if given, else the permissions a plain ``open()`` would give under the
    user's umask (``mkstemp`` alone would make it 0600).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.txt", lambda tmp: pathlib.Path(tmp).write_text("hi")).read_text()
    'hi'
    """
    path = Path(path).expanduser().absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
