"""How far embeddings move under a cheaper setting: reduced-scale JPEG decoding, fp16/bf16, GPU decoding.

Embeds the CIFAR-10 subset (``--per-class`` train images per class + the whole test split) once
with ``--reference`` settings and once per ``--variant``, and prints for each variant against the
reference: the mean per-row relative error ``|x - r| / |r|``, the mean and minimum cosine, and the
linear-probe test accuracy (standardised features, ``LogisticRegression(C=0.1)``, as in
tests/test_embed_real.py) of both.

    # JPEG draft decoding vs full decoding, on photo-sized JPEGs made from the subset (CPU)
    python benchmarks/embed_precision.py --upscale 2000x1500 \\
        --reference decode=pil-full --variant decode=pil
    # precision on a GPU, against CPU fp32 (as in issue 16)
    python benchmarks/embed_precision.py --reference device=cpu,precision=fp32,decode=pil-full \\
        --variant device=cuda,precision=fp32 --variant device=cuda,precision=fp16 \\
        --variant device=cuda,precision=bf16

Settings are ``key=value`` pairs of TimmEmbedder arguments, comma-separated. ``--model`` other
than mobilenetv1_100 uses random weights (``pretrained=False``: no network on a device machine):
the cosine then still measures the precision loss, the probe accuracy means little (the script
says so).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"
CIFAR = SHARED / "data" / "cifar10-subset"
# the exact timm arguments from ../shared/weights/README.md
OVERLAY = dict(num_classes=1000, label_offset=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               interpolation="bilinear", crop_pct=0.875, input_size=(3, 224, 224),
               test_input_size=(3, 224, 224), test_crop_pct=0.875)


def parse_setting(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise SystemExit(f"setting {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = int(v) if v.strip().isdigit() else v.strip()
    return out


def pools(folder: Path, per_class: int):
    from alwidgets import Pool

    train = Pool.from_folder(folder / "train")
    keep = np.concatenate([np.flatnonzero(train.targets == c)[:per_class] for c in range(len(train.classes))])
    return train.subset(keep), Pool.from_folder(folder / "test")


def embedder(model: str, setting: dict):
    from alwidgets.embed import TimmEmbedder

    kw = dict(cache_dir=False, progress=False)
    if model == "mobilenetv1_100":
        kw.update(checkpoint=WEIGHTS, pad_type="same", pretrained_cfg_overlay=OVERLAY)
    else:
        kw.update(pretrained=False)
    kw.update(setting)
    return TimmEmbedder(model, **kw)


def probe(Xtr, ytr, Xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return float(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(Xtr, ytr).score(Xte, yte))


def compare(X, R) -> dict:
    X, R = X.astype(np.float64), R.astype(np.float64)
    nr = np.linalg.norm(R, axis=1)
    ok = nr > 0
    rel = np.linalg.norm(X - R, axis=1)[ok] / nr[ok]
    cos = (X * R).sum(1)[ok] / (np.linalg.norm(X, axis=1)[ok] * nr[ok])
    return dict(rel_error=float(rel.mean()), mean_cos=float(cos.mean()), min_cos=float(cos.min()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", default=str(CIFAR))
    ap.add_argument("--model", default="mobilenetv1_100")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--upscale", default=None, help="WxH: use photo-sized JPEGs made from the subset")
    ap.add_argument("--jpeg-dir", default=None, help="default /tmp/alwidgets-cifar-WxH")
    ap.add_argument("--reference", default="device=cpu,precision=fp32,decode=pil-full")
    ap.add_argument("--variant", action="append", default=[], help="repeatable; key=value,...")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    folder = Path(args.cifar)
    if not folder.is_dir():
        raise SystemExit(f"CIFAR subset not found at {folder} (../shared beside the repo)")
    if args.upscale:
        sys.path.insert(0, str(HERE))
        from embed_throughput import make_jpegs

        w, h = (int(v) for v in args.upscale.lower().split("x"))
        out = Path(args.jpeg_dir or f"/tmp/alwidgets-cifar-{w}x{h}")
        t = time.perf_counter()
        train, test = pools(folder, args.per_class)
        make_jpegs(train, (w, h), out / "train")
        make_jpegs(test, (w, h), out / "test")
        folder = out
        print(f"JPEGs {w}x{h} (quality 90) in {out} ({time.perf_counter() - t:.0f} s)", flush=True)
    train, test = pools(folder, args.per_class)
    settings = [parse_setting(args.reference)] + [parse_setting(v) for v in args.variant]
    results = []
    model = None
    for k, setting in enumerate(settings):
        emb = embedder(args.model, setting)
        if model is not None:
            emb._model = model  # same weights throughout (random ones too)
        model = emb.model_
        t = time.perf_counter()
        Xtr, Xte = emb.embed(train), emb.embed(test)
        secs = time.perf_counter() - t
        row = dict(setting=setting, seconds=round(secs, 1), probe=probe(Xtr, train.targets, Xte, test.targets))
        if k == 0:
            ref = np.concatenate([Xtr, Xte])
        else:
            row.update(compare(np.concatenate([Xtr, Xte]), ref))
        results.append(row)
        print(json.dumps(row), flush=True)
    weights = "checkpoint" if args.model == "mobilenetv1_100" else "RANDOM weights: probe accuracy means little"
    print(f"\n{args.model} ({weights}); {len(train)} train + {len(test)} test images"
          f"{' at ' + args.upscale if args.upscale else ''}; reference {args.reference}")
    print("| setting | rel. error | mean cosine | min cosine | probe acc. | seconds |")
    print("|---|---|---|---|---|---|")
    for row in results:
        s = ",".join(f"{k}={v}" for k, v in row["setting"].items())
        if "min_cos" in row:
            print(f"| {s} | {100 * row['rel_error']:.2f} % | {row['mean_cos']:.5f} | {row['min_cos']:.5f} | "
                  f"{row['probe']:.3f} | {row['seconds']} |")
        else:
            print(f"| {s} (reference) | | | | {row['probe']:.3f} | {row['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
