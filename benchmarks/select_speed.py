"""Seconds per selection for every selector, side by side with scikit-activeml.

Synthetic clustered pools (Gaussian blobs), 100 labelled items over 10
classes, batch 64. Probabilities come from a random linear softmax on the
embeddings (cheap and embedding-dependent; selection cost does not depend on
how good the model is). scikit-activeml (``pip install scikit-activeml``; a
benchmark-only dependency) runs at the sizes given by ``--skactiveml-sizes``;
without it the comparison columns are skipped.

    python benchmarks/select_speed.py                      # full run, a few minutes on 2 cores
    python benchmarks/select_speed.py --sizes 20000x512 --skactiveml-sizes 20000x512
    python benchmarks/select_speed.py --write-docs         # also rewrite "## Selection speed" in docs/benchmarks.md

Timings are wall-clock, best of ``--repeats`` runs for our selectors (one
run for scikit-activeml, which is slow); other processes on the machine add
noise, so compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from alwidgets.models import LinearProbe
from alwidgets.select import Coverage, available, make_selector

BATCH = 64
N_LABELLED = 100
N_CLASSES = 10
# selectors that fit or refit a model inside select(); reported in their own table
FITS_MODEL = {"bald", "committee", "class_targeted", "variance"}
# per-call select() inputs (contract v2) for selectors that take them
INPUTS = {"cost_aware": lambda n, rng: {"costs": rng.uniform(1.0, 5.0, n)}}
# scikit-activeml counterpart of each of our selectors
COUNTERPART = {"kcenter": "CoreSet", "coverage": "TypiClust", "badge": "Badge", "margin": "UncertaintySampling"}


def make_pool(n: int, d: int, seed: int = 0, n_blobs: int = 100):
    """Clustered pool: blob centres N(0, 1), within-blob noise 0.6 (blobs overlap a little)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_blobs, d), dtype=np.float32)
    blob = rng.integers(0, n_blobs, n)
    X = centres[blob]
    X += 0.6 * rng.standard_normal((n, d), dtype=np.float32)
    y = blob % N_CLASSES
    labels = np.full(n, -1, dtype=np.int64)
    lab = rng.choice(n, N_LABELLED, replace=False)
    labels[lab] = y[lab]
    W = rng.standard_normal((d, N_CLASSES), dtype=np.float32) / np.sqrt(d)
    logits = X @ W * 3.0
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits, dtype=np.float64)
    P /= P.sum(axis=1, keepdims=True)
    return X, y, labels, P


def time_ours(name, X, labels, P, repeats, rng):
    try:
        sel = make_selector(name)
        extra = INPUTS.get(name, lambda n, r: {})(len(X), rng)
        best = np.inf
        for r in range(repeats):
            t0 = time.perf_counter()
            # the loop passes its model to every selector; committee and class_targeted fit copies of it
            out = sel.select(BATCH, labels=labels, embeddings=X, probs=P, model=LinearProbe(), random_state=r,
                             **extra)
            best = min(best, time.perf_counter() - t0)
        assert len(out) == BATCH
        return best, ""
    except Exception as e:  # a selector that needs configuration we do not have: report, go on
        return np.nan, f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"


def cold_time(sel, X, labels, repeats):
    best = np.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        sel.select(BATCH, labels=labels, embeddings=X, random_state=r)
        best = min(best, time.perf_counter() - t0)
    return best


def time_skactiveml(kind, X, y, labels):
    from sklearn.linear_model import LogisticRegression
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge, CoreSet, TypiClust, UncertaintySampling

    y_sk = np.where(labels >= 0, labels, np.nan).astype(float)
    t0 = time.perf_counter()
    if kind == "CoreSet":
        CoreSet(random_state=0).query(X, y_sk, batch_size=BATCH)
    elif kind == "TypiClust":
        TypiClust(random_state=0).query(X, y_sk, batch_size=BATCH)
    else:
        mask = labels >= 0
        clf = SklearnClassifier(LogisticRegression(max_iter=200), classes=np.arange(N_CLASSES),
                                random_state=0).fit(X[mask], y_sk[mask])
        t0 = time.perf_counter()  # time the query only: the model is given, as for our selectors
        if kind == "Badge":
            Badge(random_state=0).query(X, y_sk, clf=clf, fit_clf=False, batch_size=BATCH)
        else:
            UncertaintySampling(method="margin_sampling", random_state=0).query(
                X, y_sk, clf=clf, fit_clf=False, batch_size=BATCH)
    return time.perf_counter() - t0


def parse_size(s):
    n, d = s.lower().split("x")
    return int(n), int(d)


def fmt(t):
    return "—" if t is None or np.isnan(t) else (f"{t:.3f}" if t < 10 else f"{t:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000x512,100000x512,1000000x128")
    ap.add_argument("--skactiveml-sizes", default="20000x512",
                    help="sizes at which scikit-activeml runs (it is slow); CoreSet also at 100000x512")
    ap.add_argument("--strategies", default=None, help="comma-separated names (default: all registered)")
    ap.add_argument("--big-only", default="coverage,kcenter,random,margin",
                    help="selectors run at sizes above 200k items (others skipped there to keep the run short)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    sk_sizes = {parse_size(s) for s in args.skactiveml_sizes.split(",") if s}
    names = args.strategies.split(",") if args.strategies else available()
    big_only = set(args.big_only.split(","))
    try:
        import skactiveml  # noqa: F401
        have_sk = True
    except ImportError:
        have_sk = False
        print("scikit-activeml not installed: comparison skipped (pip install scikit-activeml)", file=sys.stderr)

    import faiss
    import torch

    threads = faiss.omp_get_max_threads()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, faiss threads {threads}, "
          f"torch threads {torch.get_num_threads()}; batch {BATCH}, {N_LABELLED} labelled, {N_CLASSES} classes; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    ours: dict[tuple, dict] = {}
    notes: dict[str, str] = {}
    theirs: dict[tuple, dict] = {}
    rng = np.random.default_rng(0)
    for n, d in sizes:
        t0 = time.perf_counter()
        X, y, labels, P = make_pool(n, d)
        print(f"\n## pool {n} x {d} (made in {time.perf_counter() - t0:.1f} s)", flush=True)
        row = ours.setdefault((n, d), {})
        for name in names:
            if n > 200_000 and name not in big_only:
                continue
            t, err = time_ours(name, X, labels, P, args.repeats if n <= 200_000 else 1, rng)
            row[name] = t
            if err:
                notes[name] = err
            print(f"{name:>24s}  {fmt(t):>8s} s  {err}", flush=True)
        if "coverage" in names:
            # cold start (0 labels): robust seeding (greedy k-means++, 3 runs) vs one plain seeding, same pool
            cold = np.full(n, -1)
            reps = args.repeats if n <= 200_000 else 1
            t_new = cold_time(Coverage(), X, cold, reps)
            t_old = cold_time(Coverage(n_init=1, n_local_trials=1), X, cold, reps)
            print(f"{'coverage, 0 labels':>24s}  {fmt(t_new):>8s} s  (one plain seeding {fmt(t_old)} s: "
                  f"{t_new / t_old:.1f}x)", flush=True)
        if have_sk:
            for name, kind in COUNTERPART.items():
                if (n, d) in sk_sizes or (kind == "CoreSet" and (n, d) == (100_000, 512)):
                    t = time_skactiveml(kind, X, y, labels)
                    theirs.setdefault((n, d), {})[name] = t
                    ratio = t / row.get(name, np.nan)
                    print(f"{'skactiveml ' + kind:>24s}  {fmt(t):>8s} s  ({ratio:.0f}x ours)", flush=True)
        del X, y, labels, P

    load = os.getloadavg()[0]
    print(f"# load average at end {load:.1f}")
    md = to_markdown(ours, theirs, notes, sizes, threads, load)
    print("\n" + md)
    if args.write_docs:
        write_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", md)


def to_markdown(ours, theirs, notes, sizes, threads, load):
    cols = [f"{n // 1000}k × {d}" if n < 1_000_000 else f"{n // 1_000_000}M × {d}" for n, d in sizes]
    names = sorted({k for r in ours.values() for k in r})
    fast = [k for k in names if k not in FITS_MODEL]
    slow = [k for k in names if k in FITS_MODEL]
    out = []
    cmd = "python benchmarks/select_speed.py --write-docs"
    out.append(f"Seconds per selection (batch {BATCH}, {N_LABELLED} labelled items, {N_CLASSES} classes, clustered "
               f"synthetic pools, float32), best of 2 runs (1 at 1M); {os.cpu_count()} cores, faiss threads "
               f"{threads}, 1-minute load average {load:.1f} at the end of the run (other jobs share the machine, "
               f"so absolute times are noisy; ratios come from the same run). Reproduce: `{cmd}`.\n")

    def table(keys):
        lines = ["| selector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for k in keys:
            cells = [fmt(ours[s].get(k)) if k in ours[s] else "—" for s in sizes]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        return lines

    out += table(fast)
    if "auto" in fast:
        from alwidgets.select import Auto

        out.append(f"\n`auto` is timed after its switch ({N_LABELLED} labels ≥ {Auto().labels_per_class} × "
                   f"{N_CLASSES} classes, so it runs "
                   "`uncertainty_diversity`); before the switch it costs what `coverage` costs.")
    if slow:
        out.append("\nSelectors that fit models inside `select` (time includes fitting):\n")
        out += table(slow)
    if theirs:
        out.append("\nAgainst scikit-activeml in the same run (their time / ours):\n")
        out.append("| ours | scikit-activeml | pool | ours (s) | scikit-activeml (s) | speed-up |")
        out.append("|---|---|---|---|---|---|")
        for (n, d), r in theirs.items():
            for k, t in r.items():
                o = ours[(n, d)].get(k, np.nan)
                out.append(f"| {k} | {COUNTERPART[k]} | {n // 1000}k × {d} | {fmt(o)} | {fmt(t)} | {t / o:.0f}× |")
    out.append("\nTargets of issue 4, checked on this run's figures:\n")
    out += target_lines(ours, theirs, fast)
    if notes:
        out.append("\nNot timed (need configuration the benchmark does not supply):\n")
        out += [f"- `{k}`: {v}" for k, v in sorted(notes.items())]
    return "\n".join(out)


def target_lines(ours, theirs, fast):
    """Pass/miss lines for the issue's speed targets, computed from the measured figures."""
    lines = []
    mid = ours.get((100_000, 512), {})
    if mid:
        timed = {k: mid[k] for k in fast if k in mid and not np.isnan(mid[k])}
        ok = sorted(k for k, t in timed.items() if t <= 0.5)
        miss = sorted((k for k, t in timed.items() if t > 0.5), key=lambda k: timed[k])
        lines.append(f"- ≤ 0.5 s at 100k × 512 (no model fitting): met by {', '.join(ok) or 'none'}; "
                     f"missed by {', '.join(f'{k} ({fmt(timed[k])} s)' for k in miss) or 'none'}.")
    ratios = [(k, n, t / ours[(n, d)][k]) for (n, d), r in theirs.items() for k, t in r.items()
              if not np.isnan(ours[(n, d)].get(k, np.nan))]
    if ratios:
        worst = min(ratios, key=lambda x: x[2])
        verdict = "met" if worst[2] >= 10 else "missed"
        lines.append(f"- ≥ 10× faster than scikit-activeml: {verdict} (smallest speed-up {worst[2]:.0f}×, "
                     f"{worst[0]} at {worst[1] // 1000}k items).")
    big = ours.get((1_000_000, 128), {})
    for k in ("coverage", "kcenter"):
        if k in big:
            lines.append(f"- {k} ≤ 10 s at 1M × 128: {'met' if big[k] <= 10 else 'missed'} ({fmt(big[k])} s).")
    return lines


def write_section(path: Path, body: str):
    """Replace (or append) the ``## Selection speed`` section of ``docs/benchmarks.md``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "## Selection speed\n\n" + body.strip() + "\n"
    pat = re.compile(r"^## Selection speed\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda m: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
