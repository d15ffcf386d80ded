"""Embedders: turn a :class:`~alwidgets.Pool` of images into an ``(n, d)`` float32 array."""
from .pixels import PixelEmbedder
from .timm import TimmEmbedder, WeightsUnavailableError

__all__ = ["PixelEmbedder", "TimmEmbedder", "WeightsUnavailableError"]
