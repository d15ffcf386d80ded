"""Background refits: the labeller never waits for the model, and nothing a refit finds is lost or misapplied."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from alwidgets import Session
from alwidgets.background import BackgroundWork
from alwidgets.segmentation import DenseDecoder, make_shapes
from alwidgets.segmentation.features import DenseFeatures
from test_segmentation_session import masks_for, shapes  # noqa: F401 (the fixture)


def small_model(**kw):
    return DenseDecoder(4, 4, n_components=None, width=16, fine=8, min_steps=12, max_steps=12, random_state=0, **kw)


def session(shapes, **kw):
    data, feats = shapes
    kw = {"model": small_model(), "store": ":memory:", "selector": "random", "cv": 2, **kw}
    return Session(data, embeddings=feats, **kw)


class Gate:
    """Holds the worker's fits until opened (a slow refit, deterministically)."""

    def __init__(self, s):
        self.open_ = threading.Event()
        self.entered = threading.Event()
        self.fit = s.loop.fit
        s.loop.fit = self

    def __call__(self, *a, **kw):
        if threading.current_thread() is not threading.main_thread():
            self.entered.set()
            assert self.open_.wait(30)
        return self.fit(*a, **kw)


# ---------------------------------------------------------------------- the worker
def test_newest_request_wins_and_results_apply_in_order():
    started, release = threading.Event(), threading.Event()
    ran, applied = [], []

    def run(job, publish):
        ran.append(job)
        if job == 1:
            started.set()
            assert release.wait(10)
        publish("fit", job)
        publish("scores", -job)

    work = BackgroundWork(run, lambda kind, v: applied.append((kind, v)))
    work.request(1)
    assert started.wait(10)
    work.request(2)
    work.request(3)            # replaces 2, which never started
    assert work.busy and applied == []   # no loop: nothing is applied behind the owner's back
    release.set()
    assert work.wait(10)
    assert ran == [1, 3] and applied == [("fit", 1), ("scores", -1), ("fit", 3), ("scores", -3)]
    assert not work.busy


def test_an_error_in_a_job_is_handed_to_the_owner():
    applied = []
    work = BackgroundWork(lambda job, publish: 1 / 0, lambda kind, v: applied.append((kind, type(v))))
    work.request("x")
    work.wait(10)
    assert applied == [("error", ZeroDivisionError)]


def test_in_an_event_loop_results_apply_without_waiting():
    applied = []

    async def main():
        work = BackgroundWork(lambda job, publish: publish("fit", job), lambda kind, v: applied.append(
            (v, threading.current_thread() is threading.main_thread())))
        work.request(7)
        for _ in range(500):
            if applied:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert applied == [(7, True)]       # applied by the loop, on the owner's thread


# ---------------------------------------------------------------------- the session
def test_background_refit_equals_the_refit_now(shapes):
    data, _ = shapes
    now, bg = session(shapes, refit="now"), session(shapes, refit="background")
    events = []
    bg.on("change", lambda m: events.append(("change", m)))
    bg.on("fit", lambda m: events.append(("fit", m.n_masks_)))
    for _ in range(2):
        b1, b2 = now.next_batch(3), bg.next_batch(3)
        assert b1.ids == b2.ids
        assert now.submit(masks_for(data, b1)).startswith("saved 3 labels · mIoU")
        assert bg.submit(masks_for(data, b2)) == "saved 3 labels · refitting in the background"
    bg.wait()
    np.testing.assert_allclose(bg.probs_, now.probs_, atol=1e-5)
    assert bg.metrics_["miou"] == pytest.approx(now.metrics_["miou"])
    h_now, h_bg = now.history, bg.history
    assert h_bg["n_labels"].tolist() == h_now["n_labels"].tolist() == [3, 6]
    np.testing.assert_allclose(h_bg["miou"].astype(float), h_now["miou"].astype(float), equal_nan=True)
    assert h_bg["fit_s"].notna().all()     # the round records the background fit's time
    assert [e for e in events if e[0] == "fit"] == [("fit", 3), ("fit", 6)]
    assert events[-1][0] == "change" and events[-1][1].startswith("refitted on 6 labels · mIoU")
    now.close()
    bg.close()


def test_prediction_does_not_wait_for_a_refit_under_way(shapes):
    data, _ = shapes
    s = session(shapes, refit="background")
    s.submit(masks_for(data, s.next_batch(3)))
    s.wait()
    first = s.fitted_
    gate = Gate(s)
    b = s.next_batch(2)
    t0 = time.perf_counter()
    msg = s.submit(masks_for(data, b))
    assert gate.entered.wait(10)
    pred = s.predicted_mask(data.ids[15])               # the fit that has landed answers at once
    assert time.perf_counter() - t0 < 5 and msg.endswith("refitting in the background")
    assert s.fitted_ is first and pred.shape == (32, 32)
    assert s.progress()["pool_labelled"] == 5            # committed before the refit
    threading.Timer(0.3, gate.open_.set).start()
    s.next_batch(2)                                       # picks with the refit on all 5 masks
    assert s.fitted_ is not first and s.fitted_.n_labels == 5
    assert s.model_ is not first.model                   # the refit trained a fork: the old fit is untouched
    assert len(first.model.trained_rows_) == 3 and len(s.model_.trained_rows_) == 5
    s.close()


def test_a_failed_refit_keeps_the_labels_and_says_so(shapes):
    data, _ = shapes
    s = session(shapes, refit="background")
    seen = []
    s.on("change", seen.append)

    def broken(*a, **kw):
        raise RuntimeError("out of memory")

    s.loop.fit = broken
    b = s.next_batch(2)
    assert s.submit(masks_for(data, b)).startswith("saved 2 labels")
    with pytest.warns(RuntimeWarning, match="background refit failed: RuntimeError: out of memory"):
        s.wait()
    assert "out of memory" in seen[-1] and s.progress()["pool_labelled"] == 2
    s.close()


def test_auto_refits_in_the_background_only_in_a_running_event_loop(shapes):
    data, _ = shapes
    s = session(shapes)                              # refit="auto"
    assert s.submit(masks_for(data, s.next_batch(2))).startswith("saved 2 labels · mIoU")   # a script: now

    async def in_kernel():
        return s.submit(masks_for(data, s.next_batch(2)))

    assert asyncio.run(in_kernel()).endswith("refitting in the background")
    s.wait()
    assert s.fitted_.n_labels == 4
    with pytest.raises(ValueError, match="refit must be one of"):
        session(shapes, refit="later")
    s.close()


def test_the_painter_moves_on_at_once_and_its_prediction_follows_the_refit(shapes):
    pytest.importorskip("anywidget")
    from alwidgets.segmentation import mask_to_png
    from alwidgets.widgets.view import MaskSessionView

    data, _ = shapes
    s = session(shapes, refit="background")
    s.submit(masks_for(data, s.next_batch(3)))
    s.wait()
    view = MaskSessionView(s)
    painter = view.show(3).painter
    first, second = s.batch.ids[0], s.batch.ids[1]
    assert painter.current == first
    gate = Gate(s)
    view._submit(first, mask_to_png(data.masks[data.pool.index_of(first)]))
    assert painter.current == second and "refitting in the background" in painter.status   # not waiting
    initial = painter.initial
    old = s.fitted_
    assert painter.prediction == view._prediction_png(second, view._img[0])   # from the 3-mask fit
    gate.open_.set()
    s.wait()                                               # the refit lands: "fit" then "change"
    assert s.fitted_ is not old and s.fitted_.n_labels == 4
    assert painter.current == second and painter.initial == initial   # the mask being painted is kept
    assert painter.prediction and painter.prediction == view._prediction_png(second, view._img[0])
    assert painter.status.startswith("refitted on 4 labels")
    s.close()


def test_a_refit_after_one_new_mask_is_short():
    data = make_shapes(n_images=12, size=(32, 32), random_state=0)
    feats = DenseFeatures.from_pixels(data.pool)
    m = DenseDecoder(4, 4, n_components=None, width=8, fine=4, min_steps=40, max_steps=400, steps_per_mask=10,
                     warm_fraction=0.5, steps_per_new_mask=3, random_state=0)
    masks = [None] * 12
    for i in range(8):
        masks[i] = data.masks[i]
    m.fit(feats, masks)
    assert m.n_steps_ == 80                                   # cold: 10 per mask
    masks[8] = data.masks[8]
    m.fit(feats, masks)
    assert m.warm_started_ and m.n_steps_ == 3                # one new mask: 3 steps
    masks[9], masks[10] = data.masks[9], data.masks[10]
    m.fit(feats, masks)
    assert m.n_steps_ == 6                                    # two new masks
    assert m.n_steps_for(11, warm=True) == 55                 # the whole warm schedule when all are new
    m.set_params(steps_per_new_mask=None)
    masks[11] = data.masks[11]
    m.fit(feats, masks)
    assert m.n_steps_ == 60


def test_the_label_grid_follows_a_background_refit():
    pytest.importorskip("anywidget")
    from alwidgets import Pool
    from alwidgets.widgets.view import SessionView

    s = Session(Pool.digits(), selector="margin", store=":memory:", refit="background")
    view = SessionView(s)
    view.show(6)
    ids = list(s.batch.ids)
    truth = {k: s.pool.classes[s.pool.targets[s.pool.index_of(k)]] for k in ids}
    view._submit(truth, sources={}, seconds={}, skipped=[])
    assert view.grid.status == "saved 6 labels · refitting in the background"
    assert s.history.empty or s.history["n_labels"].dropna().empty     # the round is recorded when scored
    s.wait()
    assert view.grid.status.startswith("refitted on 6 labels · accuracy")
    assert s.history["n_labels"].tolist() == [6] and view.grid.progress["pool_labelled"] == 6
    assert view.grid.progress["accuracy"] == s.metrics_["accuracy"]
    s.close()
