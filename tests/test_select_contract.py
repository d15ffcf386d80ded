"""Selector contract v2 (issue 12 item 4) and hardened inputs (issue 13 defects 2-4): every registered
selector takes per-call data through select(), honours candidates=, refuses unknown inputs, and
never kills the process or hangs on hostile embeddings."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from alwidgets.models import LinearProbe
from alwidgets.select import Coverage, KCenterGreedy, Margin, Random, Selector, available, cold_start, make_selector
from alwidgets.select.kcenter import farthest_first

FAST = {"bald": {"head": None, "n_samples": 3}, "committee": {"n_members": 3}, "class_targeted": {"cv": 2},
        "variance": {"n_members": 3}}


def pool(n=150, d=5, seed=0, n_classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = (rng.normal(size=(n, d)) + 3.0 * np.eye(d)[y % d]).astype(np.float32)
    labels = np.full(n, -1)
    for c in range(n_classes):
        labels[np.flatnonzero(y == c)[:4]] = c
    P = rng.dirichlet(np.ones(n_classes), size=n)
    return X, y, labels, P


def run(name, n, labels, X, P, **kw):
    sel = make_selector(name, **FAST.get(name, {}))
    return sel.select(n, labels=labels, embeddings=X, probs=P, model=LinearProbe(), random_state=0, **kw)


# ---------------------------------------------------------------- per-call inputs
def test_constructors_hold_hyperparameters_only():
    # per-call data are select() inputs, declared in `accepts`; constructors no longer take them
    declared = {"committee": ("member_probs",), "bald": ("mc_probs",), "class_targeted": ("class_scores",),
                "cost_aware": ("costs",), "variance": ("targets",)}
    for name in available():
        sel = make_selector(name)
        assert tuple(sel.accepts) == declared.get(name, ()), name
        params = sel.get_params(deep=False)
        assert not set(params) & {"member_probs", "mc_probs", "class_scores", "costs", "targets", "model"}, name
    for name, key in [("committee", "member_probs"), ("bald", "mc_probs"), ("cost_aware", "costs"),
                      ("class_targeted", "class_scores"), ("variance", "targets")]:
        with pytest.raises(TypeError):
            make_selector(name, **{key: [1.0]})


@pytest.mark.parametrize("name", available())
def test_unknown_extra_input_is_a_type_error_naming_what_is_accepted(name):
    X, y, labels, P = pool()
    sel = make_selector(name)
    with pytest.raises(TypeError, match=r"unexpected input\(s\) `bogus=`") as e:
        sel.select(3, labels=labels, embeddings=X, probs=P, model=LinearProbe(), bogus=1)
    accepts = sel.accepts
    assert ("takes no extra inputs" in str(e.value)) == (not accepts)
    for a in accepts:
        assert f"`{a}=`" in str(e.value)


def test_hyperparameters_are_validated_in_one_style():
    X, y, labels, P = pool()
    cases = [(Coverage(max_clusters=True), "Coverage: max_clusters must be a positive integer, got True"),
             (make_selector("uncertainty_diversity", factor=0), "factor must be a positive integer"),
             (make_selector("uncertainty_diversity", measure="bogus"), "unknown uncertainty measure 'bogus'"),
             (make_selector("bald", temperature=0.0), "temperature must be a number > 0"),
             (make_selector("egl", rescale="yes"), "rescale must be a bool"),
             (make_selector("auto", labels_per_class=-1), "labels_per_class must be a number >= 0"),
             (make_selector("explore", n_neighbors=2.5), "n_neighbors must be a positive integer")]
    for sel, msg in cases:
        with pytest.raises(ValueError, match=msg):
            sel.select(2, labels=labels, embeddings=X, probs=P)


# ---------------------------------------------------------------- candidates
@pytest.mark.parametrize("name", available())
def test_candidates_restrict_the_picks(name):
    X, y, labels, P = pool()
    cand = np.arange(1, 150, 4)                         # some of them labelled: those are not pickable
    pickable = cand[labels[cand] == -1]
    sel = run(name, 6, labels, X, P, candidates=cand)
    assert 1 <= len(sel) <= 6 and set(sel.indices.tolist()) <= set(pickable.tolist())
    mask = np.zeros(150, dtype=bool)
    mask[cand] = True
    again = run(name, 6, labels, X, P, candidates=mask)
    np.testing.assert_array_equal(sel.indices, again.indices)
    # n is capped at the number of pickable candidates
    few = run(name, 50, labels, X, P, candidates=pickable[:3])
    assert sorted(few.indices.tolist()) == sorted(pickable[:3].tolist())
    # candidates=None and "every unlabelled item" are the same selection
    a = run(name, 5, labels, X, P)
    b = run(name, 5, labels, X, P, candidates=np.flatnonzero(labels == -1))
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.scores, b.scores)
    assert len(run(name, 5, labels, X, P, candidates=np.flatnonzero(labels >= 0))) == 0


def test_labelled_items_stay_covered_centres_when_candidates_restrict_picks():
    X = np.array([[0.0], [1.0], [2.0], [10.0], [7.0], [9.5], [30.0]])
    labels = np.array([0, -1, -1, 1, -1, -1, -1])
    sel = KCenterGreedy().select(1, labels=labels, embeddings=X, candidates=[1, 2, 4, 5])
    # 9.5 would be farthest from 0 alone; the labelled 10 covers it. 30 is not a candidate.
    assert sel.indices.tolist() == [4] and sel.scores[0] == pytest.approx(3.0)


def test_bad_candidates_are_named():
    X, y, labels, P = pool()
    with pytest.raises(ValueError, match=r"outside the pool of 150 items: \[150, -1\]"):
        Margin().select(2, labels=labels, probs=P, candidates=[3, 150, -1])
    with pytest.raises(ValueError, match="boolean mask of length 3 but the pool has 150"):
        Margin().select(2, labels=labels, probs=P, candidates=[True, False, True])
    with pytest.raises(TypeError, match="integer pool indices or booleans"):
        Margin().select(2, labels=labels, probs=P, candidates=[0.5, 1.0])
    assert len(Margin().select(2, labels=labels, probs=P, candidates=[])) == 0


# ---------------------------------------------------------------- the model
def test_model_fitting_selectors_use_the_callers_model_and_refuse_to_guess():
    from sklearn.neighbors import KNeighborsClassifier

    X, y, labels, P = pool()
    for name, msg in [("committee", "Committee needs `model=`"), ("class_targeted", "ClassTargeted needs `model=`")]:
        with pytest.raises(ValueError, match=msg):
            make_selector(name).select(3, labels=labels, embeddings=X, probs=P)
    sel = make_selector("committee", n_members=3).select(3, labels=labels, embeddings=X, model=KNeighborsClassifier(3),
                                                        random_state=0)
    assert "KNeighborsClassifier" in sel.info["committee"]
    # the MC-dropout head of BALD is a documented hyperparameter, so BALD() needs no model
    assert "MC-dropout samples of MLPHead" in make_selector("bald", n_samples=3).select(
        3, labels=labels, embeddings=X, random_state=0).info["samples"]


def test_no_module_tests_for_linear_probe_by_type():
    root = Path(__file__).resolve().parents[1] / "alwidgets"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "isinstance(model, LinearProbe)" not in text and "is LinearProbe" not in text, path
        assert "_iter_logits_mc" not in text, path


# ---------------------------------------------------------------- cold start
def test_cold_start_rule():
    labels = np.full(10, -1)
    chooser, why = cold_start(Margin(), labels, None)
    assert isinstance(chooser, Random) and "margin needs probs" in why
    for sel in (Coverage(), make_selector("committee"), make_selector("auto")):
        assert cold_start(sel, labels, None) == (sel, None)
    m = Margin()
    assert cold_start(m, labels, np.full((10, 2), 0.5)) == (m, None)


def test_auto_runs_a_probs_hungry_cold_strategy_as_random_until_there_are_probs():
    X, y, labels, P = pool()
    sel = make_selector("auto", cold=Margin()).select(4, labels=np.full(150, -1), embeddings=X, random_state=0)
    assert sel.info["strategy"] == "random" and "margin needs probs" in sel.info["reason"]


@pytest.mark.parametrize("name", ["committee", "bald", "class_targeted", "variance"])
def test_one_cold_start_helper(name):
    X, y, labels, P = pool()
    none = run(name, 4, np.full(150, -1), X, None)
    assert none.info["fallback"] == "random" and none.info["reason"].startswith("no labels yet")
    one = np.where(np.arange(150) < 3, 0, -1)
    res = run(name, 4, one, X, None)
    if name != "variance":
        assert res.info["fallback"] == "random" and "one class" in res.info["reason"]


# ---------------------------------------------------------------- hostile embeddings
def _python(code: str, timeout: float = 120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


ALL = "[" + ", ".join(repr(n) for n in available()) + "]"


def test_zero_width_embeddings_are_a_python_error_not_sigfpe():
    # every selector in one child process: a signal (SIGFPE, exit 136) would end it early
    r = _python(f"""
        import numpy as np
        from alwidgets.models import LinearProbe
        from alwidgets.select import make_selector
        P = np.full((100, 2), 0.5)
        for name in {ALL}:
            try:
                make_selector(name).select(4, labels=np.full(100, -1), embeddings=np.zeros((100, 0)), probs=P,
                                           model=LinearProbe())
            except ValueError as e:
                print(name, e)
    """)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])          # exceptions, never a signal
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(available())
    assert all("embeddings has zero width (shape (100, 0))" in line for line in lines), lines


@pytest.mark.timeout(200)
def test_overflow_prone_embeddings_are_refused_with_rows_named_not_sigabrt_or_a_hang():
    r = _python(f"""
        import numpy as np
        from alwidgets.models import LinearProbe
        from alwidgets.select import make_selector
        rng = np.random.default_rng(0)
        E = rng.normal(size=(200, 16))
        E[[3, 8]] *= 1e19
        P = rng.dirichlet(np.ones(3), size=200)
        lab = np.full(200, -1); lab[:6] = [0, 1, 2, 0, 1, 2]
        for name in {ALL}:
            try:
                make_selector(name).select(5, labels=lab, embeddings=E, probs=P, model=LinearProbe())
            except ValueError as e:
                print(name, e)
    """, timeout=180)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(available())
    assert all("L2 norm >= 1e+18 (rows [3, 8])" in line for line in lines), lines


def test_a_labels_length_mismatch_blames_the_labels():
    X, y, labels, P = pool()
    with pytest.raises(ValueError, match=r"labels has 149 rows but embeddings and probs have 150"):
        make_selector("badge").select(2, labels=labels[:-1], embeddings=X, probs=P)
    with pytest.raises(ValueError, match=r"labels has 149 rows but embeddings has 150: both"):
        Coverage().select(2, labels=labels[:-1], embeddings=X)
    with pytest.raises(ValueError, match="embeddings has 149 rows but the pool has 150"):
        make_selector("badge").select(2, labels=labels, embeddings=X[:-1], probs=P)


def test_values_beyond_float32_are_named():
    E = np.ones((5, 2))
    E[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"too large for float32 in rows \[2\]"):
        Coverage().select(2, labels=np.full(5, -1), embeddings=E)


@pytest.mark.parametrize("name", available())
def test_large_accepted_magnitudes_give_finite_scores(name):
    # norms just under the limit (~5e17): no overflow, finite scores, same picks as unit-scale data
    # for the scale-free geometric selectors
    X, y, labels, P = pool(d=32)
    sel = run(name, 5, labels, X.astype(np.float64) * 1e17, P)
    assert np.all(np.isfinite(sel.scores)) and len(sel) == 5
    if name in ("kcenter", "coverage"):
        np.testing.assert_array_equal(sel.indices, run(name, 5, labels, X, P).indices)


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the overflow is the point
def test_kcenter_greedy_loop_ends_even_on_nan_distances():
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32) * np.float32(1e20)   # overflows to inf
    rows, _ = farthest_first(X, 5, start=np.array([0, 1]))
    assert len(rows) == 5 and len(set(rows.tolist())) == 5


def test_selection_output_check_refuses_non_finite_scores():
    class Broken(Selector):
        def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
            from alwidgets.select import Selection

            return Selection(candidates[:n], np.full(n, np.nan))

    with pytest.raises(RuntimeError, match="non-finite scores"):
        Broken().select(2, labels=np.full(5, -1))


def test_embeddings_are_validated_in_chunks_without_copying_float32(tmp_path):
    from alwidgets._validation import check_embeddings

    mm = np.memmap(tmp_path / "emb.f32", dtype=np.float32, mode="w+", shape=(70_000, 2))
    mm[:] = 1.0
    out = check_embeddings(mm)
    assert np.shares_memory(out, mm)                       # a memory map stays one: no float32 copy in RAM
    mm[69_999, 1] = np.nan                                 # rows in the second chunk are named too
    mm[65_540, 0] = 2e18
    with pytest.raises(ValueError, match=r"NaN or inf values in rows \[69999\]"):
        check_embeddings(mm)
    mm[69_999, 1] = 0.0
    with pytest.raises(ValueError, match=r"L2 norm >= 1e\+18 \(rows \[65540\]\)"):
        check_embeddings(mm)
