"""Fixtures for the real-browser tests: the system Chromium (driven by Playwright) and a JupyterLab server.

Browser downloads are impossible here, so Playwright drives the system Chromium: ``$KLVIZ_CHROMIUM``, else
``/usr/bin/chromium``. Without it (or without Playwright) the tests skip with the reason, except where the
browser test is required, and they fail instead: in CI (``$CI`` set) and wherever ``$KLVIZ_CHROMIUM`` is
set (``.ci/run`` installs Chromium and exports it), since a missing browser there is a broken build, not a
reason to skip.

JupyterLab serves a temporary copy of ``notebooks/``, so running the notebook never rewrites the committed
one, with its own Jupyter directories, on 127.0.0.1, a free port and a random token. It is always
terminated, with its kernels, at the end of the session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT = 60  # seconds

# Step latencies observed in the browser, printed in the terminal summary.
LATENCIES_MS: list[float] = []
# Per control: {"latencies": [ms, ...], "drag": {"fps": ..., "frames": ...}, "kernel_ms": median step}.
CONTROL_RESULTS: dict[str, dict] = {}
# What the website test checked (pages, images, links, ...), printed in the terminal summary.
SITE_REPORT: dict[str, object] = {}


def _unavailable(reason: str):
    if os.environ.get("CI") or "KLVIZ_CHROMIUM" in os.environ:
        pytest.fail(f"{reason} (CI or KLVIZ_CHROMIUM is set: the browser test must run here, not skip)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("KLVIZ_CHROMIUM") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _unavailable(f"no Chromium executable at {path!r}: install Debian's chromium package "
                     "or set KLVIZ_CHROMIUM to a Chromium binary")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen):
    """SIGTERM the server's process group (the server and its kernels), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory):
    """A running JupyterLab on a temporary copy of notebooks/: yields (base_url, token, root_dir)."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    # Private config, data (kernel specs), runtime, settings and workspace directories: the reader's own
    # Jupyter setup plays no part, and the kernel is this Python's (with klviz installed).
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
        env[name] = str(base / name.lower())
    env["MPLBACKEND"] = "agg"  # the notebook selects ipympl itself; nothing else should open a window
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
        "--LabApp.expose_app_in_browser=True",
        # The closed network: no news, update checks or extension catalogue to fetch.
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {process.returncode}; "
                                   f"log:\n{(base / 'server.log').read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {url} within {SERVER_START_TIMEOUT} s")
            time.sleep(0.25)
        yield url, token, root
    finally:
        _stop(process)
        log.close()


@pytest.fixture(scope="session")
def step_latencies() -> list[float]:
    """Where a test records the step latencies (ms) it observed; printed at the end of the run."""
    return LATENCIES_MS


@pytest.fixture(scope="session")
def control_results() -> dict:
    """Where the tests record, per control, the latencies, drag frame rate and kernel step time."""
    return CONTROL_RESULTS


def pytest_terminal_summary(terminalreporter):
    if SITE_REPORT:
        terminalreporter.write_line("website in the browser (site/_build/html on 127.0.0.1): " + "; ".join(
            f"{what} {count}" for what, count in SITE_REPORT.items()))
    if CONTROL_RESULTS:
        load = os.getloadavg()
        terminalreporter.write_line(
            f"interactive figures in the browser (action -> page updated), load average {load[0]:.2f} "
            f"{load[1]:.2f} {load[2]:.2f}:")
        terminalreporter.write_line(f"  {'control':<24}{'median ms':>10}{'min':>7}{'max':>7}{'n':>4}"
                                    f"{'kernel ms':>11}{'drag fps':>10}")
        for name, result in CONTROL_RESULTS.items():
            latencies = result["latencies"]
            drag = result.get("drag")
            kernel = result.get("kernel_ms")
            terminalreporter.write_line(
                f"  {name:<24}{statistics.median(latencies):>10.0f}{min(latencies):>7.0f}{max(latencies):>7.0f}"
                f"{len(latencies):>4}{kernel if kernel is not None else float('nan'):>11.1f}"
                f"{drag['fps'] if drag else float('nan'):>10.1f}")
    if LATENCIES_MS:
        terminalreporter.write_line(
            f"explorer in the browser: key press -> table and canvas updated, median "
            f"{statistics.median(LATENCIES_MS):.0f} ms (min {min(LATENCIES_MS):.0f}, max {max(LATENCIES_MS):.0f}, "
            f"{len(LATENCIES_MS)} steps)"
        )
