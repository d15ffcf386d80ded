"""Plotly figures shared by the simulation, the session and reports."""
from __future__ import annotations

import pandas as pd

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"]


def learning_curve_figure(curves: pd.DataFrame, target: float | None = None, reference: str = "random",
                          title: str = "Accuracy versus labels"):
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
    fig.update_layout(title=title, xaxis_title="labels", yaxis_title="test accuracy",
                      yaxis=dict(tickformat=".0%"), template="plotly_white", legend_title="strategy")
    return fig
