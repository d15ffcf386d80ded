"""Raw pixels as embeddings: for tiny images, demos and tests."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from .base import Embedder


class PixelEmbedder(Embedder, BaseEstimator):
    """Flatten images to pixel vectors in [0, 1], optionally reduced by PCA.

    Pixels are cheap to recompute, so this embedder does not cache (``cache_dir`` is ``False``).

    Parameters
    ----------
    pca : int, optional
        Number of principal components to keep (whitened off); ``None`` keeps
        every pixel.
    size : int, optional
        Side length images from files are resized to (square, bilinear), so a
        folder of mixed sizes gives vectors of one length. Array pools keep
        their size unless this is set.
    random_state : int
        Seed of the randomised PCA solver.

    Examples
    --------
    >>> from alwidgets import Pool
    >>> from alwidgets.embed import PixelEmbedder
    >>> PixelEmbedder(pca=16).embed(Pool.digits()).shape
    (1797, 16)
    """

    def __init__(self, pca: int | None = None, size: int | None = None, random_state: int = 0):
        self.pca = pca
        self.size = size
        self.random_state = random_state

    def embed(self, pool, executor="local") -> np.ndarray:
        """Return an ``(n, d)`` float32 array, one row per pool item (then PCA, fitted on the whole pool)."""
        if self.pca is not None and (isinstance(self.pca, bool) or int(self.pca) != self.pca or self.pca < 1):
            raise ValueError(f"pca must be a positive integer or None, got {self.pca!r}")
        X = super().embed(pool, executor=executor)
        if self.pca is not None:
            from sklearn.decomposition import PCA

            k = min(int(self.pca), X.shape[0], X.shape[1])
            X = PCA(n_components=k, random_state=self.random_state).fit_transform(X).astype(np.float32)
        return np.ascontiguousarray(X, dtype=np.float32)

    def _embed_batches(self, pool, chunks):
        """Pixels of the rows of ``chunks`` in batches of :data:`BATCH` rows."""
        raw = pool.arrays is not None and self.size is None
        if raw:  # uint8 (or values above 1) -> [0, 1]; float arrays already in [0, 1] are kept
            a = np.asarray(pool.arrays)
            to_unit = a.dtype == np.uint8 or a.max(initial=0) > 1.0
        for rows in chunks.values():
            for k in range(0, len(rows), BATCH):
                part = rows[k:k + BATCH]
                if raw:
                    X = np.asarray(pool.arrays[part.start:part.stop]).reshape(len(part), -1).astype(np.float32)
                    yield list(part), X / 255.0 if to_unit else X, {}
                else:
                    yield self._from_images(pool, part)

    def _from_images(self, pool, rows):
        from ..pool import ImageReadError

        size = self.size or 32
        X = np.zeros((len(rows), size * size * 3), np.float32)
        errors = {}
        for k, i in enumerate(rows):
            if pool.ids[i] in pool.errors:  # unreadable (on_error="skip"): a zero row, never selected
                errors[i] = pool.errors[pool.ids[i]]
                continue
            try:
                im = pool.image(i).convert("RGB").resize((size, size), resample=2)  # 2 = bilinear
            except ImageReadError as e:
                errors[i] = e.reason  # reported by the run loop: raises under on_error="raise"
                continue
            X[k] = np.asarray(im, dtype=np.float32).reshape(-1) / 255.0
        return list(rows), X, errors


BATCH = 256
"""Rows per batch of :class:`PixelEmbedder`."""
