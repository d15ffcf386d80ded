"""Plotly figures shared by the simulation, the session and reports."""
from __future__ import annotations

import numpy as np
import pandas as pd

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"]


def learning_curve_figure(curves: pd.DataFrame, target: float | None = None, reference: str = "random",
                          title: str = "Accuracy versus labels", xaxis_title: str = "labels",
                          yaxis_title: str = "test accuracy"):
    """Mean accuracy per strategy against the number of labels, with a ±1 std band.

    ``curves`` needs columns ``strategy``, ``n_labels``, ``accuracy`` (and
    optionally ``repeat``). The ``reference`` strategy is drawn dashed in black.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    stats = curves.groupby(["strategy", "n_labels"], sort=False)["accuracy"].agg(["mean", "std"]).reset_index()
    for i, (strategy, g) in enumerate(stats.groupby("strategy", sort=False)):
        g = g.sort_values("n_labels")
        is_ref = strategy == reference
        color = "#000000" if is_ref else _PALETTE[i % len(_PALETTE)]
        std = g["std"].fillna(0.0)
        if len(g) > 1 and std.any():
            fig.add_trace(go.Scatter(
                x=list(g["n_labels"]) + list(g["n_labels"][::-1]),
                y=list(g["mean"] + std) + list((g["mean"] - std)[::-1]),
                fill="toself", fillcolor=color, opacity=0.12, line=dict(width=0),
                hoverinfo="skip", showlegend=False, legendgroup=strategy,
            ))
        fig.add_trace(go.Scatter(
            x=g["n_labels"], y=g["mean"], mode="lines+markers", name=strategy, legendgroup=strategy,
            line=dict(color=color, dash="dash" if is_ref else "solid", width=2), marker=dict(size=4),
        ))
    if target is not None:
        fig.add_hline(y=target, line=dict(color="grey", dash="dot"), annotation_text=f"target {target:.0%}")
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title,
                      yaxis=dict(tickformat=".0%"), template="plotly_white", legend_title="strategy")
    return fig


# ---------------------------------------------------------------------- segmentation
WEAK_COLOUR, IOU_COLOUR, PIXELS_COLOUR = "#d62728", "#2ca02c", "#ff7f0e"


def miou_curve_figure(curves: pd.DataFrame, *, baseline: pd.DataFrame | None = None, reference: str = "random",
                      full_pool: float | None = None, title: str = "mIoU versus masks labelled"):
    """Mean mIoU against masks labelled: one line per strategy (± std band over repeats), or one
    session's rounds.

    ``curves`` has ``n_labels`` (or ``n_masks``) and ``miou`` as a fraction: simulation curves
    (with ``strategy`` and ``repeat``/``split``: one line per strategy), or ``Session.history``
    (no repeats: one line, ``"session"``; rounds without a score are left out). ``baseline`` is a simulated random curve (``n_labels``, ``mean``, ``std``,
    as ``Session.show_baseline`` emits it), drawn dashed in black with its band: trace names
    ``random (simulated)`` and ``random band``. ``full_pool`` draws the mIoU of a model trained on
    every mask as a dotted line.

    Examples
    --------
    >>> import pandas as pd
    >>> fig = miou_curve_figure(pd.DataFrame({"n_labels": [5, 10], "miou": [0.3, 0.4]}),
    ...                         baseline=pd.DataFrame({"n_labels": [5, 10], "mean": [0.28, 0.37], "std": [0.02, 0.01]}))
    >>> [t.name for t in fig.data]
    ['session', 'random band', 'random (simulated)']
    """
    import plotly.graph_objects as go

    c = curves.rename(columns={"n_masks": "n_labels", "split": "repeat"})
    c = c[c["miou"].notna()] if len(c) else c
    if "strategy" not in c or "repeat" not in c:   # a session's rounds (history), not simulated repeats
        c = c.assign(strategy="session")
    frame = pd.DataFrame({"strategy": c["strategy"], "n_labels": c["n_labels"], "accuracy": c["miou"].astype(float)})
    fig = learning_curve_figure(frame, reference=reference, title=title, xaxis_title="masks labelled",
                                yaxis_title="mIoU")
    if baseline is not None and len(baseline):
        b = baseline.sort_values("n_labels")
        std = b["std"].fillna(0.0) if "std" in b else pd.Series(0.0, index=b.index)
        fig.add_trace(go.Scatter(x=list(b["n_labels"]) + list(b["n_labels"][::-1]),
                                 y=list(b["mean"] + std) + list((b["mean"] - std)[::-1]), name="random band",
                                 fill="toself", fillcolor="rgba(0,0,0,0.1)", line=dict(width=0), hoverinfo="skip",
                                 showlegend=False))
        fig.add_trace(go.Scatter(x=b["n_labels"], y=b["mean"], mode="lines", name="random (simulated)",
                                 line=dict(color="#000000", dash="dash", width=2)))
    if full_pool is not None and np.isfinite(full_pool):
        fig.add_hline(y=full_pool, line=dict(color="grey", dash="dot"), annotation_text=f"full pool {full_pool:.0%}")
    return fig


def _weakest(values, n_weak: int) -> set:
    known = [(v, k) for k, v in enumerate(values) if v is not None and np.isfinite(v)]
    return {k for _, k in sorted(known)[:n_weak]}


def class_iou_figure(iou, classes=None, *, n_weak: int = 3, title: str = "IoU per class"):
    """Bars of IoU per class (a fraction; ``None``/NaN: no pixel of the class was scored), the
    ``n_weakest`` classes in red and named in the title.

    ``iou`` is a dict ``{class: IoU}`` (``session.metrics_["iou"]``) or a sequence in the order of
    ``classes``. Traces: ``IoU`` (the others), ``weakest`` (the weak ones), ``no data``.

    Examples
    --------
    >>> fig = class_iou_figure({"road": 0.9, "pole": 0.1, "car": 0.6, "sky": None}, n_weak=1)
    >>> [(t.name, list(t.y)) for t in fig.data]
    [('IoU', [0.9, None, 0.6, None]), ('weakest', [None, 0.1, None, None]), ('no data', [None, None, None, 1.0])]
    """
    import plotly.graph_objects as go

    if isinstance(iou, dict):
        classes = list(iou) if classes is None else list(classes)
        values = [iou.get(c) for c in classes]
    else:
        values = list(iou)
        classes = [str(k) for k in range(len(values))] if classes is None else list(classes)
        if len(classes) != len(values):
            raise ValueError(f"{len(values)} IoU values for {len(classes)} classes")
    values = [None if v is None or not np.isfinite(float(v)) else float(v) for v in values]
    weak = _weakest(values, n_weak)
    cats = [plot_text(c) for c in classes]
    fig = go.Figure([
        go.Bar(x=cats, y=[None if k in weak else v for k, v in enumerate(values)], name="IoU",
               marker_color=IOU_COLOUR, texttemplate="%{y:.0%}", textposition="outside", cliponaxis=False),
        go.Bar(x=cats, y=[v if k in weak else None for k, v in enumerate(values)], name="weakest",
               marker_color=WEAK_COLOUR, texttemplate="%{y:.0%}", textposition="outside", cliponaxis=False),
        go.Bar(x=cats, y=[1.0 if v is None else None for v in values], name="no data",
               marker=dict(color="rgba(0,0,0,0)", line=dict(color="#bdbdbd", width=1),
                           pattern=dict(shape="/", fgcolor="#d0d0d0", size=6)),
               hovertemplate="%{x}: no pixel of this class was scored<extra></extra>"),
    ])
    names = ", ".join(plot_text(classes[k]) for k in sorted(weak, key=lambda k: values[k]))
    fig.update_layout(title=title + (f"<br><sub>weakest: {names}</sub>" if names else ""), barmode="overlay",
                      template="plotly_white", yaxis=dict(range=[0, 1.1], tickformat=".0%", title="IoU"),
                      xaxis=dict(type="category", categoryorder="array", categoryarray=cats))
    return fig


def pixel_counts_figure(counts, classes, *, title: str = "labelled pixels per class"):
    """Bars of labelled pixels per class (``session.label_counts()`` of a segmentation session),
    with each class's share of the labelled pixels; a log axis when the classes differ by more
    than 100x (rare classes stay visible). One trace: ``pixels``.

    Examples
    --------
    >>> pixel_counts_figure([9000, 40, 0], ["road", "pole", "sign"]).data[0].y
    (9000, 40, 0)
    """
    import plotly.graph_objects as go

    counts = [int(c) for c in counts]
    if len(counts) != len(classes):
        raise ValueError(f"{len(counts)} counts for {len(classes)} classes")
    total = max(sum(counts), 1)
    cats = [plot_text(c) for c in classes]
    fig = go.Figure([go.Bar(x=cats, y=counts, name="pixels", marker_color=PIXELS_COLOUR,
                            text=[f"{c / total:.1%}" for c in counts], textposition="outside", cliponaxis=False,
                            hovertemplate="%{x}: %{y:,} pixels (%{text})<extra></extra>")])
    positive = [c for c in counts if c > 0]
    log = bool(positive) and max(positive) > 100 * min(positive)
    fig.update_layout(title=title, template="plotly_white", yaxis=dict(type="log" if log else "linear", title="pixels"),
                      xaxis=dict(type="category", categoryorder="array", categoryarray=cats))
    return fig


# ---------------------------------------------------------------------- the labelling session's live panels
ACCURACY, PER_CLASS, BALANCE, RELIABILITY = "accuracy", "per_class", "balance", "reliability"
PANEL_TITLES = {ACCURACY: "accuracy vs labels", PER_CLASS: "per-class accuracy", BALANCE: "labels per class",
                RELIABILITY: "reliability"}
PANEL_WIDTH, PANEL_HEIGHT = 330, 290
_NO_LABELS = "no labels yet"
# what the panels say for a segmentation session: the same panels, read as masks, IoU and pixels
SEGMENTATION_PANELS = dict(
    titles={ACCURACY: "mIoU vs masks", PER_CLASS: "IoU per class", BALANCE: "labelled pixels per class",
            RELIABILITY: "reliability (pixels)"},
    x="masks", score="IoU", count="pixels", empty="no masks yet", n_weak=3)
CLASSIFICATION_PANELS = dict(titles=PANEL_TITLES, x="labels", score="accuracy", count="labels",
                             empty=_NO_LABELS, n_weak=0)


def plot_text(name) -> str:
    """A name as plotly must be given it to show it as text: plotly reads a few HTML tags
    (``<b>``, ``<br>``, ...) in tick labels, legends and hovers, and decodes entities."""
    import html

    return html.escape(str(name), quote=False)


def integer_axis(top) -> dict:
    """Axis settings with whole-number ticks from 0 to about ``top`` (labels, counts)."""
    raw = max(float(top or 0), 1.0) / 5
    mag = 10 ** int(np.floor(np.log10(raw))) if raw >= 1 else 1
    step = next(b * mag for b in (1, 2, 5, 10) if b * mag >= raw)
    return dict(tickmode="linear", tick0=0, dtick=int(step), tickformat="d", rangemode="tozero")


def session_panels(classes, *, calibration: bool = False, segmentation: bool = False) -> dict:
    """One plotly figure per panel of a labelling session (accuracy vs labels, per-class accuracy,
    labels per class, and reliability with ``calibration``), empty until :func:`draw_session`.

    With ``segmentation`` the same panels read mIoU vs masks, IoU per class (the weakest
    classes in red: the ones class-targeted selection goes after), labelled pixels per class
    (a log axis once the classes differ by more than 100x) and the pixels' reliability.

    Each panel is its own figure of a fixed width so that a narrow notebook wraps them
    onto more rows instead of cutting them. Trace names (``fig.data[k].name`` is shown in
    legends; ``meta`` is the handle (FigureWidget replaces ``uid``)): ``session``, ``earlier``, ``baseline``, ``baseline_band``,
    ``per_class``, ``per_class_weak`` (segmentation), ``per_class_missing``, ``balance``, ``reliability``.

    Examples
    --------
    >>> figs = session_panels(["road", "pole"], segmentation=True)
    >>> [figs[k].layout.title.text for k in figs]
    ['mIoU vs masks', 'IoU per class', 'labelled pixels per class', 'reliability (pixels)']
    """
    import plotly.graph_objects as go

    flavour = SEGMENTATION_PANELS if segmentation else CLASSIFICATION_PANELS
    calibration = calibration or segmentation   # pixel probabilities are always there to check
    cats = [plot_text(c) for c in classes]
    base = dict(template=_panel_template(), width=PANEL_WIDTH, height=PANEL_HEIGHT,
                margin=dict(l=48, r=10, t=48, b=40), showlegend=False)

    def fig(panel, traces, **layout):
        f = go.Figure(traces)
        f.update_layout(**base, title=dict(text=flavour["titles"][panel], font=dict(size=13), x=0.02, y=0.97),
                        meta=dict(flavour, titles=None), **layout)
        return f

    err = dict(type="data", array=[], visible=True, thickness=1, width=3)
    figs = {ACCURACY: fig(ACCURACY, [
        go.Scatter(meta="earlier", x=[], y=[], mode="lines+markers", name="earlier sessions",
                   line=dict(color="#9e9e9e", width=1.5), marker=dict(size=5), error_y=dict(err, color="#9e9e9e")),
        go.Scatter(meta="session", x=[], y=[], mode="lines+markers", name="this session",
                   line=dict(color="#1f77b4", width=2), marker=dict(size=6), error_y=dict(err, color="#1f77b4")),
        go.Scatter(meta="baseline", x=[], y=[], mode="lines", name="random (simulated)", visible=False,
                   line=dict(color="#000000", dash="dash")),
        go.Scatter(meta="baseline_band", x=[], y=[], fill="toself", fillcolor="rgba(0,0,0,0.1)", line=dict(width=0),
                   hoverinfo="skip", showlegend=False, visible=False),
    ], xaxis=dict(title=flavour["x"], range=[0, 10], **integer_axis(10)),
       yaxis=dict(range=[0, 1.02], tickformat=".0%"),
       legend=dict(orientation="h", y=-0.28, x=0, font=dict(size=11)))}
    figs[ACCURACY].update_layout(margin=dict(base["margin"], b=70), height=PANEL_HEIGHT + 30)
    bar = dict(x=cats, y=[None] * len(cats), texttemplate="%{y:.0%}", textposition="outside", cliponaxis=False,
               hovertemplate="%{x}: %{y:.0%}<extra></extra>")
    per_class = [go.Bar(meta="per_class", name=flavour["score"], marker_color=IOU_COLOUR, **bar)]
    if flavour["n_weak"]:
        per_class.append(go.Bar(meta="per_class_weak", name="weakest", marker_color=WEAK_COLOUR, **bar))
    unit = "item" if flavour["count"] == "labels" else "pixel"
    figs[PER_CLASS] = fig(PER_CLASS, [
        *per_class,
        go.Bar(meta="per_class_missing", x=cats, y=[1.0] * len(cats), name="no data", text=["no data"] * len(cats),
               textposition="inside", insidetextanchor="middle", textangle=-90, textfont=dict(color="#757575"),
               marker=dict(color="rgba(0,0,0,0)", line=dict(color="#bdbdbd", width=1),
                           pattern=dict(shape="/", fgcolor="#d0d0d0", size=6)),
               hovertemplate=f"%{{x}}: no labelled {unit} of this class was evaluated<extra></extra>"),
    ], barmode="overlay", xaxis=dict(type="category", categoryorder="array", categoryarray=cats),
       yaxis=dict(range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1.0]))
    figs[BALANCE] = fig(BALANCE, [
        go.Bar(meta="balance", x=cats, y=[0] * len(cats), name=flavour["count"], marker_color=PIXELS_COLOUR,
               hovertemplate=f"%{{x}}: %{{y:,}} {flavour['count']}<extra></extra>"),
    ], xaxis=dict(type="category", categoryorder="array", categoryarray=cats),
       yaxis=dict(range=[0, 1], **integer_axis(1)))
    if calibration:
        figs[RELIABILITY] = fig(RELIABILITY, [
            go.Scatter(meta="diagonal", x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"),
                       hoverinfo="skip"),
            go.Scatter(meta="reliability", x=[], y=[], mode="lines+markers", name="model", marker=dict(color="#9467bd")),
        ], xaxis=dict(range=[0, 1], title="confidence"), yaxis=dict(range=[0, 1.02], title="accuracy"))
    return figs


def _panel_template():
    """The look of plotly's ``plotly_white`` for what the panels draw (axes, bars, lines), without
    the rest of it: plotly validates a template property by property whenever a figure or a
    FigureWidget takes it, and the whole ``plotly_white`` cost 0.5-1 s per ``label()`` for four
    panels on 2 cores; this one about 1 ms."""
    import plotly.graph_objects as go

    axis = dict(gridcolor="#EBF0F8", linecolor="#EBF0F8", zerolinecolor="#EBF0F8", zerolinewidth=2, ticks="",
                automargin=True, title=dict(standoff=15))
    return go.layout.Template(layout=dict(font=dict(color="#2a3f5f"), paper_bgcolor="white", plot_bgcolor="white",
                                          hovermode="closest", xaxis=axis, yaxis=axis))


def trace(fig, name: str):
    """The trace of ``fig`` whose ``meta`` is ``name``."""
    for t in fig.data:
        if t.meta == name:
            return t
    raise KeyError(f"no trace {name!r} in this figure")


def accuracy_text(metrics: dict | None) -> str:
    """``"62% ± 8"`` (± one standard deviation over cross-validation folds, in points), or ``""``."""
    acc = (metrics or {}).get("accuracy")
    if acc is None:
        return ""
    std = (metrics or {}).get("accuracy_std")
    return f"{acc:.0%}" + (f" ± {100 * std:.0f}" if std is not None and np.isfinite(std) else "")


def draw_session(figs: dict, classes, history: pd.DataFrame, metrics: dict | None, counts,
                 *, session_id=None) -> None:
    """Redraw the panels of :func:`session_panels` in place.

    ``history``: the session's rounds (``n_labels``, ``accuracy``, optional
    ``accuracy_std`` and ``session_id``); rounds of ``session_id`` are "this
    session", the others "earlier sessions". ``metrics``: the latest metrics
    (``accuracy``, ``accuracy_std``, ``source_text``, ``per_class``, optional
    ``reliability``). ``counts``: labels per class, in class order.
    """
    classes = list(classes)
    flavour = dict(figs[ACCURACY].layout.meta or CLASSIFICATION_PANELS)
    empty = flavour["empty"]
    h = history if len(history) else pd.DataFrame(columns=["n_labels", "accuracy"])
    h = h[h["accuracy"].notna()] if "accuracy" in h else h
    if session_id is not None and "session_id" in h:
        mine = (h["session_id"] == session_id).to_numpy()
    else:
        mine = np.ones(len(h), bool)
    acc = figs[ACCURACY]
    counts = [int(c) for c in counts]
    for uid, rows, name in (("session", mine, "this session" if session_id is not None else "rounds"),
                            ("earlier", ~mine, "earlier sessions")):
        t, part = trace(acc, uid), h[rows]
        t.x, t.y, t.name = part["n_labels"].astype(int).tolist(), part["accuracy"].astype(float).tolist(), name
        std = part["accuracy_std"] if "accuracy_std" in part else pd.Series([None] * len(part), dtype=object)
        t.error_y.array = [0.0 if v is None or not np.isfinite(float(v)) else float(v) for v in std.tolist()]
        t.showlegend = bool(len(part))
    has_curve = len(h) > 0
    items = sum(counts) if flavour["count"] == "labels" else 0   # pixel counts say nothing of the masks axis
    top = max([*h["n_labels"].astype(int).tolist(), items, 1]) if "n_labels" in h else max(items, 1)
    xmax = max(10, int(np.ceil(top * 1.08)) + 1)
    baseline = trace(acc, "baseline")
    if baseline.visible and baseline.x:
        xmax = max(xmax, int(np.ceil(max(baseline.x))) + 1)
    acc.update_layout(showlegend=has_curve or bool(baseline.visible),
                      xaxis=dict(range=[0, xmax], **integer_axis(xmax)))
    sub = accuracy_text(metrics)
    if sub and (metrics or {}).get("source_text"):
        sub += f" · {metrics['source_text']}"
    title = acc.layout.title.text.split("<br>")[0]
    acc.layout.title.text = title + (f"<br><sub>{plot_text(sub)}</sub>" if sub else "")
    _empty_note(acc, None if has_curve else empty if not sum(counts) else "no score yet")

    per = (metrics or {}).get("per_class") or {}
    values = [None if per.get(c) is None or not np.isfinite(float(per[c])) else float(per[c]) for c in classes]
    n_weak = min(flavour["n_weak"], max(1, len(classes) // 3))   # CamVid's 11 classes: 3; 4 shapes: 1
    weak = _weakest(values, n_weak) if sum(counts) and flavour["n_weak"] else set()
    trace(figs[PER_CLASS], "per_class").y = [None if k in weak else v for k, v in enumerate(values)]
    if flavour["n_weak"]:
        trace(figs[PER_CLASS], "per_class_weak").y = [v if k in weak else None for k, v in enumerate(values)]
        names = ", ".join(plot_text(classes[k]) for k in sorted(weak, key=lambda k: values[k]))
        t = figs[PER_CLASS].layout.title
        t.text = t.text.split("<br>")[0] + (f"<br><sub>weakest: {names}</sub>" if names else "")
    trace(figs[PER_CLASS], "per_class_missing").y = [1.0 if v is None else None for v in values]
    _empty_note(figs[PER_CLASS], empty if not sum(counts) else None)
    trace(figs[PER_CLASS], "per_class_missing").visible = bool(sum(counts))

    trace(figs[BALANCE], "balance").y = counts
    top = max(counts + [1])
    positive = [c for c in counts if c > 0]
    if flavour["count"] != "labels" and positive and max(positive) > 100 * min(positive):
        figs[BALANCE].update_layout(yaxis=dict(type="log", range=None, autorange=True, tickmode="auto",
                                               dtick=None, tick0=None, tickformat="~s"))
    else:
        figs[BALANCE].update_layout(yaxis=dict(type="linear", autorange=False, range=[0, top * 1.1],
                                               **integer_axis(top)))
    _empty_note(figs[BALANCE], empty if not sum(counts) else None)

    if RELIABILITY in figs:
        rel = (metrics or {}).get("reliability") or {"confidence": [], "accuracy": [], "count": []}
        r = trace(figs[RELIABILITY], "reliability")
        unit = "items" if flavour["count"] == "labels" else "pixels"
        r.x, r.y, r.text = list(rel["confidence"]), list(rel["accuracy"]), [f"{n:,} {unit}" for n in rel["count"]]
        ece = (metrics or {}).get("ece")
        t = figs[RELIABILITY].layout.title
        t.text = t.text.split("<br>")[0] + (f"<br><sub>ECE {ece:.3f}</sub>" if ece is not None else "")


def _empty_note(fig, text: str | None) -> None:
    """A centred note such as "no labels yet" in an empty panel (``None`` removes it)."""
    fig.layout.annotations = [] if text is None else [dict(
        text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
        font=dict(size=14, color="#757575"))]
