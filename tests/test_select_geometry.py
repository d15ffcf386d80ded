"""k-center, BADGE, Explore, uncertainty+diversity: score direction, exactness, edge cases."""
import numpy as np
import pytest

from alwidgets.select import Auto, Badge, Coverage, Explore, KCenterGreedy, UncertaintyDiversity, make_selector
from alwidgets.select._faiss import NearestCenter, vector_sqdist
from alwidgets.select.badge import gradient_sqdist


def brute_farthest_first(X, n, start):
    X = X.astype(np.float64)
    d = np.min(((X[:, None] - X[start][None]) ** 2).sum(-1), axis=1)
    picks, scores = [], []
    for _ in range(n):
        j = int(np.argmax(d))
        picks.append(j)
        scores.append(np.sqrt(d[j]))
        d = np.minimum(d, ((X - X[j]) ** 2).sum(-1))
    return picks, np.array(scores)


@pytest.mark.parametrize("clustered", [False, True])
def test_kcenter_is_the_farthest_first_sequence(clustered):
    rng = np.random.default_rng(3)
    if clustered:   # pruning by the triangle inequality skips most items here; must stay exact
        X = np.repeat(rng.normal(0, 5, (20, 8)), 50, axis=0) + rng.normal(0, 0.3, (1000, 8))
    else:
        X = rng.normal(size=(1000, 8))
    labels = np.full(1000, -1)
    labels[[5, 17, 400]] = [0, 1, 2]
    sel = KCenterGreedy().select(25, labels=labels, embeddings=X)
    picks, scores = brute_farthest_first(X, 25, [5, 17, 400])
    assert sel.indices.tolist() == picks
    np.testing.assert_allclose(sel.scores, scores, rtol=1e-4)
    assert np.all(np.diff(sel.scores) <= 1e-6)


def test_kcenter_cold_start_begins_at_the_centre_and_skips_duplicates():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.0, 0.0], [-3.0, 0.0]])
    sel = KCenterGreedy().select(3, labels=[-1] * 5, embeddings=X)
    assert sel.indices[0] == 1                      # nearest the mean (0.42, 0)
    assert sel.indices[1] in (2, 3) and sel.indices[2] == 4
    sel = KCenterGreedy().select(5, labels=[-1] * 5, embeddings=X)
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 3, 4]
    assert sel.scores[-1] == 0.0                     # the duplicate comes last, at distance 0


def test_nearest_center_pruning_matches_brute_force():
    rng = np.random.default_rng(0)
    X = (np.repeat(rng.normal(0, 4, (10, 5)), 100, axis=0) + rng.normal(0, 0.5, (1000, 5))).astype(np.float32)
    x_sq = np.einsum("ij,ij->i", X, X)
    t = NearestCenter(1000, vector_sqdist(X, x_sq), slack=1e-4)
    chosen = rng.choice(1000, 40, replace=False)
    for j in chosen:
        t.add(int(j))
    brute = ((X[:, None].astype(np.float64) - X[chosen][None]) ** 2).sum(-1)
    np.testing.assert_allclose(t.dist, brute.min(1), rtol=1e-3, atol=1e-3)
    assert np.all(brute[np.arange(1000), t.owner] <= brute.min(1) + 1e-3)


# ---------------------------------------------------------------- BADGE


def test_badge_factorised_distance_equals_explicit_gradient_embeddings():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=30).astype(np.float32)
    H = rng.normal(size=(30, 6)).astype(np.float32)
    Q = P.copy()
    Q[np.arange(30), P.argmax(1)] -= 1
    G = np.einsum("ic,id->icd", Q, H).reshape(30, -1)
    sqdist, a = gradient_sqdist(Q, H)
    np.testing.assert_allclose(a, (G ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(sqdist(None, 7), ((G - G[7]) ** 2).sum(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sqdist(np.array([1, 2, 9]), 7), ((G[[1, 2, 9]] - G[7]) ** 2).sum(1),
                               rtol=1e-4, atol=1e-5)


def test_badge_mixes_uncertainty_with_spread():
    # group A: 20 near-copies of the most uncertain item; group B: 20 near-copies of a slightly
    # less uncertain item elsewhere; 10 confident items
    rng = np.random.default_rng(0)
    X = np.vstack([np.tile([1.0, 0.0], (20, 1)), np.tile([0.0, 1.0], (20, 1)), rng.normal(0, 1, (10, 2))])
    X[:40] += rng.normal(0, 1e-3, (40, 2))
    P = np.vstack([np.tile([0.5, 0.5], (20, 1)), np.tile([0.55, 0.45], (20, 1)), np.tile([0.999, 0.001], (10, 1))])
    second = []
    for seed in range(100):
        sel = Badge().select(2, labels=np.full(50, -1), embeddings=X, probs=P, random_state=seed)
        assert len(set(sel.indices.tolist())) == 2
        assert sel.indices[0] < 20, "first pick is the largest gradient: a most uncertain item"
        second.append(int(sel.indices[1]))
    second = np.array(second)
    assert np.mean((second >= 20) & (second < 40)) > 0.6, "second pick mostly spreads to group B"
    assert np.mean(second < 20) < 0.05, "near-copies of the first pick are (almost) never drawn"
    top2 = np.argsort(np.abs(P[:, 0] - P[:, 1]), kind="stable")[:2]
    assert np.all(top2 < 20)   # plain uncertainty would have taken two near-copies


def test_lazy_d2_sampling_draws_exactly_proportional_to_squared_distance():
    from alwidgets.select.badge import lazy_d2_sampling

    rng = np.random.default_rng(0)
    Q = rng.normal(size=(8, 3)).astype(np.float32)
    H = rng.normal(size=(8, 4)).astype(np.float32)
    G = np.einsum("ic,id->icd", Q, H).reshape(8, -1).astype(np.float64)
    sq = ((G[:, None] - G[None]) ** 2).sum(-1)
    draws = np.array([lazy_d2_sampling(Q, H, 3, np.random.default_rng(s), 0, max_rejections=1000)[0]
                      for s in range(6000)])
    p2 = sq[0] / sq[0].sum()
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=8) / 6000, p2, atol=0.02)
    j = int(np.bincount(draws[:, 1]).argmax())        # third pick, given the most frequent second pick
    cond = draws[draws[:, 1] == j, 2]
    d = np.minimum(sq[0], sq[j])
    np.testing.assert_allclose(np.bincount(cond, minlength=8) / len(cond), d / d.sum(), atol=0.04)


def test_badge_confident_pool_and_labelled_items():
    X = np.random.default_rng(0).normal(size=(10, 3))
    P = np.tile([1.0, 0.0], (10, 1))             # zero gradients everywhere
    labels = np.full(10, -1)
    labels[:3] = 0
    sel = Badge().select(20, labels=labels, embeddings=X, probs=P, random_state=0)
    assert sorted(sel.indices.tolist()) == list(range(3, 10))
    assert np.all(sel.scores == 0)


# ---------------------------------------------------------------- Explore


def test_explore_picks_the_outliers_and_not_two_copies_of_one():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (200, 3)), [[4.0, 4.0, 4.0]], [[4.0, 4.0, 4.0001]], [[-5.0, 3.0, 0.0]]])
    sel = Explore().select(2, labels=np.full(203, -1), embeddings=X)
    assert 202 in sel.indices and len({200, 201} & set(sel.indices.tolist())) == 1
    assert sel.scores[0] >= sel.scores[1] > 1.0


def test_explore_skips_outliers_next_to_labelled_items():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (200, 3)), [[4.0, 4.0, 4.0]], [[4.0, 4.0, 4.01]], [[-5.0, 3.0, 0.0]]])
    labels = np.full(203, -1)
    labels[200] = 1
    sel = Explore().select(1, labels=labels, embeddings=X)
    assert sel.indices.tolist() == [202]


def test_explore_shortlist_mode_for_big_pools_finds_planted_outliers():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (3000, 8)), rng.normal(0, 1, (5, 8)) + 12 * np.eye(8)[:5]]).astype(np.float32)
    sel = Explore(max_exact=500, n_reference=512).select(5, labels=np.full(3005, -1), embeddings=X, random_state=0)
    assert sel.info["mode"] == "shortlist"
    assert sorted(sel.indices.tolist()) == [3000, 3001, 3002, 3003, 3004]


# ---------------------------------------------------------------- uncertainty + diversity


@pytest.mark.parametrize("method", ["kmeans", "kcenter"])
def test_uncertainty_diversity_draws_a_spread_batch_from_the_uncertain_items(method):
    rng = np.random.default_rng(0)
    # 4 regions; each has 10 very uncertain near-copies; plus 200 confident items
    centres = rng.normal(0, 5, (4, 6))
    X = np.vstack([np.repeat(centres, 10, axis=0) + rng.normal(0, 0.01, (40, 6)), rng.normal(0, 5, (200, 6))])
    margin_gap = np.concatenate([np.linspace(0.0, 0.02, 40), rng.uniform(0.5, 0.9, 200)])
    P = np.stack([(1 + margin_gap) / 2, (1 - margin_gap) / 2], axis=1)
    sel = UncertaintyDiversity(factor=10, method=method).select(4, labels=np.full(240, -1), embeddings=X,
                                                                probs=P, random_state=0)
    assert np.all(sel.indices < 40), "only uncertain candidates"
    assert sorted((sel.indices // 10).tolist()) == [0, 1, 2, 3], "one per region, not 4 near-copies"
    np.testing.assert_allclose(sel.scores, 1 - margin_gap[sel.indices])


def test_uncertainty_diversity_options_are_checked():
    X, P = np.zeros((4, 2)), np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="unknown uncertainty measure 'bogus'"):
        UncertaintyDiversity(measure="bogus").select(1, labels=[-1] * 4, embeddings=X, probs=P)
    with pytest.raises(ValueError, match="unknown method 'pam'"):
        UncertaintyDiversity(method="pam").select(1, labels=[-1] * 4, embeddings=X, probs=P)
    with pytest.raises(ValueError, match="needs `probs=`"):
        UncertaintyDiversity().select(1, labels=[-1] * 4, embeddings=X)


# ---------------------------------------------------------------- the contract, for all of them

SELECTORS = [Coverage, Explore, KCenterGreedy, Badge, UncertaintyDiversity, Auto]


def _pool(n=120, d=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    P = rng.dirichlet(np.ones(c), size=n)
    return X, P


@pytest.mark.parametrize("cls", SELECTORS)
def test_contract_edge_cases(cls):
    X, P = _pool()
    sel = cls()
    none = np.full(120, -1)
    # zero labels, deterministic given random_state
    a = sel.select(10, labels=none, embeddings=X, probs=P, random_state=3)
    b = sel.select(10, labels=none, embeddings=X, probs=P, random_state=3)
    assert a.indices.tolist() == b.indices.tolist() and len(set(a.indices.tolist())) == 10
    assert np.all(np.isfinite(a.scores))
    # one labelled class
    labels = none.copy()
    labels[:30] = 2
    one = sel.select(10, labels=labels, embeddings=X, probs=P, random_state=0)
    assert np.all(one.indices >= 30)
    # n larger than the unlabelled pool
    labels[:115] = 1
    rest = sel.select(50, labels=labels, embeddings=X, probs=P, random_state=0)
    assert sorted(rest.indices.tolist()) == [115, 116, 117, 118, 119]
    # duplicate points everywhere
    dup = np.repeat(X[:4], 30, axis=0)
    d = sel.select(8, labels=none, embeddings=dup, probs=P, random_state=0)
    assert len(set(d.indices.tolist())) == 8
    # NaN / inf rows are named
    bad = X.copy()
    bad[[4, 9]] = np.nan
    with pytest.raises(ValueError, match=r"embeddings has NaN or inf values in rows \[4, 9\]"):
        sel.select(3, labels=none, embeddings=bad, probs=P)
    with pytest.raises(ValueError, match="embeddings has 119 rows but the pool has 120"):
        sel.select(3, labels=none, embeddings=X[:119], probs=P)
    if "probs" in cls.requires:
        with pytest.raises(ValueError, match="probs has 100 rows"):
            sel.select(3, labels=none, embeddings=X, probs=P[:100])


@pytest.mark.parametrize("name", ["coverage", "explore", "kcenter", "badge", "uncertainty_diversity", "auto"])
def test_registered_names(name):
    assert make_selector(name).name == name
