"""Tasks: what is specific to one kind of label, beside the one loop.

``classification`` (one class per item) and ``regression`` (one number per item);
see :class:`~alwidgets.tasks.base.Task` for the contract a new task implements.
"""
from .base import Task
from .classification import Classification
from .regression import Regression

__all__ = ["Task", "Classification", "Regression"]
