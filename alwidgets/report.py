"""One standalone HTML file summing up a labelling session, to share with people who have no kernel.

Everything is inside the file: plotly.js is embedded (no CDN), thumbnails are
small inline JPEGs, and every name (classes, ids, annotators) is HTML-escaped, so
the report opens offline from an e-mail or a shared drive. It is about 5 MB,
almost all of it plotly.js.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path

import numpy as np
import pandas as pd

from ._files import atomic_write

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th:first-child, td:first-child { text-align: left; }
th { background: #f5f5f5; }
.thumbs { display: flex; flex-wrap: wrap; gap: 4px; margin: 4px 0 12px; }
.thumbs img { width: 48px; height: 48px; object-fit: contain; image-rendering: pixelated; background: #f3f3f3; }
.cls { font-weight: 600; margin-top: 8px; }
"""


def write_report(session, path, *, title: str | None = None, thumbnails_per_class: int = 6,
                 thumbnail_size: int = 48) -> Path:
    """Write ``session``'s report to ``path`` (one HTML file, no network needed to view it).

    Sections: learning curve (accuracy against labels, one marker colour per
    strategy), per-class accuracy, label counts per class and annotator, the
    strategy of every round, a reliability diagram when the session has
    ``calibration=True``, and a few labelled thumbnails per class.

    Examples
    --------
    >>> import tempfile, os
    >>> from alwidgets import Pool, Session
    >>> s = Session(Pool.digits(), store=":memory:")
    >>> _ = s.label(4)
    >>> _ = s.submit({i: "7" for i in s.batch})
    >>> out = write_report(s, os.path.join(tempfile.mkdtemp(), "report.html"))
    >>> out.read_text(encoding="utf-8").count("plotly-graph-div") >= 3
    True
    >>> s.close()
    """
    import plotly.offline

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path must end in .html, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write the report: folder {str(path.parent)!r} does not exist")
    for name, v in (("thumbnails_per_class", thumbnails_per_class), ("thumbnail_size", thumbnail_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or (name == "thumbnail_size" and v < 1):
            raise ValueError(f"{name} must be a {'positive' if name == 'thumbnail_size' else 'non-negative'} "
                             f"integer, got {v!r}")

    history = session.history
    labels_df = session.labels_df()
    metrics = _metrics(session, len(labels_df))
    title = title or f"alwidgets report: {session.pool.name}"

    counts = _crosstab(session.classes, labels_df)
    figs = [_learning_curve(history), _per_class(session.classes, metrics), _counts(session.classes, counts)]
    if session.calibration:
        figs.append(_reliability(metrics))
    plots = [f.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}) for f in figs]

    n_pool, n_lab = len(session.pool), len(labels_df)
    acc = metrics.get("accuracy") if metrics else None
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{n_lab} of {n_pool} items labelled · {len(session.classes)} classes · "
        f"selector {_e(session.selector.name)} · "
        + (f"accuracy {acc:.1%} ({_e(metrics.get('source_text', ''))})" if acc is not None else "no accuracy yet")
        + f" · written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
        "<h2>Learning curve</h2>", plots[0],
        "<h2>Per-class metrics</h2>", plots[1], _per_class_table(session.classes, metrics, labels_df),
        "<h2>Labels per class and annotator</h2>", plots[2], _counts_table(counts),
        "<h2>Rounds</h2>", _rounds_table(history),
    ]
    if session.calibration:
        ece = metrics.get("ece") if metrics else None
        parts += ["<h2>Calibration</h2>",
                  f"<p>Expected calibration error: {ece:.3f}</p>" if ece is not None else "<p>No estimate yet.</p>",
                  plots[3]]
    if thumbnails_per_class:
        parts += ["<h2>Labelled examples</h2>", _thumbnails(session, labels_df, thumbnails_per_class, thumbnail_size)]
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<style>{_STYLE}</style><script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
           f"</head><body>{''.join(parts)}</body></html>")
    data = doc.encode("utf-8")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


# ---------------------------------------------------------------------- pieces
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _plot_text(text) -> str:
    """A name as plotly shows it: plotly reads a few HTML tags in labels, so escape them."""
    return html.escape(str(text), quote=False)


def _metrics(session, n_labels: int) -> dict | None:
    m = session.metrics_
    if n_labels and (m is None or m.get("n_labels") != n_labels):
        m = session.evaluate()  # labels changed since the last round (imports, another kernel)
    return m


def _learning_curve(history: pd.DataFrame):
    import plotly.graph_objects as go

    from .plots import _PALETTE

    fig = go.Figure()
    h = history.dropna(subset=["accuracy"]) if len(history) else history
    if len(h):
        fig.add_trace(go.Scatter(x=h["n_labels"], y=h["accuracy"], mode="lines", line=dict(color="#bbb"),
                                 showlegend=False, hoverinfo="skip"))
        for i, (strategy, g) in enumerate(h.groupby("strategy", sort=False)):
            fig.add_trace(go.Scatter(x=g["n_labels"], y=g["accuracy"], mode="markers", name=_plot_text(strategy),
                                     marker=dict(size=9, color=_PALETTE[i % len(_PALETTE)]),
                                     text=[f"round {r}" for r in g["round"]]))
    fig.update_layout(template="plotly_white", height=360, xaxis_title="labels", yaxis_title="accuracy",
                      yaxis=dict(range=[0, 1.02], tickformat=".0%"), legend_title="strategy",
                      margin=dict(l=50, r=10, t=20, b=40))
    return fig


def _per_class(classes, metrics):
    import plotly.graph_objects as go

    per = (metrics or {}).get("per_class") or {}
    fig = go.Figure(go.Bar(x=[_plot_text(c) for c in classes], y=[per.get(c) for c in classes],
                           marker_color="#2ca02c"))
    fig.update_layout(template="plotly_white", height=300, yaxis=dict(range=[0, 1.02], tickformat=".0%"),
                      yaxis_title="accuracy (recall)", margin=dict(l=50, r=10, t=20, b=40))
    fig.update_xaxes(type="category")
    return fig


def _counts(classes, table: pd.DataFrame):
    """Stacked bars of ``table`` (:func:`_crosstab`): labels per class and annotator."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, annotator in enumerate(table.columns):
        fig.add_trace(go.Bar(x=[_plot_text(c) for c in classes], y=table[annotator].tolist(),
                             name=_plot_text(annotator)))
    fig.update_layout(template="plotly_white", height=300, barmode="stack", yaxis_title="labels",
                      legend_title="annotator", margin=dict(l=50, r=10, t=20, b=40))
    fig.update_xaxes(type="category")
    return fig


def _reliability(metrics):
    import plotly.graph_objects as go

    rel = (metrics or {}).get("reliability") or {"confidence": [], "accuracy": [], "count": []}
    fig = go.Figure([
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"), name="perfect"),
        go.Scatter(x=rel["confidence"], y=rel["accuracy"], mode="lines+markers", name="model",
                   text=[f"{n} items" for n in rel["count"]], marker=dict(color="#9467bd")),
    ])
    fig.update_layout(template="plotly_white", height=320, xaxis=dict(range=[0, 1], title="confidence"),
                      yaxis=dict(range=[0, 1.02], title="accuracy"), margin=dict(l=50, r=10, t=20, b=40))
    return fig


def _crosstab(classes, labels_df) -> pd.DataFrame:
    """Labels per class (rows, in class order) and annotator (columns); unnamed annotators are '(none)'."""
    who = labels_df["annotator"].astype(object).where(labels_df["annotator"].notna(), "(none)")
    table = pd.crosstab(labels_df["label"], who) if len(labels_df) else pd.DataFrame(index=[])
    if table.shape[1] == 0:
        table["(none)"] = 0
    return table.reindex(classes, fill_value=0).astype(int)


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _per_class_table(classes, metrics, labels_df) -> str:
    per = (metrics or {}).get("per_class") or {}
    counts = labels_df["label"].value_counts()
    return _table(pd.DataFrame({"class": classes, "labels": [int(counts.get(c, 0)) for c in classes],
                                "accuracy (recall)": [_fmt(per.get(c), ".1%") for c in classes]}))


def _counts_table(counts: pd.DataFrame) -> str:
    table = counts.copy()  # the figure was drawn from the same table: leave it as it is
    table.insert(0, "class", table.index)
    table["total"] = table.drop(columns="class").sum(axis=1)
    return _table(table)


def _rounds_table(history: pd.DataFrame) -> str:
    if not len(history):
        return "<p>No finished rounds yet.</p>"
    out = pd.DataFrame({
        "round": history["round"], "strategy": history["strategy"], "labels": history["n_labels"],
        "added": history["n_added"], "accuracy": [_fmt(v, ".1%") for v in history["accuracy"]],
        "measured on": history["accuracy_source"].fillna("–"),
        "labelling time (s)": [_fmt(v, ".1f") for v in history["label_s"]],
    })
    return _table(out)


def _thumbnails(session, labels_df, per_class: int, size: int) -> str:
    """The latest ``per_class`` labelled items of each class as small inline JPEGs."""
    from .pool import ImageReadError

    pool, parts = session.pool, []
    latest = labels_df.iloc[::-1]
    for c in session.classes:
        ids = latest.loc[latest["label"] == c, "item_id"].head(per_class).tolist()
        if not ids:
            continue
        imgs = []
        for item_id in ids:
            try:
                i = pool.index_of(item_id)
                data = pool.thumbnail(i, size=size)
            except (KeyError, ImageReadError):
                continue  # labelled in the store but not readable here: the tables still count it
            src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
            imgs.append(f"<img src='{src}' alt='{_e(item_id)}' title='{_e(item_id)}'>")
        parts.append(f"<div class='cls'>{_e(c)}</div><div class='thumbs'>{''.join(imgs)}</div>")
    return "".join(parts) or "<p>No labels yet.</p>"


# ---------------------------------------------------------------------- static snapshot of the widget
def snapshot_html(app, *, thumbnail_size: int = 48) -> str:
    """Static HTML of a :class:`~alwidgets.widgets.app.LabelApp`: the grid's batch and small SVG plots.

    It goes into the widget's output as ``text/html`` next to the live view, so a
    notebook exported by ``jupyter nbconvert --to html`` without widget state (or
    opened where widgets cannot run) still shows the batch and the curves. No
    script, names escaped, thumbnails re-encoded small.
    """
    grid = app.grid
    assigned = grid.assignments or {}
    tiles = []
    for item in grid.items:
        src = _small_jpeg(item.get("thumb") or b"", thumbnail_size)
        img = (f"<img src='data:image/jpeg;base64,{src}' alt='{_e(item['id'])}' style='width:64px;height:64px;"
               "object-fit:contain;image-rendering:pixelated;background:#f3f3f3'>") if src else \
            "<div style='width:64px;height:64px;border:1px dashed #999;font-size:10px'>image unavailable</div>"
        label = assigned.get(item["id"], "")
        tiles.append(f"<div class='alw-static-tile' style='width:72px;font-size:11px'>{img}"
                     f"<div style='overflow:hidden;text-overflow:ellipsis;white-space:nowrap'>"
                     f"{_e(item.get('caption') or item['id'])}</div><b>{_e(label)}</b></div>")
    p = grid.progress or {}
    line = f"batch of {len(grid.items)}"
    if p.get("pool_size") is not None:
        line += f" · pool {p.get('pool_labelled', 0)}/{p['pool_size']} labelled"
    if grid.status:
        line += f" · {grid.status}"
    per, bal = app.trace("per_class"), app.trace("balance")
    points = sorted((x, y) for name in ("earlier", "session") for x, y in
                    zip(app.trace(name).x or [], app.trace(name).y or []))  # every round, this session's and before
    charts = [_svg_line("accuracy vs labels", [x for x, _ in points], [y for _, y in points]),
              _svg_bars("per-class accuracy", app.classes, list(per.y or []), percent=True),
              _svg_bars("labels per class", app.classes, list(bal.y or []), percent=False)]
    return ("<div class='alw-static' style='font:12px system-ui,sans-serif'>"
            f"<div style='color:#666'>{_e(line)} (static snapshot)</div>"
            f"<div style='display:flex;flex-wrap:wrap;gap:4px;margin:4px 0'>{''.join(tiles)}</div>"
            f"<div style='display:flex;flex-wrap:wrap;gap:12px'>{''.join(charts)}</div></div>")


def _small_jpeg(data: bytes, size: int) -> str | None:
    import io

    from PIL import Image

    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if max(im.size) > size:
                im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except OSError:
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


_W, _H, _PAD = 260, 150, 28


def _svg(title: str, body: str) -> str:
    return (f"<svg class='alw-static-plot' xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H + 30}' "
            f"font-size='10' font-family='sans-serif'><text x='{_W / 2}' y='12' text-anchor='middle' "
            f"font-size='12'>{_e(title)}</text><g transform='translate(0,18)'>"
            f"<line x1='{_PAD}' y1='{_H - _PAD}' x2='{_W - 4}' y2='{_H - _PAD}' stroke='#999'/>"
            f"<line x1='{_PAD}' y1='4' x2='{_PAD}' y2='{_H - _PAD}' stroke='#999'/>{body}</g></svg>")


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _svg_line(title: str, xs, ys) -> str:
    pts = [(x, y) for x, y in ((_num(a), _num(b)) for a, b in zip(xs, ys)) if x is not None and y is not None]
    if not pts:
        return _svg(title, f"<text x='{_W / 2}' y='{_H / 2}' text-anchor='middle' fill='#999'>no rounds yet</text>")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    span = (x1 - x0) or 1.0
    sx = lambda x: _PAD + 8 + (x - x0) / span * (_W - _PAD - 20)  # noqa: E731
    sy = lambda y: (_H - _PAD) - y * (_H - _PAD - 8)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(f"<circle class='alw-point' cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='#1f77b4'>"
                   f"<title>{x:g} labels: {y:.0%}</title></circle>" for x, y in pts)
    ticks = (f"<text x='{_PAD - 3}' y='{sy(1) + 3:.1f}' text-anchor='end'>100%</text>"
             f"<text x='{_PAD - 3}' y='{sy(0) + 3:.1f}' text-anchor='end'>0%</text>"
             f"<text x='{sx(x0):.1f}' y='{_H - _PAD + 12}' text-anchor='middle'>{x0:g}</text>"
             + (f"<text x='{sx(x1):.1f}' y='{_H - _PAD + 12}' text-anchor='middle'>{x1:g}</text>" if x1 != x0 else ""))
    return _svg(title, f"<polyline points='{path}' fill='none' stroke='#1f77b4' stroke-width='2'/>{dots}{ticks}")


def _svg_bars(title: str, names, values, *, percent: bool) -> str:
    vals = [_num(v) for v in values]
    top = 1.0 if percent else max([v for v in vals if v is not None] + [1.0])
    n = max(len(names), 1)
    w = (_W - _PAD - 8) / n
    bars = []
    for i, (name, v) in enumerate(zip(names, vals)):
        x = _PAD + 4 + i * w
        if v is not None:
            h = v / top * (_H - _PAD - 8)
            shown = f"{v:.0%}" if percent else f"{v:g}"
            bars.append(f"<rect x='{x + 1:.1f}' y='{_H - _PAD - h:.1f}' width='{max(w - 2, 1):.1f}' height='{h:.1f}' "
                        f"fill='{'#2ca02c' if percent else '#ff7f0e'}'><title>{_e(name)}: {shown}</title></rect>")
        if n <= 20:
            bars.append(f"<text x='{x + w / 2:.1f}' y='{_H - _PAD + 12}' text-anchor='middle'>{_e(str(name)[:6])}</text>")
    scale = "100%" if percent else f"{top:g}"
    return _svg(title, f"<text x='{_PAD - 3}' y='11' text-anchor='end'>{scale}</text>{''.join(bars)}")
