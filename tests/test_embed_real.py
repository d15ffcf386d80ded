"""Real ImageNet weights + real preprocessing: a linear probe on CIFAR-10 embeddings beats 0.70.

Random weights give about 0.35 and wrong preprocessing (e.g. symmetric padding
instead of TF "same") far less than 0.70, so passing shows that the checkpoint,
its pretrained config and timm's eval transform are all used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alwidgets import Pool
from alwidgets.embed import TimmEmbedder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"
CIFAR = SHARED / "data" / "cifar10-subset"
# the exact timm arguments from ../shared/weights/README.md
OVERLAY = dict(num_classes=1000, label_offset=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               interpolation="bilinear", crop_pct=0.875, input_size=(3, 224, 224),
               test_input_size=(3, 224, 224), test_crop_pct=0.875)


def _need(path):
    if not path.exists():
        pytest.skip(f"real weights / data not found at {path} (put ../shared beside the repo)")


def _per_class(pool, k):
    """The first ``k`` items of each class (file names are sorted within classes)."""
    keep = np.concatenate([np.flatnonzero(pool.targets == c)[:k] for c in range(len(pool.classes))])
    return pool.subset(keep)


@pytest.mark.slow
def test_mobilenet_v1_probe_beats_070_on_cifar10(tmp_path):
    _need(WEIGHTS)
    _need(CIFAR)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = _per_class(Pool.from_folder(CIFAR / "train"), 200)  # 2,000 images
    test = Pool.from_folder(CIFAR / "test")  # 1,000 images
    emb = TimmEmbedder("mobilenetv1_100", checkpoint=WEIGHTS, pad_type="same", pretrained_cfg_overlay=OVERLAY,
                       cache_dir=tmp_path, progress=False)
    assert emb.data_config() == dict(input_size=[3, 224, 224], interpolation="bilinear", mean=[0.5] * 3,
                                     std=[0.5] * 3, crop_pct=0.875, crop_mode="center")
    Xtr, Xte = emb.embed(train), emb.embed(test)
    assert Xtr.shape == (2000, 1024) and Xte.shape == (1000, 1024)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = probe.fit(Xtr, train.targets).score(Xte, test.targets)
    print(f"linear probe test accuracy: {acc:.3f}")
    assert acc > 0.70
