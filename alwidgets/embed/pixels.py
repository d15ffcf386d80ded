"""Raw pixels as embeddings: for tiny images, demos and tests."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator


class PixelEmbedder(BaseEstimator):
    """Flatten images to pixel vectors in [0, 1], optionally reduced by PCA.

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

    def embed(self, pool) -> np.ndarray:
        """Return an ``(n, d)`` float32 array, one row per pool item."""
        if self.pca is not None and (isinstance(self.pca, bool) or int(self.pca) != self.pca or self.pca < 1):
            raise ValueError(f"pca must be a positive integer or None, got {self.pca!r}")
        X = self._pixels(pool)
        if self.pca is not None:
            from sklearn.decomposition import PCA

            k = min(int(self.pca), X.shape[0], X.shape[1])
            X = PCA(n_components=k, random_state=self.random_state).fit_transform(X).astype(np.float32)
        return np.ascontiguousarray(X, dtype=np.float32)

    def _pixels(self, pool) -> np.ndarray:
        if pool.arrays is not None and self.size is None:
            a = np.asarray(pool.arrays)
            X = a.reshape(len(a), -1).astype(np.float32)
            return X / 255.0 if a.dtype == np.uint8 or X.max(initial=0) > 1.0 else X
        size = self.size or 32
        from ..pool import ImageReadError

        rows = []
        for i in range(len(pool)):
            if pool.ids[i] in pool.errors:  # unreadable (on_error="skip"): a zero row, never selected
                rows.append(np.zeros(size * size * 3, np.float32))
                continue
            try:
                im = pool.image(i).convert("RGB").resize((size, size), resample=2)  # 2 = bilinear
            except ImageReadError as e:
                pool.report_error(i, e.reason)  # raises under on_error="raise"
                rows.append(np.zeros(size * size * 3, np.float32))
                continue
            rows.append(np.asarray(im, dtype=np.float32).reshape(-1) / 255.0)
        return np.stack(rows)
