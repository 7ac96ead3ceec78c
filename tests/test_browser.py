"""Real-browser test: JupyterLab + headless Chromium (Playwright) runs the quick start.

The test starts an isolated JupyterLab on 127.0.0.1 (free port, random token, temporary Jupyter
config / runtime / settings / workspace directories, no network calls for news, updates or the
extension manager) over a temporary copy of ``notebooks/``, opens ``01_quickstart.ipynb`` in
Debian's Chromium, runs all cells, waits for the widgets and checks that the bqplot slice
figure drew a heatmap that is not blank. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
QUICKSTART = "01_quickstart.ipynb"
CHROMIUM = Path(os.environ.get("RICHVIZ_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Text that means a cell or a widget failed (JupyterLab's widget manager / IPython's traceback).
ERROR_TEXTS = ("Error displaying widget", "Failed to load model class", "Traceback (most recent")
SERVER_START_S = 90.0
RUN_ALL_S = 150.0
RENDER_S = 60.0
# A blank (single-colour) image has variance 0; a drawn heatmap has many shades.
MIN_PIXEL_VARIANCE = 25.0
MIN_DISTINCT_COLOURS = 16

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt chromium)"),
]

# User settings written into the temporary JUPYTERLAB_SETTINGS_DIR.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    # Attach every cell to the DOM (no virtualisation), so outputs are always there to inspect.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False, "disclaimed": False},
}

# Largest visible <image> inside a bqplot figure (HeatMap and Image marks both draw one).
FIND_HEATMAP_JS = """
() => {
  let best = null, bestArea = 0;
  for (const img of document.querySelectorAll('.bqplot.figure svg image')) {
    const href = img.getAttribute('href') || img.getAttribute('xlink:href');
    const r = img.getBoundingClientRect();
    const area = r.width * r.height;
    if (href && area > bestArea) { best = img; bestArea = area; }
  }
  if (best === null || bestArea < 2500) return null;
  const fig = best.closest('.bqplot.figure');
  fig.scrollIntoView({block: 'center'});
  const r = best.getBoundingClientRect();
  const f = fig.getBoundingClientRect();
  for (const e of document.querySelectorAll('[data-richviz-test]')) {
    e.removeAttribute('data-richviz-test');
  }
  fig.setAttribute('data-richviz-test', 'slice-figure');
  return {image: [r.x, r.y, r.width, r.height], figure: [f.x, f.y, f.width, f.height]};
}
"""

# Open the notebook's panel, wait for its kernel, then start "Run All Cells" without awaiting
# it here; completion is recorded in window.__richvizRun.
RUN_ALL_JS = """
async (name) => {
  const app = window.jupyterapp;
  await app.restored;
  let panel = null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path.endsWith(name)) { panel = w; }
  }
  if (panel === null) { throw new Error('notebook is not open: ' + name); }
  app.shell.activateById(panel.id);
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__richvizRun = {done: false, ok: null, error: null};
  app.commands.execute('notebook:run-all-cells').then(
    ok => { window.__richvizRun = {done: true, ok: ok, error: null}; },
    err => { window.__richvizRun = {done: true, ok: false, error: String(err)}; });
  return panel.sessionContext.session.kernel.name;
}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def jupyterlab(root: Path, data_dir: Path, work: Path) -> Iterator[tuple[str, str]]:
    """Run an isolated JupyterLab serving ``root``; yield (base_url, token)."""
    token = secrets.token_hex(16)
    port = free_port()
    dirs = {k: work / k for k in ("config", "runtime", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    write_lab_settings(dirs["settings"])
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_DATA_DIR=str(data_dir),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers / CI often run as root
        cmd.append("--allow-root")
    base = f"http://127.0.0.1:{port}"
    log_path = work / "jupyterlab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"JupyterLab did not start in {SERVER_START_S:.0f} s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield base, token
    finally:
        stop_server(proc, base, token)


def stop_server(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut the server (and its kernels) down politely, then by signal to its process group."""
    if proc.poll() is None:
        with contextlib.suppress(urllib.error.URLError, OSError):
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    # Kernels live in the server's process group: make sure none is left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def png_pixels(png: bytes) -> np.ndarray:
    """Decode a PNG screenshot to an (H, W, 3) float array."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def assert_not_blank(pixels: np.ndarray, what: str) -> None:
    variance = float(pixels.mean(axis=2).var())
    colours = len(np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0))
    assert variance > MIN_PIXEL_VARIANCE and colours >= MIN_DISTINCT_COLOURS, (
        f"{what} looks blank: luminance variance {variance:.1f}, {colours} distinct colours"
    )


def run_notebook_in_lab(
    base: str, token: str, notebook: str, artifacts: Path, prefix: str
) -> dict[str, object]:
    """Open ``notebook`` in headless Chromium, run all cells, check the rendered slice figure.

    Saves ``<prefix>-page.png``, ``<prefix>-figure.png``, ``<prefix>-heatmap.png`` and
    ``<prefix>-console.log`` into ``artifacts``; returns a few measurements for the report.
    """
    from playwright.sync_api import sync_playwright

    timings: dict[str, object] = {}
    console: list[str] = []
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            try:
                page.goto(f"{base}/lab/tree/{notebook}?reset&token={token}", timeout=60_000)
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
                timings["lab_loaded_s"] = time.monotonic() - t0
                timings["kernel"] = page.evaluate(RUN_ALL_JS, notebook)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                run = page.evaluate("() => window.__richvizRun")
                timings["run_all_s"] = time.monotonic() - t0 - float(timings["lab_loaded_s"])
                text = page.locator(".jp-NotebookPanel").first.inner_text()
                for bad in ERROR_TEXTS:
                    assert bad not in text, f"{notebook}: page shows {bad!r}:\n{text[-3000:]}"
                assert run["ok"] is True, f"{notebook}: Run All failed: {run}\n{text[-3000:]}"
                # Widgets may compute in the background and show a placeholder first: poll until
                # the largest bqplot image is drawn and not blank, or the deadline passes.
                page.wait_for_function(FIND_HEATMAP_JS, timeout=RENDER_S * 1000)
                deadline = time.monotonic() + RENDER_S
                while True:
                    page.wait_for_timeout(1000)  # let the image decode and paint
                    boxes = page.evaluate(FIND_HEATMAP_JS)
                    if boxes is None:
                        continue
                    x, y, w, h = boxes["image"]
                    inset = 2  # stay clear of the axes' lines
                    clip = {
                        "x": x + inset,
                        "y": y + inset,
                        "width": w - 2 * inset,
                        "height": h - 2 * inset,
                    }
                    heatmap_png = page.screenshot(clip=clip)
                    pixels = png_pixels(heatmap_png)
                    try:
                        assert_not_blank(pixels, f"{notebook}: the slice heatmap")
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise
                    finally:
                        (artifacts / f"{prefix}-heatmap.png").write_bytes(heatmap_png)
                timings["rendered_s"] = time.monotonic() - t0
                timings["heatmap_px"] = pixels.shape[:2]
                timings["heatmap_variance"] = round(float(pixels.mean(axis=2).var()), 1)
                page.locator("[data-richviz-test=slice-figure]").screenshot(
                    path=str(artifacts / f"{prefix}-figure.png")
                )
                text = page.locator(".jp-NotebookPanel").first.inner_text()
                for bad in ERROR_TEXTS:
                    assert bad not in text, f"{notebook}: page shows {bad!r}:\n{text[-3000:]}"
                timings["figures"] = page.locator(".bqplot.figure").count()
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(artifacts / f"{prefix}-page.png"), full_page=True)
                (artifacts / f"{prefix}-console.log").write_text("\n".join(console) + "\n")
        finally:
            browser.close()
    return timings


@pytest.mark.timeout(300)
def test_quickstart_renders_in_jupyterlab(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOKS / QUICKSTART, root / QUICKSTART)
    with jupyterlab(root, jupyter_data_dir, tmp_path / "jupyter") as (base, token):
        info = run_notebook_in_lab(base, token, QUICKSTART, artifact_dir, "quickstart")
    print(f"browser test: {info}")
    assert info["figures"] >= 1
