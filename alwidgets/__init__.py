"""alwidgets: Jupyter-native active learning.

Label the right images first, inside the notebook, and see at once whether it pays off.
"""
from . import calibrate, select, stopping
from .models import LinearProbe
from .pool import Pool
from .session import Session
from .simulate import SimulationResult, simulate
from .store import LabelStore

__version__ = "0.1.0"

__all__ = [
    "Pool",
    "Session",
    "LabelStore",
    "LinearProbe",
    "simulate",
    "SimulationResult",
    "select",
    "calibrate",
    "stopping",
    "__version__",
]
