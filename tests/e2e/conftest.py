"""Real-browser fixtures: a Jupyter server on 127.0.0.1 and headless Debian Chromium via Playwright.

One server (JupyterLab 4 and Notebook 7 are both its extensions) serves a temporary
root directory for the whole run; each test writes its notebook there and opens it in
a fresh browser context. Waits are event-based: the server's ``/api/status``, DOM
selectors, and a cell's execution count appearing once the kernel has run it.

Without Chromium or Playwright the tests skip locally and FAIL under ``CI=1``.
On failure a screenshot of the page is saved under the test's ``tmp_path`` and its
path printed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
SLOW = 120_000  # ms: kernel start and first render on a busy 2-core machine
STEP = 30_000   # ms: one interaction's effect


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the browser tests cannot run in CI (.ci/run installs Debian chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sync_api():
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("Python package playwright is not installed (pip install playwright)")
    return sync_api


@pytest.fixture(scope="module")
def browser(sync_api):
    # per module: Playwright's sync API owns an event loop while it runs, so a session-wide
    # instance would break other modules that start their own (tests/test_widget.py)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A running ``jupyter server`` with a token, serving ``root``."""

    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, ui: str, name: str) -> str:
        """Where ``name`` opens in JupyterLab (``ui="lab"``) or Notebook 7 (``ui="notebook"``).

        JupyterLab gets a new, empty workspace each time: otherwise it reopens the
        notebooks of earlier tests as hidden tabs, with their own cells and grids.
        """
        if ui == "lab":
            return f"{self.base}/lab/workspaces/t{secrets.token_hex(6)}/tree/{name}?reset&token={self.token}"
        return f"{self.base}/notebooks/{name}?token={self.token}"

    def stop_kernels(self) -> None:
        """Shut down every kernel session (each test starts its own; idle ones still cost memory)."""
        for sess in self.api("sessions") or []:
            req = urllib.request.Request(f"{self.base}/api/sessions/{sess['id']}", method="DELETE",
                                         headers={"Authorization": f"token {self.token}"})
            try:
                urllib.request.urlopen(req, timeout=30)
            except OSError:
                pass

    def api(self, path: str):
        req = urllib.request.Request(f"{self.base}/api/{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")


def _settings(root: Path) -> Path:
    """User settings for JupyterLab/Notebook: no news pop-up, widget state saved with the notebook."""
    d = root / "settings"
    for plugin, value in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    }.items():
        f = d / (plugin + ".jupyterlab-settings")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    return d


@pytest.fixture(scope="session")
def jupyter(sync_api, tmp_path_factory):
    """A Jupyter server on 127.0.0.1, a free port and a random token; stopped after the run."""
    base = tmp_path_factory.mktemp("jupyter")
    root = base / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(_settings(base)), JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               # kernels import the checkout under test, not whichever copy is installed
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("JUPYTER_PLATFORM_DIRS", None)
    log = base / "server.log"
    cmd = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
           "--ServerApp.terminals_enabled=False"] + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = JupyterServer(root, port, token, proc, log)
    deadline = time.monotonic() + SLOW / 1000
    while True:  # poll until the server answers (it has no readiness event to wait on)
        if proc.poll() is not None:
            pytest.fail(f"jupyter server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            server.api("status")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail(f"jupyter server did not answer within {SLOW // 1000} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
    yield server
    server.stop_kernels()
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def server(jupyter):
    """The Jupyter server, with the kernels this test started shut down afterwards."""
    yield jupyter
    jupyter.stop_kernels()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh browser page; records dialogs and page errors; screenshot on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(STEP)
    pg = context.new_page()
    pg.dialogs = []
    pg.errors = []

    def on_dialog(d):
        pg.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda e: pg.errors.append(f"{e}\n{e.stack or ''}"))
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        shot = tmp_path / f"{request.node.name}.png"
        try:
            pg.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failed page: {shot}")
        except Exception as e:  # the page may be gone; the failure itself is what matters
            print(f"\nno screenshot ({e})")
    context.close()


def write_notebook(root: Path, name: str, cells: list[str]) -> Path:
    """A notebook of code cells with the python3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = root / name
    nbformat.write(nb, path)
    return path


def cell(page, i: int):
    """The ``i``-th notebook cell."""
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def open_notebook(page, server: JupyterServer, ui: str, name: str) -> None:
    """Open ``name`` and wait until all its cells are on the page and its kernel is idle.

    JupyterLab attaches a long notebook's cells a few at a time after the first is
    shown, so the cells are counted against the file, not taken from the page early.
    """
    page.goto(server.url(ui, name))
    # a code cell shows its editor, a markdown cell (rendered on open) its text
    cell(page, 0).locator(".cm-content:visible, .jp-RenderedMarkdown:visible").first.wait_for(
        state="visible", timeout=SLOW)
    n_cells = len(json.loads((server.root / name).read_text())["cells"])
    from playwright.sync_api import expect

    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(n_cells, timeout=SLOW)
    wait_kernel_idle(page, server, name)


def wait_kernel_idle(page, server: JupyterServer, name: str, timeout_ms: int = SLOW) -> None:
    """Wait until the notebook's kernel reports ``idle`` (the session API, polled without sleeping long)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        sessions = [s for s in server.api("sessions") if s.get("path", "").endswith(name)]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"kernel of {name} not idle after {timeout_ms // 1000} s: {sessions}")
        page.wait_for_timeout(250)


def run_cell(page, i: int, timeout_ms: int = SLOW):
    """Run cell ``i`` (not run before) with Shift+Enter, as a person would; wait until the kernel is done.

    Done = the cell's prompt shows its execution count (``[n]:``), which Jupyter
    sets from the kernel's reply (``[*]:`` while it runs).
    """
    c = cell(page, i)
    c.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    c.locator(".jp-InputArea-prompt").filter(has_text=re.compile(r"\[\d+\]")).wait_for(timeout=timeout_ms)
    # JupyterLab and Notebook render an exception as stderr text holding the traceback
    tb = c.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text=re.compile(r"Traceback|Error\b"))
    if tb.count():
        raise AssertionError(f"cell {i} raised:\n{tb.first.inner_text()}")
    return c


def cell_json(page, i: int, marker: str = "RESULT:") -> dict:
    """Run cell ``i`` and parse the JSON it prints after ``marker``."""
    c = run_cell(page, i)
    out = c.locator(".jp-OutputArea-output").filter(has_text=marker)
    out.first.wait_for(timeout=STEP)
    text = out.first.inner_text()
    return json.loads(text.split(marker, 1)[1].strip().splitlines()[0])


def our_errors(page) -> list[str]:
    """Uncaught page errors raised by our widget code (Jupyter's own start-up noise is left out)."""
    return [e for e in page.errors if re.search(r"alw|labelgrid|anywidget|blob:|plotly", e, re.I)]
