"""The docs site builds with ``mkdocs build --strict`` and its self-contained examples run."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        for value in entry.values():
            out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))
    for name in ("keymap.md", "labels.md", "benchmarks.md", "selectors.md", "concepts.md", "api.md"):
        assert name in pages


def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: pip install -e '.[dev]'")
        pytest.skip("mkdocs not installed (pip install mkdocs mkdocs-material 'mkdocstrings[python]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    p = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("Session", "Pool", "write_report", "Margin", "LabelStore", "TimmEmbedder"):
        assert re.search(rf'id="alwidgets\.[\w.]*{name}"', api), name  # mkdocstrings rendered it
    assert api.count('class="doc doc-object doc-class"') >= 20
    selectors = (tmp_path / "site" / "selectors" / "index.html").read_text(encoding="utf-8")
    assert "uncertainty_diversity" in selectors


def test_every_selector_is_documented():
    from alwidgets.select import available

    text = (DOCS / "selectors.md").read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `([a-z_]+)` \|", text, re.M)}
    assert table == set(available())


def test_custom_selector_example_runs():
    from alwidgets.select import make_selector, registry

    code = re.findall(r"```python\n(.*?)```", (DOCS / "selectors.md").read_text(), re.S)[-1]
    try:
        exec(compile(code, "docs/selectors.md", "exec"), {})
        labels = np.full(30, -1)
        labels[:3] = 0
        X = np.random.default_rng(0).random((30, 4))
        sel = make_selector("far_from_mean").select(5, labels=labels, embeddings=X, random_state=0)
        far = np.linalg.norm(X - X.mean(0), axis=1)
        far[:3] = -1
        assert set(sel.indices.tolist()) == set(np.argsort(-far)[:5].tolist())
    finally:
        registry._REGISTRY.pop("far_from_mean", None)


def test_architecture_examples_run():
    """Every code block of the Architecture section in docs/concepts.md runs as written."""
    from alwidgets.select import registry

    text = (DOCS / "concepts.md").read_text()
    section = text[text.index("## Architecture"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 5
    try:
        for k, code in enumerate(blocks):
            exec(compile(code, f"docs/concepts.md (Architecture, example {k + 1})", "exec"), {})
    finally:
        registry._REGISTRY.pop("far_from_mean_arch", None)


def test_segmentation_examples_run():
    """The self-contained examples of docs/segmentation.md (synthetic shapes, tiny decoders) run in order in one
    namespace; the CamVid walk-through (it reads ../shared) is left out."""
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "segmentation.md").read_text(), re.S)
    runnable = [b for b in blocks if "../shared" not in b]
    assert len(runnable) == 4 and len(blocks) == 5
    ns: dict = {}
    for k, code in enumerate(runnable):
        exec(compile(code, f"docs/segmentation.md (example {k + 1})", "exec"), ns)
