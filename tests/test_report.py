"""session.report(): one standalone HTML file with the curve, per-class metrics, counts, rounds and calibration."""
from __future__ import annotations

import re

import pytest

from alwidgets import Pool, Session
from alwidgets.report import write_report

XSS = "<img src=x onerror=alert(1)>"
CLASSES = [XSS] + [str(k) for k in range(1, 10)]


def _truth(s, ids):
    return {i: s.classes[s.pool.targets[s.pool.index_of(i)]] for i in ids}


@pytest.fixture(scope="module")
def two_annotators(tmp_path_factory):
    """alice labels two rounds, bob one more, on the same store; calibration on."""
    db = tmp_path_factory.mktemp("report") / "labels.db"
    pool = Pool.digits()
    with Session(pool, classes=CLASSES, store=db, annotator="alice", selector="margin", random_state=1) as s:
        for _ in range(2):
            s.label(12)
            s.submit(_truth(s, s.batch))
    s = Session(pool, classes=CLASSES, store=db, annotator="bob", selector="margin", calibration=True, random_state=2)
    s.label(12)
    s.submit(_truth(s, s.batch))
    yield s
    s.close()


def test_report_sections_and_numbers(two_annotators, tmp_path):
    s = two_annotators
    out = s.report(tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    text = out.read_text(encoding="utf-8")
    for heading in ("Learning curve", "Per-class metrics", "Labels per class and annotator", "Rounds",
                    "Calibration", "Labelled examples"):
        assert f"<h2>{heading}</h2>" in text
    assert text.count('class="plotly-graph-div"') == 4        # curve, per class, counts, reliability
    assert "Expected calibration error: " in text
    # standalone: plotly.js inline, nothing fetched from elsewhere
    assert len(text) > 3_000_000 and not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?https?:", text)
    # one rounds-table row per finished round, in order, with its strategy
    rounds = re.search(r"<h2>Rounds</h2><table>.*?<tbody>(.*?)</tbody>", text, re.S).group(1)
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>(\d+)</td>", rounds)
    hist = s.history
    assert [(int(r), st, int(n)) for r, st, n in rows] == list(zip(hist["round"], hist["strategy"], hist["n_labels"]))
    assert rows[0][1] == "random (cold start)" and rows[1][1] == "margin"
    # counts per class and annotator agree with the store
    counts = re.search(r"<h2>Labels per class and annotator</h2>.*?<table>(.*?)</table>", text, re.S).group(1)
    assert re.findall(r"<th>([^<]*)</th>", counts) == ["class", "alice", "bob", "total"]
    df = s.labels_df()
    for cls in ("3", "7"):
        row = re.search(rf"<tr><td>{cls}</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", counts).groups()
        want = [int(((df.label == cls) & (df.annotator == a)).sum()) for a in ("alice", "bob")]
        assert [int(v) for v in row] == want + [sum(want)]
    # thumbnails: small inline JPEGs, at most 6 per class
    thumbs = re.findall(r"<img src='data:image/jpeg;base64,", text)
    assert 0 < len(thumbs) <= 6 * len(CLASSES)


def test_names_are_escaped(two_annotators, tmp_path):
    text = write_report(two_annotators, tmp_path / "r.html", thumbnails_per_class=0).read_text(encoding="utf-8")
    assert XSS not in text                       # never raw, in HTML or in plotly's JSON
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "Labelled examples" not in text


def test_empty_session_writes_a_report(tmp_path):
    with Session(Pool.digits(), store=":memory:") as s:
        text = s.report(tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "0 of 1797 items labelled" in text and "No finished rounds yet." in text and "no accuracy yet" in text


def test_bad_arguments(two_annotators, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.html"):
        write_report(two_annotators, tmp_path / "report.pdf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(two_annotators, tmp_path / "missing" / "report.html")
    with pytest.raises(ValueError, match="thumbnail_size"):
        write_report(two_annotators, tmp_path / "r.html", thumbnail_size=0)
    assert not list(tmp_path.iterdir())         # nothing half-written


def test_widget_output_carries_a_static_snapshot(two_annotators):
    """nbconvert without widget state (and widget-less viewers) show this text/html: batch, SVG plots, no script."""
    s = two_annotators
    app = s.label(5)
    grid = app.grid
    grid.items = [*grid.items[:4], {**grid.items[4], "error": "truncated", "thumb": b""}]
    bundle = app._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    snap = bundle["text/html"]
    assert snap.count("class='alw-static-tile'") == 5
    assert snap.count("data:image/jpeg;base64,") == 4 and "image unavailable" in snap
    assert snap.count("<svg class='alw-static-plot'") == 3
    assert snap.count("class='alw-point'") == len(s.history)        # one point per finished round
    assert XSS not in snap and "&lt;img src=x" in snap and "<script" not in snap
