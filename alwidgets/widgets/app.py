"""LabelApp: the label grid above live plotly panels, in one widget.

Each panel (accuracy vs labels, per-class accuracy, labels per class, and the
reliability diagram with calibration) is its own ``FigureWidget`` of a fixed
width in a wrapping row, so a narrow notebook (700 px) puts them on two rows
instead of cutting them. The panels are updated in place; what they draw is
:func:`alwidgets.plots.draw_session`.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack

import ipywidgets as ipw
import numpy as np

from .. import plots

log = logging.getLogger(__name__)


class LabelApp(ipw.VBox):
    """Grid above, plots below.

    Attributes
    ----------
    grid : LabelGrid
    figures : dict of str -> plotly.graph_objects.FigureWidget
        ``"accuracy"``, ``"per_class"``, ``"balance"`` (and ``"reliability"``).
    """

    def __init__(self, grid, classes, *, calibration: bool = False):
        self.grid = grid
        self.classes = list(classes)
        self.figures = {name: _live(fig) for name, fig in
                        plots.session_panels(self.classes, calibration=calibration).items()}
        self.panels = list(self.figures)
        self._row = ipw.Box(list(self.figures.values()),
                            layout=ipw.Layout(display="flex", flex_flow="row wrap", width="100%"))
        super().__init__([grid, self._row])

    def _repr_mimebundle_(self, **kwargs):
        # a static snapshot beside the live view: what nbconvert or a widget-less viewer shows
        from ..report import snapshot_html

        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            try:
                data["text/html"] = snapshot_html(self)
            except Exception:  # the live widget must show even if its static copy cannot be made
                log.warning("LabelApp: no static snapshot", exc_info=True)
        return data

    def trace(self, name: str):
        """The plotly trace called ``name`` (``"session"``, ``"earlier"``, ``"per_class"``, ``"balance"``, ...)."""
        for fig in self.figures.values():
            for t in fig.data:
                if t.meta == name:
                    return t
        raise KeyError(f"no trace {name!r}; the panels have "
                       f"{', '.join(t.uid for f in self.figures.values() for t in f.data)}")

    def update(self, history, metrics: dict | None, counts, *, session_id=None) -> None:
        """Redraw from the session's history, latest metrics and label counts per class."""
        with ExitStack() as stack:
            for fig in self.figures.values():
                stack.enter_context(fig.batch_update())
            plots.draw_session(self.figures, self.classes, history, metrics, counts, session_id=session_id)

    def show_baseline(self, n_labels, mean, std) -> None:
        """Draw the simulated random-sampling curve (mean ± std) on the accuracy panel."""
        n_labels, mean, std = (np.asarray(a, dtype=float) for a in (n_labels, mean, std))
        fig = self.figures[plots.ACCURACY]
        with fig.batch_update():
            b = self.trace("baseline")
            b.x, b.y, b.visible = n_labels.tolist(), mean.tolist(), True
            band = self.trace("baseline_band")
            band.x = n_labels.tolist() + n_labels[::-1].tolist()
            band.y = (mean + std).tolist() + (mean - std)[::-1].tolist()
            band.visible = True
            top = int(np.ceil(n_labels.max())) + 1 if len(n_labels) else 10
            if top > fig.layout.xaxis.range[1]:
                fig.update_layout(showlegend=True, xaxis=dict(range=[0, top], **plots.integer_axis(top)))
            else:
                fig.update_layout(showlegend=True)



def _live(fig):
    """A ``FigureWidget`` showing ``fig``, filled by messages rather than by its initial state.

    plotly's FigureWidget sends its traces and layout as a state update right after the
    widget opens, and a view that renders before that update lands draws an empty
    default plot for good (its view only follows the add-traces/relayout messages). An
    empty widget that then gets ``add_traces`` and ``update_layout`` is drawn right
    whichever comes first: the view renders what the model has and follows the rest.
    """
    import plotly.graph_objects as go

    widget = go.FigureWidget()
    widget.add_traces(list(fig.data))
    widget.update_layout(fig.layout)
    return widget
