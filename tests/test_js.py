"""Runs the widget's JavaScript unit tests (vitest + jsdom in js/) as part of the pytest suite."""
import shutil
import subprocess
from pathlib import Path

from conftest import require

JS = Path(__file__).resolve().parents[1] / "js"


def test_js_unit_tests():
    npm = shutil.which("npm")
    require(npm is not None, "npm is not installed: the widget's JS unit tests cannot run")
    if not (JS / "node_modules" / ".bin" / "vitest").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)
    p = subprocess.run([npm, "test", "--silent"], cwd=JS, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
