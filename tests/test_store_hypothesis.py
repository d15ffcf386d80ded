"""Property tests: random sequences of label / relabel / undo / import / bad input / reopen
keep the store equal to a plain-Python model of the append-only history.

Durability is the crash test's job; here fsync is switched off (``PRAGMA synchronous = OFF``)
so that hundreds of transactions stay fast on a busy disk.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from alwidgets.store import LabelStore

IDS = [f"id{i}" for i in range(8)]
BASE_CLASSES = ["cat", "dog", "owl"]
EXTRA_CLASSES = ["emu", "yak"]
ANNOTATORS = ["ana", "bo"]

items = st.sampled_from(IDS)
annotators = st.sampled_from(ANNOTATORS)
sources = st.sampled_from(["human", "accepted", "imported"])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="alw-hyp-"))
        self.path = self.dir / "labels.db"
        self.store = self._open()
        self.classes = list(BASE_CLASSES)
        self.store.attach_pool(IDS, self.classes)
        self.history: list[tuple[str, str | None, str, str]] = []  # item, label, source, annotator
        self.current: dict[str, str] = {}

    def _open(self) -> LabelStore:
        store = LabelStore(self.path, annotator="ana")
        store._connection().execute("PRAGMA synchronous = OFF")
        return store

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _append(self, item, label, source, annotator):
        self.history.append((item, label, source, annotator))
        if label is None:
            self.current.pop(item, None)
        else:
            self.current[item] = label

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
        report = self.store.import_labels(df, annotator="bo")
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
        assert list(zip(hist.item_id, hist.label, hist.source, hist.annotator)) == self.history
        # each row is superseded by the next row of the same item, and only by it
        last: dict[str, int] = {}
        expected = {}
        for item, label_id in zip(hist.item_id, hist.label_id):
            if item in last:
                expected[last[item]] = label_id
            last[item] = label_id
        got = {lid: sup for lid, sup in zip(hist.label_id, hist.superseded_by) if not pd.isna(sup)}
        assert got == expected
        assert self.store.check() == []


StoreMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_store_state_machine = StoreMachine.TestCase
