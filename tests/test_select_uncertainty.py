"""Foundation selectors: score direction, the contract, determinism."""
import numpy as np
import pytest

from alwidgets.select import Entropy, LeastConfidence, Margin, Random, make_selector, uncertainty

PROBS = np.array([
    [0.90, 0.05, 0.05],  # 0 confident
    [0.40, 0.39, 0.21],  # 1 smallest top-2 gap
    [0.34, 0.33, 0.33],  # 2 flattest: highest entropy, lowest max
    [0.50, 0.10, 0.40],  # 3
    [0.60, 0.20, 0.20],  # 4
])


def test_margin_picks_smallest_top2_gap():
    sel = Margin().select(2, labels=[-1] * 5, probs=PROBS)
    gaps = np.sort(PROBS, 1)[:, -1] - np.sort(PROBS, 1)[:, -2]
    assert set(sel.indices.tolist()) == set(np.argsort(gaps)[:2].tolist())
    np.testing.assert_allclose(sel.scores, 1 - gaps[sel.indices])


def test_least_confidence_picks_lowest_max_probability():
    sel = LeastConfidence().select(1, labels=[-1] * 5, probs=PROBS)
    assert sel.indices.tolist() == [2]
    assert sel.scores[0] == pytest.approx(1 - 0.34)


def test_entropy_picks_flattest_distribution():
    sel = Entropy().select(5, labels=[-1] * 5, probs=PROBS)
    assert sel.indices[0] == 2 and sel.indices[-1] == 0
    assert np.all(np.diff(sel.scores) <= 0)


def test_uncertainty_measures_disagree_where_they_should():
    # entropy prefers mass spread over many unlikely classes; margin prefers a close top-2 call
    p = np.array([[0.5, 0.5, 0.0, 0.0, 0.0], [0.4, 0.15, 0.15, 0.15, 0.15]])
    assert uncertainty(p, "margin").argmax() == 0
    assert uncertainty(p, "entropy").argmax() == 1


@pytest.mark.parametrize("selector", [Random(), LeastConfidence(), Margin(), Entropy()])
def test_never_repeats_or_picks_labelled(selector):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = np.full(200, -1)
    labels[rng.choice(200, 120, replace=False)] = rng.integers(0, 4, 120)
    sel = selector.select(50, labels=labels, probs=probs, random_state=1)
    assert len(sel) == 50 and len(set(sel.indices.tolist())) == 50
    assert np.all(labels[sel.indices] == -1)
    # n larger than the unlabelled pool -> all of it, once
    sel = selector.select(500, labels=labels, probs=probs, random_state=1)
    assert sorted(sel.indices.tolist()) == np.flatnonzero(labels == -1).tolist()


@pytest.mark.parametrize("name", ["random", "least_confidence", "margin", "entropy"])
def test_deterministic_given_random_state(name):
    probs = np.full((100, 2), 0.5)  # all tied: the order comes from the rng alone
    sel = make_selector(name)
    a = sel.select(10, labels=[-1] * 100, probs=probs, random_state=3).indices
    b = sel.select(10, labels=[-1] * 100, probs=probs, random_state=3).indices
    c = sel.select(10, labels=[-1] * 100, probs=probs, random_state=4).indices
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs `probs=`"):
        Margin().select(1, labels=[-1, -1])
    with pytest.raises(ValueError, match="positive integer"):
        Random().select(0, labels=[-1, -1])
    with pytest.raises(ValueError, match="labels has 2 rows but probs has 3: both need one row per pool item"):
        Margin().select(1, labels=[-1, -1], probs=PROBS[:3])
    bad = PROBS.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        Margin().select(1, labels=[-1] * 5, probs=bad)
    with pytest.raises(ValueError, match="sum to 1"):
        Margin().select(1, labels=[-1] * 5, probs=PROBS * 2)
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        make_selector("nope")
    with pytest.raises(ValueError, match="negative values other than -1"):
        Random().select(1, labels=[-2, -1])


def test_all_labelled_gives_empty_selection():
    sel = Margin().select(5, labels=[0, 1, 2], probs=PROBS[:3])
    assert len(sel) == 0 and sel.info["strategy"] == "margin"


def test_repr_is_sklearn_style():
    assert repr(Margin()) == "Margin()"
