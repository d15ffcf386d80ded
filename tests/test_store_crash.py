"""Crash test: a labelling process is SIGKILLed at random moments; no acknowledged label may be lost.

The child labels through the public API (add_labels, undo, store.io.import_labels) in a
loop and prints ``ACK <label_id> <item_id> <label>`` only after each call has
returned (i.e. after COMMIT), flushing every line. The parent kills it with
SIGKILL after a random delay (some kills land while the store is being
created or opened), 50 times on one store, then checks that every
acknowledged row is in the store unchanged, that at most one unacknowledged
transaction per kill was committed, and that ``PRAGMA integrity_check`` is ok.

The fast test forks the children from the test process (already importing
alwidgets), so 50 kills take seconds; the slow test starts a fresh Python
interpreter per kill, as a restarted kernel would (20 kills: each start imports alwidgets).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from alwidgets import LabelStore

N_KILLS = 50
MAX_BATCH = 5  # most rows one call of the child writes

CHILD = r"""
import random, sys
import pandas as pd
from alwidgets import LabelStore
from alwidgets.store import import_labels

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
ids = [f"item-{i:04d}" for i in range(300)]
classes = ["a", "b", "c", "d"]
store = LabelStore(path, annotator=f"proc-{seed}")
store.attach_pool(ids, classes)
print("READY", flush=True)
while True:
    op = rng.random()
    if op < 0.6:
        batch = [{"item_id": rng.choice(ids), "label": rng.choice(classes), "seconds": rng.random()}
                 for _ in range(rng.randint(1, 5))]
        for label_id, rec in zip(store.add_labels(batch), batch):
            print("ACK", label_id, rec["item_id"], rec["label"], flush=True)
    elif op < 0.8:
        current = store.current_labels()
        if current:
            item = rng.choice(sorted(current))
            print("ACK", store.undo(item), item, "-", flush=True)
    else:
        items = rng.sample(ids, rng.randint(1, 5))
        df = pd.DataFrame({"item_id": items, "label": [rng.choice(classes) for _ in items]})
        before = store.current_labels()
        report = import_labels(store, df)
        written = [(i, l) for i, l in zip(df.item_id, df.label) if before.get(i) != l]
        assert len(written) == len(report.label_ids), (written, report)
        for label_id, (item, label) in zip(report.label_ids, written):
            print("ACK", label_id, item, label, flush=True)
"""


class _Output:
    """Reads a child's stdout in a thread; ``ready`` is set when it printed READY."""

    def __init__(self, fd: int):
        self.data = b""
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as f:
            for line in f:
                self.data += line
                if line == b"READY\n":
                    self.ready.set()

    def wait_then_kill(self, kill, delay: float, after_ready: bool) -> bytes:
        if after_ready and not self.ready.wait(timeout=120):
            kill()
            raise AssertionError("the child never got ready: " + self.data.decode(errors="replace")[-2000:])
        time.sleep(delay)
        kill()
        self._thread.join()
        return self.data


def _forked(path: str, seed: int, delay: float, after_ready: bool) -> bytes:
    """Fork a child running CHILD, SIGKILL it ``delay`` s after start (or after READY)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            os.dup2(w, 1)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # pytest replaced sys.stdout
            sys.argv = ["child", path, str(seed)]
            exec(compile(CHILD, "<crash-child>", "exec"), {"__name__": "__crash_child__"})
        finally:
            os._exit(1)
    os.close(w)
    out = _Output(r)

    def kill():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    return out.wait_then_kill(kill, delay, after_ready)


def _subprocess(path: str, seed: int, delay: float, after_ready: bool) -> bytes:
    """A fresh interpreter running CHILD (imports alwidgets, opens and resumes the store)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = _Output(os.dup(proc.stdout.fileno()))
    proc.stdout.close()

    def kill():
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    data = out.wait_then_kill(kill, delay, after_ready)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert "Traceback" not in err, err
    return data


def _parse(output: bytes) -> list[tuple[int, str, str | None]]:
    acks = []
    for line in output.decode().split("\n")[:-1]:  # the last piece may be cut by the kill
        if line.startswith("ACK "):
            _, label_id, item, label = line.split(" ")
            acks.append((int(label_id), item, None if label == "-" else label))
    return acks


def _rows(path) -> dict[int, tuple[str, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return {lid: (item, name) for lid, item, name in conn.execute(
            "SELECT l.label_id, l.item_id, c.name FROM labels l LEFT JOIN classes c USING (class_id)")}
    except sqlite3.OperationalError:  # killed before the schema was ever committed
        return {}
    finally:
        conn.close()


def _crash_loop(tmp_path, run, delays, early) -> None:
    """Kill ``len(delays)`` children; ``early[k]`` kills the k-th while it starts, else after READY."""
    path = str(tmp_path / "crash.db")
    acked: list = []
    n_ready = 0
    for k, delay in enumerate(delays):
        before = _rows(path)
        output = run(path, k, delay, not early[k])
        n_ready += output.startswith(b"READY")
        acks = _parse(output)
        after = _rows(path)
        for label_id, item, label in acks:
            assert after.get(label_id) == (item, label), f"kill {k}: acknowledged label {label_id} lost or changed"
        assert all(after[i] == before[i] for i in before), f"kill {k}: history was rewritten"
        unacked = set(after) - set(before) - {a[0] for a in acks}
        assert len(unacked) <= MAX_BATCH, f"kill {k}: {len(unacked)} committed rows were never acknowledged"
        acked += acks
    assert n_ready >= sum(not e for e in early)
    print(f"{len(delays)} kills, {n_ready} reached the loop, {len(acked)} acknowledged labels")
    assert len(acked) > 2 * len(delays), f"only {len(acked)} labels acknowledged; the test exercised too little"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    with LabelStore(path) as store:
        assert store.check() == []
        final = _rows(path)
        assert all(final[lid] == (item, label) for lid, item, label in acked)
        # the current labels are the heads of the acknowledged (and possibly one unacknowledged) history
        hist = store.labels_df(history=True)
        assert len(hist) == len(final) >= len(acked)


def _schedule(seed: int, start_window: float, n_kills: int = N_KILLS):
    """Every 10th kill lands while the child starts (importing, creating or opening the store);
    the others at a random moment of the labelling loop."""
    rng = random.Random(seed)
    early = [k % 10 == 0 for k in range(n_kills)]
    delays = [rng.uniform(0.0, start_window) if e else rng.uniform(0.0, 0.1) for e in early]
    return delays, early


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_never_loses_an_acknowledged_label(tmp_path):
    _crash_loop(tmp_path, _forked, *_schedule(0, start_window=0.02))


@pytest.mark.slow
def test_sigkill_fresh_interpreters(tmp_path):
    """Same check with a new Python process per kill, as a restarted kernel. Each start imports
    alwidgets (3-10 s), so this runs 20 kills; the fast test above does the 50."""
    _crash_loop(tmp_path, _subprocess, *_schedule(1, start_window=2.0, n_kills=20))
