"""Coverage (TypiClust) and Auto: one typical item per cluster, cold start, the switch to uncertainty."""
import numpy as np
import pytest

from alwidgets.select import Auto, Coverage, UncertaintyDiversity, make_selector


def blobs(n_blobs=5, per=40, d=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:n_blobs] * 3.0 + rng.normal(0, 0.1, (n_blobs, d))
    X = np.repeat(centres, per, axis=0) + spread * rng.standard_normal((n_blobs * per, d))
    return X.astype(np.float32), np.repeat(np.arange(n_blobs), per)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_one_pick_per_well_separated_cluster(seed):
    X, blob = blobs(seed=seed)
    sel = Coverage().select(5, labels=np.full(len(X), -1), embeddings=X, random_state=seed)
    assert sorted(blob[sel.indices].tolist()) == [0, 1, 2, 3, 4]
    assert len(sel.info["clusters"]) == 5 and sel.info["n_clusters"] == 5


def test_picks_the_dense_core_not_the_fringe():
    rng = np.random.default_rng(0)
    core = rng.normal(0, 0.02, (60, 4)) + [1, 0, 0, 0]
    fringe = rng.normal(0, 0.3, (20, 4)) + [1, 0, 0, 0]
    other = rng.normal(0, 0.02, (60, 4)) + [0, 1, 0, 0]
    X = np.vstack([core, fringe, other])
    sel = Coverage().select(2, labels=np.full(len(X), -1), embeddings=X, random_state=0)
    i = [j for j in sel.indices if j < 80][0]
    assert i < 60, "the typical item of the first blob must come from its dense core"
    # typicality scores are inverse mean kNN distance: the core pick beats any fringe item
    assert sel.scores[list(sel.indices).index(i)] > 1.0 / (np.sqrt(4) * 0.3)


def test_clusters_without_labels_come_first():
    X, blob = blobs(n_blobs=3, per=30)
    labels = np.full(len(X), -1)
    labels[[0, 1, 2]] = 0          # blob 0 already has three labels
    sel = Coverage().select(2, labels=labels, embeddings=X, random_state=0)
    assert sorted(blob[sel.indices].tolist()) == [1, 2]


def test_more_picks_than_clusters_goes_round_robin():
    X, blob = blobs(n_blobs=3, per=30)
    sel = Coverage(max_clusters=3).select(9, labels=np.full(len(X), -1), embeddings=X, random_state=0)
    assert np.bincount(blob[sel.indices], minlength=3).tolist() == [3, 3, 3]
    assert len(set(sel.indices.tolist())) == 9


def test_duplicates_are_not_picked_twice_while_others_remain():
    pts = np.eye(3, dtype=np.float32)
    X = np.repeat(pts, 10, axis=0)            # 3 distinct points, 10 copies each
    sel = Coverage().select(3, labels=np.full(30, -1), embeddings=X, random_state=0)
    assert sorted((sel.indices // 10).tolist()) == [0, 1, 2]
    sel = Coverage(max_clusters=2).select(6, labels=np.full(30, -1), embeddings=X, random_state=0)
    assert len(set(sel.indices.tolist())) == 6
    assert set((sel.indices[:3] // 10).tolist()) == {0, 1, 2}, "each distinct point before any copy"


def test_big_clusters_use_sampled_typicality_and_still_pick_the_core():
    rng = np.random.default_rng(1)
    core = rng.normal(0, 0.01, (400, 6)) + np.eye(6)[0]
    halo = rng.normal(0, 0.4, (400, 6)) + np.eye(6)[0]
    X = np.vstack([core, halo]).astype(np.float32)
    sel = Coverage(max_candidates=16, max_reference=64).select(1, labels=np.full(800, -1), embeddings=X,
                                                               random_state=0)
    assert sel.indices[0] < 400


def test_n_larger_than_pool_and_tiny_pools():
    X, _ = blobs(n_blobs=2, per=3)
    labels = np.full(6, -1)
    labels[0] = 1
    sel = Coverage().select(50, labels=labels, embeddings=X, random_state=0)
    assert sorted(sel.indices.tolist()) == [1, 2, 3, 4, 5]
    one = Coverage().select(1, labels=[-1], embeddings=[[1.0, 2.0]])
    assert one.indices.tolist() == [0]


def test_deterministic_and_seed_dependent():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    a = Coverage().select(20, labels=np.full(500, -1), embeddings=X, random_state=7)
    b = Coverage().select(20, labels=np.full(500, -1), embeddings=X, random_state=7)
    assert a.indices.tolist() == b.indices.tolist()
    np.testing.assert_allclose(a.scores, b.scores)


def test_bad_inputs_name_the_problem():
    X, _ = blobs(n_blobs=2, per=5)
    with pytest.raises(ValueError, match="needs `embeddings=`"):
        Coverage().select(2, labels=np.full(10, -1))
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"rows \[3, 7\]"):
        Coverage().select(2, labels=np.full(10, -1), embeddings=X)
    with pytest.raises(ValueError, match="labels has 10 rows but embeddings has 9: both need one row per pool item"):
        Coverage().select(2, labels=np.full(10, -1), embeddings=np.zeros((9, 3)))
    with pytest.raises(ValueError, match="max_clusters must be a positive integer"):
        Coverage(max_clusters=0).select(2, labels=np.full(9, -1), embeddings=np.zeros((9, 3)))


# ---------------------------------------------------------------- Auto


def _probs(n, c, seed=0):
    p = np.random.default_rng(seed).dirichlet(np.ones(c), size=n)
    return p


def test_auto_uses_coverage_without_a_model():
    X, _ = blobs()
    sel = Auto().select(5, labels=np.full(len(X), -1), embeddings=X, random_state=0)
    assert sel.info["strategy"] == "coverage" and sel.info["selector"] == "auto"
    assert sel.info["reason"] == "no model predictions yet" and sel.info["switch_at"] is None
    ref = Coverage().select(5, labels=np.full(len(X), -1), embeddings=X, random_state=0)
    assert sel.indices.tolist() == ref.indices.tolist()


def test_auto_switches_at_labels_per_class_times_classes():
    X, blob = blobs(n_blobs=5, per=40)
    P = _probs(len(X), 5)
    labels = np.full(len(X), -1)
    few_idx = np.arange(0, 200, 8)[:24]           # 24 labels over all 5 blobs, < 5 x 5
    labels[few_idx] = blob[few_idx]
    few = Auto().select(5, labels=labels, embeddings=X, probs=P, random_state=0)
    assert few.info["strategy"] == "coverage" and few.info["switch_at"] == 25
    assert "24 labels < 5 per class x 5 classes" in few.info["reason"]
    labels[::13] = blob[::13]
    assert (labels != -1).sum() >= 25
    many = Auto().select(5, labels=labels, embeddings=X, probs=P, random_state=0)
    assert many.info["strategy"] == "uncertainty_diversity"
    ref = UncertaintyDiversity().select(5, labels=labels, embeddings=X, probs=P, random_state=0)
    assert many.indices.tolist() == ref.indices.tolist()
    assert Auto(labels_per_class=1).select(5, labels=labels, embeddings=X, probs=P).info["switch_at"] == 5


def test_auto_stays_on_coverage_while_one_class_is_labelled():
    X, blob = blobs(n_blobs=3, per=30)
    labels = np.full(len(X), -1)
    labels[:20] = 0                                  # 20 labels >= 3 x 3, but a single class
    P = np.tile([1.0, 0.0, 0.0], (len(X), 1))
    sel = Auto().select(3, labels=labels, embeddings=X, probs=P, random_state=0)
    assert sel.info["strategy"] == "coverage" and "only 1 class" in sel.info["reason"]


def test_auto_is_registered_and_validates():
    assert isinstance(make_selector("auto"), Auto)
    with pytest.raises(ValueError, match="needs `embeddings=`"):
        Auto().select(2, labels=[-1, -1, -1], probs=_probs(3, 2))
    with pytest.raises(ValueError, match="labels_per_class"):
        Auto(labels_per_class=-1).select(1, labels=[-1, -1], embeddings=[[0.0], [1.0]])


def test_auto_in_a_cold_start_simulation_reports_the_switch(digits):
    from alwidgets import simulate

    X, y = digits
    res = simulate(X[:600], y[:600], ["auto"], seed_per_class=0, batch_size=10, budget=60, repeats=1,
                   target_acc=0.5, progress=False)
    used = res.curves.sort_values("n_labels")["picked_by"].tolist()
    assert used[0] == "coverage" and used[-2] == "uncertainty_diversity"


def test_cold_start_covers_every_well_separated_blob():
    # issue 13 defect 13: one plain k-means++ seeding merged two of 10 blobs in 9 of these 10 pools
    for seed in range(10):
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=3.0, size=(10, 32))
        y = rng.integers(0, 10, 5000)
        X = (centres[y] + rng.normal(size=(5000, 32))).astype(np.float32)
        sel = Coverage().select(10, labels=np.full(5000, -1), embeddings=X, random_state=seed)
        assert len(set(y[sel.indices].tolist())) == 10, seed


def test_robust_seeding_only_while_the_batch_outnumbers_the_labels():
    cov = Coverage()
    assert cov._seeding(0, 10, 10) == {"n_init": 3, "n_local_trials": 4}
    assert cov._seeding(10, 10, 20) == {"n_init": 3, "n_local_trials": 4}
    assert cov._seeding(20, 10, 30) == {"n_init": 1, "n_local_trials": 1}
    assert Coverage(n_init=1, n_local_trials=1)._seeding(0, 10, 10) == {"n_init": 1, "n_local_trials": 1}


def test_greedy_seeding_puts_one_seed_in_each_separated_cluster():
    from alwidgets.select._faiss import greedy_kmeans_plus_plus

    rng = np.random.default_rng(0)
    X = np.repeat(np.eye(8) * 100.0, 30, axis=0) + rng.normal(size=(240, 8))
    w = np.ones(240)
    for s in range(20):
        picks = greedy_kmeans_plus_plus(X, 8, np.random.default_rng(s), 4, weights=w)
        assert sorted(picks // 30) == list(range(8))
