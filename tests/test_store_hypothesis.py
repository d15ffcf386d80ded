"""Property tests: random sequences of label / relabel / undo / import / lease / release / session
writes / bad input / reopen keep the store equal to a plain-Python model of the append-only history
and of the per-session leases, on SQLite and on PostgreSQL.

Durability is the crash test's job; here fsync is switched off (SQLite ``synchronous = OFF``,
PostgreSQL ``synchronous_commit = off``) so that hundreds of transactions stay fast on a busy disk.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from alwidgets.store import LabelStore, LeaseConflictError, import_labels
from store_backends import backend, pg_server  # noqa: F401 (fixtures)

IDS = [f"id{i}" for i in range(8)]
BASE_CLASSES = ["cat", "dog", "owl"]
EXTRA_CLASSES = ["emu", "yak"]
ANNOTATORS = ["ana", "bo"]
SESSIONS = ["k1", "k2", "k3"]

items = st.sampled_from(IDS)
annotators = st.sampled_from(ANNOTATORS)
sessions = st.sampled_from(SESSIONS)
sources = st.sampled_from(["human", "accepted", "imported", "simulated"])


class StoreMachine(RuleBasedStateMachine):
    make_target = None  # set per back end: () -> a path or a connection string for a new store

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="alw-hyp-"))
        self.target = type(self).make_target(self.dir)
        self.store = self._open()
        self.classes = list(BASE_CLASSES)
        self.store.attach_pool(IDS, self.classes)
        self.history: list[tuple] = []  # item, label, source, annotator, session
        self.heads: dict[str, tuple] = {}  # item -> (label or None for an undo, session, label_id)
        self.leases: dict[tuple, list] = {}  # (item, session) -> [live, after_label]

    def _open(self) -> LabelStore:
        store = LabelStore(self.target, annotator="ana")
        if store.backend == "sqlite":
            store._connection().execute("PRAGMA synchronous = OFF")
        else:
            store._connection().execute("SET synchronous_commit = off")
        return store

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ the model
    @property
    def current(self) -> dict:
        return {i: h[0] for i, h in self.heads.items() if h[0] is not None}

    def _append(self, item, label, source, annotator, session=None) -> int:
        self.history.append((item, label, source, annotator, session))
        label_id = len(self.history)
        self.heads[item] = (label, session, label_id)
        if label is not None:  # labelling ends every live lease on the item
            for key, lease in self.leases.items():
                if key[0] == item:
                    lease[0] = False
        return label_id

    def _held_by_other(self, item, session) -> bool:
        return any(lease[0] for (i, s), lease in self.leases.items() if i == item and s != session)

    def _conflicts(self, items, session) -> set:
        out = set()
        for item in items:
            mine = self.leases.get((item, session))
            head = self.heads.get(item)
            if self._held_by_other(item, session):
                out.add(item)
            elif head is not None and mine is not None and head[1] != session and head[2] > mine[1]:
                out.add(item)
        return out

    # ------------------------------------------------------------------ rules
    @rule(data=st.data(), n=st.integers(1, 4), annotator=annotators, source=sources)
    def add(self, data, n, annotator, source):
        batch = [{"item_id": data.draw(items), "label": data.draw(st.sampled_from(self.classes)),
                  "annotator": annotator, "source": source,
                  "seconds": data.draw(st.none() | st.floats(0, 1e4, allow_nan=False))} for _ in range(n)]
        got = self.store.add_labels(batch)
        assert got == list(range(len(self.history) + 1, len(self.history) + 1 + n))
        for rec in batch:
            self._append(rec["item_id"], rec["label"], source, annotator)

    @rule(data=st.data(), n=st.integers(1, 4), session=sessions)
    def add_in_session(self, data, n, session):
        batch = [{"item_id": data.draw(items), "label": data.draw(st.sampled_from(self.classes))} for _ in range(n)]
        conflicts = self._conflicts(dict.fromkeys(r["item_id"] for r in batch), session)
        if conflicts:
            with pytest.raises(LeaseConflictError, match="nothing from this call was written") as e:
                self.store.add_labels(batch, session=session)
            assert set(e.value.conflicts) == conflicts
            return
        expected = []
        for rec in batch:
            head = self.heads.get(rec["item_id"])
            if head is not None and head[0] == rec["label"] and head[1] == session:
                expected.append(head[2])  # a resubmission is not stored twice
            else:
                expected.append(self._append(rec["item_id"], rec["label"], "human", "ana", session))
        assert self.store.add_labels(batch, session=session) == expected

    @rule(data=st.data(), bad=st.sampled_from(["id", "class", "seconds", "source"]))
    def add_bad(self, data, bad):
        good = {"item_id": data.draw(items), "label": data.draw(st.sampled_from(self.classes))}
        wrong = dict(good)
        if bad == "id":
            wrong["item_id"] = data.draw(st.text(min_size=1, max_size=5).filter(lambda s: s not in IDS))
        elif bad == "class":
            wrong["label"] = data.draw(st.text(min_size=1, max_size=5).filter(lambda s: s not in self.classes))
        elif bad == "seconds":
            wrong["seconds"] = data.draw(st.sampled_from([-1.0, float("inf"), "3s"]))
        else:
            wrong["source"] = "robot"
        with pytest.raises(ValueError, match="nothing was written"):
            self.store.add_labels([good, wrong])

    @rule(item=items, annotator=annotators)
    def undo(self, item, annotator):
        if item in self.current:
            self.store.undo(item, annotator=annotator)
            self._append(item, None, "undo", annotator)
        else:
            with pytest.raises(ValueError, match="no label to undo"):
                self.store.undo(item, annotator=annotator)

    @rule(item=items, session=sessions)
    def undo_in_session(self, item, session):
        head = self.heads.get(item)
        if head is None or head[0] is None:
            with pytest.raises(ValueError, match="no label to undo"):
                self.store.undo(item, session=session)
        elif head[1] != session:
            with pytest.raises(LeaseConflictError, match="only retract its own"):
                self.store.undo(item, session=session)
        else:
            self.store.undo(item, session=session)
            self._append(item, None, "undo", "ana", session)

    @rule(data=st.data(), session=sessions)
    def lease(self, data, session):
        want = list(dict.fromkeys(data.draw(st.lists(items, min_size=0, max_size=5))))
        granted = []
        for item in want:
            if item in self.current or self._held_by_other(item, session):
                continue
            granted.append(item)
            lease = self.leases.get((item, session))
            if lease is None or not lease[0]:
                self.leases[(item, session)] = [True, len(self.history)]
        assert self.store.lease(want, session=session, ttl=3600) == granted

    @rule(data=st.data(), session=sessions)
    def release(self, data, session):
        want = list(dict.fromkeys(data.draw(st.lists(items, min_size=0, max_size=5))))
        n = 0
        for item in want:
            lease = self.leases.get((item, session))
            if lease is not None and lease[0]:
                lease[0] = False
                n += 1
        assert self.store.release(want, session=session) == n

    @rule(data=st.data())
    def import_rows(self, data):
        n = data.draw(st.integers(0, 6))
        label_pool = st.sampled_from(self.classes + ["nope", ""])
        item_pool = st.sampled_from(IDS + ["ghost"])
        df = pd.DataFrame({"item_id": [data.draw(item_pool) for _ in range(n)],
                           "label": [data.draw(label_pool) for _ in range(n)]}, dtype=object)
        accepted, unchanged, rejected, seen, writes = 0, 0, 0, set(), []
        current = dict(self.current)
        for item, label in zip(df.item_id, df.label):
            if label == "" or item == "ghost" or label not in self.classes or item in seen:
                rejected += 1
                continue
            seen.add(item)
            if current.get(item) == label:
                unchanged += 1
            else:
                accepted += 1
                writes.append((item, label))
        report = import_labels(self.store, df, annotator="bo")
        assert (report.accepted, report.unchanged, len(report.rejected)) == (accepted, unchanged, rejected)
        for item, label in writes:
            self._append(item, label, "imported", "bo")

    @precondition(lambda self: len(self.classes) < len(BASE_CLASSES) + len(EXTRA_CLASSES))
    @rule()
    def extend_classes(self):
        self.classes.append(EXTRA_CLASSES[len(self.classes) - len(BASE_CLASSES)])
        assert self.store.attach_pool(IDS, self.classes).new_classes == self.classes[-1:]

    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()
        assert self.store.attach_pool(list(reversed(IDS))).n_labelled == len(self.current)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def matches_model(self):
        assert self.store.current_labels() == self.current
        hist = self.store.labels_df(history=True)
        assert list(zip(hist.item_id, hist.label, hist.source, hist.annotator, hist.session)) == self.history
        # each row is superseded by the next row of the same item, and only by it
        last: dict[str, int] = {}
        expected = {}
        for item, label_id in zip(hist.item_id, hist.label_id):
            if item in last:
                expected[last[item]] = label_id
            last[item] = label_id
        got = {lid: sup for lid, sup in zip(hist.label_id, hist.superseded_by) if not pd.isna(sup)}
        assert got == expected
        live = self.store.leases_df()
        assert sorted(zip(live.item_id, live.session)) == sorted(k for k, v in self.leases.items() if v[0])
        assert self.store.check() == []


SETTINGS = settings(max_examples=20, stateful_step_count=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_store_state_machine(backend, request):
    if backend == "sqlite":
        def make_target(folder):
            return folder / "labels.db"
    else:
        server = request.getfixturevalue("pg_server")

        def make_target(folder):
            return server.new_schema()

    machine = type(f"StoreMachine_{backend}", (StoreMachine,), {"make_target": staticmethod(make_target)})
    run_state_machine_as_test(machine, settings=SETTINGS)
