"""Defect 10: ``LabelStore(path, read_only=True)`` opens a store, and a ``backup()`` copy, in a folder
the process cannot write (a read-only share, another user's folder).

Tests run as root, which ignores file permissions, so the reader is a forked child that switches to an
unprivileged user (``nobody``) after alwidgets is imported, as a second user on the machine would be.
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from alwidgets.store import LabelStore, StoreReadOnlyError

IDS = [f"i{k}" for k in range(10)]


def _as_other_user(fn) -> tuple[int, str]:
    """Run ``fn()`` in a forked child as ``nobody``; returns (exit status, what it wrote to the pipe)."""
    uid = pwd.getpwnam("nobody").pw_uid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(pwd.getpwnam("nobody").pw_gid)
            os.setuid(uid)
            out = repr(fn())
            os.write(w, out.encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, f"{type(e).__name__}: {e}".encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


@pytest.fixture
def readonly_folder():
    if os.geteuid() != 0 or not hasattr(os, "fork"):
        pytest.skip("needs root (to become another user) and fork")
    top = Path(tempfile.mkdtemp(prefix="alw-ro-"))  # pytest's tmp_path is private (0700) to root
    top.chmod(0o755)
    folder = top / "share"
    folder.mkdir()
    with LabelStore(folder / "labels.db", annotator="ana") as s:  # written in WAL mode, then closed
        s.attach_pool(IDS, ["x", "y"])
        s.add_labels([{"item_id": "i0", "label": "x"}, {"item_id": "i1", "label": "y"}])
        s.backup(folder / "backup.db")
    assert not (folder / "labels.db-wal").exists()
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    try:
        for parent in top.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                pytest.skip(f"{parent} is not searchable by other users")
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(top)


@pytest.mark.parametrize("name", ["labels.db", "backup.db"])
def test_read_only_store_in_a_read_only_folder(readonly_folder, name):
    path = readonly_folder / name

    def read():
        with LabelStore(path, read_only=True) as s:
            return s.current_labels(), s.check(), len(s.labels_df(history=True))

    code, out = _as_other_user(read)
    assert code == 0, out
    assert out == repr(({"i0": "x", "i1": "y"}, [], 2))
    assert not (readonly_folder / f"{name}-shm").exists()


def test_writing_in_a_read_only_folder_is_a_clear_error(readonly_folder):
    def write():
        try:
            with LabelStore(readonly_folder / "labels.db") as s:
                s.add_labels([{"item_id": "i2", "label": "x"}])
        except StoreReadOnlyError as e:
            return f"refused: {e}"
        except Exception as e:  # noqa: BLE001
            return f"other {type(e).__name__}: {e}"
        return "written"

    code, out = _as_other_user(write)
    assert code == 0, out
    assert out.startswith("'refused:") and "read-only" in out, out
