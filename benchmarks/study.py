"""Label-efficiency study: how many labels does each strategy save over random, on real data?

    python benchmarks/study.py                                  # every dataset found, all strategies
    python benchmarks/study.py --datasets digits --repeats 5
    python benchmarks/study.py --datasets folder:path/to/images --embedder mobilenet
    python benchmarks/study.py --embed-only                      # just compute and cache embeddings

The standard pool-based protocol (run by :func:`alwidgets.simulate`): the
pool's labels are hidden and revealed only when a strategy picks an item;
every strategy gets the same budget, the same classifier (the logistic
regression probe ``LinearProbe`` on frozen embeddings, refit each round), the
same held-out test set and the same random splits (``--repeats``, default 5).
Cold start begins at zero labels (strategies that need a model take a random
first batch); warm start at 2 labels per class. The batch is one label per
class, so the curve has a point at every whole number of labels per class.

Writes to ``--out`` (default ``benchmarks/results``), per dataset:
``study_<dataset>.md`` (tables), ``study_<dataset>_curves.csv`` (every round
of every repeat), ``study_<dataset>.html`` and ``.png`` (learning curves).
``study_summary.md`` collects all tables. Embeddings are computed once and
cached on disk (``--cache-dir``, default ``$ALWIDGETS_CACHE`` or
``~/.cache/alwidgets/embeddings``).

Data beside the repository (``../shared/data``, ``../shared/weights``) is used
when present; datasets whose files are missing are skipped with a message.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"
FASHION = SHARED / "data" / "fashion-mnist"
CIFAR = SHARED / "data" / "cifar10-subset"
# the exact timm call from ../shared/weights/README.md (TF "same" padding, inputs in [-1, 1])
MOBILENET_OVERLAY = dict(num_classes=1000, label_offset=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                         interpolation="bilinear", crop_pct=0.875, input_size=(3, 224, 224),
                         test_input_size=(3, 224, 224), test_crop_pct=0.875)

STRATEGIES = ["random", "coverage", "explore", "least_confidence", "margin", "entropy",
              "uncertainty_diversity", "kcenter", "badge", "bald", "committee", "auto"]
DATASETS = ["digits", "fashion-pixels", "fashion-mobilenet", "cifar-mobilenet"]
PER_CLASS = (1, 2, 3, 5, 10, 20)
FRACTIONS = (0.90, 0.95)


@dataclass
class Dataset:
    """Features of one benchmark: pool (X, y), an optional fixed test split, and how they were made."""

    name: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int
    description: str
    target_acc: float | None = None  # an absolute accuracy target to report, e.g. 0.9 on digits


# ---------------------------------------------------------------------------- datasets
@functools.lru_cache(maxsize=None)
def mobilenet(cache_dir=None, progress=True):
    """The ImageNet MobileNet V1 from ``../shared/weights`` as a cached TimmEmbedder (224 px).

    One embedder per (cache_dir, progress), shared by the datasets that use it: the model is built once.
    """
    from alwidgets.embed import TimmEmbedder

    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"MobileNet V1 weights not found at {WEIGHTS}")
    return TimmEmbedder("mobilenetv1_100", checkpoint=WEIGHTS, pad_type="same",
                        pretrained_cfg_overlay=MOBILENET_OVERLAY, cache_dir=cache_dir, progress=progress,
                        device="cpu")


@functools.lru_cache(maxsize=None)
def fashion_pools(n_pool: int = 10_000, n_test: int = 2_000):
    """Fashion-MNIST: the first ``n_pool`` train images as the pool, a class-balanced test subset.

    Read once per process (the pixel and MobileNet datasets share it); treat the pools as read-only.
    """
    from alwidgets import Pool

    if not FASHION.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST not found at {FASHION}")
    train = Pool.fashion_mnist(FASHION, "train").subset(np.arange(n_pool))
    test = Pool.fashion_mnist(FASHION, "test")
    per = n_test // 10
    keep = np.sort(np.concatenate([np.flatnonzero(test.targets == c)[:per] for c in range(10)]))
    return train, test.subset(keep)


def load_dataset(spec: str, *, cache_dir=None, embedder: str = "pixels", progress=True) -> Dataset:
    """One of ``DATASETS`` or ``folder:DIR`` (with ``train/`` and ``test/`` inside, or one class folder per class)."""
    from alwidgets import Pool
    from alwidgets.embed import PixelEmbedder

    if spec == "digits":
        pool = Pool.digits()
        return Dataset("digits", PixelEmbedder().embed(pool), pool.targets, None, None, 10,
                       "scikit-learn digits, 1,797 8x8 images, 64 pixels in [0, 1]; 25% held out per split",
                       target_acc=0.9)
    if spec == "fashion-pixels":
        from sklearn.decomposition import PCA

        train, test = fashion_pools()
        Ptr, Pte = PixelEmbedder().embed(train), PixelEmbedder().embed(test)
        pca = PCA(n_components=50, random_state=0).fit(Ptr)  # fitted on the pool only
        return Dataset(spec, pca.transform(Ptr).astype(np.float32), train.targets,
                       pca.transform(Pte).astype(np.float32), test.targets, 10,
                       f"Fashion-MNIST, pool = first {len(train):,} train images, test = {len(test):,} test images "
                       "(balanced); pixels -> PCA 50 (fitted on the pool)")
    if spec == "fashion-mobilenet":
        train, test = fashion_pools()
        emb = mobilenet(cache_dir, progress)
        return Dataset(spec, emb.embed(train), train.targets, emb.embed(test), test.targets, 10,
                       f"Fashion-MNIST, pool = first {len(train):,} train images, test = {len(test):,} test images "
                       "(balanced); ImageNet MobileNet V1, 224 px, 1024-d pooled features")
    if spec == "cifar-mobilenet":
        if not CIFAR.is_dir():
            raise FileNotFoundError(f"CIFAR-10 subset not found at {CIFAR}")
        train, test = Pool.from_folder(CIFAR / "train"), Pool.from_folder(CIFAR / "test")
        emb = mobilenet(cache_dir, progress)
        return Dataset(spec, emb.embed(train), train.targets, emb.embed(test), test.targets, 10,
                       f"CIFAR-10 subset, pool = {len(train):,} train images, test = {len(test):,}; "
                       "ImageNet MobileNet V1, 224 px, 1024-d pooled features")
    if spec.startswith("folder:"):
        root = Path(spec.partition(":")[2]).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{spec}: no such folder {root}")
        emb = mobilenet(cache_dir, progress) if embedder == "mobilenet" else PixelEmbedder(size=32)
        if (root / "train").is_dir() and (root / "test").is_dir():
            train, test = Pool.from_folder(root / "train"), Pool.from_folder(root / "test")
            if train.classes != test.classes:
                raise ValueError(f"{root}: train classes {train.classes} differ from test classes {test.classes}")
            X, Xt, yt = emb.embed(train), emb.embed(test), test.targets
            split = f"{len(train):,} pool / {len(test):,} test items"
        else:
            train = Pool.from_folder(root)
            X, Xt, yt = emb.embed(train), None, None
            split = f"{len(train):,} items, 25% held out per split"
        if np.any(train.targets < 0):
            raise ValueError(f"{root}: every image must sit in a class folder to be used in the study")
        what = "ImageNet MobileNet V1 224 px" if embedder == "mobilenet" else "pixels at 32 px"
        name = "folder-" + (root.name or "data")
        return Dataset(name, X, train.targets, Xt, yt, len(train.classes), f"{root}: {split}; {what}")
    raise ValueError(f"unknown dataset {spec!r}; use {', '.join(DATASETS)} or folder:DIR")


# ---------------------------------------------------------------------------- study
def run_study(ds: Dataset, strategies, *, repeats: int = 5, max_per_class: int = 20, starts=("cold", "warm"),
              random_state: int = 0, progress: bool = True) -> pd.DataFrame:
    """Curves of every strategy from each start, one row per (start, strategy, repeat, round)."""
    import torch
    from threadpoolctl import threadpool_limits

    frames = []
    # One BLAS / torch thread: the per-round fits are small, and on a shared 2-core machine
    # multi-threaded BLAS made the committee's bootstrap fits ~10x slower (4.4 s -> 0.44 s per round).
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            for start in starts:
                frames.append(_run_start(ds, strategies, start, repeats, max_per_class, random_state, progress))
    finally:
        torch.set_num_threads(torch_threads)
    return pd.concat(frames, ignore_index=True)


def _run_start(ds, strategies, start, repeats, max_per_class, random_state, progress):
    from alwidgets import simulate

    kw = {} if ds.X_test is None else dict(X_test=ds.X_test, y_test=ds.y_test)
    res = simulate(ds.X, ds.y, strategies, target_acc=None, batch_size=ds.n_classes,
                   seed_per_class=0 if start == "cold" else 2, budget=max_per_class * ds.n_classes,
                   repeats=repeats, random_state=random_state, progress=progress, **kw)
    c = res.curves.copy()
    c.insert(0, "start", start)
    full = res.full_pool[["repeat", "accuracy"]].rename(columns={"accuracy": "full_pool_acc"})
    return c.merge(full, on="repeat")


def summary_table(curves: pd.DataFrame, n_classes: int, *, reference: str = "random",
                  per_class=PER_CLASS, fractions=FRACTIONS, absolute: float | None = None) -> pd.DataFrame:
    """One row per (start, strategy): accuracy and paired gain over ``reference`` at each budget, and more.

    Gains are paired: strategy minus reference on the same split and the
    same label count, then mean and std over splits. Labels to a target and
    the AUC come from :func:`alwidgets.simulate.labels_to_target` (with a
    1e-12 tolerance) and :func:`~alwidgets.simulate.normalised_auc`.
    """
    from alwidgets.simulate import labels_to_target, normalised_auc

    rows = []
    for (start, strategy), g in curves.groupby(["start", "strategy"], sort=False):
        ref = curves[(curves["start"] == start) & (curves["strategy"] == reference)]
        row = {"start": start, "strategy": strategy}
        for k in per_class:
            n = k * n_classes
            a = g[g["n_labels"] == n].set_index("repeat")["accuracy"]
            b = ref[ref["n_labels"] == n].set_index("repeat")["accuracy"]
            if len(a) == 0:
                row.update({f"acc@{k}": math.nan, f"acc_std@{k}": math.nan, f"gain@{k}": math.nan,
                            f"gain_std@{k}": math.nan})
                continue
            d = (a - b).dropna()
            row.update({f"acc@{k}": a.mean(), f"acc_std@{k}": a.std(ddof=0),
                        f"gain@{k}": d.mean() if len(d) else math.nan,
                        f"gain_std@{k}": d.std(ddof=0) if len(d) else math.nan})
        targets = [(f"{f:.0%} of full", f, True) for f in fractions]
        if absolute is not None:
            targets.append((f"{absolute:.0%} acc", absolute, False))
        per_rep = [c.sort_values("n_labels") for _, c in g.groupby("repeat")]
        for label, t, relative in targets:
            ltt = []
            for c in per_rep:
                target = t * float(c["full_pool_acc"].iloc[0]) if relative else t
                ltt.append(labels_to_target(c, target - 1e-12))
            ltt = np.array(ltt)
            row[f"labels to {label}"] = float(np.nanmean(ltt)) if np.isfinite(ltt).any() else math.nan
            row[f"reached {label}"] = int(np.isfinite(ltt).sum())
            row[f"of {label}"] = len(ltt)
        row["auc"] = float(np.mean([normalised_auc(c["n_labels"].to_numpy(float), c["accuracy"].to_numpy(float))
                                    for c in per_rep]))
        row["s_per_round"] = float(g["seconds"].mean())
        row["full_pool_acc"] = float(g.groupby("repeat")["full_pool_acc"].first().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(acc, std, gain, gain_std, is_ref):
    if math.isnan(acc):
        return "—"
    if is_ref:
        return f"{100 * acc:.1f} ± {100 * std:.1f}"
    return f"{100 * acc:.1f} ({100 * gain:+.1f} ± {100 * gain_std:.1f})"


def _ltt_cell(row, label, budget):
    got, of = row[f"reached {label}"], row[f"of {label}"]
    if got == 0:
        return f"> {budget}"
    if got < of:
        return f"{row[f'labels to {label}']:.0f} ({got}/{of} reached; rest > {budget})"
    return f"{row[f'labels to {label}']:.0f}"


def to_markdown(table: pd.DataFrame, n_classes: int, budget: int, *, reference="random", per_class=PER_CLASS) -> str:
    """Markdown tables, one per start: accuracy % (gain over random in points ± std over splits)."""
    out = []
    ltt_cols = [c[len("labels to "):] for c in table.columns if c.startswith("labels to ")]
    for start, t in table.groupby("start", sort=False):
        head = ["strategy"] + [f"{k}/class ({k * n_classes})" for k in per_class] + \
               [f"labels to {c}" for c in ltt_cols] + ["AUC", "s/round"]
        lines = [f"**{start} start** ({'0 labels' if start == 'cold' else '2 labels per class'}); "
                 f"cells: mean test accuracy % ({reference}: ± std; others: gain over {reference} in points ± std)",
                 "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t.to_dict("records"):
            is_ref = r["strategy"] == reference
            cells = [_cell(r[f"acc@{k}"], r[f"acc_std@{k}"], r[f"gain@{k}"], r[f"gain_std@{k}"], is_ref)
                     for k in per_class]
            cells += [_ltt_cell(r, c, budget) for c in ltt_cols]
            cells += [f"{100 * r['auc']:.1f}", f"{r['s_per_round']:.2f}"]
            lines.append(f"| {r['strategy']} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def gains_markdown(table: pd.DataFrame, name: str, *, reference="random", per_class=PER_CLASS) -> str:
    """Compact tables for the docs: gain over ``reference`` in points per budget, one per start."""
    out = []
    for start, t in table.groupby("start", sort=False):
        ks = [k for k in per_class if t[f"acc@{k}"].notna().all()]
        lines = [f"**{name}, {start} start** — gain over {reference} in points at k labels per class "
                 f"({reference}'s accuracy in the first row)", "",
                 "| strategy | " + " | ".join(f"{k}/class" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for r in t.to_dict("records"):
            if r["strategy"] == reference:
                cells = [f"{100 * r[f'acc@{k}']:.1f}" for k in ks]
                lines.insert(4, f"| {reference} (acc %) | " + " | ".join(cells) + " |")
            else:
                lines.append(f"| {r['strategy']} | " + " | ".join(f"{100 * r[f'gain@{k}']:+.1f}" for k in ks) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def figure(curves: pd.DataFrame, title: str, reference: str = "random"):
    """Plotly figure: mean accuracy ± std versus labels, cold start left, warm start right."""
    from plotly.subplots import make_subplots

    from alwidgets.plots import learning_curve_figure

    starts = list(dict.fromkeys(curves["start"]))
    fig = make_subplots(rows=1, cols=len(starts), shared_yaxes=True,
                        subplot_titles=[f"{s} start" for s in starts], horizontal_spacing=0.04)
    for j, start in enumerate(starts, 1):
        sub = learning_curve_figure(curves[curves["start"] == start], reference=reference)
        for tr in sub.data:
            tr.showlegend = bool(tr.showlegend is not False and j == 1)
            fig.add_trace(tr, row=1, col=j)
        fig.update_xaxes(title_text="labels", row=1, col=j)
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", legend_title="strategy", width=1300, height=620)
    return fig


def write_outputs(ds: Dataset, curves: pd.DataFrame, out: Path, *, budget: int, wall: float, command: str,
                  png: bool = True) -> str:
    """Tables (markdown), curves (CSV), figure (HTML + PNG) for one dataset; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(curves, ds.n_classes, absolute=ds.target_acc)
    full = curves.groupby("repeat")["full_pool_acc"].first()
    md = (f"### {ds.name}\n\n{ds.description}. Full-pool probe accuracy "
          f"{100 * full.mean():.1f} ± {100 * full.std(ddof=0):.1f} %; {curves['repeat'].nunique()} splits; "
          f"batch {ds.n_classes}, budget {budget}; wall {wall / 60:.1f} min.\n\n"
          f"`{command}`\n\n" + to_markdown(table, ds.n_classes, budget) + "\n\n"
          + gains_markdown(table, ds.name) + "\n")
    (out / f"study_{ds.name}.md").write_text(md)
    curves.round(5).to_csv(out / f"study_{ds.name}_curves.csv", index=False)
    table.round(5).to_csv(out / f"study_{ds.name}_table.csv", index=False)
    fig = figure(curves, f"{ds.name}: accuracy versus labels (mean ± std over splits)")
    fig.write_html(out / f"study_{ds.name}.html", include_plotlyjs="cdn")
    if png:
        try:
            fig.write_image(out / f"study_{ds.name}.png", width=1300, height=620, scale=1)
        except Exception as e:  # noqa: BLE001 - kaleido/Chromium missing: the HTML still has the figure
            print(f"PNG not written ({type(e).__name__}: {e}); the HTML has the same figure", file=sys.stderr)
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma-separated: {', '.join(DATASETS)}, folder:DIR")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--starts", default="cold,warm")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-per-class", type=int, default=20, help="budget in labels per class")
    ap.add_argument("--embedder", default="pixels", choices=["pixels", "mobilenet"],
                    help="embedder for folder:DIR datasets (mobilenet needs ../shared/weights)")
    ap.add_argument("--cache-dir", default=None, help="embedding cache (default $ALWIDGETS_CACHE or ~/.cache)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--embed-only", action="store_true", help="compute and cache the embeddings, then stop")
    args = ap.parse_args(argv)
    from alwidgets.select import available

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in available()]
    if unknown:
        ap.error(f"unknown strategies {unknown}; choose from {', '.join(available())}")
    starts = tuple(s.strip() for s in args.starts.split(","))
    if not set(starts) <= {"cold", "warm"}:
        ap.error("--starts takes cold, warm or cold,warm")
    command = "python benchmarks/study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}", flush=True)
    for spec in args.datasets.split(","):
        t0 = time.perf_counter()
        try:
            ds = load_dataset(spec.strip(), cache_dir=args.cache_dir, embedder=args.embedder,
                              progress=not args.no_progress)
        except FileNotFoundError as e:
            print(f"skip {spec}: {e}", file=sys.stderr)
            continue
        print(f"{ds.name}: pool {ds.X.shape}, test {None if ds.X_test is None else ds.X_test.shape}; "
              f"embeddings ready in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.embed_only:
            continue
        t0 = time.perf_counter()
        curves = run_study(ds, strategies, repeats=args.repeats, max_per_class=args.max_per_class,
                           starts=starts, progress=not args.no_progress)
        wall = time.perf_counter() - t0
        md = write_outputs(ds, curves, out, budget=args.max_per_class * ds.n_classes, wall=wall,
                           command=command, png=not args.no_png)
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
