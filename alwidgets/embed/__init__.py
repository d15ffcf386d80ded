"""Embedders: turn a :class:`~alwidgets.Pool` of images into an ``(n, d)`` float32 array."""
from .pixels import PixelEmbedder

__all__ = ["PixelEmbedder"]
