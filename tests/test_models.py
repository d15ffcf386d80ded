import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from alwidgets.models import LinearProbe, fit_predict_proba


def test_probe_keeps_one_column_per_class_when_classes_are_missing():
    X = np.array([[0.0, 0], [0.1, 0], [1, 1], [1.1, 1]])
    p = LinearProbe(n_classes=4).fit(X, [0, 0, 2, 2]).predict_proba(X)
    assert p.shape == (4, 4)
    np.testing.assert_allclose(p.sum(1), 1)
    assert np.all(p[:, [1, 3]] == 0)
    assert p[0].argmax() == 0 and p[3].argmax() == 2


def test_single_labelled_class_predicts_it():
    X = np.random.default_rng(0).normal(size=(5, 3))
    labels = np.array([1, -1, -1, -1, -1])
    _, p = fit_predict_proba(LinearProbe(), X, labels, n_classes=3)
    assert np.all(p.argmax(1) == 1)
    _, p = fit_predict_proba(RandomForestClassifier(n_estimators=5), X, labels, n_classes=3)
    assert p.shape == (5, 3) and np.all(p[:, 1] == 1)


def test_any_sklearn_classifier_maps_its_classes_to_columns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    labels = np.where(X[:, 0] > 0, 3, 1)
    fitted, p = fit_predict_proba(RandomForestClassifier(n_estimators=10, random_state=0), X, labels, n_classes=5)
    assert p.shape == (60, 5) and np.all(p[:, [0, 2, 4]] == 0)
    assert (p.argmax(1) == labels).mean() > 0.9


def test_fit_errors():
    with pytest.raises(ValueError, match="no labelled items"):
        fit_predict_proba(LinearProbe(), np.zeros((3, 2)), [-1, -1, -1], n_classes=2)
    with pytest.raises(ValueError, match="NaN or inf values in rows \\[1\\]"):
        LinearProbe().fit(np.array([[0.0], [np.inf]]), [0, 1])


def test_standardisation_comes_from_the_pool_when_given():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=3.0, scale=2.0, size=(500, 4))
    labels = np.full(500, -1)
    labels[:6] = [0, 1, 0, 1, 0, 1]
    fitted, _ = fit_predict_proba(LinearProbe(), X, labels, n_classes=2)
    np.testing.assert_allclose(fitted.mean_, X.mean(0))          # all 500 rows, not the 6 labelled
    alone = LinearProbe().fit(X[:6], labels[:6])
    np.testing.assert_allclose(alone.mean_, X[:6].mean(0))


def test_probe_keeps_the_geometry_of_the_features():
    # One informative high-variance feature and 40 low-variance noise features (like trailing PCA
    # components): per-feature standardisation would give the noise the same weight and, with 6
    # labels, let the regression fit it; one overall scale keeps it small.
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    X = np.hstack([(2 * y - 1)[:, None] * 3.0 + rng.normal(size=(n, 1)), 0.05 * rng.normal(size=(n, 40))])
    labels = np.full(n, -1)
    for c in (0, 1):
        labels[np.flatnonzero(y == c)[:3]] = c
    fitted, probs = fit_predict_proba(LinearProbe(), X, labels, n_classes=2)
    assert (probs.argmax(1) == y).mean() > 0.97
    np.testing.assert_allclose(np.sqrt(((fitted.transform(X)) ** 2).mean()), 1.0, rtol=1e-6)


def test_egl_rescales_as_the_probe_does():
    from alwidgets.select.egl import _sq_norms

    X = np.random.default_rng(1).normal(loc=2.0, scale=[1.0, 5.0, 0.1], size=(300, 3))
    probe = LinearProbe().fit(X, np.r_[[0, 1, 0, 1], np.full(296, -1)])
    np.testing.assert_allclose(_sq_norms(X, True, chunk=64), (probe.transform(X) ** 2).sum(1), rtol=1e-4)


# ---------------------------------------------------------------- one fit convention (issue 12 item 5)
class _Recorder(LinearProbe):
    """A LinearProbe that records the rows it was fitted on."""

    def fit(self, X, y, sample_weight=None):
        type(self).seen = (len(X), np.asarray(y).copy())
        return super().fit(X, y, sample_weight)


class _PlainRecorder(RandomForestClassifier):
    def fit(self, X, y, sample_weight=None):
        type(self).seen = (len(X), np.asarray(y).copy())
        return super().fit(X, y, sample_weight)


def test_fit_model_gives_unlabelled_rows_only_to_models_that_accept_them():
    from sklearn.semi_supervised import LabelSpreading

    from alwidgets.models import accepts_unlabeled, fit_model

    X = np.random.default_rng(0).normal(size=(40, 3))
    labels = np.full(40, -1)
    labels[:6] = [0, 1, 2, 0, 1, 2]
    fit_model(_Recorder(), X, labels, 3)
    assert _Recorder.seen[0] == 40 and np.sum(_Recorder.seen[1] == -1) == 34
    fit_model(_PlainRecorder(n_estimators=3), X, labels, 3)
    assert _PlainRecorder.seen[0] == 6 and np.all(_PlainRecorder.seen[1] >= 0)
    assert accepts_unlabeled(LabelSpreading()) and not accepts_unlabeled(RandomForestClassifier())
    fitted, p = fit_predict_proba(LabelSpreading(), X, labels, 3)
    assert p.shape == (40, 3) and np.allclose(p.sum(1), 1)
    # one labelled class: a model that refuses one class is stood in for by a constant classifier
    one = np.where(np.arange(40) < 3, 1, -1)
    assert fit_model(RandomForestClassifier(3), X, one, 3).predict(X[:2]).tolist() == [1, 1]
    with pytest.raises(ValueError, match="labels hold class 5 but n_classes=3"):
        fit_model(LinearProbe(), X, np.where(np.arange(40) < 3, 5, -1), 3)


def test_probe_fit_with_unlabelled_rows_equals_pool_scaling_plus_labelled_fit():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = rng.normal(loc=1.0, scale=[1.0, 4.0, 0.2], size=(400, 3)).astype(np.float32)   # what the probe fits on
    labels = np.full(400, -1)
    labels[:30] = rng.integers(0, 3, 30)
    probe = LinearProbe().fit(X, labels)
    np.testing.assert_allclose(probe.mean_, X.astype(np.float64).mean(0))
    lr = LogisticRegression(C=10.0, max_iter=200).fit((X[:30] - probe.mean_) / probe.scale_, labels[:30])
    np.testing.assert_allclose(probe.predict_proba(X), lr.predict_proba((X - probe.mean_) / probe.scale_))
    W, b, classes = probe.linear_map()
    z = X @ W.T + b
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probe.predict_proba(X)[:, classes], atol=1e-10)
    with pytest.raises(ValueError, match="zero labelled items"):
        LinearProbe().fit(X, np.full(400, -1))
    with pytest.raises(ValueError, match="sample_weight must have one value per row of X \\(400\\)"):
        LinearProbe().fit(X, labels, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="zero width"):
        LinearProbe().fit(np.zeros((4, 0)), [0, 1, 0, 1])
