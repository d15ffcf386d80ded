"""Where the ``decode="device"`` input pipeline spends its time, and how many I/O threads feed the GPU best.

On one JPEG folder (the 500x375 set of ``benchmarks/gpu_check.sh``), measures each stage alone:
reading the files (threads), libjpeg-turbo decoding on the CPU (threads),
``torchvision.io.decode_jpeg`` on the device in batches (pageable and page-locked input), the
batched resize/crop; then, for each number of I/O threads, (d) the pipeline alone and (b)
``TimmEmbedder.embed`` with the model, against (a) the bare forward measured in the same process.
Prints the figures and the best thread count for (b) per model, and writes them to ``--json``.

    python benchmarks/embed_pipeline_sweep.py --folder /tmp/alwidgets-gpu-check/jpeg500 \\
        --models resnet50,mobilenetv1_100 --workers 8,15

Runs on the CPU too (``--device cpu``), where the "device" decoder is libjpeg-turbo as well.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import _sync, bare_forward  # noqa: E402


def _rate(fn, n, device, repeats=2):
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = max(best, n / (time.perf_counter() - t))
    return best


def read_all(paths, threads):
    def read(p):
        with open(p, "rb", buffering=0) as f:
            return f.read()

    if threads == 1:
        return [read(p) for p in paths]
    step = -(-len(paths) // (4 * threads))  # a few tasks per thread: one future per file costs more than the read
    with ThreadPoolExecutor(threads) as ex:
        parts = ex.map(lambda k: [read(p) for p in paths[k:k + step]], range(0, len(paths), step))
        return [d for part in parts for d in part]


def stages(paths, device, tf, size, threads, batch):
    from torchvision.io import ImageReadMode, decode_jpeg

    from alwidgets.embed.preprocess import resize_crop

    out = {}
    datas = read_all(paths, 8)
    n = len(paths)
    for t in threads:
        out[f"read_{t}_threads"] = _rate(lambda: read_all(paths, t), n, torch.device("cpu"))
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

    def cpu_decode(t):
        def one(x):
            return decode_jpeg(x, mode=ImageReadMode.RGB)

        step = -(-len(tensors) // (4 * t))
        with ThreadPoolExecutor(t) as ex:
            list(ex.map(lambda k: [one(x) for x in tensors[k:k + step]], range(0, len(tensors), step)))

    for t in [t for t in threads if t >= 4]:  # one thread would take seconds: 4 give the rate per core
        out[f"cpu_decode_{t}_threads"] = _rate(lambda: cpu_decode(t), n, torch.device("cpu"))
    if device.type == "cuda":
        pinned = [x.pin_memory() for x in tensors]
        for name, src in (("pageable", tensors), ("pinned", pinned)):
            def dev_decode(src=src):
                for k in range(0, n, batch):
                    decode_jpeg(src[k:k + batch], mode=ImageReadMode.RGB, device=device)

            dev_decode()  # nvJPEG start-up
            out[f"device_decode_{name}"] = _rate(dev_decode, n, device)
        imgs = decode_jpeg(tensors[:batch], mode=ImageReadMode.RGB, device=device)
    else:
        imgs = [decode_jpeg(x, mode=ImageReadMode.RGB) for x in tensors[:batch]]
    resize_crop(tf, imgs, size)
    out["resize_crop"] = _rate(lambda: resize_crop(tf, imgs, size), len(imgs), device, repeats=3)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--models", default="resnet50,mobilenetv1_100")
    ap.add_argument("--checkpoint", default=None, help="weights for mobilenetv1_100 (else random weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--workers", default="8,15")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from alwidgets import Pool
    from alwidgets.embed import TimmEmbedder
    from alwidgets.embed.device import DeviceBatches
    from alwidgets.embed.timm import _cores

    pool = Pool.from_folder(args.folder)
    pool = pool.subset(range(min(args.limit, len(pool))))
    overlay = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=0.875)
    report = dict(images=len(pool), cores=_cores(), models={})
    for m in args.models.split(","):
        ckpt = args.checkpoint if m == "mobilenetv1_100" else None
        kw = dict(pad_type="same") if m == "mobilenetv1_100" else {}
        emb = TimmEmbedder(m, pretrained=ckpt is not None, checkpoint=ckpt, device=args.device, decode="device",
                           cache_dir=False, progress=False, pretrained_cfg_overlay=overlay, **kw)
        rt = emb._runtime()
        device, bs = rt.device, rt.batch_size
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{_cores()}"
        report["device"] = name
        if "stages" not in report:
            t = time.perf_counter()
            report["stages"] = stages(pool.paths, device, rt.tf, rt.size, sorted({1, 4, 8, _cores()}), bs)
            print(f"stages on {name} ({time.perf_counter() - t:.0f} s), images/s:", flush=True)
            for k, v in report["stages"].items():
                print(f"  {k:28s} {v:10,.0f}", flush=True)
        a = bare_forward(rt.model, device, bs, rt.size, len(pool), True, rt.precision)
        emb.embed(pool.subset(range(min(len(pool), bs + 1))))  # warm-up: cuDNN, nvJPEG
        rows = []
        batches = [list(range(k, min(k + bs, len(pool)))) for k in range(0, len(pool), bs)]
        for workers in [int(w) for w in args.workers.split(",")]:
            emb.num_workers = workers

            def pipe():
                src = DeviceBatches(pool, rt.tf, rt.size, batches, device, io_workers=workers)
                for _ in src:
                    pass
                return src.counts

            counts = pipe()
            d = _rate(pipe, len(pool), device, args.repeats)
            b = _rate(lambda: emb.embed(pool), len(pool), device, args.repeats)
            rows.append(dict(workers=workers, d=d, b=b, ba=b / a, counts=dict(counts)))
            print(f"  {m}: workers={workers:2d}  (d) {d:8,.0f}  (b) {b:8,.0f}  b/a {b / a:.2f}  {dict(counts)}",
                  flush=True)
        best = max(rows, key=lambda r: r["b"])
        report["models"][m] = dict(a=a, batch=bs, precision=rt.precision, rows=rows, best=best)
        print(f"BEST {m}: workers={best['workers']} (b) {best['b']:,.0f} img/s, (a) {a:,.0f}, b/a {best['ba']:.2f}",
              flush=True)
        if args.json:  # after each model: a later failure keeps what was measured
            Path(args.json).write_text(json.dumps(report, indent=1))
        del emb, rt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
