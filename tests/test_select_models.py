"""Model-based selectors (issue 4, part 2): committee, BALD + MLP head, EGL, class-targeted,
cost-aware, variance. Score direction on constructed cases, the contract, determinism."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from alwidgets.heads import MLPHead
from alwidgets.models import LinearProbe, fit_predict_proba
from alwidgets.select import (
    BALD,
    ClassTargeted,
    Committee,
    CostAware,
    ExpectedGradientLength,
    Margin,
    Variance,
    bald_scores,
    expected_gradient_length,
    kl_to_consensus,
    make_selector,
    vote_entropy,
)
from alwidgets.select.bald import gumbel_top_k
from alwidgets.select.targeted import allocate, cv_recall

FAST_HEAD = MLPHead(epochs=60, hidden=32)


def two_blobs(n=200, gap=4.0, seed=0, d=2):
    """Two Gaussian classes along the first axis; the boundary is x0 = 0."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 0] += np.where(y == 0, -gap / 2, gap / 2)
    return X, y


def seed_labels(y, per_class, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.full(len(y), -1)
    for c in np.unique(y):
        idx = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        labels[idx] = c
    return labels


# ---------------------------------------------------------------- committee
def test_disagreement_measures_zero_when_members_agree_and_highest_where_they_disagree():
    agree = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    p = np.stack([agree, agree, agree])
    np.testing.assert_allclose(kl_to_consensus(p), 0.0, atol=1e-12)
    np.testing.assert_allclose(vote_entropy(p), 0.0, atol=1e-12)
    # item 1: members split 2-1 on confident opposite calls; item 0 all agree; item 2 mild split
    p = np.array([
        [[0.9, 0.1], [0.95, 0.05], [0.55, 0.45]],
        [[0.9, 0.1], [0.05, 0.95], [0.45, 0.55]],
        [[0.9, 0.1], [0.95, 0.05], [0.55, 0.45]],
    ])
    kl = kl_to_consensus(p)
    ve = vote_entropy(p)
    assert kl.argmax() == 1 and kl[0] == pytest.approx(0.0, abs=1e-12) and kl[1] > kl[2] > 0
    assert ve[0] == 0 and ve[1] == pytest.approx(ve[2]) and ve[1] == pytest.approx(-(2 / 3) * np.log(2 / 3) - (1 / 3) * np.log(1 / 3))


def test_committee_of_two_user_models_picks_where_they_disagree():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    b = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    sel = Committee(measure="vote_entropy").select(1, labels=[-1] * 4, random_state=0, member_probs=[a, b])
    assert sel.indices.tolist() == [1]
    sel = Committee().select(4, labels=[-1, -1, -1, 0], random_state=0, member_probs=[a, b])
    assert sel.indices.tolist()[0] == 1 and 3 not in sel.indices


def test_committee_with_given_models_scores_their_fitted_disagreement():
    X, y = two_blobs(200, gap=1.5, seed=1)
    labels = seed_labels(y, 10)
    models = [LogisticRegression(), KNeighborsClassifier(1)]
    p = np.stack([fit_predict_proba(m, X, labels, 2)[1] for m in models])
    cand = np.flatnonzero(labels == -1)
    sel = Committee(models=models, measure="kl").select(5, labels=labels, embeddings=X, random_state=0)
    assert sel.scores[0] == pytest.approx(kl_to_consensus(p[:, cand]).max())
    assert "2 given models" in sel.info["committee"]
    disagree = np.flatnonzero(p[0].argmax(1) != p[1].argmax(1))
    disagree = disagree[labels[disagree] == -1]
    assert len(disagree) >= 5
    sel = Committee(models=models).select(5, labels=labels, embeddings=X, random_state=0)
    assert set(sel.indices.tolist()) <= set(disagree.tolist())
    np.testing.assert_allclose(sel.scores, np.log(2))
    # unseeded random models are seeded from random_state: reproducible selections
    from sklearn.ensemble import RandomForestClassifier

    forest = [RandomForestClassifier(n_estimators=5), LogisticRegression()]
    a = Committee(models=forest).select(5, labels=labels, embeddings=X, random_state=1)
    b = Committee(models=forest).select(5, labels=labels, embeddings=X, random_state=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert forest[0].random_state is None                      # the user's model is left untouched


def near_boundary(X, labels, picked):
    """Mean margin uncertainty of the picks under a probe fit on the labels, and the pool's 75th percentile."""
    from alwidgets.select import uncertainty

    _, p = fit_predict_proba(LinearProbe(), X, labels, 2)
    u = uncertainty(p, "margin")
    return u[picked].mean(), np.percentile(u[labels == -1], 75)


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_committee_disagrees_near_the_boundary_and_is_deterministic(seed):
    X, y = two_blobs(400, gap=3.0, seed=seed, d=1)
    labels = seed_labels(y, 6, seed=seed)
    com = Committee(n_members=7)
    sel = com.select(10, labels=labels, embeddings=X, model=LinearProbe(), random_state=5)
    picked, pool_q75 = near_boundary(X, labels, sel.indices)
    assert picked > pool_q75
    assert sel.scores[0] > 0 and np.all(np.diff(sel.scores) <= 1e-12)
    again = com.select(10, labels=labels, embeddings=X, model=LinearProbe(), random_state=5)
    np.testing.assert_array_equal(sel.indices, again.indices)
    # the caller's model is the one copied: a forest committee differs from a probe committee
    from sklearn.ensemble import RandomForestClassifier

    forest = com.select(10, labels=labels, embeddings=X, model=RandomForestClassifier(5), random_state=5)
    assert "RandomForestClassifier" in forest.info["committee"]


def test_committee_without_a_model_says_so():
    X, y = two_blobs(40)
    with pytest.raises(ValueError, match=r"Committee needs `model=`.*LinearProbe\(\)"):
        Committee().select(2, labels=seed_labels(y, 3), embeddings=X)
    with pytest.raises(ValueError, match="Committee needs `embeddings=`"):
        Committee().select(2, labels=seed_labels(y, 3), model=LinearProbe())


def test_bootstrap_by_weight_equals_fitting_the_resampled_rows():
    # committee members of a foldable model are fitted with bootstrap counts as sample weights
    X, y = two_blobs(300, gap=1.0, seed=2, d=4)
    labels = seed_labels(y, 15, seed=2)
    rows = np.random.default_rng(0).choice(np.flatnonzero(labels >= 0), 30, replace=True)
    w = np.bincount(rows, minlength=len(X)).astype(float)
    a = LinearProbe().fit(X, labels, sample_weight=w)
    from sklearn.linear_model import LogisticRegression as LR

    b = LR(C=10.0, max_iter=200).fit(a.transform(X[rows]), labels[rows])
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(a.transform(X)), atol=1e-7)


def test_folded_linear_probes_match_their_predict_proba():
    from alwidgets.select.committee import _linear_members_proba

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 7)) * 3 + 1).astype(np.float32)
    cases = [rng.integers(0, 2, 40), rng.integers(0, 4, 40), np.full(10, 2), rng.integers(1, 3, 40)]
    probes = [LinearProbe(n_classes=5).fit(X[: len(ys)], ys) for ys in cases]
    out = np.empty((len(probes), 300, 5))
    _linear_members_proba([p.linear_map() for p in probes], X, out, chunk=128)
    for m, probe in enumerate(probes):
        np.testing.assert_allclose(out[m], probe.predict_proba(X), atol=1e-6)


def test_committee_needs_two_members():
    X, y = two_blobs(40)
    with pytest.raises(ValueError, match="at least 2 models"):
        Committee(models=[LinearProbe()]).select(2, labels=seed_labels(y, 3), embeddings=X)
    with pytest.raises(ValueError, match="member_probs covers 3 items but labels has 4"):
        Committee().select(1, labels=[-1] * 4, member_probs=np.full((2, 3, 2), 0.5))
    with pytest.raises(ValueError, match="n_members must be an integer >= 2, got 1"):
        Committee(n_members=1).select(1, labels=[-1] * 4, member_probs=np.full((2, 4, 2), 0.5))


# ---------------------------------------------------------------- BALD
def test_bald_zero_when_all_mc_samples_agree():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=50)
    scores = bald_scores(np.stack([p] * 8))
    np.testing.assert_allclose(scores, 0.0, atol=1e-9)


def test_bald_is_high_for_disagreeing_confident_samples_not_for_shared_ambiguity():
    mc = np.array([
        [[0.5, 0.5], [0.99, 0.01], [0.7, 0.3]],
        [[0.5, 0.5], [0.01, 0.99], [0.6, 0.4]],
    ])
    s = bald_scores(mc)
    assert s[0] == pytest.approx(0.0, abs=1e-12)      # ambiguous but agreed: no information
    assert s[1] > s[2] > 0
    sel = BALD().select(3, labels=[-1, -1, -1], random_state=0, mc_probs=mc)
    assert sel.indices.tolist() == [1, 2, 0]
    np.testing.assert_allclose(sel.scores, s[[1, 2, 0]])


def test_gumbel_top_k_samples_proportional_to_score_power():
    rng = np.random.default_rng(0)
    scores = np.array([1.0, 3.0])
    for temperature, expected in [(1.0, 0.75), (2.0, np.sqrt(3) / (1 + np.sqrt(3)))]:
        picks = np.array([gumbel_top_k(scores, 1, temperature, rng)[0] for _ in range(4000)])
        assert np.mean(picks == 1) == pytest.approx(expected, abs=0.03)
    s = np.random.default_rng(1).random(100)
    np.testing.assert_array_equal(gumbel_top_k(s, 10, 1e-4, rng), np.argsort(-s)[:10])
    # zero scores are drawn only after every positive score
    z = np.array([0.0, 0.2, 0.0, 0.5, 0.0])
    assert set(gumbel_top_k(z, 2, 1.0, rng).tolist()) == {1, 3}
    assert len(set(gumbel_top_k(z, 5, 1.0, rng).tolist())) == 5


def test_stochastic_bald_varies_with_seed_and_respects_scores():
    rng = np.random.default_rng(0)
    n = 300
    sure = np.tile([0.98, 0.02], (n, 1))
    mc = np.stack([sure] * 10)
    hot = np.arange(0, n, 10)                          # 30 items with real disagreement
    mc[::2, hot] = [0.02, 0.98]
    mc[:, hot] += rng.uniform(-0.01, 0.01, size=(10, len(hot), 1)) * [1, -1]
    sel = [BALD(stochastic=True).select(10, labels=np.full(n, -1), random_state=s, mc_probs=mc) for s in range(3)]
    for s in sel:
        assert set(s.indices.tolist()) <= set(hot.tolist())
        assert s.info["variant"] == "stochastic"
    assert len({tuple(sorted(s.indices.tolist())) for s in sel}) > 1
    again = BALD(stochastic=True).select(10, labels=np.full(n, -1), random_state=0, mc_probs=mc)
    np.testing.assert_array_equal(again.indices, sel[0].indices)


@pytest.mark.parametrize("seed", [0, 3])
def test_bald_with_mlp_head_picks_near_the_boundary(seed):
    X, y = two_blobs(400, gap=3.0, seed=seed, d=1)
    labels = seed_labels(y, 6, seed=seed)
    sel = BALD(head=FAST_HEAD).select(10, labels=labels, embeddings=X, random_state=5)
    assert "MC-dropout" in sel.info["samples"]
    picked, pool_q75 = near_boundary(X, labels, sel.indices)
    assert picked > pool_q75
    again = BALD(head=FAST_HEAD).select(10, labels=labels, embeddings=X, random_state=5)
    np.testing.assert_array_equal(sel.indices, again.indices)


def test_bald_from_head_logits_matches_bald_of_sampled_probs():
    from alwidgets.select.bald import _bald_from_logits

    X, y = two_blobs(300, gap=2.0, seed=6, d=3)
    head = MLPHead(n_classes=3, random_state=0).fit(X[:40], y[:40])
    mc = head.predict_proba_mc(X, n_samples=7, random_state=11)
    fast = np.concatenate([_bald_from_logits(z) for _, z in head.sample_logits(X, 7, 11, chunk=64)])
    np.testing.assert_allclose(fast, bald_scores(mc), atol=1e-5)
    assert fast.max() > 1e-3


def test_bald_with_plain_sklearn_model_uses_a_bootstrap_ensemble():
    X, y = two_blobs(120, gap=2.0, seed=4)
    labels = seed_labels(y, 6, seed=4)
    sel = BALD(head=None, n_samples=5).select(5, labels=labels, embeddings=X, model=LinearProbe(), random_state=0)
    assert "ensemble of 5 bootstrap copies of LinearProbe" in sel.info["samples"]
    assert np.all(sel.scores >= 0)
    with pytest.raises(ValueError, match=r"BALD needs `model=`"):
        BALD(head=None).select(5, labels=labels, embeddings=X)
    with pytest.raises(ValueError, match="head must be"):
        BALD(head=LinearProbe()).select(5, labels=labels, embeddings=X)   # no MC sampling


def test_bald_rejects_bad_mc_probs():
    with pytest.raises(ValueError, match=r"shape \(n_samples, n_items, n_classes\)"):
        BALD().select(1, labels=[-1, -1, -1], mc_probs=np.ones((3, 2)))
    mc = np.full((2, 3, 2), 0.5)
    mc[1, 2] = [np.nan, 0.5]
    with pytest.raises(ValueError, match=r"NaN or inf values for items \[2\]"):
        BALD().select(1, labels=[-1, -1, -1], mc_probs=mc)


# ---------------------------------------------------------------- MLP head
def test_mlp_head_fits_predicts_and_samples():
    X, y = two_blobs(200, gap=4.0, seed=5)
    head = MLPHead(n_classes=3, random_state=0).fit(X, y)
    assert head.predict_proba(X).shape == (200, 3)
    assert np.mean(head.predict(X) == y) > 0.95
    mc = head.predict_proba_mc(X, n_samples=6, random_state=1)
    assert mc.shape == (6, 200, 3)
    np.testing.assert_allclose(mc.sum(axis=2), 1.0, atol=1e-5)
    assert np.abs(mc[0] - mc[1]).max() > 1e-4                 # dropout on: samples differ
    np.testing.assert_allclose(mc, head.predict_proba_mc(X, n_samples=6, random_state=1))
    no_drop = MLPHead(dropout=0.0, random_state=0).fit(X, y)
    mc0 = no_drop.predict_proba_mc(X, n_samples=3, random_state=0)
    np.testing.assert_allclose(mc0[0], mc0[2], atol=1e-6)
    np.testing.assert_allclose(mc0[0], no_drop.predict_proba(X), atol=1e-5)
    head2 = MLPHead(n_classes=3, random_state=0).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), head2.predict_proba(X))


def test_mlp_head_works_as_the_session_model():
    X, y = two_blobs(100, seed=9)
    labels = seed_labels(y, 5, seed=9)
    _, probs = fit_predict_proba(MLPHead(epochs=30), X, labels, 3)
    assert probs.shape == (100, 3) and np.allclose(probs.sum(1), 1.0)
    assert np.all(probs[:, 2] == 0)          # class without labels: no column mass


def test_mlp_head_drops_unlabelled_rows_and_restores_thread_setting():
    before = torch.get_num_threads()
    X, y = two_blobs(20)
    partial = np.where(np.arange(20) < 3, -1, y)
    a = MLPHead(epochs=5).fit(X, partial)                  # -1 rows dropped: same as fitting the rest
    b = MLPHead(epochs=5).fit(X[3:], y[3:])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_allclose(a.mean_, X[3:].mean(0))
    with pytest.raises(ValueError, match="zero labelled items"):
        MLPHead().fit(X, np.full(20, -1))
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- EGL
def test_egl_closed_form_matches_autograd_gradients():
    rng = np.random.default_rng(0)
    n, d, c = 6, 5, 4
    X = rng.normal(size=(n, d))
    W = torch.tensor(rng.normal(size=(c, d)), requires_grad=True)
    b = torch.tensor(rng.normal(size=c), requires_grad=True)
    probs = torch.softmax(torch.tensor(X) @ W.T + b, dim=1).detach().numpy()
    brute = np.zeros(n)
    for i in range(n):
        for label in range(c):
            W.grad = b.grad = None
            logits = torch.tensor(X[i]) @ W.T + b
            torch.nn.functional.cross_entropy(logits[None], torch.tensor([label])).backward()
            g = np.concatenate([W.grad.numpy().ravel(), b.grad.numpy()])
            brute[i] += probs[i, label] * np.linalg.norm(g)
    np.testing.assert_allclose(expected_gradient_length(probs, X, bias=True), brute, rtol=1e-6)


def test_egl_direction_and_requirements():
    probs = np.array([[1.0, 0.0], [0.6, 0.4], [0.6, 0.4], [0.5, 0.5]])
    X = np.array([[9.0, 9.0], [1.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    egl = ExpectedGradientLength(rescale=False)
    sel = egl.select(4, labels=[-1] * 4, embeddings=X, probs=probs, random_state=0)
    assert sel.indices.tolist()[:2] == [2, 3] and sel.indices[-1] == 0
    assert sel.scores[-1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs `probs=`"):
        egl.select(1, labels=[-1] * 4, embeddings=X)
    with pytest.raises(ValueError, match="needs `embeddings=`"):
        egl.select(1, labels=[-1] * 4, probs=probs)


# ---------------------------------------------------------------- class-targeted
def test_allocate_is_proportional_and_exact():
    assert allocate([0.5, 1.0, 0.0], 3).tolist() == [1, 2, 0]
    assert allocate([0.0, 0.0], 5).sum() == 5
    assert allocate([0.2, 0.2, 0.2], 7).sum() == 7


def test_class_targeted_routes_budget_to_weak_class():
    rng = np.random.default_rng(0)
    n = 300
    pred = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), pred] = 0.9
    probs += rng.uniform(0, 0.02, size=(n, 3))
    probs /= probs.sum(1, keepdims=True)
    sel = ClassTargeted().select(12, labels=np.full(n, -1), probs=probs, random_state=0, class_scores=[0.9, 0.9, 0.2])
    # weakness 0.1, 0.1, 0.8 -> shares 1.2, 1.2, 9.6 -> 1, 1, 10 (largest remainder)
    assert sel.info["planned"] == {0: 1, 1: 1, 2: 10}
    assert np.sum(pred[sel.indices] == 2) == 10
    within = np.flatnonzero(pred == 2)
    m = Margin().select(10, labels=np.where(pred == 2, -1, 0), probs=probs, random_state=0)
    assert set(sel.indices[pred[sel.indices] == 2].tolist()) == set(m.indices.tolist())
    assert set(m.indices.tolist()) <= set(within.tolist())
    sel_dict = ClassTargeted().select(12, labels=np.full(n, -1), probs=probs, random_state=0,
                                      class_scores={0: 0.9, 1: 0.9, 2: 0.2})
    np.testing.assert_array_equal(sel.indices, sel_dict.indices)


def test_class_targeted_measures_recall_by_cross_validation():
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, 3, n)
    X = rng.normal(scale=0.6, size=(n, 2)).astype(np.float32)
    X[y == 0, 0] -= 4.0                          # class 0 well separated
    X[y == 2, 0] += 0.3                          # classes 1 and 2 overlap
    labels = seed_labels(y, 15, seed=1)
    recall = cv_recall(LinearProbe(), X, labels, 3, cv=5)
    assert recall[0] > 0.9 and recall[0] > recall[1] and recall[0] > recall[2]
    sel = ClassTargeted().select(10, labels=labels, embeddings=X, model=LinearProbe(), random_state=0)
    assert sel.info["quality_source"].startswith("5-fold")
    with pytest.raises(ValueError, match=r"ClassTargeted needs `model=`.*cross-validate"):
        ClassTargeted().select(10, labels=labels, embeddings=X)
    _, probs = fit_predict_proba(LinearProbe(), X, labels, 3)
    assert np.sum(probs[sel.indices].argmax(1) == 0) <= 1


def test_class_targeted_fills_batch_when_weak_class_has_no_predicted_items():
    probs = np.tile([0.7, 0.3, 0.0], (20, 1))
    sel = ClassTargeted().select(5, labels=np.full(20, -1), probs=probs, random_state=0, class_scores=[0.9, 0.9, 0.0])
    assert len(sel) == 5 and len(set(sel.indices.tolist())) == 5


def test_class_targeted_shares_equally_while_no_class_has_two_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    X = rng.normal(scale=0.5, size=(400, 2)).astype(np.float32)
    X[:, 0] += 3 * (y % 2)
    X[:, 1] += 3 * (y // 2)
    labels = seed_labels(y, 1, seed=2)
    sel = ClassTargeted().select(8, labels=labels, embeddings=X, model=LinearProbe(), random_state=0)
    assert sel.info["quality_source"].startswith("none")
    assert sel.info["planned"] == {0: 2, 1: 2, 2: 2, 3: 2}
    assert sel.info["picked"] == {0: 2, 1: 2, 2: 2, 3: 2}


def test_class_targeted_validates_class_scores():
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="one value per class \\(3\\)"):
        ClassTargeted().select(1, labels=[-1] * 4, probs=probs, class_scores=[0.5, 0.5])
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        ClassTargeted().select(1, labels=[-1] * 4, probs=probs, class_scores=[50, 60, 70])
    with pytest.raises(ValueError, match="keys \\[7\\]"):
        ClassTargeted().select(1, labels=[-1] * 4, probs=probs, class_scores={7: 0.1})


# ---------------------------------------------------------------- cost-aware
def test_cost_aware_respects_budget_and_prefers_value_for_money():
    rng = np.random.default_rng(0)
    for seed in range(5):
        n = 200
        probs = rng.dirichlet(np.ones(3), size=n)
        costs = rng.uniform(0.5, 5.0, size=n)
        budget = rng.uniform(3.0, 30.0)
        sel = CostAware(budget=budget).select(50, labels=np.full(n, -1), probs=probs, random_state=seed, costs=costs)
        assert costs[sel.indices].sum() <= budget + 1e-9
        assert sel.info["spent"] == pytest.approx(costs[sel.indices].sum())
        # nothing left out would still fit and has a better ratio than the worst pick
        ratio = Margin().select(n, labels=np.full(n, -1), probs=probs, random_state=0)
        util = np.empty(n)
        util[ratio.indices] = ratio.scores
        left = np.setdiff1d(np.arange(n), sel.indices)
        fits = left[costs[left] <= budget - sel.info["spent"] + 1e-12]
        if len(sel) < 50 and len(fits):
            assert (util[fits] / costs[fits]).max() <= (util[sel.indices] / costs[sel.indices]).min() + 1e-12
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    sel = CostAware().select(2, labels=[-1] * 3, probs=probs, random_state=0, costs=[3.0, 1.0, 2.0])
    assert sel.indices.tolist() == [1, 2]           # equal utility: cheapest first


@settings(max_examples=60, deadline=None)
@given(n_items=st.integers(1, 60), n=st.integers(1, 20), seed=st.integers(0, 2**16),
       budget_frac=st.floats(0.0, 1.5), n_labelled=st.integers(0, 10))
def test_cost_aware_budget_property(n_items, n, seed, budget_frac, n_labelled):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=n_items)
    costs = rng.choice([0.5, 1.0, 2.0, 7.5], size=n_items)
    labels = np.full(n_items, -1)
    labels[rng.choice(n_items, min(n_labelled, n_items - 1), replace=False)] = 0
    unl = np.flatnonzero(labels == -1)
    budget = max(costs[unl].min(), budget_frac * costs[unl].sum())
    sel = CostAware(budget=budget).select(n, labels=labels, probs=probs, random_state=seed, costs=costs)
    assert 1 <= len(sel) <= min(n, len(unl))
    assert len(set(sel.indices.tolist())) == len(sel) and np.all(labels[sel.indices] == -1)
    assert costs[sel.indices].sum() <= budget * (1 + 1e-9)
    if len(sel) < n:                                  # stopped by the budget: nothing left fits
        left = np.setdiff1d(unl, sel.indices)
        assert np.all(costs[left] > budget - costs[sel.indices].sum() - 1e-9)


def test_cost_aware_wraps_any_selector_and_checks_inputs():
    X, y = two_blobs(50)
    sel = CostAware("random", budget=4).select(10, labels=np.full(50, -1), random_state=0, costs=np.ones(50))
    assert len(sel) == 4 and sel.info["inner"] == "random"
    assert make_selector("cost_aware").requires == ("probs",)
    # the inner selector's own per-call inputs and the caller's model pass through
    assert CostAware("committee").accepts == ("costs", "member_probs")
    mp = np.stack([np.tile([0.9, 0.1], (50, 1)), np.tile([0.9, 0.1], (50, 1))])
    mp[1, 7] = [0.1, 0.9]
    sel = CostAware("committee").select(1, labels=np.full(50, -1), member_probs=mp, costs=np.ones(50))
    assert sel.indices.tolist() == [7]
    with pytest.raises(TypeError, match=r"accepts `costs=`, `member_probs=`"):
        CostAware("committee").select(1, labels=np.full(50, -1), mc_probs=mp)
    with pytest.raises(ValueError, match="needs `probs=`"):
        CostAware().select(1, labels=[-1, -1])
    with pytest.raises(ValueError, match=r"rows \[1\] are not"):
        CostAware().select(1, labels=[-1] * 3, probs=np.full((3, 2), 0.5), costs=[1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="one value per pool item \\(3\\)"):
        CostAware().select(1, labels=[-1] * 3, probs=np.full((3, 2), 0.5), costs=[1.0, 2.0])
    with pytest.raises(ValueError, match="below the cheapest unlabelled item's cost \\(2\\)"):
        CostAware(budget=1.5).select(1, labels=[-1, -1, 0], probs=np.full((3, 2), 0.5), costs=[2.0, 5.0, 1.0])
    with pytest.raises(ValueError, match="budget must be None or a number > 0, got 0"):
        CostAware(budget=0).select(1, labels=[-1, -1, 0], probs=np.full((3, 2), 0.5))


# ---------------------------------------------------------------- variance (regression)
@pytest.mark.parametrize("kind", ["ensemble", "gp"])
def test_variance_is_highest_far_from_labelled_data(kind):
    rng = np.random.default_rng(0)
    X = np.linspace(-5, 5, 101)[:, None]
    truth = 2.0 * X[:, 0] + rng.normal(scale=0.3, size=101)
    targets = np.full(101, np.nan)
    near = np.flatnonzero(np.abs(X[:, 0]) < 1.0)
    targets[near] = truth[near]
    labels = np.where(np.isnan(targets), -1, 0)
    sel = Variance(kind=kind).select(6, labels=labels, embeddings=X, targets=targets, random_state=0)
    assert np.all(np.abs(X[sel.indices, 0]) > 3.5)
    assert np.all(np.diff(sel.scores) <= 1e-12) and sel.info["targets"] == "numeric targets"
    again = Variance(kind=kind).select(6, labels=labels, embeddings=X, targets=targets, random_state=0)
    np.testing.assert_array_equal(sel.indices, again.indices)


def test_folded_linear_regressors_match_predict():
    from sklearn.linear_model import PoissonRegressor, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from alwidgets.select.variance import _affine, default_regressor

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(200, 5)) * 3 + 1).astype(np.float32)
    y = X @ rng.normal(size=5) + rng.normal(size=200)
    for model in [default_regressor(), Ridge(), make_pipeline(StandardScaler(), Ridge(alpha=10))]:
        model.fit(X[:40], y[:40])
        w, b = _affine(model)
        np.testing.assert_allclose(X @ w + b, model.predict(X), rtol=1e-5, atol=1e-5)
    assert _affine(PoissonRegressor().fit(X[:40], np.abs(y[:40]))) is None     # exp link: not affine
    assert _affine(KNeighborsClassifier(1).fit(X[:40], y[:40] > 0)) is None


def test_variance_inputs():
    X = np.arange(10, dtype=float)[:, None]
    t = np.full(10, np.nan)
    t[[0, 1]] = [0.0, 1.0]
    with pytest.raises(ValueError, match=r"labelled rows \[5\] have NaN targets"):
        Variance().select(2, labels=[0, 0, -1, -1, -1, 0, -1, -1, -1, -1], embeddings=X, targets=t)
    with pytest.raises(ValueError, match="targets has 3 rows but the pool has 10"):
        Variance().select(1, labels=[-1] * 10, embeddings=X, targets=[1.0, 2.0, np.nan])
    with pytest.raises(ValueError, match="1-d numeric array"):
        Variance().select(1, labels=[0, -1], embeddings=X[:2], targets=np.array(["a", "b"]))
    # the caller's regressor is the one copied; a classifier (a classification loop's model) is not used
    from sklearn.linear_model import LinearRegression

    two = np.r_[[0, 0], np.full(8, -1)]
    sel = Variance(n_members=3).select(1, labels=two, embeddings=X, model=LinearRegression(), targets=t)
    assert "copies of LinearRegression" in sel.info["ensemble"]
    sel = Variance(n_members=3).select(1, labels=two, embeddings=X, model=LinearProbe(), targets=t)
    assert "copies of Pipeline" in sel.info["ensemble"] and "classifier" in sel.info["note"]
    sel = Variance().select(2, labels=np.where(np.arange(10) == 0, 0, -1), embeddings=X, random_state=0,
                            targets=np.where(np.arange(10) == 0, 1.0, np.nan))
    assert sel.info["fallback"] == "random" and "only 1 labelled item" in sel.info["reason"]
    # ordinal integer labels as targets
    labels = np.full(10, -1)
    labels[[0, 1, 2]] = [1, 2, 3]
    sel = Variance().select(1, labels=labels, embeddings=X, random_state=0)
    assert sel.indices[0] == 9 and sel.info["targets"] == "integer labels read as numbers"


# ---------------------------------------------------------------- contract, shared by all
SELECTORS = {
    "committee": lambda: Committee(n_members=3),
    "bald": lambda: BALD(head=FAST_HEAD, n_samples=8),
    "egl": lambda: ExpectedGradientLength(),
    "class_targeted": lambda: ClassTargeted(cv=3),
    "cost_aware": lambda: CostAware(),
    "variance": lambda: Variance(n_members=4),
}


# the caller's model passed to select (the loop passes its own to every selector)
MODEL = {"committee": LinearProbe(), "bald": None, "egl": LinearProbe(), "class_targeted": LinearProbe(),
         "cost_aware": LinearProbe(), "variance": None}


def _probs_for(X, labels):
    if np.all(labels == -1):
        return None
    return fit_predict_proba(LinearProbe(), X, labels, 2)[1]


def test_registry_names():
    for name in SELECTORS:
        assert make_selector(name).name == name


@pytest.mark.parametrize("name", SELECTORS)
def test_contract_determinism_edge_cases(name):
    X, y = two_blobs(120, gap=2.0, seed=7)
    X[60:70] = X[50]                                   # duplicated points
    labels = seed_labels(y, 5, seed=7)
    probs = _probs_for(X, labels)
    sel = SELECTORS[name]()
    a = sel.select(8, labels=labels, embeddings=X, probs=probs, model=MODEL[name], random_state=3)
    b = sel.select(8, labels=labels, embeddings=X, probs=probs, model=MODEL[name], random_state=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(a) == 8 and len(set(a.indices.tolist())) == 8 and np.all(labels[a.indices] == -1)
    assert a.info["strategy"] == name and np.all(np.isfinite(a.scores))
    json.dumps(a.info)                                  # info is stored with the session: JSON-ready
    # n larger than the unlabelled pool: all unlabelled items, once each
    few = np.where(np.arange(120) < 115, y, -1)
    big = sel.select(50, labels=few, embeddings=X, probs=_probs_for(X, few), model=MODEL[name], random_state=0)
    assert sorted(big.indices.tolist()) == [115, 116, 117, 118, 119]
    # candidates restrict the picks (labelled candidates are not pickable)
    cand = np.arange(0, 120, 3)
    c = sel.select(8, labels=labels, embeddings=X, probs=probs, model=MODEL[name], candidates=cand,
                   random_state=3)
    assert len(c) == 8 and set(c.indices.tolist()) <= set(cand.tolist()) and np.all(labels[c.indices] == -1)
    # NaN rows are named
    Xbad = X.copy()
    Xbad[[4, 9]] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[4, 9\]"):
        sel.select(3, labels=labels, embeddings=Xbad, probs=probs, model=MODEL[name])
    # shape mismatch
    with pytest.raises(ValueError, match="embeddings has 119 rows but the pool has 120"):
        sel.select(3, labels=labels, embeddings=X[:-1], probs=probs, model=MODEL[name])


@pytest.mark.parametrize("name", ["committee", "bald", "class_targeted", "variance"])
def test_zero_labels_and_one_labelled_class_fall_back_with_a_reason(name):
    X, y = two_blobs(60, seed=8)
    sel = SELECTORS[name]()
    zero = sel.select(5, labels=np.full(60, -1), embeddings=X, model=MODEL[name], random_state=0)
    assert len(zero) == 5 and zero.info["fallback"] == "random" and zero.info["reason"]
    one = np.full(60, -1)
    one[[0, 1, 2]] = 0
    res = sel.select(5, labels=one, embeddings=X, model=MODEL[name], random_state=0)
    assert len(res) == 5 and np.all(one[res.indices] == -1)
    if name != "variance":                                # constant targets: also a fallback
        assert res.info["fallback"] == "random"


def test_selectors_run_inside_the_simulation(digits):
    from alwidgets import simulate

    X, y = digits
    keep = np.isin(y, [0, 1, 2, 3])
    X, y = X[keep][:400], y[keep][:400]
    names = ["committee", "bald", "egl", "class_targeted", "cost_aware", "variance"]
    res = simulate(X, y, names, target_acc=0.5, budget=30, batch_size=10, seed_per_class=0, repeats=1,
                   progress=False)
    assert set(res.summary["strategy"]) == set(names)
    curves = res.curves
    assert (curves.groupby("strategy")["n_labels"].max() == 30).all()
    later = curves[curves["n_labels"] >= 10]
    assert set(later["picked_by"].dropna()) == set(names)
