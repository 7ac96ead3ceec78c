"""Real-browser tests: JupyterLab + headless Chromium (Playwright) runs every notebook.

One isolated JupyterLab on 127.0.0.1 (free port, random token, temporary Jupyter config /
runtime / settings / workspace directories, no network calls for news, updates or the
extension manager) serves a temporary copy of ``notebooks/`` for the whole module; the
notebooks run one after the other in Debian's Chromium at 1400 x 1000. Per notebook: Run All,
wait for the widgets, then per bqplot figure on screen check that it is not blank, has tick
labels on every axis, that its tick labels do not overlap (bounding boxes of the rendered
text), that a figure with several series has a legend, and that a slice with data points
shows both class colours. The quick start's slice heatmap is also checked pixel by pixel.
Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
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

pytest.importorskip("jupyterlab", reason="browser tests need JupyterLab")
pytest.importorskip("ipywidgets", reason="browser tests need ipywidgets")

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
# An exception shown by a widget's status line, e.g. "step 400: RuntimeError: ...".
ERROR_PATTERN = re.compile(r"\b[A-Z]\w*(?:Error|Exception): ")
SERVER_START_S = 90.0
RUN_ALL_S = 300.0
RENDER_S = 60.0
SETTLE_S = 3.0
# A blank (single-colour) image has variance 0; a drawn heatmap has many shades.
MIN_PIXEL_VARIANCE = 25.0
MIN_DISTINCT_COLOURS = 16
# On screen the heatmap fills its plot area: little of it may be the white page behind it.
MAX_WHITE_FRACTION = 0.25

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian package chromium)"
)

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
  best.setAttribute('data-richviz-test', 'heatmap');
  return {image: [r.x, r.y, r.width, r.height], figure: [f.x, f.y, f.width, f.height]};
}
"""

# The marked heatmap <image>'s own pixels, decoded by the browser, as a PNG data URL.
IMAGE_PIXELS_JS = """
async () => {
  const img = document.querySelector('[data-richviz-test=heatmap]');
  const href = img.getAttribute('href') || img.getAttribute('xlink:href');
  const bitmap = await createImageBitmap(await (await fetch(href)).blob());
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  return canvas.toDataURL('image/png');
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


SHUTDOWN_JS = """
async (name) => {
  for (const w of window.jupyterapp.shell.widgets('main')) {
    if (w.context && w.context.path.endsWith(name)) { await w.sessionContext.shutdown(); }
  }
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
        # The demo model is tiny: one intra-op thread is faster, and far faster on a shared CPU.
        OMP_NUM_THREADS="1",
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
    """Decode a PNG to an (H, W, 4) float RGBA array (0..255)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.float64)


def blank_reason(rgba: np.ndarray) -> str | None:
    """Why an image counts as blank (None if it shows a drawn field).

    Blank: mostly transparent, nearly one colour (luminance variance), or few colours.
    """
    alpha = float(rgba[..., 3].mean()) / 255
    if alpha < 0.9:
        return f"mostly transparent (mean alpha {alpha:.2f})"
    rgb = rgba[..., :3]
    variance = float(rgb.mean(axis=2).var())
    if variance <= MIN_PIXEL_VARIANCE:
        return f"luminance variance {variance:.1f} <= {MIN_PIXEL_VARIANCE}"
    colours = len(np.unique(rgb.reshape(-1, 3).astype(np.uint8), axis=0))
    if colours < MIN_DISTINCT_COLOURS:
        return f"only {colours} distinct colours"
    return None


def white_fraction(rgba: np.ndarray) -> float:
    """Fraction of (near-)white pixels: the page showing through where nothing was painted."""
    return float((rgba[..., :3] >= 245).all(axis=2).mean())


def data_url_bytes(url: str) -> bytes:
    import base64

    header, _, payload = url.partition(",")
    assert header.startswith("data:image/png;base64"), header[:40]
    return base64.b64decode(payload)


def output_errors(text: str) -> list[str]:
    """Lines of the notebook's visible text that report a failure."""
    bad = [t for t in ERROR_TEXTS if t in text]
    bad += [line for line in text.splitlines() if ERROR_PATTERN.search(line)]
    return bad


def check_heatmap(page, artifacts: Path, prefix: str) -> tuple[str | None, dict[str, object]]:
    """Check the marked heatmap once: its own pixels and its painted screen area.

    Returns (why it is not rendered yet or None, measurements); saves the screenshot.
    """
    box = page.evaluate(FIND_HEATMAP_JS)
    if box is None:
        return "no bqplot image yet", {}
    source = png_pixels(data_url_bytes(page.evaluate(IMAGE_PIXELS_JS)))
    x, y, w, h = box["image"]
    inset = 2  # stay clear of the axes' lines
    clip = {"x": x + inset, "y": y + inset, "width": w - 2 * inset, "height": h - 2 * inset}
    shot = page.screenshot(clip=clip)
    (artifacts / f"{prefix}-heatmap.png").write_bytes(shot)
    screen = png_pixels(shot)
    info = {
        "heatmap_source_px": source.shape[:2],
        "heatmap_screen_px": screen.shape[:2],
        "heatmap_variance": round(float(screen[..., :3].mean(axis=2).var()), 1),
        "white_fraction": round(white_fraction(screen), 3),
    }
    reason = blank_reason(source)
    if reason is not None:
        return f"the heatmap image itself is blank: {reason}", info
    reason = blank_reason(screen)
    if reason is not None:
        return f"the heatmap on screen is blank: {reason}", info
    if info["white_fraction"] > MAX_WHITE_FRACTION:
        return f"{info['white_fraction']:.0%} of the heatmap's area on screen is white", info
    return None, info


#: text of a widget still at work (status lines)
BUSY_PATTERN = re.compile(
    r"computing \d+×\d+ field|loading metrics…|fixing the colour range|waiting for"
)
#: class colours of the slice points (richviz.widgets.rendering.CLASS_PALETTE[:2])
CLASS_RGB = ((0x00, 0x72, 0xB2), (0xE6, 0x9F, 0x00))

# Per visible bqplot figure: its box, the tick labels per axis (text and box), how many data
# series it draws, whether a legend sits next to it, and the fill colours of its dots.
FIGURES_JS = """
() => {
  const out = [];
  const figs = document.querySelectorAll('.jp-NotebookPanel .bqplot.figure');
  figs.forEach((fig, index) => {
    const r = fig.getBoundingClientRect();
    if (r.width < 20 || r.height < 20) return;  // in a hidden tab
    fig.setAttribute('data-richviz-figure', String(index));
    const axes = [];
    for (const axis of fig.querySelectorAll('g.axis')) {
      const ab = axis.getBoundingClientRect();
      if (ab.width === 0 && ab.height === 0) continue;  // a hidden axis (no series on it)
      const ticks = [];
      for (const t of axis.querySelectorAll('.tick text')) {
        const b = t.getBoundingClientRect();
        if (!t.textContent.trim() || b.width === 0) continue;
        ticks.push({text: t.textContent, box: [b.x, b.y, b.width, b.height]});
      }
      axes.push(ticks);
    }
    let series = 0;
    for (const path of fig.querySelectorAll('g.curve path.line')) {
      const d = path.getAttribute('d') || '';
      // a line of two points or more; a step cursor is vertical (no width)
      if ((d.match(/L/g) || []).length >= 1 && path.getBBox().width > 2) series += 1;
    }
    let legend = fig.querySelector('.legend') !== null;
    let box = fig.parentElement;
    for (let k = 0; k < 3 && box && !legend; k++, box = box.parentElement) {
      legend = box.querySelector('.richviz-legend') !== null;
    }
    const fills = new Set();
    const dots = fig.querySelectorAll('.dot');
    for (const dot of dots) {
      fills.add(getComputedStyle(dot).fill);
    }
    let images = 0;
    for (const img of fig.querySelectorAll('image')) {
      const b = img.getBoundingClientRect();
      const href = img.getAttribute('href') || img.getAttribute('xlink:href');
      if (href && b.width * b.height > 400) {
        images += 1;
      }
    }
    out.push({index, box: [r.x, r.y, r.width, r.height], axes, series, legend,
              fills: Array.from(fills), dots: dots.length, images});
  });
  return out;
}
"""


def overlapping(boxes: list[list[float]], slack: float = 0.5) -> list[tuple[int, int]]:
    """Index pairs of boxes ``[x, y, w, h]`` that intersect (by more than ``slack`` px)."""
    pairs = []
    for i, (x0, y0, w0, h0) in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            x1, y1, w1, h1 = boxes[j]
            dx = min(x0 + w0, x1 + w1) - max(x0, x1)
            dy = min(y0 + h0, y1 + h1) - max(y0, y1)
            if dx > slack and dy > slack:
                pairs.append((i, j))
    return pairs


def colour_pixels(rgba: np.ndarray, rgb: tuple[int, int, int], tol: float = 40.0) -> int:
    """Number of pixels within ``tol`` (sum of channel differences) of ``rgb``."""
    return int((np.abs(rgba[..., :3] - np.asarray(rgb, float)).sum(-1) < tol).sum())


def figure_problems(fig: dict, rgba: np.ndarray) -> tuple[list[str], bool]:
    """What is wrong with one rendered figure (``FIGURES_JS``'s record and its pixels), and
    whether it is a data slice (a heatmap with at least 10 data points on it).

    A figure must draw something (a line, a point or an image, and ink on >= 2 % of its
    pixels), have at least two axes (one for a colour bar: a tall image alone) with at least
    two tick labels each and no overlapping tick
    labels, a legend when it has several series, and, for a data slice, data points in both
    class colours, each visible in the pixels.
    """
    name = f"figure {fig['index']}"
    problems: list[str] = []
    ink = 1.0 - white_fraction(rgba)
    if fig["series"] + fig["dots"] + fig["images"] == 0 or ink < 0.02:
        problems.append(f"{name}: blank ({ink:.1%} of its pixels drawn, no line/point/image)")
    w, h = fig["box"][2], fig["box"][3]
    colour_bar = fig["images"] >= 1 and not fig["dots"] and not fig["series"] and w < h / 2
    if len(fig["axes"]) < (1 if colour_bar else 2):
        problems.append(f"{name}: {len(fig['axes'])} axes drawn, not x and y")
    for k, ticks in enumerate(fig["axes"]):
        if len(ticks) < 2:
            problems.append(f"{name}: axis {k} has {len(ticks)} tick labels")
        clash = overlapping([t["box"] for t in ticks])
        if clash:
            texts = [(ticks[i]["text"], ticks[j]["text"]) for i, j in clash]
            problems.append(f"{name}: axis {k} tick labels overlap: {texts}")
    if fig["series"] >= 2 and not fig["legend"]:
        problems.append(f"{name}: {fig['series']} series and no legend")
    is_slice = fig["images"] >= 1 and fig["dots"] >= 10
    if is_slice:
        fills = set(fig["fills"])
        for r, g, b in CLASS_RGB:
            if f"rgb({r}, {g}, {b})" not in fills:
                problems.append(f"{name}: no data point in class colour {(r, g, b)}")
            elif colour_pixels(rgba, (r, g, b)) < 10:
                problems.append(f"{name}: class colour {(r, g, b)} not visible in the slice")
    return problems, is_slice


def check_figures(page, artifacts: Path, prefix: str) -> tuple[int, list[str], int]:
    """Check every visible bqplot figure (:func:`figure_problems`); returns (figures checked,
    problems found, data slices among them)."""
    problems: list[str] = []
    slices = 0
    figures = page.evaluate(FIGURES_JS)
    for fig in figures:
        locator = page.locator(f"[data-richviz-figure='{fig['index']}']")
        locator.scroll_into_view_if_needed()
        shot = locator.screenshot()
        (artifacts / f"{prefix}-fig{fig['index']}.png").write_bytes(shot)
        found, is_slice = figure_problems(fig, png_pixels(shot))
        problems += found
        slices += is_slice
    return len(figures), problems, slices


def run_notebook_in_lab(
    base: str, token: str, notebook: str, artifacts: Path, prefix: str, heatmap: bool = True
) -> dict[str, object]:
    """Open ``notebook`` in headless Chromium, run all cells, check the rendered slice figure.

    Saves ``<prefix>-page.png``, ``<prefix>-figure.png``, ``<prefix>-heatmap.png`` and
    ``<prefix>-console.log`` into ``artifacts``; returns a few measurements for the report.
    """
    from playwright.sync_api import sync_playwright

    info: dict[str, object] = {}
    console: list[str] = []
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            notebook_panel = page.locator(".jp-NotebookPanel").first

            def assert_no_errors(when: str) -> None:
                text = notebook_panel.inner_text()
                bad = output_errors(text)
                assert not bad, f"{notebook} {when}: the page shows {bad}:\n{text[-3000:]}"

            try:
                page.goto(f"{base}/lab/tree/{notebook}?reset&token={token}", timeout=60_000)
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                notebook_panel.wait_for(timeout=60_000)
                # a presentation screen: the file browser folded away (the notebook gets the
                # full 1400 px width)
                page.evaluate(
                    "() => window.jupyterapp.commands.execute('application:toggle-left-area')"
                )
                info["lab_loaded_s"] = round(time.monotonic() - t0, 1)
                info["kernel"] = page.evaluate(RUN_ALL_JS, notebook)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                run = page.evaluate("() => window.__richvizRun")
                info["run_all_s"] = round(time.monotonic() - t0 - info["lab_loaded_s"], 1)
                assert_no_errors("after Run All")
                assert run["ok"] is True, f"{notebook}: Run All failed: {run}"
                # Widgets compute in the background and may show a placeholder or a coarse
                # preview first: poll until the heatmap is drawn, failing early on any error.
                deadline = time.monotonic() + RENDER_S
                while heatmap:
                    page.wait_for_timeout(1000)  # let images decode and paint
                    assert_no_errors("while rendering")
                    reason, measured = check_heatmap(page, artifacts, prefix)
                    info.update(measured)
                    if reason is None:
                        break
                    assert time.monotonic() < deadline, f"{notebook}: {reason} ({measured})"
                # ... and until no widget is busy (status lines, progress bars)
                while BUSY_PATTERN.search(notebook_panel.inner_text()):
                    assert_no_errors("while computing")
                    assert time.monotonic() < deadline, f"{notebook}: widgets still busy"
                    page.wait_for_timeout(500)
                info["rendered_s"] = round(time.monotonic() - t0, 1)
                page.wait_for_timeout(SETTLE_S * 1000)  # late errors from background work
                assert_no_errors("after rendering")
                if heatmap:
                    reason, measured = check_heatmap(page, artifacts, prefix)
                    assert reason is None, f"{notebook}: {reason} ({measured})"
                    page.locator("[data-richviz-test=slice-figure]").screenshot(
                        path=str(artifacts / f"{prefix}-figure.png")
                    )
                info["figures"], info["figure_problems"], info["slices"] = check_figures(
                    page, artifacts, prefix
                )
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(artifacts / f"{prefix}-page.png"), full_page=True)
                with contextlib.suppress(Exception):  # free the CPU for the next notebook
                    page.evaluate(SHUTDOWN_JS, notebook)
                (artifacts / f"{prefix}-console.log").write_text("\n".join(console) + "\n")
        finally:
            browser.close()
    return info


# ---- the checks themselves, on constructed images and text (no browser needed)


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def test_blank_checks_accept_a_field_and_reject_blank_images() -> None:
    u = np.linspace(0, 1, 64)
    field = np.zeros((64, 64, 4))
    field[..., 0] = 255 * u[None, :]
    field[..., 1] = 255 * u[:, None]
    field[..., 2] = 128
    field[..., 3] = 255
    assert blank_reason(png_pixels(_png(field))) is None
    flat = field.copy()
    flat[..., :3] = 90
    assert "variance" in blank_reason(png_pixels(_png(flat)))
    clear = field.copy()
    clear[..., 3] = 0
    assert "transparent" in blank_reason(png_pixels(_png(clear)))
    two = field.copy()
    two[..., :3] = np.where(u[None, :, None] < 0.5, 0, 255)
    assert "colours" in blank_reason(png_pixels(_png(two)))
    page = np.full((64, 64, 4), 255.0)
    page[:10] = field[:10]
    assert white_fraction(page) > MAX_WHITE_FRACTION >= white_fraction(field)


def _figure(**kw: object) -> dict:
    tick = {"text": "0", "box": [0, 0, 5, 5]}
    far = {"text": "1", "box": [50, 0, 5, 5]}
    base = {"index": 0, "axes": [[tick, far], [tick, far]], "series": 1, "legend": False,
            "fills": [], "dots": 0, "images": 0, "box": [0, 0, 300, 200]}  # fmt: skip
    return {**base, **kw}


def test_figure_checks_on_constructed_records() -> None:
    drawn = np.full((40, 40, 4), 255, np.uint8)
    drawn[:10, :, :3] = 0  # 25 % ink
    assert figure_problems(_figure(), drawn) == ([], False)
    # nothing drawn: no line, point or image, or no ink
    assert "blank" in figure_problems(_figure(series=0), drawn)[0][0]
    assert "blank" in figure_problems(_figure(), np.full((40, 40, 4), 255, np.uint8))[0][0]
    # a y axis that never rendered, one tick label only, overlapping labels
    tick = {"text": "0", "box": [0, 0, 5, 5]}
    assert "1 axes drawn" in figure_problems(_figure(axes=[[tick, tick]]), drawn)[0][0]
    found = figure_problems(_figure(axes=[[tick], [tick, {"text": "x", "box": [2, 2, 5, 5]}]]),
                            drawn)[0]  # fmt: skip
    assert any("1 tick labels" in p for p in found) and any("overlap" in p for p in found)
    assert "no legend" in figure_problems(_figure(series=3), drawn)[0][0]
    # a data slice must show both class colours
    blue, orange = (f"rgb({r}, {g}, {b})" for r, g, b in CLASS_RGB)
    one_class = figure_problems(_figure(images=1, dots=50, fills=[blue]), drawn)
    assert one_class[1] and any("no data point in class colour" in p for p in one_class[0])
    rgba = drawn.copy()
    rgba[20:25, :5, :3], rgba[25:30, :5, :3] = CLASS_RGB
    assert figure_problems(_figure(images=1, dots=50, fills=[blue, orange]), rgba) == ([], True)
    hidden = figure_problems(_figure(images=1, dots=50, fills=[blue, orange]), drawn)[0]
    assert len(hidden) == 2 and all("not visible" in p for p in hidden)
    # a colour bar (a tall image alone) has one axis; a chart with one axis is flagged above
    bar = _figure(series=0, images=1, box=[0, 0, 60, 300], axes=[_figure()["axes"][0]])
    assert figure_problems(bar, drawn) == ([], False)
    # three anchors on an image plane are not a data slice
    assert figure_problems(_figure(images=1, dots=3, fills=[blue]), drawn) == ([], False)


def test_output_errors_flags_tracebacks_and_widget_status_lines() -> None:
    assert output_errors("loaded step 400 on cpu\nfield step 400 · penultimate · 96×96") == []
    assert output_errors("FutureWarning: `torch.jit.script` is deprecated") == []
    status = "step 400: RuntimeError: Trying to access a forward AD level"
    assert output_errors(f"ok\n{status}") == [status]
    assert output_errors("[Error displaying widget: model not found]")
    assert output_errors("Traceback (most recent call last):")


# ---- the real browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, jupyter_data_dir: Path):
    """One JupyterLab for the module, serving a copy of notebooks/: (base, token, root)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)")
    work = tmp_path_factory.mktemp("lab")
    root = work / "root"
    root.mkdir()
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    with jupyterlab(root, jupyter_data_dir, work / "jupyter") as (base, token):
        yield base, token, root


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
def test_quickstart_renders_in_jupyterlab(lab, artifact_dir: Path) -> None:
    base, token, _root = lab
    info = run_notebook_in_lab(base, token, QUICKSTART, artifact_dir, "quickstart")
    print(f"browser test: {info}")
    assert info["figures"] >= 1 and info["slices"] >= 1  # the slice with both classes' data
    problems = info["figure_problems"]
    assert not problems, problems


#: notebooks whose every figure is checked (the quick start above is checked the same way)
NOTEBOOK_NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if p.name != QUICKSTART)


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_figures_in_jupyterlab(lab, artifact_dir: Path, name: str) -> None:
    base, token, _root = lab
    prefix = name.removesuffix(".ipynb")
    info = run_notebook_in_lab(base, token, name, artifact_dir, prefix, heatmap=False)
    print(f"browser test {name}: {info}")
    assert info["figures"] >= 1, f"{name}: no bqplot figure on screen"
    problems = info["figure_problems"]
    assert not problems, f"{name}: {problems}"


# ---- HTML injection through a run folder's name

PAYLOAD = '<img src=x onerror="window.__pwned=1">'
INJECTION_NOTEBOOK = "injection.ipynb"
INJECTION_CELL = f"""\
from richviz.train import train
from richviz.widgets import Explorer

run = train("moons", out={"runs/" + PAYLOAD!r}, steps=30, progress=False)
Explorer(run, viewer={{"resolution": 24, "coarse_resolution": 12}})
"""


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "source": src}
            for src in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
def test_run_folder_name_cannot_inject_script(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    """An Explorer on a run folder named like an <img onerror> tag: no script runs, and the
    name is shown literally (header and browser title). Control: the same tag inserted as
    HTML by the page does run its handler, so the check can fail."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / INJECTION_NOTEBOOK, [INJECTION_CELL])
    console: list[str] = []
    with jupyterlab(root, jupyter_data_dir, tmp_path / "jupyter") as (base, token):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
                panel = page.locator(".jp-NotebookPanel").first
                page.goto(f"{base}/lab/tree/{INJECTION_NOTEBOOK}?reset&token={token}")
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                panel.wait_for(timeout=60_000)
                page.evaluate(RUN_ALL_JS, INJECTION_NOTEBOOK)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                assert page.evaluate("() => window.__richvizRun")["ok"] is True
                header = f"richviz · {PAYLOAD}"
                deadline = time.monotonic() + RENDER_S
                while header not in panel.inner_text():
                    pwned = page.evaluate("() => typeof window.__pwned")
                    assert pwned == "undefined", "the run folder's name ran a script"
                    assert not output_errors(panel.inner_text()), panel.inner_text()[-2000:]
                    assert time.monotonic() < deadline, "the Explorer header never appeared"
                    page.wait_for_timeout(1000)
                page.wait_for_timeout(SETTLE_S * 1000)  # images load (and fail) meanwhile
                # the checkpoint browser (with the run's name as its title) is the second tab
                panel.locator(".lm-TabBar-tab", has_text="checkpoints").first.click()
                page.wait_for_timeout(500)
                text = panel.inner_text()
                page.screenshot(path=str(artifact_dir / "injection-page.png"), full_page=True)
                assert page.evaluate("() => typeof window.__pwned") == "undefined"
                assert text.count(PAYLOAD) >= 2, text[-2000:]  # header and browser title
                assert page.locator(".jp-NotebookPanel img[src='x']").count() == 0
                # control: the payload as real HTML runs its handler in this browser
                page.evaluate(
                    "(p) => { const d = document.createElement('div'); d.innerHTML = p;"
                    " document.body.appendChild(d); }",
                    PAYLOAD,
                )
                page.wait_for_function("() => window.__pwned === 1", timeout=10_000)
            finally:
                (artifact_dir / "injection-console.log").write_text("\n".join(console) + "\n")
                browser.close()
