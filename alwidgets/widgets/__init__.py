"""Notebook widgets: the labelling grid and the app that composes it with live plots."""
from .labelgrid import DEFAULT_KEYMAP, LabelGrid

__all__ = ["LabelGrid", "DEFAULT_KEYMAP"]
