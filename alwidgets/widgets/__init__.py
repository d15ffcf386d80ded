"""Notebook widgets: the labelling grid, the app that composes it with live plots, the mask painter,
and the views that bind them to a headless :class:`~alwidgets.Session`."""
from .app import LabelApp
from .keymap import ACTIONS, PAINTER_ACTIONS, build_keymap, build_painter_keymap
from .labelgrid import LabelGrid
from .maskpainter import InMemoryMasks, MaskPainter
from .view import MaskSessionView, SessionView, view_for

__all__ = ["LabelGrid", "LabelApp", "SessionView", "build_keymap", "ACTIONS", "MaskPainter", "MaskSessionView",
           "InMemoryMasks", "build_painter_keymap", "PAINTER_ACTIONS", "view_for"]
