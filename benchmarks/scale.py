"""Pools that outgrow one machine (issue 17): Ray vs local embedding, selection on 10M memory-mapped rows.

(b) Selection: writes a synthetic ``--n`` x ``--d`` float16 pool (200 Gaussian blobs) once as
memory-mapped ``.npy`` shards of ``--shard-rows`` rows under ``--dir``, then runs each strategy
(coverage, k-center, margin, uncertainty + diversity; batch ``--batch``) in its own subprocess on
``open_embeddings(shards)`` with ``--labelled`` random labelled items, and prints a table:
seconds for the one-off chunked validation pass (``check_embeddings``: what ``Session`` does once
when it is built), seconds of ``select`` itself, and the subprocess's peak RSS (``os.wait4``;
file-backed pages of the memory maps count too). Margin and uncertainty + diversity get float32
probabilities for ``--classes`` classes, generated in the subprocess (included in its RSS, not
in its seconds). Targets (issue 17, 2 cores, 24 GB): coverage and k-center <= 60 s, margin <= 5 s,
peak RSS <= 8 GB, at n = 10,000,000, d = 256.

(a) Ray: embeds ``--limit`` images of the CIFAR-10 subset with TimmEmbedder locally (first a cold
run, which also imports timm) and with ``RayExecutor`` on a 2-node Ray cluster started on
127.0.0.1 by :func:`alwidgets.embed.ray.local_cluster` (head + worker, ``ray start``, 1 CPU
each), ``--ray-repeats`` rounds of one warm local run then one Ray run per ``--ray-stages``
setting (interleaved, so a change of the shared machine's load hits both), and prints wall time,
images/s, when the first batch came back, the ratio to the median warm local run and the largest
difference between the results. Runs only when Ray imports; otherwise it says it was not run.

    nice python benchmarks/scale.py                       # both, 10M x 256
    nice python benchmarks/scale.py --n 1000000 --skip-ray
    nice python benchmarks/scale.py --skip-select --limit 256

The machine load (``uptime``) is printed beside the figures: on a shared machine they vary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # this checkout's alwidgets, not another installed copy
STRATEGIES = ("coverage", "kcenter", "margin", "uncertainty_diversity")
TARGETS = {"coverage": 60.0, "kcenter": 60.0, "margin": 5.0}


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------- (b) selection
def write_shards(directory: Path, n: int, d: int, shard_rows: int, seed: int = 0) -> list[str]:
    """Blobs in float16, written chunk by chunk through ``open_memmap`` (never the whole array in RAM)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / "meta.json"
    paths = [str(directory / f"emb-{k:04d}.npy") for k in range(-(-n // shard_rows))]
    if meta.exists() and json.loads(meta.read_text()) == {"n": n, "d": d, "shard_rows": shard_rows, "seed": seed}:
        return paths
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d)).astype(np.float32) * 2.0
    for k, p in enumerate(paths):
        rows = min(shard_rows, n - k * shard_rows)
        out = np.lib.format.open_memmap(p, mode="w+", dtype=np.float16, shape=(rows, d))
        for s in range(0, rows, 131072):
            e = min(s + 131072, rows)
            block = rng.standard_normal((e - s, d), dtype=np.float32)
            block += centres[rng.integers(0, len(centres), e - s)]
            out[s:e] = block
        out.flush()
        del out
    meta.write_text(json.dumps({"n": n, "d": d, "shard_rows": shard_rows, "seed": seed}))
    return paths


def worker(args) -> None:
    """One strategy in this process; prints a JSON line."""
    from alwidgets._validation import check_embeddings
    from alwidgets.embeddings import open_embeddings
    from alwidgets.select import make_selector

    X = open_embeddings(sorted(str(p) for p in Path(args.dir).glob("emb-*.npy")))
    n = len(X)
    rng = np.random.default_rng(1)
    labels = np.full(n, -1, np.int64)
    lab = rng.choice(n, args.labelled, replace=False)
    labels[lab] = rng.integers(0, args.classes, len(lab))
    probs = None
    sel = make_selector(args.worker)
    if "probs" in sel.requires:
        probs = np.empty((n, args.classes), np.float32)
        for s in range(0, n, 1 << 20):
            z = rng.standard_normal((min(1 << 20, n - s), args.classes), dtype=np.float32) * 2.0
            z = np.exp(z - z.max(axis=1, keepdims=True))
            probs[s:s + len(z)] = z / z.sum(axis=1, keepdims=True)
    t0 = time.perf_counter()
    if "embeddings" in sel.requires:
        check_embeddings(X, n_items=n)
    t1 = time.perf_counter()
    out = sel.select(args.batch, labels=labels, embeddings=X if "embeddings" in sel.requires else None,
                     probs=probs, random_state=0)
    t2 = time.perf_counter()
    assert len(out) == args.batch and len(set(out.indices.tolist())) == args.batch
    print(json.dumps({"check_s": t1 - t0, "select_s": t2 - t1, "picked": len(out),
                      "approximate": out.info.get("approximate")}))


def run_selection(args) -> list[dict]:
    directory = Path(args.dir) if args.dir else Path(tempfile.gettempdir()) / f"alwidgets-scale-{args.n}x{args.d}"
    need = args.n * args.d * 2
    free = shutil.disk_usage(directory.parent if not directory.exists() else directory).free
    if not directory.exists() and need > free - (2 << 30):
        raise SystemExit(f"{need / 2**30:.1f} GiB needed under {directory.parent}, {free / 2**30:.1f} GiB free: "
                         "use --n smaller or --dir elsewhere")
    t = time.perf_counter()
    write_shards(directory, args.n, args.d, args.shard_rows)
    print(f"pool: {args.n:,} x {args.d} float16 in {-(-args.n // args.shard_rows)} shards under {directory} "
          f"({need / 2**30:.1f} GiB; ready in {time.perf_counter() - t:.0f} s)", flush=True)
    rows = []
    for name in args.strategies.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--dir", str(directory), "--batch", str(args.batch),
               "--labelled", str(args.labelled), "--classes", str(args.classes)]
        before = load()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        rss = usage.ru_maxrss / 2**20   # KiB -> GiB
        if proc.returncode != 0:
            print(f"{name}: FAILED (exit {proc.returncode})\n{err[-3000:]}", flush=True)
            rows.append({"strategy": name, "failed": True})
            continue
        res = json.loads(out.strip().splitlines()[-1])
        res.update(strategy=name, rss_gib=rss, load=f"{before} -> {load()}")
        rows.append(res)
        print(f"  {name}: check {res['check_s']:.1f} s, select {res['select_s']:.1f} s, peak RSS {rss:.2f} GiB "
              f"(load {res['load']})", flush=True)
    print(f"\nSelection on {args.n:,} x {args.d} float16 memory-mapped shards, batch {args.batch}, "
          f"{args.labelled} labelled ({os.cpu_count()} CPUs)")
    print(f"{'strategy':<24}{'check s':>9}{'select s':>10}{'total s':>9}{'target s':>10}{'peak RSS GiB':>14}"
          f"{'path':>14}   load (1/5/15 min)")
    for r in rows:
        if r.get("failed"):
            print(f"{r['strategy']:<24}{'failed':>9}")
            continue
        total = r["check_s"] + r["select_s"]
        target = TARGETS.get(r["strategy"])
        path = "ivf" if r["approximate"] else "exact"
        print(f"{r['strategy']:<24}{r['check_s']:>9.1f}{r['select_s']:>10.1f}{total:>9.1f}"
              f"{'-' if target is None else f'{target:.0f}':>10}{r['rss_gib']:>14.2f}{path:>14}   {r['load']}")
    if not args.keep and not args.dir:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def kcenter_radius(args) -> None:
    """Covering radius over the whole pool of k-center's picks: the IVF path vs the exact greedy on
    the labelled rows plus a uniform sample of ``approx_sample`` candidates (the earlier approximate
    path), for seeds 0 and 1. One full chunked pass per radius."""
    from alwidgets._validation import check_embeddings
    from alwidgets.embeddings import open_embeddings, take_rows
    from alwidgets.select import KCenterGreedy
    from alwidgets.select._approx import APPROX_SAMPLE
    from alwidgets.select._faiss import nearest_center
    from alwidgets.select.kcenter import farthest_first

    E = check_embeddings(open_embeddings(sorted(str(p) for p in Path(args.dir).glob("emb-*.npy"))))
    n = len(E)
    rng = np.random.default_rng(1)   # the labelled rows of the worker runs
    lab = np.sort(rng.choice(n, args.labelled, replace=False))
    labels = np.full(n, -1, np.int64)
    labels[lab] = 0

    def radius(centres):
        C = take_rows(E, centres)
        return float(np.sqrt(max(float(nearest_center(B, C)[1].max()) for _, B in E.iter_chunks())))

    print(f"\nk-center covering radius over all {n:,} rows ({args.batch} picks, {args.labelled} labelled)")
    for seed in (0, 1):
        t = time.perf_counter()
        ivf = KCenterGreedy().select(args.batch, labels=labels, embeddings=E, random_state=seed).indices
        t_ivf = time.perf_counter() - t
        r = np.random.default_rng(seed)
        free = np.setdiff1d(np.arange(n), lab)
        cs = np.sort(r.choice(free, min(APPROX_SAMPLE, len(free)), replace=False))
        rows = np.sort(np.concatenate([lab, cs]))
        t = time.perf_counter()
        idx, _ = farthest_first(take_rows(E, rows), args.batch, start=np.searchsorted(rows, lab),
                                candidates=np.searchsorted(rows, cs))
        t_smp = time.perf_counter() - t
        r_ivf, r_smp = radius(np.concatenate([lab, ivf])), radius(np.concatenate([lab, rows[idx]]))
        print(f"  seed {seed}: IVF {r_ivf:.3f} ({t_ivf:.1f} s), uniform sample {r_smp:.3f} ({t_smp:.1f} s): "
              f"{r_ivf / r_smp:.3f}x (load {load()})", flush=True)


# ---------------------------------------------------------------------------- (a) Ray
class _Timed:
    """Wraps an executor: records when each batch comes back (seconds since the run started)."""

    def __init__(self, inner):
        self.inner, self.name, self.times = inner, inner.name, []

    def prepare(self, embedder):
        return self.inner.prepare(embedder)

    def run(self, embedder, pool, chunks):
        t = time.perf_counter()
        for item in self.inner.run(embedder, pool, chunks):
            self.times.append(time.perf_counter() - t)
            yield item

    def __repr__(self):
        return repr(self.inner)


def run_ray(args) -> None:
    try:
        import ray  # noqa: F401

        from alwidgets.embed.ray import RayExecutor, local_cluster
    except ImportError as e:
        print(f"(a) Ray embedding: not run ({e}; pip install 'alwidgets[ray]')")
        return
    from alwidgets import Pool
    from alwidgets.embed import TimmEmbedder
    from alwidgets.embed.base import Executor

    folder = Path(args.cifar)
    if not folder.is_dir():
        print(f"(a) Ray embedding: not run (no CIFAR-10 subset at {folder})")
        return
    pool = Pool.from_folder(folder)
    pool = pool.subset(np.sort(np.random.default_rng(0).permutation(len(pool))[: args.limit]))
    ckpt = Path(args.checkpoint)
    kw = dict(checkpoint=str(ckpt), pad_type="same") if ckpt.is_file() else dict(pretrained=False)
    make = lambda: TimmEmbedder(args.model, progress=False, device="cpu", cache_dir=False, **kw)  # noqa: E731
    Executor.register(_Timed)   # a virtual subclass: the run loop accepts it as an executor
    n = len(pool)
    rows = []

    def timed(label, executor, load_before):
        t = time.perf_counter()
        X = make().embed(pool, executor=executor)
        wall = time.perf_counter() - t
        first = executor.times[0] if isinstance(executor, _Timed) and executor.times else float("nan")
        rows.append(dict(executor=label, wall=wall, first=first, load=f"{load_before} -> {load()}"))
        print(f"  {label}: {wall:.1f} s (first batch after {first:.1f} s; load {rows[-1]['load']})", flush=True)
        return X

    ref = timed("local (cold: imports timm, builds the model)", _Timed(get_local()), load())
    t = time.perf_counter()
    results = {}
    with local_cluster(nodes=(1, 1), object_store_mb=200) as cluster:
        print(f"  2-node cluster up in {time.perf_counter() - t:.0f} s at {cluster.address}", flush=True)
        # local and Ray runs interleaved, so a change of the machine's load hits both
        for k in range(args.ray_repeats):
            ref = timed("local", _Timed(get_local()), load())
            for stages in args.ray_stages.split(","):
                label = f"ray {stages}, 2 nodes x 1 CPU" + (" (first run)" if k == 0 else "")
                results[stages] = timed(label, _Timed(RayExecutor(stages=stages)), load())
    print(f"\n(a) Embedding {n} CIFAR-10 images, {args.model} "
          f"({'checkpoint' if ckpt.is_file() else 'random weights'}), CPU; {os.cpu_count()} CPUs")
    print(f"{'executor':<46}{'wall s':>8}{'img/s':>8}{'first batch s':>15}{'x local':>9}   load (1/5/15 min)")
    base = float(np.median([r["wall"] for r in rows if r["executor"] == "local"]))
    for r in rows:
        print(f"{r['executor']:<46}{r['wall']:>8.1f}{n / r['wall']:>8.1f}{r['first']:>15.1f}"
              f"{r['wall'] / base:>9.2f}   {r['load']}")
    print(f"x local: wall time over the median of the {args.ray_repeats} warm local runs ({base:.1f} s)")
    for stages, X in results.items():
        print(f"ray {stages} vs local: same shape {X.shape == ref.shape}, max |ray - local| = "
              f"{float(np.abs(X - ref).max()):.2e}")


def get_local():
    from alwidgets.embed.base import LocalExecutor

    return LocalExecutor()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="pool size for (b)")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--labelled", type=int, default=100, help="random labelled items in the pool")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--shard-rows", type=int, default=1_000_000)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--dir", help="shard folder (kept); default a temp folder, removed unless --keep")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip-select", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--kcenter-radius", action="store_true",
                    help="also compare k-center's covering radius over the whole pool, IVF vs uniform sample")
    ap.add_argument("--cifar", default=str(REPO.parent / "shared/data/cifar10-subset/test"))
    ap.add_argument("--limit", type=int, default=1000, help="CIFAR images for (a) (the test split has 1,000)")
    ap.add_argument("--ray-stages", default="fused,two", help="RayExecutor stages to time, comma-separated")
    ap.add_argument("--ray-repeats", type=int, default=2, help="runs per stages setting (the first is cold)")
    ap.add_argument("--model", default="mobilenetv1_100")
    ap.add_argument("--checkpoint", default=str(REPO.parent / "shared/weights/mobilenetv1_100.coral_in1k.safetensors"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"uptime load average (1/5/15 min): {load()}; {os.cpu_count()} CPUs", flush=True)
    if not args.skip_select:
        if args.kcenter_radius and not args.dir:   # the radius check reads the pool again: keep it
            args.dir = str(Path(tempfile.gettempdir()) / f"alwidgets-scale-{args.n}x{args.d}")
        run_selection(args)
        if args.kcenter_radius:
            kcenter_radius(args)
    if not args.skip_ray:
        run_ray(args)


if __name__ == "__main__":
    main()
