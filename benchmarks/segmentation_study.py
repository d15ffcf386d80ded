"""Which images to mask first? Image-level selection strategies on CamVid, scored on its test set.

MobileNet V1 (Coral, ImageNet; ``../shared/weights``) dense features at strides
8/16/32 are computed once and cached (float16); a :class:`DenseDecoder` reads
them (raw, as the library's default; ``--components 48,64,64`` projects them
first by a whitened PCA fitted on the train pool, the default until 27 Nov
2026) and is refitted (warm start) after each round. Each split is a random 80 % of the 367
train images; each strategy starts from the same 5-image random batch
(model-based strategies) or picks its own first batch (coverage, auto).

    # the study in benchmarks/results/segmentation_study.md (about 80 min on 2 busy cores)
    nice -n 10 python benchmarks/segmentation_study.py --strategies random,coverage,entropy,class_weighted,class_targeted,auto \
        --budgets 5,10,20,40,80,160 --splits 4 --first-split 10 --score-scale 2 --threads 1 --workers 2
    # on a GPU machine: --device cuda --workers 14 --score-scale 1
    # stride-4 features too: --out-indices 1,2,3,4 (with the PCA: --components 32,48,64,64)
    # the backbone on twice-enlarged images (strides 4/8/16 of the masks): --input-scale 2
    # a variant screen without full-pool fits (names: see variants(); oracle_* read the hidden masks)
    nice -n 10 python benchmarks/segmentation_study.py --strategies random,coverage_typiclust,oracle_classes \
        --budgets 5,10,20 --splits 4 --score-scale 4 --reference '{"miou": 53.0, "n_masks": 294}' --tag screen

Every (strategy, split) curve and every split's full-pool reference is one job (``--workers`` processes).
Writes ``benchmarks/results/segmentation_{curves,reference,summary}{_TAG}.csv`` and
``segmentation_study{_TAG}.md`` (mIoU, paired differences to random ± standard error, rare-4 IoU,
masks to 90/95 % of the full-pool mIoU), appending each row as it is produced, so a stopped run keeps
what it measured (``--jobs STRATEGY:SPLIT,...`` finishes it; ``--report-from TAGS`` rebuilds the report).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _light_imports():
    """On a machine without the widget stack or faiss (a bare GPU image), import only what the study needs:
    the ``alwidgets`` package body (widgets, sessions) is skipped and faiss's k-means is replaced by the same
    Lloyd iterations in NumPy (only the TypiClust coverage variant uses it)."""
    import types

    def missing(name):
        try:
            __import__(name)
            return False
        except ImportError:
            return True

    if "alwidgets" not in sys.modules and missing("anywidget"):
        pkg = types.ModuleType("alwidgets")
        pkg.__path__ = [str(REPO / "alwidgets")]
        sys.modules["alwidgets"] = pkg
    if missing("faiss"):
        sys.modules["faiss"] = _numpy_faiss()


def _numpy_faiss():
    import types

    f = types.ModuleType("faiss")
    f.omp_get_max_threads = lambda: 1
    f.omp_set_num_threads = lambda n: None

    class Kmeans:
        def __init__(self, d, k, niter=20, seed=0, verbose=False, **kw):
            self.k, self.niter = k, niter

        def train(self, X, weights=None, init_centroids=None):
            X = np.asarray(X, np.float64)
            w = np.ones(len(X)) if weights is None else np.asarray(weights, np.float64)
            C = np.asarray(init_centroids, np.float64).copy()
            for _ in range(self.niter + 1):
                D = (X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]
                own = D.argmin(1)
                obj = float((w * D[np.arange(len(X)), own]).sum())
                for c in range(len(C)):
                    m = own == c
                    if m.any():
                        C[c] = np.average(X[m], axis=0, weights=w[m])
            self.centroids = C.astype(np.float32)
            return obj

    class IndexFlatL2:
        def __init__(self, d):
            self.R = None

        def add(self, R):
            self.R = np.asarray(R, np.float32)

        def search(self, Q, k):
            D = (Q * Q).sum(1)[:, None] - 2 * Q @ self.R.T + (self.R * self.R).sum(1)[None, :]
            idx = np.argsort(D, axis=1)[:, :k]
            return np.take_along_axis(D, idx, 1), idx

    f.Kmeans, f.IndexFlatL2 = Kmeans, IndexFlatL2
    return f


_light_imports()

from alwidgets.segmentation import (  # noqa: E402
    CAMVID_CLASSES,
    CAMVID_RARE,
    DenseDecoder,
    DenseLinearProbe,
    PCAProjection,
    camvid,
    mobilenet_v1,
)
from alwidgets.segmentation.simulate import simulate_segmentation, summarize  # noqa: E402

SHARED = REPO.parent / "shared"
OUT = REPO / "benchmarks" / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "camvid"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"))
    ap.add_argument("--strategies", default="random,coverage,entropy,class_weighted,class_targeted,auto")
    ap.add_argument("--budgets", default="5,10,20,40,80,160")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--first-split", type=int, default=0, help="run splits first-split .. first-split+splits-1")
    ap.add_argument("--pool-fraction", type=float, default=0.8)
    ap.add_argument("--score-scale", type=int, default=1, help="2 = score every second test pixel each way")
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    ap.add_argument("--reference", default=None,
                    help="JSON {miou, n_masks} of a whole-pool fit (e.g. from --curve) to skip it; needs "
                         "--pool-fraction 1")
    ap.add_argument("--curve", default=None, help="only the learning curve of random masks at these counts "
                                                  "(e.g. 10,20,40,80,367), scored on every test pixel")
    ap.add_argument("--class-iou", default="labelled", choices=["labelled", "heldout"],
                    help="per-class IoU for the class-weighted/targeted selectors: on the model's training masks "
                         "or on each new batch before the refit (rows are named STRATEGY+heldout)")
    ap.add_argument("--model", default="decoder", choices=["decoder", "probe"],
                    help="with --curve: the DenseDecoder (default) or the DenseLinearProbe on the raw stride-8/16 maps")
    ap.add_argument("--timing", action="store_true",
                    help="only CPU seconds per training step at 20/80/100/367 masks and the refit they imply")
    ap.add_argument("--report-from", default=None,
                    help="no run: join the curves of these comma-separated tags (parallel runs) into one report")
    ap.add_argument("--device", default="cpu", help="where the decoder trains: cpu, cuda or auto")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes, each running whole (split, strategy) curves; the full-pool reference of a "
                         "split is one more job")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds after which no new job starts (what finished is reported)")
    ap.add_argument("--jobs", default=None,
                    help="only these curves, as STRATEGY:SPLIT,... (no reference fits): to finish a stopped run")
    ap.add_argument("--decoder-kwargs", default="{}", help='JSON of DenseDecoder parameters, e.g. \'{"warm_start": false}\'')
    ap.add_argument("--embed-precision", default="fp32", help="precision of the MobileNet features (fp32 on CPU)")
    ap.add_argument("--out-indices", default="2,3,4",
                    help="MobileNet stages kept: 2,3,4 = strides 8/16/32; 1,2,3,4 adds stride 4")
    ap.add_argument("--components", default="none",
                    help="none: the decoder reads the raw maps (the default); else PCA components per map, "
                         "finest first (48,64,64: the projection used until 27 Nov 2026)")
    ap.add_argument("--fine-x2", action="store_true",
                    help="add the stride-8 map of the twice-enlarged image in front (the decoder's fine path, stride 4)")
    ap.add_argument("--input-scale", type=int, default=1,
                    help="run the backbone on images enlarged this many times (2: strides 8/16/32 of the "
                         "enlarged image are strides 4/8/16 of the masks)")
    args = ap.parse_args(argv)
    if args.report_from:
        tags = args.report_from.split(",")
        curves = pd.concat([pd.read_csv(OUT / f"segmentation_curves_{t}.csv") for t in tags], ignore_index=True)
        # a --jobs run fits no reference: its splits' references come from the other tags
        refs = pd.concat([pd.read_csv(OUT / f"segmentation_reference_{t}.csv") for t in tags
                          if (OUT / f"segmentation_reference_{t}.csv").is_file()], ignore_index=True)
        refs = refs.drop_duplicates("split")
        tag = f"_{args.tag}" if args.tag else ""
        curves.to_csv(OUT / f"segmentation_curves{tag}.csv", index=False)
        refs.to_csv(OUT / f"segmentation_reference{tag}.csv", index=False)
        return report(curves, refs, OUT, tag, args)
    if args.threads:
        os.environ["ALWIDGETS_NUM_THREADS"] = str(args.threads)
        import torch
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, test = camvid(args.data, "train"), camvid(args.data, "test")
    args.embed_device = "auto"
    try:
        ptr, pte = study_features(args, train, test)
    except Exception as e:  # e.g. a GPU decode path that fails: the CPU gives the same features
        print(f"features on the default device failed ({e!r}); computing them on the CPU", flush=True)
        args.embed_device = "cpu"
        ptr, pte = study_features(args, train, test)
    print(f"features + projection: {time.perf_counter() - t0:.0f}s", flush=True)
    if args.curve:
        if args.model == "probe":   # the probe reads the raw (unprojected) maps
            emb = embedder(args)
            ptr, pte = emb.embed(train.pool), emb.embed(test.pool)
        return curve(ptr, pte, train, test, [int(n) for n in args.curve.split(",")], args)
    if args.timing:
        return timing(ptr, train)
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"_{args.tag}" if args.tag else ""
    del ptr, pte   # each worker loads the projected cache itself
    run_jobs(args, tag, len(train), t0)
    if not (OUT / f"segmentation_reference{tag}.csv").is_file():
        print(f"no full-pool reference for this run (--jobs fits none): join it to a run that has them, "
              f"e.g. --report-from TAG,{args.tag or ''} --tag joined")
        return
    curves = pd.read_csv(OUT / f"segmentation_curves{tag}.csv")
    refs = pd.read_csv(OUT / f"segmentation_reference{tag}.csv").drop_duplicates("split", keep="last")
    report(curves, refs, OUT, tag, args)
    print(f"total {time.perf_counter() - t0:.0f}s")


# ------------------------------------------------------------------------------ strategies
def variants():
    """Named strategies of the study: the library's defaults, and the variants the study compared
    (``--strategies`` takes any of these names)."""
    from alwidgets.segmentation import select as S

    def named(name, obj):
        obj.__class__ = type(obj.__class__.__name__, (obj.__class__,), {"strategy_name": name,
                                                                        "name": property(lambda self: name)})
        return obj

    v = {
        # the library's defaults (make_selector)
        "random": lambda: S.make_selector("random"),
        "coverage": lambda: S.make_selector("coverage"),
        "entropy": lambda: S.make_selector("entropy"),
        "class_weighted": lambda: S.make_selector("class_weighted"),
        "class_targeted": lambda: S.make_selector("class_targeted"),
        "auto": lambda: S.make_selector("auto"),
        "class_balance": lambda: S.make_selector("class_balance"),
        "coverage_features_cold": lambda: named("coverage_features_cold", S.CoverageImages("features",
                                                                                           cold_start=None)),
        # variants
        "coverage_typiclust": lambda: named("coverage_typiclust", S.CoverageImages("typiclust")),
        "coverage_kmeans": lambda: named("coverage_kmeans", S.CoverageImages("kmeans")),
        "coverage_features": lambda: named("coverage_features", S.CoverageImages("features", cold_start="kmeans")),
        "coverage_strat": lambda: named("coverage_strat", S.CoverageImages("kmeans", pick="random")),
        "auto_scb": lambda: named("auto_scb", S.AutoImages(switch_at=1, start=S.CoverageImages("kmeans", pick="random"), then=S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=1.0))),
        "coverage_strat_features": lambda: named("coverage_strat_features", S.CoverageImages("features", pick="random")),
        "coverage_kcenter": lambda: named("coverage_kcenter", S.CoverageImages("kcenter")),
        "coverage_facility": lambda: named("coverage_facility", S.CoverageImages("facility")),
        "coverage_facility_cold": lambda: named("coverage_facility_cold", S.CoverageImages("facility", cold_start=None)),
        "coverage_central_strat": lambda: named("coverage_central_strat", _CentralThenStratified("kmeans")),
        "entropy_plain": lambda: named("entropy_plain", S.PixelUncertainty(diversity=0.0)),
        "class_weighted_plain": lambda: named("class_weighted_plain", S.ClassWeightedUncertainty(diversity=0.0)),
        "class_targeted_plain": lambda: named("class_targeted_plain", S.ClassTargeted(saturation=None,
                                                                                    diversity=0.0)),
        "entropy_div": lambda: named("entropy_div", S.PixelUncertainty(diversity=1.0)),
        "entropy_div05": lambda: named("entropy_div05", S.PixelUncertainty(diversity=0.5)),
        "entropy_regions_div": lambda: named("entropy_regions_div", S.PixelUncertainty(reduction="regions",
                                                                                      diversity=1.0)),
        "class_weighted_div": lambda: named("class_weighted_div", S.ClassWeightedUncertainty(diversity=1.0)),
        "class_weighted_p1_div": lambda: named("class_weighted_p1_div",
                                               S.ClassWeightedUncertainty(power=1.0, diversity=1.0)),
        "class_targeted_div": lambda: named("class_targeted_div", S.ClassTargeted(saturation=None, diversity=1.0)),
        "class_targeted_sat": lambda: named("class_targeted_sat", S.ClassTargeted(saturation=100.0, diversity=0.0)),
        "class_targeted_sat_div": lambda: named("class_targeted_sat_div",
                                                S.ClassTargeted(saturation=100.0, diversity=1.0)),
        "class_targeted_all_sat_div": lambda: named("class_targeted_all_sat_div",
                                                    S.ClassTargeted(n_weak=11, saturation=100.0, diversity=1.0)),
        "class_targeted_unc_sat_div": lambda: named("class_targeted_unc_sat_div",
                                                    S.ClassTargeted(n_weak=11, saturation=100.0, diversity=1.0,
                                                                    uncertain=True)),
        "class_balance_sat": lambda: named("class_balance_sat", S.ClassTargeted(n_weak=11, power=0.0,
                                                                               saturation=100.0, diversity=0.0)),
        "class_balance_sat_div": lambda: named("class_balance_sat_div", S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=1.0)),
        "class_balance_sat_div05": lambda: named("class_balance_sat_div05", S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=0.5)),
        "class_balance_sat30_div": lambda: named("class_balance_sat30_div", S.ClassTargeted(
            n_weak=11, power=0.0, saturation=30.0, diversity=1.0)),
        "class_balance_sat300_div": lambda: named("class_balance_sat300_div", S.ClassTargeted(
            n_weak=11, power=0.0, saturation=300.0, diversity=1.0)),
        "class_balance_unc_sat_div": lambda: named("class_balance_unc_sat_div", S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=1.0, uncertain=True)),
        "ud_predictions": lambda: named("ud_predictions", S.UncertaintyDiversityImages(
            S.ClassWeightedUncertainty(diversity=0.0), space="predictions")),
        "auto_fcb": lambda: named("auto_fcb", S.AutoImages(switch_at=1, start=S.CoverageImages(cold_start=None), then=S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=1.0))),
        "auto_cb": lambda: named("auto_cb", S.AutoImages(switch_at=1, start=S.CoverageImages("kmeans"), then=S.ClassTargeted(
            n_weak=11, power=0.0, saturation=100.0, diversity=1.0))),
        "auto_cov5_targeted": lambda: named("auto_cov5_targeted", S.AutoImages(switch_at=1, start="coverage")),
        # `auto` until 27 Nov 2026 (the steps300 study's "auto" rows)
        "auto_cov20_weighted": lambda: named("auto_cov20_weighted", S.AutoImages(
            switch_at=20, start="coverage", then=S.ClassWeightedUncertainty())),
        "auto_strat5_targeted": lambda: named("auto_strat5_targeted", S.AutoImages(
            switch_at=1, start=S.CoverageImages("kmeans", pick="random"), then=S.ClassTargeted())),
        "auto_ct": lambda: named("auto_ct", S.AutoImages(switch_at=1, start=S.CoverageImages("kmeans"), then=S.ClassTargeted(
            n_weak=11, power=1.0, saturation=100.0, diversity=1.0))),
        "oracle_classes": lambda: named("oracle_classes", OracleClasses()),
        "oracle_rare4": lambda: named("oracle_rare4", OracleClasses([CAMVID_CLASSES.index(c) for c in CAMVID_RARE])),
    }
    return v


class OracleClasses:
    """Study only -- reads the hidden masks: greedily the images that add the most
    ``sum_c log(1 + labelled pixels of c / 100)`` (over ``classes``, default all); how much a selector that
    knew the classes could gain."""

    def __new__(cls, classes=None):
        from alwidgets.segmentation.select import SegmentationSelector, Selection

        class _Oracle(SegmentationSelector):
            strategy_name = "oracle_classes"
            requires = ("embeddings",)
            hidden = None   # (pooled rows -> class pixel counts), set by the job

            def _select(self, n, *, labelled, candidates, embeddings, rng, **kw):
                counts = self.hidden(embeddings)
                if classes is not None:
                    counts = counts[:, classes]
                picks = oracle_picks(counts, n, labelled, candidates)
                return Selection(picks, np.zeros(n), {"reason": "oracle: hidden masks"})

        return _Oracle()


def oracle_picks(counts, n, labelled, candidates):
    """Greedily the ``n`` candidates that add the most ``sum_c log(1 + pixels of c / 100)`` to the labelled
    rows' class pixel ``counts`` (rows x classes)."""
    A = counts[labelled].sum(0)
    picks = []
    free = np.ones(len(candidates), bool)
    for _ in range(n):
        g = (np.log1p((A + counts[candidates]) / 100.0) - np.log1p(A / 100.0)).sum(1)
        g[~free] = -np.inf
        j = int(np.argmax(g))
        picks.append(candidates[j])
        free[j] = False
        A = A + counts[candidates[j]]
    return np.asarray(picks)


def _central_then_stratified():
    from alwidgets.segmentation import select as S

    class CentralThenStratified(S.CoverageImages):
        """k-means coverage: the central image of each cluster while nothing is labelled, then a random
        member of each cluster without a labelled image (stratified sampling)."""

        def _select(self, n, *, labelled, **kw):
            self.pick = "random" if labelled.any() else "central"
            return super()._select(n, labelled=labelled, **kw)

    return CentralThenStratified


def _CentralThenStratified(*a, **kw):
    return _central_then_stratified()(*a, **kw)


# ------------------------------------------------------------------------------ jobs
_W = {}


def _worker_init(args):
    import torch

    threads = max(1, args.threads or 2)
    torch.set_num_threads(threads)
    os.environ["ALWIDGETS_NUM_THREADS"] = str(threads)
    train, test = camvid(args.data, "train"), camvid(args.data, "test")
    ptr, pte = study_features(args, train, test)
    _W.update(args=args, train=train, test=test, ptr=ptr, pte=pte)


def _pool_rows(split, n, fraction):
    m = int(round(fraction * n))
    return np.sort(np.random.default_rng([int(split), 12345]).choice(n, m, replace=False))


def _job(job):
    """One full-pool reference fit (``("ref", split)``) or one strategy's curve (``(name, split)``)."""
    try:
        return _run_job(job)
    except Exception as e:  # one failing job must not stop the others
        import traceback

        return job, None, "FAILED " + "".join(traceback.format_exception(e))[-1500:]


def _run_job(job):
    args, train, test, ptr, pte = (_W[k] for k in ("args", "train", "test", "ptr", "pte"))
    if args.deadline is not None and time.time() > args.deadline:
        return job, None, "skipped (deadline)"
    name, split = job
    t0 = time.perf_counter()
    rows = _pool_rows(split, len(train), args.pool_fraction)
    sub = ptr.subset(rows)
    masks = [train.masks[i] for i in rows]
    model = DenseDecoder(11, 11, n_components=None, device=args.device, **json.loads(args.decoder_kwargs))
    if name == "ref":
        m = model.set_params(random_state=split).fit(sub, masks)
        sc = m.score(pte, test.masks, scale=args.score_scale)
        rec = {"split": split, "n_masks": len(rows), "miou": 100 * sc.miou, "pixel_accuracy": 100 * sc.pixel_accuracy,
               "fit_seconds": m.fit_seconds_, **{f"iou_{c}": 100 * v for c, v in zip(CAMVID_CLASSES, sc.iou)}}
        return job, [rec], f"{time.perf_counter() - t0:.0f}s"
    sel = variants()[name]()
    if name.startswith("oracle_"):
        counts = np.stack([np.bincount(m[m < 11].ravel(), minlength=11)[:11] for m in masks]).astype(np.float64)
        counts = counts / 64.0   # pixels on the stride-8 grid
        key = {sub.pooled[k].tobytes(): k for k in range(len(rows))}
        type(sel).hidden = staticmethod(lambda emb: counts[[key[e.astype(np.float32).tobytes()] for e in emb]])
    res = simulate_segmentation(
        sub, masks, pte, test.masks, n_classes=11, ignore_index=11, model=model, strategies=[sel],
        budgets=[int(b) for b in args.budgets.split(",")], splits=1, pool_fraction=1.0,
        score_scale=args.score_scale, classes=CAMVID_CLASSES, random_state=split, class_iou=args.class_iou,
        reference={"miou": float("nan"), "n_masks": len(rows)}, progress=False)
    c = res.curves
    c["split"] = split
    c["strategy"] = name + ("+heldout" if args.class_iou == "heldout" else "")
    return job, c.to_dict("records"), f"{time.perf_counter() - t0:.0f}s"


def run_jobs(args, tag, n_train, t0):
    """Every (strategy, split) curve and every split's reference, on ``--workers`` processes; rows are appended
    to the CSVs as jobs finish, so a stopped run keeps what it measured."""
    import multiprocessing as mp

    splits = list(range(args.first_split, args.first_split + args.splits))
    names = args.strategies.split(",")
    jobs = [("ref", s) for s in splits if not args.reference] + [(n, s) for s in splits for n in names]
    if args.jobs:
        jobs = [(j.split(":")[0], int(j.split(":")[1])) for j in args.jobs.split(",")]
        names = sorted({n for n, _ in jobs})
        args.reference = None
    unknown = set(names) - set(variants())
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {', '.join(variants())}")
    if args.deadline is not None:
        args.deadline = time.time() + args.deadline
    files = {"ref": OUT / f"segmentation_reference{tag}.csv", "curve": OUT / f"segmentation_curves{tag}.csv"}
    if args.reference:
        ref = json.loads(args.reference)
        pd.DataFrame([{"split": s, **ref} for s in splits]).to_csv(
            files["ref"], mode="a", header=not files["ref"].exists(), index=False)

    def write(job, rows, msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {job[0]} split {job[1]}: {msg}"
              + ("" if not rows else "  " + " ".join(f"{r['n_masks']}:{r['miou']:.1f}" for r in rows)), flush=True)
        if rows:
            f = files["ref" if job[0] == "ref" else "curve"]
            pd.DataFrame(rows).to_csv(f, mode="a", header=not f.exists(), index=False)

    if args.workers <= 1:
        _worker_init(args)
        for j in jobs:
            write(*_job(j))
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_worker_init, initargs=(args,)) as pool:
        for out in pool.imap_unordered(_job, jobs):
            write(*out)


def embedder(args):
    """MobileNet V1 dense features at the stages of ``--out-indices`` (of images enlarged ``--input-scale`` times)."""
    return mobilenet_v1(args.weights, progress=False, precision=args.embed_precision,
                        device=getattr(args, "embed_device", "auto"),
                        out_indices=tuple(int(i) for i in str(args.out_indices).split(",")),
                        input_scale=getattr(args, "input_scale", 1))


def study_features(args, train, test):
    """The run's projected train/test features: ``--input-scale``'s maps and, with ``--fine-x2``, in front
    of them the stride-8 map of the twice-enlarged image (stride 4 of the masks) as the decoder's fine path."""
    from alwidgets.segmentation.features import DenseFeatures

    ptr, pte = projected(embedder(args), train, test, args.components)
    if getattr(args, "fine_x2", False):
        x2 = argparse.Namespace(**{**vars(args), "input_scale": 2})
        fine_tr, fine_te = projected(embedder(x2), train, test, args.components)
        ptr, pte = (DenseFeatures([fine.maps[0], *f.maps], (fine.strides[0], *f.strides), f.pooled, f.image_size,
                                  f.ids, f.errors) for fine, f in ((fine_tr, ptr), (fine_te, pte)))
    return ptr, pte


def projected(emb, train, test, components="none"):
    """Train/test features: the raw maps (``components="none"``), or projected by a PCA fitted on the train
    pool, cached beside the dense cache (the projection of 600 images takes minutes on a busy 2-core
    machine; every run reuses it)."""
    from alwidgets.segmentation.features import DenseFeatures

    ftr, fte = emb.embed(train.pool), emb.embed(test.pool)
    if str(components).lower() == "none":   # memory-mapped
        return ftr, fte
    components = tuple(int(c) for c in str(components).split(","))
    if len(components) != len(ftr.maps):
        raise SystemExit(f"--components has {len(components)} entries for {len(ftr.maps)} maps (strides {ftr.strides})")
    name = "-".join(map(str, components)) + ("" if ftr.strides == (8, 16, 32) else "_s" + "-".join(map(str, ftr.strides)))
    name += "" if emb.input_scale == 1 else f"_x{emb.input_scale}"
    cache = Path.home() / ".cache" / "alwidgets" / f"segmentation_study_pca{name}.npz"
    if cache.is_file():
        z = np.load(cache)
        n = len(ftr.maps)
        ptr = DenseFeatures([z[f"tr{k}"] for k in range(n)], ftr.strides, ftr.pooled, ftr.image_size, ftr.ids, {})
        pte = DenseFeatures([z[f"te{k}"] for k in range(n)], fte.strides, fte.pooled, fte.image_size, fte.ids, {})
        return ptr, pte
    proj = PCAProjection(ftr, components, random_state=0)
    ptr, pte = proj.transform(ftr), proj.transform(fte)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"tr{k}": m for k, m in enumerate(ptr.maps)}, **{f"te{k}": m for k, m in enumerate(pte.maps)})
    tmp.replace(cache)
    return ptr, pte


def timing(ptr, train, steps: int = 30):
    """CPU seconds of a training step (process time, so other jobs on the machine do not count) and
    the refit each schedule implies; a step costs the same whatever the number of masks."""
    order = np.random.default_rng(0).permutation(len(train))
    schedule = DenseDecoder(11, 11, n_components=None)
    for n in (20, 80, 100, 367):
        masks = [None] * len(train)
        for i in order[:n]:
            masks[i] = train.masks[i]
        m = DenseDecoder(11, 11, n_components=None, min_steps=steps, max_steps=steps, random_state=0).fit(ptr, masks)
        t = time.process_time()
        m.predict_proba(ptr, order[:16])
        per = m.fit_cpu_seconds_ / steps
        print(json.dumps(dict(n=n, cpu_per_step=round(per, 3), steps_cold=schedule.n_steps_for(n),
                              steps_warm=schedule.n_steps_for(n, True),
                              refit_cold_cpu_s=round(schedule.n_steps_for(n) * per, 1),
                              refit_warm_cpu_s=round(schedule.n_steps_for(n, True) * per, 1),
                              predict_cpu_s_per_image=round((time.process_time() - t) / 16, 3))), flush=True)


def curve(ptr, pte, train, test, counts, args):
    """mIoU of one warm-started DenseDecoder as random masks are added (the "keeps learning" target)."""
    rare = [CAMVID_CLASSES.index(c) for c in CAMVID_RARE]
    rows = []
    for seed in range(args.first_split, args.first_split + args.splits):
        order = np.random.default_rng(seed).permutation(len(train))
        model = (DenseLinearProbe(11, 11, random_state=seed) if args.model == "probe"
                 else DenseDecoder(11, 11, n_components=None, random_state=seed, **json.loads(args.decoder_kwargs)))
        for n in counts:
            masks = [None] * len(train)
            for i in order[:n]:
                masks[i] = train.masks[i]
            model.fit(ptr, masks)
            s = model.score(pte, test.masks, scale=args.score_scale)
            rows.append({"seed": seed, "n_masks": n, "miou": 100 * s.miou, "rare4": 100 * s.mean_iou_of(rare),
                         "pixel_accuracy": 100 * s.pixel_accuracy, "fit_seconds": model.fit_seconds_,
                         "steps": getattr(model, "n_steps_", None), "warm": getattr(model, "warm_started_", None),
                         **{f"iou_{c}": 100 * v for c, v in zip(CAMVID_CLASSES, s.iou)}})
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}),
                  flush=True)
    tag = f"_{args.tag}" if args.tag else ""
    name = "segmentation_curve" + ("_probe" if args.model == "probe" else "")
    pd.DataFrame(rows).to_csv(OUT / f"{name}{tag}.csv", index=False)


def _md(df: pd.DataFrame, index: bool = True) -> str:
    """A DataFrame as a Markdown table (no tabulate dependency)."""
    d = df.reset_index() if index else df
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = [" | ".join(map(str, d.columns)), " | ".join("---" for _ in d.columns)]
    rows += [" | ".join(fmt(v) for v in r) for r in d.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def _paired(curves, col):
    """``strategy x budget`` strings "mean ± se" of (strategy - random) on the splits both ran."""
    rnd = curves[curves["strategy"] == "random"].set_index(["split", "n_masks"])[col]
    out = {}
    for strat, g in curves.groupby("strategy", sort=False):
        d = (g.set_index(["split", "n_masks"])[col] - rnd).dropna().groupby(level="n_masks")
        out[strat] = {b: f"{m:+.1f} ± {se:.1f}" for b, m, se in
                      zip(d.mean().index, d.mean(), d.std(ddof=1).fillna(0) / np.sqrt(d.count()))}
    return pd.DataFrame(out).T


def report(curves, refs, out, tag, args):
    """Summary table, ratios against random of the same run, and the targets of issue 15."""
    rare = CAMVID_RARE
    at = 20 if 20 in set(curves["n_masks"]) else int(sorted(set(curves["n_masks"]))[0])
    table = summarize(curves, refs, rare=rare, at=at)
    table.to_csv(out / f"segmentation_summary{tag}.csv", index=False)
    mean = curves.groupby(["strategy", "n_masks"])["miou"].mean().unstack()
    rnd = mean.loc["random"] if "random" in mean.index else None
    lines = [f"# Segmentation study (CamVid test, MobileNet V1 dense features, DenseDecoder){' ' + tag if tag else ''}",
             "", f"splits: {sorted(set(curves['split']))}; full-pool mIoU per split: "
             + ", ".join(f"{r.miou:.1f} ({int(r.n_masks)} masks)" for r in refs.itertuples()),
             f"score scale: {args.score_scale} (1 = every test pixel)", "",
             "## mIoU (mean over splits) by masks", "", _md(mean), ""]
    if rnd is not None:
        lines += ["## Difference to random (same run), mIoU points", "", _md(mean - rnd), "",
                  "## Paired difference to random, mean ± standard error over splits (mIoU points)", "",
                  _md(_paired(curves, "miou")), "",
                  "## Rare-4 mean IoU (Pole, SignSymbol, Pedestrian, Bicyclist) by masks", "",
                  _md(curves.assign(rare4=curves[[f"iou_{c}" for c in rare]].mean(axis=1))
                      .groupby(["strategy", "n_masks"])["rare4"].mean().unstack()), "",
                  "## Rare-4 paired difference to random, mean ± standard error", "",
                  _md(_paired(curves.assign(rare4=curves[[f"iou_{c}" for c in rare]].mean(axis=1)), "rare4")), ""]
    lines += ["## Summary", "", _md(table, index=False), ""]
    if rnd is not None and "masks_to_95%" in table:
        r95 = table.set_index("strategy")["masks_to_95%"]
        lines += ["## Masks to 95 % of full-pool mIoU, ratio to random", ""]
        reached = table.set_index("strategy")["reached_95%"]
        for s, v in r95.items():
            ratio = f", {v / r95['random']:.2f}x random" if np.isfinite(v) and np.isfinite(r95["random"]) else ""
            lines.append(f"- {s}: {v:.1f} masks{ratio} (reached in {reached[s]} splits within the budgets)")
        lines.append("")
    (out / f"segmentation_study{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
