"""LabelApp: the label grid and live plotly figures in one widget.

One ``FigureWidget`` with side-by-side panels is updated in place after each
submit, so the plots change without re-running a cell.
"""
from __future__ import annotations

import ipywidgets as ipw
import numpy as np

ACCURACY, PER_CLASS, BALANCE, RELIABILITY = "accuracy", "per_class", "balance", "reliability"


def _panels(calibration: bool) -> list[str]:
    return [ACCURACY, PER_CLASS, BALANCE] + ([RELIABILITY] if calibration else [])


class LabelApp(ipw.VBox):
    """Grid above, plots below: accuracy vs labels, per-class accuracy, class balance, reliability.

    Attributes
    ----------
    grid : LabelGrid
    figure : plotly.graph_objects.FigureWidget
    """

    def __init__(self, grid, classes, *, calibration: bool = False):
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        self.grid = grid
        self.classes = list(classes)
        self.panels = _panels(calibration)
        titles = {ACCURACY: "accuracy vs labels", PER_CLASS: "per-class accuracy",
                  BALANCE: "labels per class", RELIABILITY: "reliability"}
        fig = make_subplots(rows=1, cols=len(self.panels), subplot_titles=[titles[p] for p in self.panels],
                            horizontal_spacing=0.07)
        col = {p: i + 1 for i, p in enumerate(self.panels)}
        self._trace = {}

        def add(name, trace, panel):
            fig.add_trace(trace, row=1, col=col[panel])
            self._trace[name] = len(fig.data) - 1

        add("session", go.Scatter(x=[], y=[], mode="lines+markers", name="this session",
                                  line=dict(color="#1f77b4", width=2)), ACCURACY)
        add("baseline", go.Scatter(x=[], y=[], mode="lines", name="random (simulated)", visible=False,
                                   line=dict(color="#000000", dash="dash")), ACCURACY)
        add("baseline_band", go.Scatter(x=[], y=[], fill="toself", fillcolor="rgba(0,0,0,0.1)", line=dict(width=0),
                                        hoverinfo="skip", showlegend=False, visible=False), ACCURACY)
        add("per_class", go.Bar(x=self.classes, y=[0] * len(self.classes), name="per-class accuracy",
                                marker_color="#2ca02c", showlegend=False), PER_CLASS)
        add("balance", go.Bar(x=self.classes, y=[0] * len(self.classes), name="labels",
                              marker_color="#ff7f0e", showlegend=False), BALANCE)
        if calibration:
            add("diagonal", go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"),
                                       showlegend=False, hoverinfo="skip"), RELIABILITY)
            add("reliability", go.Scatter(x=[], y=[], mode="lines+markers", name="model",
                                          marker=dict(color="#9467bd"), showlegend=False), RELIABILITY)
        fig.update_layout(template="plotly_white", height=310, margin=dict(l=40, r=10, t=55, b=40),
                          legend=dict(orientation="h", y=-0.25, x=0))
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=col[ACCURACY])
        fig.update_xaxes(title_text="labels", row=1, col=col[ACCURACY])
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=col[PER_CLASS])
        if calibration:
            fig.update_xaxes(range=[0, 1], title_text="confidence", row=1, col=col[RELIABILITY])
            fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=col[RELIABILITY])
        self.figure = go.FigureWidget(fig)
        super().__init__([grid, self.figure])

    def _repr_mimebundle_(self, **kwargs):
        # a static snapshot beside the live view: what nbconvert or a widget-less viewer shows
        from ..report import snapshot_html

        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/html"] = snapshot_html(self)
        return data

    def trace(self, name: str):
        """The plotly trace called ``name`` (``"session"``, ``"per_class"``, ``"balance"``, ...)."""
        return self.figure.data[self._trace[name]]

    def update(self, history, metrics: dict | None, counts) -> None:
        """Redraw from the session's history, latest metrics and label counts per class."""
        with self.figure.batch_update():
            s = self.trace("session")
            if len(history):
                s.x = history["n_labels"].tolist()
                s.y = history["accuracy"].tolist()
            else:
                s.x, s.y = [], []
            self.trace("balance").y = [int(c) for c in counts]
            if metrics:
                per = metrics.get("per_class") or {}
                self.trace("per_class").y = [per.get(c, None) for c in self.classes]
                source = metrics.get("source_text", "")
                idx = self.panels.index(ACCURACY)
                self.figure.layout.annotations[idx].text = f"accuracy vs labels<br><sub>{source}</sub>" if source else \
                    "accuracy vs labels"
                if RELIABILITY in self.panels and metrics.get("reliability"):
                    rel = metrics["reliability"]
                    r = self.trace("reliability")
                    r.x, r.y = rel["confidence"], rel["accuracy"]
                    r.text = [f"{n} items" for n in rel["count"]]

    def show_baseline(self, n_labels, mean, std) -> None:
        """Draw the simulated random-sampling curve (mean ± std) on the accuracy panel."""
        n_labels, mean, std = (np.asarray(a, dtype=float) for a in (n_labels, mean, std))
        with self.figure.batch_update():
            b = self.trace("baseline")
            b.x, b.y, b.visible = n_labels.tolist(), mean.tolist(), True
            band = self.trace("baseline_band")
            band.x = n_labels.tolist() + n_labels[::-1].tolist()
            band.y = (mean + std).tolist() + (mean - std)[::-1].tolist()
            band.visible = True
