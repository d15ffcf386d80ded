"""Crash test: a labelling process is SIGKILLed at random moments; no acknowledged label may be lost.

The child labels through the public API (add_labels, undo, import_labels) in a
loop and prints ``ACK <label_id> <item_id> <label>`` only after each call has
returned (i.e. after COMMIT), flushing every line. The parent kills it with
SIGKILL after a random delay (some kills land while the store is being
created or opened), 50 times on one store, then checks that every
acknowledged row is in the store unchanged, that at most one unacknowledged
transaction per kill was committed, and that ``PRAGMA integrity_check`` is ok.

The fast test forks the children from the test process (already importing
alwidgets), so 50 kills take seconds; the slow test starts a fresh Python
interpreter per kill, as a restarted kernel would.
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
        report = store.import_labels(df)
        written = [(i, l) for i, l in zip(df.item_id, df.label) if before.get(i) != l]
        assert len(written) == len(report.label_ids), (written, report)
        for label_id, (item, label) in zip(report.label_ids, written):
            print("ACK", label_id, item, label, flush=True)
"""


def _read_all(fd, sink: list) -> None:
    with os.fdopen(fd, "rb") as f:
        sink.append(f.read())


def _forked(path: str, seed: int, delay: float) -> bytes:
    """Fork a child running CHILD, SIGKILL it after ``delay`` s, return what it printed."""
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
    out: list = []
    reader = threading.Thread(target=_read_all, args=(r, out))
    reader.start()
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    reader.join()
    return out[0]


def _subprocess(path: str, seed: int, delay: float) -> bytes:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list = []
    reader = threading.Thread(target=_read_all, args=(os.dup(proc.stdout.fileno()), out))
    proc.stdout.close()
    reader.start()
    # wait until the interpreter has imported alwidgets (a few s) so kills land in the labelling loop
    # or while the store opens; READY is printed after attach_pool
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert "Traceback" not in err, err
    return out[0]


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


def _crash_loop(tmp_path, run, delays) -> None:
    path = str(tmp_path / "crash.db")
    acked: list = []
    n_ready = 0
    for k, delay in enumerate(delays):
        before = _rows(path)
        output = run(path, k, delay)
        n_ready += output.startswith(b"READY")
        acks = _parse(output)
        after = _rows(path)
        for label_id, item, label in acks:
            assert after.get(label_id) == (item, label), f"kill {k}: acknowledged label {label_id} lost or changed"
        assert all(after[i] == before[i] for i in before), f"kill {k}: history was rewritten"
        unacked = set(after) - set(before) - {a[0] for a in acks}
        assert len(unacked) <= MAX_BATCH, f"kill {k}: {len(unacked)} committed rows were never acknowledged"
        acked += acks
    assert n_ready >= len(delays) // 2, "too few kills reached the labelling loop; raise the delays"
    print(f"{len(delays)} kills, {n_ready} reached the loop, {len(acked)} acknowledged labels")
    assert len(acked) > 100, f"only {len(acked)} labels acknowledged; the test exercised too little"
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_never_loses_an_acknowledged_label(tmp_path):
    rng = random.Random(0)
    # a few kills at once (store being created/opened), the rest during labelling
    delays = [rng.uniform(0.0, 0.02) if k % 10 == 0 else rng.uniform(0.02, 0.12) for k in range(N_KILLS)]
    _crash_loop(tmp_path, _forked, delays)


@pytest.mark.slow
def test_sigkill_fresh_interpreters(tmp_path):
    """Same check with a new Python process per kill (imports, opens, resumes the store)."""
    probe = subprocess.run([sys.executable, "-c", "import time; t = time.time(); import alwidgets; "
                            "print(time.time() - t)"], capture_output=True, text=True, check=True)
    startup = float(probe.stdout) + 0.3
    rng = random.Random(1)
    delays = [rng.uniform(0.0, startup) if k % 10 == 0 else startup + rng.uniform(0.1, 0.6) for k in range(N_KILLS)]
    _crash_loop(tmp_path, _subprocess, delays)
