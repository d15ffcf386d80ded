"""Images/s of TimmEmbedder against the model's own limit and a plain torchvision loop.

On the same JPEG folder, measures
  (a) the bare model forward on ready tensors (same batch size, no data loading): the limit;
  (b) ``TimmEmbedder(...).embed(pool)`` with the cache off;
  (c) the loop users usually write: ``torchvision.datasets.ImageFolder`` with timm's eval
      transform, a ``DataLoader`` (``--baseline-workers``, default 2) and ``model(x)`` under
      ``torch.no_grad()`` in fp32, contiguous memory;
and (d) the ``decode="device"`` input pipeline alone (read, decode, resize; no model), and
prints the ratios b/a and b/c. Each embedder makes one warm-up call first (the process's one-off
CUDA/nvJPEG/cuDNN start-up, printed), as (a) runs one forward before its clock starts. The three are run ``--repeats`` times, interleaved, because
other jobs share the machine: it prints each round, the best figure of each, and the median over
rounds of the per-round ratios (the three runs of a round see about the same load).

``--decode pil,pil-full`` runs (b) once per decoding mode in each round (b1, b2, ...), so a new
decoder and today's are compared in the same process under the same load. ``--upscale 2000x1500``
first turns the folder into photo-sized JPEGs (bicubic, quality 90, cached in ``--jpeg-dir``),
the way the CPU and GPU figures in docs/benchmarks.md were made from the CIFAR-10 subset.

    python benchmarks/embed_throughput.py --folder ../shared/data/cifar10-subset/test \\
        --model mobilenetv1_100 --checkpoint ../shared/weights/mobilenetv1_100.coral_in1k.safetensors \\
        --model-kwargs '{"pad_type": "same"}' --limit 512 --upscale 2000x1500 --decode pil,pil-full

Without ``--checkpoint`` the model has random weights (``pretrained=False``): fine for speed,
and the script says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def bare_forward(model, device, batch_size, size, n_images, channels_last, precision):
    x = torch.randn(batch_size, 3, *size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
           if precision != "fp32" else torch.autocast(device.type, enabled=False))
    with torch.inference_mode(), ctx:
        model(x)  # warm-up
        _sync(device)
        t = time.perf_counter()
        done = 0
        while done < n_images:
            model(x)
            done += batch_size
        _sync(device)
    return done / (time.perf_counter() - t)


def embedder_run(emb, pool, device):
    _sync(device)
    t = time.perf_counter()
    X = emb.embed(pool)
    _sync(device)
    assert X.shape[0] == len(pool)
    return len(pool) / (time.perf_counter() - t)


def pipeline_only(emb, pool, device):
    """Images/s of the ``decode="device"`` input pipeline alone (read, decode, resize/crop; no model)."""
    from alwidgets.embed.device import DeviceBatches

    rt = emb._runtime()
    bs = rt.batch_size
    batches = [list(range(k, min(k + bs, len(pool)))) for k in range(0, len(pool), bs)]
    _sync(device)
    t = time.perf_counter()
    n = 0
    for x, rows, _ in DeviceBatches(pool, rt.tf, rt.size, batches, device, io_workers=max(1, emb._num_workers(device))):
        n += len(rows)
    _sync(device)
    return n / (time.perf_counter() - t)


def plain_loop(model, folder, cfg, batch_size, workers, device, limit):
    import timm.data
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    tf = timm.data.create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    ds = ImageFolder(folder, transform=tf)
    if limit:
        ds = Subset(ds, range(min(limit, len(ds))))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    model = model.to(memory_format=torch.contiguous_format)
    _sync(device)
    t = time.perf_counter()
    n = 0
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device)).cpu()
            n += len(x)
    _sync(device)
    return n / (time.perf_counter() - t)


def make_jpegs(pool, size, out, quality=90):
    """Write the images of ``pool`` under ``out`` (same relative ids, ``.jpg``) as ``size`` (w, h)
    JPEGs, upscaled bicubic, at ``quality``; kept when a previous call completed them."""
    from pathlib import Path

    from PIL import Image

    out = Path(out)
    done = out / f".complete-{len(pool)}"
    if done.is_file():
        return out
    for i in range(len(pool)):
        dest = out / Path(pool.ids[i]).with_suffix(".jpg")
        dest.parent.mkdir(parents=True, exist_ok=True)
        pool.image(i).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dest, "JPEG", quality=quality)
    done.write_text("")
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="JPEG folder (class sub-folders)")
    ap.add_argument("--model", default="mobilenetv1_100")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--model-kwargs", default="{}", help="JSON")
    ap.add_argument("--pretrained-cfg", default=None, help="JSON overlay; default mean/std 0.5, bilinear, crop 0.875")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--baseline-workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=512, help="images to use (0 = all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--decode", default="auto", help="comma-separated TimmEmbedder decode modes for (b)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--upscale", default=None, help="WxH: benchmark photo-sized JPEGs made from --folder")
    ap.add_argument("--jpeg-dir", default=None, help="where --upscale writes (default /tmp/alwidgets-jpeg-WxH)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.upscale:
        w, h = (int(v) for v in args.upscale.lower().split("x"))
        t = time.perf_counter()
        from alwidgets import Pool

        src = Pool.from_folder(args.folder)
        src = src.subset(range(min(args.limit, len(src)))) if args.limit else src
        args.folder = str(make_jpegs(src, (w, h), args.jpeg_dir or f"/tmp/alwidgets-jpeg-{w}x{h}"))
        print(f"JPEGs {w}x{h} (quality 90) in {args.folder} ({time.perf_counter() - t:.0f} s)", flush=True)

    from alwidgets import Pool
    from alwidgets.embed import TimmEmbedder
    from alwidgets.embed.timm import _channels_last_helps, _cores

    overlay = json.loads(args.pretrained_cfg) if args.pretrained_cfg else dict(
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=0.875)
    pool = Pool.from_folder(args.folder)
    if args.limit:
        pool = pool.subset(range(min(args.limit, len(pool))))
    decodes = args.decode.split(",")
    embs = [TimmEmbedder(args.model, pretrained=args.checkpoint is not None, checkpoint=args.checkpoint,
                         device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                         precision=args.precision, decode=d, cache_dir=False, progress=False,
                         pretrained_cfg_overlay=overlay, **json.loads(args.model_kwargs)) for d in decodes]
    emb = embs[0]
    for e in embs[1:]:
        e._model = emb.model_  # one model, built once
    device = emb._device()
    precision = emb._precision(device)
    bs = emb._batch_size(device)
    cfg = emb.data_config()
    size = tuple(cfg["input_size"][1:])
    model = emb.model_.to(device)
    channels_last = device.type == "cuda" or _channels_last_helps(model)
    if device.type == "cpu":
        torch.set_num_threads(_cores())  # as TimmEmbedder does on the CPU
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{_cores()}"
    weights = "checkpoint" if args.checkpoint else "random weights (pretrained=False; speed only)"
    print(f"device={device} ({device_name}) precision={precision} batch={bs} workers={emb._num_workers(device)} "
          f"threads={torch.get_num_threads()} images={len(pool)} input={size} model={args.model} {weights} "
          f"baseline_workers={args.baseline_workers}", flush=True)
    # one embed call before the rounds, as (a) runs one forward before its clock starts: the process's
    # one-off costs (CUDA context, nvJPEG handle, cuDNN autotuning of the batch shape) are printed, and
    # "first round / later rounds" then measures what every embed call pays (worker start-up, ...)
    warm = []
    for e in embs:
        _sync(device)
        t = time.perf_counter()
        e.embed(pool.subset(range(min(len(pool), bs + 1))))
        _sync(device)
        warm.append(time.perf_counter() - t)
    print("warm-up embed call (" + ", ".join(f"decode={d}: {w:.2f} s" for d, w in zip(decodes, warm))
          + f"; {min(len(pool), bs + 1)} images: the process's one-off start-up)", flush=True)
    names = [f"b{k + 1}" if len(embs) > 1 else "b" for k in range(len(embs))]
    a, bs_, c, d_ = [], [[] for _ in embs], [], []
    pipe = next((e for e, d in zip(embs, decodes) if e._decode(device) == "device"), None)
    for r in range(args.repeats):
        a.append(bare_forward(model, device, bs, size, len(pool), channels_last, precision))
        if pipe is not None:
            d_.append(pipeline_only(pipe, pool, device))
        for k, e in enumerate(embs):
            bs_[k].append(embedder_run(e, pool, device))
        c.append(plain_loop(model, args.folder, cfg, bs, args.baseline_workers, device, len(pool)))
        bees = "  ".join(f"({nm}) TimmEmbedder decode={d} {b[-1]:.1f}" for nm, d, b in zip(names, decodes, bs_))
        dee = f"  (d) device input pipeline alone {d_[-1]:.1f}" if d_ else ""
        print(f"  round {r}: (a) bare forward {a[-1]:.1f} img/s  {bees}  (c) ImageFolder+DataLoader {c[-1]:.1f} img/s"
              + dee, flush=True)
    for nm, d, b in zip(names, decodes, bs_):
        ba = np.median([y / x for x, y in zip(a, b)])
        bc = np.median([y / z for y, z in zip(b, c)])
        print(f"RESULT model={args.model} decode={d} ({nm}): best a={max(a):.1f} {nm}={max(b):.1f} c={max(c):.1f} img/s; "
              f"median per-round b/a={ba:.3f} b/c={bc:.3f}; first round / best of later rounds "
              f"{b[0] / max(b[1:] or b[:1]):.2f}", flush=True)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(dict(
            model=args.model, device=device_name, precision=precision, batch=bs, images=len(pool), weights=weights,
            workers=emb._num_workers(device),
            baseline_workers=args.baseline_workers, a=a, c=c, d=d_, warmup_s=dict(zip(decodes, warm)),
            b={d: b for d, b in zip(decodes, bs_)}), indent=1))
    for k in range(1, len(embs)):
        rel = np.median([y / x for x, y in zip(bs_[k], bs_[0])])
        print(f"median per-round {names[0]}/{names[k]} ({decodes[0]} vs {decodes[k]}) = {rel:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
