"""The approximate path of the geometry selectors for big pools: the exact algorithm on a random subsample.

Coverage, k-center and BADGE cost at least one pass over every item per
cluster, centre or pick, and their exact paths need the pool in memory as
float32 (10 million x 256 = 10 GB). From ``APPROX_MIN_ROWS`` items on (or
when sharded embeddings would not fit ``MATERIALIZE_LIMIT``), with
``approximate="auto"``, they run their exact algorithm on every labelled
item plus a uniform random sample of ``approx_sample`` candidates, read from
the (memory-mapped) embeddings; only those rows are ever in memory. The
cost is then independent of the pool size (one sample read from disk).

Why a sample and not a faiss IVF index over every item: an IVF index still
assigns all N rows to its lists (N x nlist x d multiply-adds, 10M x 1024 x
256 = 2.6e12 on the issue's 2 cores: many minutes), and k-center/BADGE would
still visit every row per pick. A 200,000-item uniform sample holds about
2,000 items per cluster for the 64-128 clusters of a typical batch, plenty
for TypiClust's typicality (it already estimates it from 512 members), and
k-center's covering radius on the sample is within a few percent of the
exact one on the pools tested (``tests/test_scale.py``).
"""
from __future__ import annotations

import numpy as np

from .._validation import UNLABELED, Interval, Options
from ..embeddings import MATERIALIZE_LIMIT, ShardedEmbeddings, as_dense, take_rows
from .base import Selection

APPROX_MIN_ROWS = 1_000_000
"""Pools of at least this many items take the approximate path when ``approximate="auto"``."""

APPROX_SAMPLE = 200_000
"""Default number of candidates sampled on the approximate path (200,000 x 256 float32 = 200 MB)."""


def use_approximate(setting, embeddings) -> bool:
    """Whether a selector with ``approximate=setting`` takes the sampled path on ``embeddings``."""
    if setting != "auto":
        return bool(setting)
    n, d = embeddings.shape
    return n >= APPROX_MIN_ROWS or (isinstance(embeddings, ShardedEmbeddings) and n * d * 4 > MATERIALIZE_LIMIT)


def on_subsample(select, n, *, labels, embeddings, probs, candidates, rng, sample: int) -> Selection:
    """Run ``select`` (an exact ``_select``-like callable) on labelled items + ``sample`` random candidates.

    Indices are mapped back to the pool; ``info["approximate"]`` records the sample size.
    """
    lab = np.flatnonzero(labels != UNLABELED)
    m = max(min(sample, len(candidates)), n)
    cs = candidates if m >= len(candidates) else rng.choice(candidates, m, replace=False)
    rows = np.sort(np.concatenate([lab, cs]))
    X = take_rows(embeddings, rows)
    sel = select(n, labels=labels[rows], embeddings=X, probs=None if probs is None else probs[rows],
                 model=None, candidates=np.searchsorted(rows, np.sort(cs)), rng=rng)
    info = {**sel.info, "approximate": {"sample": int(len(cs)), "candidates": int(len(candidates))}}
    return Selection(rows[np.asarray(sel.indices, np.int64)], sel.scores, info)


APPROX_CONSTRAINTS = {
    "approximate": ["boolean", Options(("auto",), "approximate")],
    "approx_sample": [Interval(int, 1, None)],
}
"""Parameter constraints of the ``approximate`` / ``approx_sample`` hyperparameters."""


class Approximable:
    """Mixin of the selectors that scale by sampling (coverage, k-center, BADGE).

    ``_select`` runs the subclass's ``_exact`` on every row, or — from :data:`APPROX_MIN_ROWS`
    rows on, with ``approximate="auto"`` — on the labelled items plus a random sample of
    ``approx_sample`` candidates (:func:`on_subsample`).
    """

    def _select(self, n, *, labels, embeddings, probs, model, candidates, rng):
        if use_approximate(self.approximate, embeddings):
            return on_subsample(self._exact, n, labels=labels, embeddings=embeddings,
                                probs=probs if "probs" in self.requires else None,
                                candidates=candidates, rng=rng, sample=self.approx_sample)
        return self._exact(n, labels=labels, embeddings=as_dense(embeddings), probs=probs, model=model,
                           candidates=candidates, rng=rng)
