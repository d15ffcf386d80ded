"""Embedders: turn a :class:`~alwidgets.Pool` of images into an ``(n, d)`` float32 array.

Every embedder is an :class:`Embedder` (the shared cached, chunked, resumable run loop);
``embed(pool, executor=...)`` picks where the rows are computed (:class:`LocalExecutor` by default).
"""
from .base import Embedder, Executor, LocalExecutor
from .pixels import PixelEmbedder
from .timm import TimmEmbedder, WeightsUnavailableError

__all__ = ["Embedder", "Executor", "LocalExecutor", "PixelEmbedder", "TimmEmbedder", "WeightsUnavailableError"]
