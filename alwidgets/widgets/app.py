"""LabelApp and MaskApp: the label grid (or the mask painter) above live plotly panels, in one widget.

Each panel (accuracy vs labels, per-class accuracy, labels per class, and the
reliability diagram with calibration; for masks: mIoU vs masks, IoU per class with
the weakest marked, labelled pixels per class, the pixels' reliability) has a fixed
width in a wrapping row, so a narrow notebook (700 px) puts them on two rows instead
of cutting them: a ``FigureWidget`` updated in place beside the grid, plotly's JSON in
an ``Output`` widget below the painter. What they draw is :func:`alwidgets.plots.draw_session`.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack

import ipywidgets as ipw
import numpy as np

from .. import plots

log = logging.getLogger(__name__)


class _PanelsApp(ipw.VBox):
    """A widget above the session's live panels (``figures``; with ``defer``, empty until
    :meth:`build_panels`, so that what is above shows first).

    ``_WIDGETS``: each panel a plotly ``FigureWidget`` (updated in place), or else a plain figure
    shown in an ``Output`` widget as plotly's JSON, drawn by the front end's plotly renderer
    (JupyterLab's ``jupyterlab-plotly``, VS Code, Colab) and sent again after each redraw. A
    ``FigureWidget`` brings plotly's 5 MB widget bundle with it, once per panel: the four panels of
    a segmentation session took 13 s to appear on a 2-core machine (5 s of it in the kernel), 2.2 s
    as plotly JSON.
    """

    _WIDGETS = True

    def __init__(self, top, classes, *, calibration: bool = False, segmentation: bool = False,
                 defer: bool = False):
        self.classes = list(classes)
        self._kinds = dict(calibration=calibration, segmentation=segmentation)
        self.figures: dict = {}
        self.panels: list = []
        self._boxes: list = []
        self._row = ipw.Box([], layout=ipw.Layout(display="flex", flex_flow="row wrap", width="100%"))
        super().__init__([top, self._row])
        if not defer:
            self.build_panels()

    def build_panels(self) -> None:
        """Make the panels (once) and put them in the row."""
        if not self.figures:
            figures = plots.session_panels(self.classes, **self._kinds)
            if self._WIDGETS:
                self.figures = {name: _live(fig) for name, fig in figures.items()}
                views = self.figures
            else:
                self.figures = figures
                views = self._outputs = {name: ipw.Output() for name in figures}
            self.panels = list(self.figures)
            # each panel sits in a box of its own fixed size: the row wraps by these boxes, and a
            # plot that lost its layout to plotly's render race is autosized to its box, not to the page
            self._boxes = []
            for name, fig in self.figures.items():
                box = ipw.Box([views[name]], layout=ipw.Layout(width=f"{plots.PANEL_WIDTH + 8}px",
                                                               height=f"{fig.layout.height + 8}px", overflow="hidden"))
                box.add_class("alw-panel")
                self._boxes.append(box)
            self._publish()
        self._row.children = self._boxes

    def _publish(self, names=None) -> None:
        """Send the figures (``names``, default all) to their ``Output`` panels (``FigureWidget`` panels
        send their own changes)."""
        if self._WIDGETS:
            return
        for name in self.figures if names is None else names:
            self._outputs[name].outputs = (_plotly_output(self.figures[name]),)

    def hide_panels(self) -> None:
        """Take the panels out of the row (they keep their state; :meth:`build_panels` puts them back)."""
        self._row.children = ()

    @property
    def panels_shown(self) -> bool:
        return bool(self._row.children)

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
        if not self.figures:
            return
        with ExitStack() as stack:
            for fig in self.figures.values():
                stack.enter_context(fig.batch_update())
            plots.draw_session(self.figures, self.classes, history, metrics, counts, session_id=session_id)
        self._publish()

    def show_baseline(self, n_labels, mean, std) -> None:
        """Draw the simulated random-sampling curve (mean ± std) on the accuracy panel."""
        if not self.figures:
            return
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
        self._publish([plots.ACCURACY])


class LabelApp(_PanelsApp):
    """Grid above, plots below.

    Attributes
    ----------
    grid : LabelGrid
    figures : dict of str -> plotly.graph_objects.FigureWidget
        ``"accuracy"``, ``"per_class"``, ``"balance"`` (and ``"reliability"``).
    """

    def __init__(self, grid, classes, *, calibration: bool = False):
        self.grid = grid
        super().__init__(grid, classes, calibration=calibration)

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


class MaskApp(_PanelsApp):
    """The mask painter above the live panels of a segmentation session: mIoU vs masks (with the
    simulated random curve when asked), IoU per class with the weakest classes in red, labelled
    pixels per class, and the reliability of the pixels' calibrated probabilities.

    Attributes
    ----------
    painter : MaskPainter
    figures : dict of str -> plotly.graph_objects.FigureWidget
        ``"accuracy"`` (mIoU), ``"per_class"`` (IoU), ``"balance"`` (pixels), ``"reliability"``
        (empty with ``defer`` until :meth:`build_panels`: the session's view builds them once the
        first image is on its way).
    """

    _WIDGETS = False   # plotly JSON in Output widgets: the painter's page stays light

    def __init__(self, painter, classes, *, defer: bool = False):
        self.painter = painter
        super().__init__(painter, classes, segmentation=True, defer=defer)


def _plotly_output(fig) -> dict:
    """``fig`` as one output of an ``Output`` widget: plotly's JSON (what its renderers draw) and a line of text."""
    import json

    import plotly.io as pio

    spec = json.loads(pio.to_json(fig, validate=False))
    spec["config"] = {"displaylogo": False, "responsive": False}
    title = str(fig.layout.title.text or "plot").split("<br>")[0]
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.plotly.v1+json": spec, "text/plain": f"<plot: {title}>"}}


def _live(fig):
    """A ``FigureWidget`` showing ``fig``, filled by messages rather than by its initial state.

    plotly's FigureWidget sends its traces and layout as a state update right after the
    widget opens, and a view that renders before that update lands draws an empty
    default plot for good (its view only follows the add-traces/relayout messages). An
    empty widget that then gets ``add_traces`` and ``update_layout`` is drawn right
    whichever comes first: the view renders what the model has and follows the rest.

    The template is assigned apart: through ``update_layout`` plotly validates it property by
    property (0.7-4 s for four panels on 2 cores, on the first ``label()``); assigned whole it
    costs about 10 ms a panel.
    """
    import plotly.graph_objects as go

    widget = go.FigureWidget()
    widget.add_traces(list(fig.data))
    layout = fig.layout.to_plotly_json()
    template = layout.pop("template", None)
    widget.update_layout(layout)
    if template is not None:
        widget.layout.template = fig.layout.template
    return widget
