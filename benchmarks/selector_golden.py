"""Golden outputs of every registered selector: the check that a refactor changed no result.

Runs each selector on fixed, seeded inputs (scikit-learn's digits, 1,797 x 64,
scaled to [0, 1]) in a cold start (no labels, no model), a one-class start, and
two warm starts (3 and 6 labels per class, probabilities from a
:class:`~alwidgets.models.LinearProbe`), n = 10, seeds 0-2, plus the per-call
data of the model-based selectors (committee predictions, MC-dropout samples,
costs, per-class scores, numeric targets) and the loop's models themselves.
Dumps ``{case: {"indices": [...], "scores": [...]}}`` to JSON.

The script speaks both selector contracts: v1 (per-call data in the
constructor, models as constructor defaults) and v2 (per-call data and the
loop's model passed to ``select``); it detects which one the installed
package has. Run it before and after a change and compare::

    python benchmarks/selector_golden.py --out /tmp/golden_before.json     # on the old code
    python benchmarks/selector_golden.py --out /tmp/golden_after.json      # on the new code
    python benchmarks/selector_golden.py --compare /tmp/golden_before.json /tmp/golden_after.json

``--compare`` prints every case whose indices differ or whose scores are not
allclose (rtol 1e-6) and exits 1 if any does. ``--coverage-v1`` (v2 only) runs
coverage (also inside auto and cost_aware) with one plain k-means++ seeding,
``Coverage(n_init=1, n_local_trials=1)``, the v1 behaviour, so the port itself
can be checked apart from the deliberate coverage change (issue 13, defect 13).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from alwidgets.heads import MLPHead
from alwidgets.models import LinearProbe, fit_predict_proba
from alwidgets.select import Selector, available, make_selector

N = 10
SEEDS = (0, 1, 2)
V2 = hasattr(Selector, "accepts")


def data():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    starts = {"cold": np.full(len(y), -1, dtype=np.int64)}
    one = np.full(len(y), -1, dtype=np.int64)
    one[rng.choice(np.flatnonzero(y == 0), 3, replace=False)] = 0
    starts["oneclass"] = one
    for per in (3, 6):
        lab = np.full(len(y), -1, dtype=np.int64)
        for c in range(10):
            idx = rng.choice(np.flatnonzero(y == c), per, replace=False)
            lab[idx] = c
        starts[f"warm{per}"] = lab
    probs = {k: (None if not (v >= 0).any() else fit_predict_proba(LinearProbe(), X, v, 10)[1])
             for k, v in starts.items()}
    return X, y, starts, probs


def per_call_data(X, y, labels):
    """Per-call inputs of the model-based selectors for one warm start (seeded)."""
    rng = np.random.default_rng(1)
    mask = labels >= 0
    _, pa = fit_predict_proba(LinearProbe(), X, labels, 10)
    _, pb = fit_predict_proba(KNeighborsClassifier(3), X, labels, 10)
    head = MLPHead(epochs=30, hidden=16, n_classes=10, random_state=0).fit(X[mask], labels[mask])
    mc = head.predict_proba_mc(X, 6, 0).astype(np.float64)
    mc /= mc.sum(axis=2, keepdims=True)
    costs = rng.uniform(1.0, 10.0, len(X))
    scores = np.linspace(0.3, 0.95, 10)
    targets = np.where(mask, X[:, 20] * 3.0 + X[:, 43] + 0.1 * rng.standard_normal(len(X)), np.nan)
    return {"member_probs": np.stack([pa, pb]), "mc_probs": mc, "costs": costs, "class_scores": scores,
            "targets": targets}


def cases(extra):
    """(key, selector name, hyperparameters, per-call inputs, model or None) per case.

    ``per-call inputs`` are constructor arguments in v1 and ``select`` keywords in v2;
    ``model`` is the v1 constructor default that v2 takes as ``select(model=...)``.
    """
    out = []
    for name in available():
        out.append((name, name, {}, {}, None))
    lp = LinearProbe()
    out += [
        ("committee[lp]", "committee", {}, {}, lp),
        ("committee[kl]", "committee", {"measure": "kl"}, {}, lp),
        ("committee[logreg]", "committee", {"n_members": 3}, {}, LogisticRegression(max_iter=300)),
        ("committee[models]", "committee", {"models": [LinearProbe(), KNeighborsClassifier(3)]}, {}, None),
        ("committee[member_probs]", "committee", {}, {"member_probs": extra["member_probs"]}, None),
        ("bald[head]", "bald", {"n_samples": 5, "head": MLPHead(epochs=30, hidden=16)}, {}, None),
        ("bald[ensemble]", "bald", {"n_samples": 4, "head": None}, {}, LogisticRegression(max_iter=300)),
        ("bald[mc_probs]", "bald", {}, {"mc_probs": extra["mc_probs"]}, None),
        ("bald[mc_probs,stochastic]", "bald", {"stochastic": True, "temperature": 0.5},
         {"mc_probs": extra["mc_probs"]}, None),
        ("class_targeted[cv]", "class_targeted", {"cv": 3}, {}, lp),
        ("class_targeted[lp]", "class_targeted", {}, {}, lp),
        ("class_targeted[scores]", "class_targeted", {}, {"class_scores": extra["class_scores"]}, None),
        ("cost_aware[margin]", "cost_aware", {"selector": "margin", "budget": 25.0}, {"costs": extra["costs"]}, None),
        ("cost_aware[coverage]", "cost_aware", {"selector": "coverage", "n_candidates": 40},
         {"costs": extra["costs"]}, None),
        ("variance[targets]", "variance", {}, {"targets": extra["targets"]}, None),
        ("variance[gp,targets]", "variance", {"kind": "gp"}, {"targets": extra["targets"]}, None),
        ("egl[raw]", "egl", {"rescale": False}, {}, None),
        ("uncertainty_diversity[kcenter]", "uncertainty_diversity", {"method": "kcenter"}, {}, None),
        ("auto[labels_per_class=2]", "auto", {"labels_per_class": 2}, {}, None),
    ]
    return out


def build(name, params, inputs, model):
    """(selector, select keywords) in the installed contract."""
    params = dict(params)
    if not V2:
        if "head" in params:                      # v1: BALD's head and model were one `model=` argument
            head = params.pop("head")
            params["model"] = head if head is not None else model
        elif model is not None:
            params["model"] = model
        params.update(inputs)
        return make_selector(name, **params), {}
    kw = dict(inputs)
    if model is not None:
        kw["model"] = model
    return make_selector(name, **params), kw


def run(args):
    X, y, starts, probs = data()
    extra = per_call_data(X, y, starts["warm3"])
    out = {}
    # the loop's models
    lab = starts["warm3"]
    mask = lab >= 0
    if V2:
        probe = LinearProbe(n_classes=10).fit(X, lab)
        head = MLPHead(epochs=30, hidden=16, n_classes=10, random_state=0).fit(X, lab)
    else:
        probe = LinearProbe(n_classes=10).fit(X[mask], lab[mask], X_pool=X)
        head = MLPHead(epochs=30, hidden=16, n_classes=10, random_state=0).fit(X[mask], lab[mask])
    out["model:LinearProbe"] = {"indices": probe.predict(X).tolist(), "scores": probe.predict_proba(X)[:, 3].tolist()}
    out["model:MLPHead"] = {"indices": head.predict(X).tolist(), "scores": head.predict_proba(X)[:, 3].tolist()}
    mc = head.predict_proba_mc(X[:50], 4, 1)
    out["model:MLPHead.mc"] = {"indices": mc.argmax(2).ravel().tolist(), "scores": mc[..., 2].ravel().tolist()}
    for start, labels in starts.items():
        P = probs[start]
        for key, name, params, inputs, model in cases(extra):
            for seed in SEEDS:
                sel, kw = build(name, params, inputs, model)
                if V2 and args.coverage_v1:
                    from alwidgets.select import Coverage

                    v1 = Coverage(n_init=1, n_local_trials=1)
                    if name == "coverage":
                        sel = v1
                    elif name == "auto":
                        sel.set_params(cold=v1)
                    elif name == "cost_aware" and params.get("selector") == "coverage":
                        sel.set_params(selector=v1)
                if P is None and "probs" in sel.requires:
                    continue                      # the loop runs Random here (cold-start rule)
                k = f"{start}/{key}/seed{seed}"
                try:
                    s = sel.select(N, labels=labels, embeddings=X, probs=P, random_state=seed, **kw)
                except (ValueError, TypeError) as e:
                    out[k] = {"error": type(e).__name__}
                    continue
                out[k] = {"indices": np.asarray(s.indices).tolist(),
                          "scores": np.asarray(s.scores, dtype=np.float64).tolist(),
                          "fallback": s.info.get("fallback"), "strategy": s.info.get("strategy")}
    with open(args.out, "w") as f:
        json.dump({"contract": "v2" if V2 else "v1", "cases": out}, f)
    print(f"{len(out)} cases ({'v2' if V2 else 'v1'} contract) -> {args.out}")


def compare(a_path, b_path) -> int:
    a = json.load(open(a_path))["cases"]
    b = json.load(open(b_path))["cases"]
    bad = []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            bad.append((k, "missing in " + ("first" if k not in a else "second")))
            continue
        x, y = a[k], b[k]
        if "error" in x or "error" in y:
            if x.get("error") != y.get("error"):
                bad.append((k, f"error {x.get('error')} vs {y.get('error')}"))
            continue
        if x["indices"] != y["indices"]:
            bad.append((k, f"indices {x['indices'][:10]} vs {y['indices'][:10]}"))
        elif not np.allclose(x["scores"], y["scores"], rtol=1e-6, atol=1e-12):
            bad.append((k, "scores differ"))
    for k, why in bad:
        print(f"DIFF {k}: {why}")
    same = len(set(a) & set(b)) - sum(1 for k, w in bad if not w.startswith("missing"))
    print(f"{same} of {len(set(a) | set(b))} cases identical (indices equal, scores allclose rtol 1e-6)")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/selector_golden.json")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--coverage-v1", action="store_true",
                    help="v2 only: coverage with one plain k-means++ seeding (the v1 behaviour)")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
