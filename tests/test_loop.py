"""The one loop (fit → predict → select over candidates) and the task contract."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier

from alwidgets.loop import Loop
from alwidgets.select.base import cold_start
from alwidgets.select import Margin, make_selector
from alwidgets.tasks import Classification, Regression
from alwidgets.tasks.classification import check_class_names


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


def test_fit_predicts_pool_and_eval_rows_in_one_call(digits):
    X, y = digits
    loop = Loop(Classification([str(d) for d in range(10)]), selector="margin")
    labels = loop.task.empty_labels(len(X))
    assert loop.fit(X, labels).predictions is None            # nothing labelled: no model yet
    labels[:50] = y[:50]
    f = loop.fit(X[:1000], labels[:1000], X_eval=X[1000:])
    assert f.predictions.shape == (1000, 10) and f.eval_predictions.shape == (797, 10) and f.n_labels == 50
    assert np.allclose(f.predictions.sum(1), 1)


def test_selection_stays_within_the_candidates(digits):
    X, y = digits
    loop = Loop(Classification([str(d) for d in range(10)]), selector="margin")
    labels = loop.task.empty_labels(len(X))
    labels[:30] = y[:30]
    f = loop.fit(X, labels)
    cand = np.arange(500, 520)
    sel = loop.select(50, X, labels, f, candidates=cand, random_state=0)
    assert len(sel) == 20 and set(sel.indices.tolist()) == set(cand.tolist())   # n capped at the candidates
    mask = np.zeros(len(X), bool)
    mask[700:800] = True
    sel = loop.select(10, X, labels, f, candidates=mask, random_state=0)
    assert np.all((sel.indices >= 700) & (sel.indices < 800))
    # the best 10 among the candidates = the 10 smallest margins there
    p = np.sort(f.predictions[700:800], axis=1)
    margin = p[:, -1] - p[:, -2]
    assert set(sel.indices.tolist()) == set((700 + np.argsort(margin)[:10]).tolist())


def test_cold_start_is_decided_once(digits):
    X, _ = digits
    chooser, why = cold_start(Margin(), np.full(5, -1), None)
    assert chooser.name == "random" and "margin needs probs" in why
    assert cold_start(make_selector("coverage"), np.full(5, -1), None)[1] is None
    loop = Loop(Classification(["a", "b"]), selector="margin")
    sel = loop.select(5, X, loop.task.empty_labels(len(X)), None, random_state=0)
    assert sel.info["picked_by"] == "random" and "cold_start" in sel.info


def test_the_loop_model_reaches_model_fitting_selectors(digits):
    """A committee bootstraps the loop's model (here a random forest), not a silent default."""
    X, y = digits
    loop = Loop(Classification([str(d) for d in range(10)]), model=RandomForestClassifier(n_estimators=5),
                selector="committee")
    labels = loop.task.empty_labels(len(X))
    labels[:60] = y[:60]
    sel = loop.select(5, X, labels, loop.fit(X, labels), random_state=0)
    assert "RandomForestClassifier" in sel.info["committee"]


def test_regression_task_feeds_variance_its_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    truth = X @ [1.0, -2.0, 0.5]
    loop = Loop(Regression(), selector="variance")
    labels = loop.task.empty_labels(len(X))
    labels[:10] = truth[:10]
    f = loop.fit(X, labels)
    assert f.predictions.shape == (200,)
    sel = loop.select(5, X, labels, f, random_state=0)
    assert len(sel) == 5 and not np.any(sel.indices < 10)
    m = loop.task.cross_validate(loop.model, X, labels, cv=3)
    assert m["score"] == m["rmse"] >= 0 and m["n_folds"] == 3
    with pytest.raises(ValueError, match="finite number"):
        loop.task.encode(float("nan"))


def test_classification_codec_and_names():
    task = Classification(["cat", "dog"])
    assert task.encode("dog") == {"label": "dog", "payload": None, "media_type": None}
    assert task.encode(0)["label"] == "cat" and task.decode("dog") == 1 and task.decode("gone") is None
    with pytest.raises(ValueError, match="unknown class 'cow'"):
        task.encode("cow")
    assert task.check_targets(["dog", 0, "cat"]).tolist() == [1, 0, 0]
    for bad, why in [(["a", "A"], "look the same"), (["a", "a "], "look the same"),
                     (["caf\u00e9", "cafe\u0301"], "look the same"), (["a", "a\u200b"], "invisible"),
                     (["\ud800"], "lone surrogate"), ([""], "empty"), (["a", "a"], "given twice"),
                     ([1.5], "strings")]:
        with pytest.raises(ValueError, match=why):
            check_class_names(bad)
    assert check_class_names(["cafe\u0301"]) == ["caf\u00e9"]        # stored in NFC
