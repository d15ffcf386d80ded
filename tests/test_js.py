"""Runs the widget's JavaScript unit tests (node's test runner + jsdom, in js/) as part of the pytest suite.

The tests import ``alwidgets/widgets/static/labelgrid.js``, the very file the widget ships
(no build step), and use the key maps Python sends (``js/test/keymaps.json``).
"""
import shutil
import subprocess
from pathlib import Path

from conftest import require

JS = Path(__file__).resolve().parents[1] / "js"


def test_js_unit_tests():
    npm = shutil.which("npm")
    require(npm is not None, "npm is not installed: the widget's JS unit tests cannot run")
    if not (JS / "node_modules" / "jsdom").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)
    p = subprocess.run([npm, "test", "--silent"], cwd=JS, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "# fail 0" in p.stdout and "# pass " in p.stdout, p.stdout[-2000:]
