"""Shared fixtures. Data beside the repo (``../shared``) is optional: tests that need it skip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config, items):
    """Tests that start Ray in this process (marked ``ray``) run last, in their own order: Ray's gRPC
    threads outlive ``ray.shutdown()``, and a child forked after them (the store tests fork) can crash."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; skips the calling test with a reason when absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found at {p} (clone with ../shared beside the repo)")
    return p


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as (X in [0, 1], y)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def require(condition: bool, reason: str) -> None:
    """Skip the test locally when a tool it needs is missing, but fail under CI, where .ci/run installs it."""
    import os

    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """A randomly initialised resnet10t saved as a checkpoint file, so embedders share the same weights."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("w") / "r10t.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}, str(path))
    return path
