"""Notebook widgets: the labelling grid, the app that composes it with live plots, and the
view that binds them to a headless :class:`~alwidgets.Session`."""
from .app import LabelApp
from .keymap import ACTIONS, build_keymap
from .labelgrid import LabelGrid
from .view import SessionView

__all__ = ["LabelGrid", "LabelApp", "SessionView", "build_keymap", "ACTIONS"]
