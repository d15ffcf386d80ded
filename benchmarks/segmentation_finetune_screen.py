"""Would fine-tuning the backbone let image-level selection matter more? A CPU screen on CamVid.

The decoder reads *frozen* MobileNet V1 features; even oracles that pick with the
hidden masks gained only +3.3 rare-4 IoU over random at 20 masks in the study
(``segmentation_study.py``, with the PCA projection of then), below issue 15's +5. This screen makes the
backbone's stages after stride 8 (strides 16 and 32, 3.2 of its 4.2 M
parameters) trainable, reading the cached stride-8 activations, with the same
decoder and schedule (``DenseDecoder``: crops, flips, class weights, 300 steps
at 20 masks; ImageNet's BatchNorm statistics kept), and compares on the same
picks of each split: 20 random masks, the rare-4 oracle's 20 (greedy on the
hidden masks' Pole/SignSymbol/Pedestrian/Bicyclist pixels) and, with ``--full``, all of the split's
masks (how much room fine-tuning adds). ``--modes``: ``frozen`` (the stages
frozen: the raw-map decoder) and ``finetune``.

Scored on the 233 test images at half resolution (``score(scale=2)``), as the study.

    nice -n 5 python benchmarks/segmentation_finetune_screen.py --splits 10,11 --full 10,11 --threads 2
    # appends a row per fit to benchmarks/results/segmentation_finetune_screen.csv (27 Nov: about 8 min per split with --full, 2 threads)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from alwidgets.segmentation import CAMVID_CLASSES, CAMVID_RARE, DenseDecoder, camvid  # noqa: E402
from alwidgets.segmentation.features import DenseFeatures, mobilenet_v1  # noqa: E402
from segmentation_study import SHARED, _pool_rows, oracle_picks  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "segmentation_finetune_screen.csv"


def _trunk_net(blocks, decoder, norm8, stats, finetune):
    """Backbone stages after stride 8 (reading de-normalised stride-8 activations) in front of the decoder."""
    import torch
    import torch.nn as nn

    def buf(a):
        return torch.from_numpy(np.asarray(a, np.float32)).view(1, -1, 1, 1)

    class TrunkNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.ModuleList(blocks).requires_grad_(finetune)
            self.decoder = decoder
            for k, (mu, sd) in enumerate([norm8, *stats]):
                self.register_buffer(f"mu{k}", buf(mu))
                self.register_buffer(f"sd{k}", buf(sd))

        def train(self, mode=True):   # BatchNorm keeps ImageNet's statistics: crops of 8 images are too few
            super().train(mode)
            self.trunk.eval()
            return self

        def forward(self, xs):
            x = xs[0]
            maps = [x]
            y = x * self.sd0 + self.mu0
            with torch.set_grad_enabled(finetune and torch.is_grad_enabled()):
                for k, block in enumerate(self.trunk, start=1):
                    y = block(y)
                    maps.append((y - getattr(self, f"mu{k}")) / getattr(self, f"sd{k}"))
            return self.decoder(maps)

    return TrunkNet()


class TrunkDecoder(DenseDecoder):
    """``DenseDecoder`` on the stride-8 map alone, MobileNet V1's stages 3-4 computing strides 16/32 from it
    (trainable at ``trunk_lr`` when ``finetune``; frozen, it reproduces the cached maps)."""

    def __init__(self, n_classes, ignore_index=None, weights=None, finetune=True, trunk_lr=3e-4, random_state=None):
        super().__init__(n_classes, ignore_index, n_components=None, random_state=random_state)
        self.weights = weights
        self.finetune = finetune
        self.trunk_lr = trunk_lr

    def _build_net(self, inputs):
        import copy

        import torch

        from alwidgets.segmentation.model import _build_decoder

        backbone = mobilenet_v1(self.weights, progress=False, device="cpu", out_indices=(2, 3, 4)).model_
        blocks = [copy.deepcopy(backbone.blocks[k]).float() for k in (3, 4)]
        mu8, sd8 = self.norm_[0]
        rows = np.random.default_rng(0).choice(len(inputs[0]), min(32, len(inputs[0])), replace=False)
        y = torch.from_numpy(np.asarray(inputs[0][np.sort(rows)], np.float32))
        stats = []
        with torch.no_grad():
            for b in blocks:
                y = b.eval()(y)
                stats.append((y.mean((0, 2, 3)).numpy(), y.std((0, 2, 3)).numpy() + 1e-3))
        decoder = _build_decoder([256, 512, 1024], self.n_classes, self.width, self.fine, self.dropout)
        return _trunk_net(blocks, decoder, (mu8, sd8), stats, self.finetune)

    def _param_groups(self, net):
        groups = [{"params": list(net.decoder.parameters())}]
        if self.finetune:
            groups.append({"params": list(net.trunk.parameters()), "lr": self.trunk_lr})
        return groups


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "camvid"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"))
    ap.add_argument("--splits", default="10,11,12,13")
    ap.add_argument("--full", default="", help="splits on which every train mask of the split is fitted too")
    ap.add_argument("--n", type=int, default=20, help="masks per pick")
    ap.add_argument("--modes", default="frozen,finetune",
                    help="frozen: the stages frozen (the raw-map decoder); finetune: stages 3-4 trained")
    ap.add_argument("--trunk-lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    train, test = camvid(args.data, "train"), camvid(args.data, "test")
    emb = mobilenet_v1(args.weights, progress=False, precision="fp32", device="cpu", out_indices=(2, 3, 4))
    ftr, fte = emb.embed(train.pool), emb.embed(test.pool)
    s8 = [DenseFeatures([f.maps[0]], (8,), f.pooled, f.image_size, f.ids, {}) for f in (ftr, fte)]
    test8 = s8[1].subset(np.arange(len(test)))   # in memory: scored once per fit
    rare = [CAMVID_CLASSES.index(c) for c in CAMVID_RARE]
    out = OUT.with_name(OUT.stem + (f"_{args.tag}" if args.tag else "") + ".csv")
    full = {int(s) for s in args.full.split(",") if s}
    for split in (int(s) for s in args.splits.split(",")):
        rows = _pool_rows(split, len(train), 0.8)
        sub = s8[0].subset(rows)
        masks = [train.masks[i] for i in rows]
        counts = np.stack([np.bincount(m[m < 11].ravel(), minlength=11)[:11] for m in masks]).astype(np.float64)
        picks = {"random": np.random.default_rng([split, 7]).permutation(len(rows))[:args.n],
                 "oracle_rare4": oracle_picks(counts[:, rare] / 64.0, args.n, np.zeros(len(rows), bool),
                                              np.arange(len(rows)))}
        if split in full:
            picks["all"] = np.arange(len(rows))
        for name, idx in picks.items():
            fit_masks = [None] * len(rows)
            for i in idx:
                fit_masks[i] = masks[i]
            for mode in args.modes.split(","):
                model = TrunkDecoder(11, 11, weights=args.weights, finetune=mode == "finetune",
                                     trunk_lr=args.trunk_lr, random_state=split).fit(sub, fit_masks)
                sc = model.score(test8, test.masks, scale=2)
                rec = {"split": split, "picks": name, "n_masks": len(idx), "mode": mode, "trunk_lr": args.trunk_lr,
                       "miou": 100 * sc.miou, "rare4": 100 * float(np.mean(sc.iou[rare])),
                       "fit_seconds": round(model.fit_seconds_, 1), "steps": model.n_steps_,
                       **{f"iou_{c}": 100 * v for c, v in zip(CAMVID_CLASSES, sc.iou)}}
                print(f"[{time.strftime('%H:%M:%S')}] split {split} {name:12s} {mode:8s} mIoU {rec['miou']:.1f} "
                      f"rare4 {rec['rare4']:.1f} fit {rec['fit_seconds']}s", flush=True)
                pd.DataFrame([rec]).to_csv(out, mode="a", header=not out.exists(), index=False)
    df = pd.read_csv(out)
    print(df.pivot_table(index=["picks", "mode"], values=["miou", "rare4"], aggfunc=["mean", "count"]).round(1))


if __name__ == "__main__":
    main()
