"""Real-browser test of app mode: the quick start served by Voilà (``richviz app``'s command
line and kernel) and driven in headless Chromium.

Voilà runs on 127.0.0.1 (a free port, a random token, temporary Jupyter config / runtime / data
directories, the ``python3`` kernel of this interpreter) over a temporary copy of
``notebooks/``; the page may reach nothing but the server (every other request is aborted and
recorded). Checks: the page shows no code (no input area, no editor, none of the notebook's
source), its slice heatmap is drawn (the same pixel checks as tests/test_browser.py), and the
step slider, moved with the keyboard in the page, moves the views (the shown step and the
heatmap image change). Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html import escape
from pathlib import Path

import pytest

pytest.importorskip("voila", reason="app-mode tests need voila (the app extra)")
pytest.importorskip("ipywidgets", reason="browser tests need ipywidgets")

from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    NOTEBOOKS,
    QUICKSTART,
    RENDER_S,
    check_heatmap,
    data_url_bytes,
    free_port,
    needs_chromium,
    output_errors,
    png_pixels,
    stop_server,
)

from richviz.app import VOILA_CONFIG, app_environment, app_files, voila_command  # noqa: E402

SERVER_START_S = 90.0
#: the quick start trains, computes its metrics and draws: generous on a shared 2-core machine
APP_RENDER_S = 240.0
#: hosts Voilà's own page template asks for (Font Awesome CSS); aborted here, nothing needs it
KNOWN_EXTERNAL = {"cdn.jsdelivr.net"}

# The viewer's step slider: the first slider labelled "step"; its readout and its handle.
STEP_SLIDER_JS = """
() => {
  for (const s of document.querySelectorAll('.widget-slider')) {
    const label = s.querySelector('.widget-label');
    if (label && label.textContent.trim() === 'step') {
      s.setAttribute('data-richviz-test', 'step-slider');
      return s.querySelector('.widget-readout').textContent.trim();
    }
  }
  return null;
}
"""
HEATMAP_HREF_JS = """
() => {
  const img = document.querySelector('[data-richviz-test=heatmap]');
  return img ? (img.getAttribute('href') || img.getAttribute('xlink:href')) : null;
}
"""
CODE_JS = """
() => ({
  // a code cell holds only its outputs (markdown cells keep their rendered input area)
  inputs: document.querySelectorAll(
    '.jp-CodeCell .jp-InputArea, .jp-CodeCell .jp-Cell-inputWrapper, .jp-InputPrompt').length,
  code_cells: document.querySelectorAll('.jp-CodeCell').length,
  editors: document.querySelectorAll('.cm-editor, .CodeMirror, .jp-Editor').length,
  outputs: document.querySelectorAll('.jp-OutputArea').length,
})
"""


def notebook_code(path: Path) -> list[str]:
    """The code cells' lines of a notebook (non-blank, stripped)."""
    nb = json.loads(path.read_text())
    lines = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            lines += [x.strip() for x in "".join(cell["source"]).splitlines() if x.strip()]
    return lines


@contextlib.contextmanager
def voila_app(
    notebook: Path, data_dir: Path, work: Path, tornado: dict | None = None
) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """Serve ``notebook`` as ``richviz app`` does (its command line, kernel and Voilà config,
    with ``tornado`` settings added to that config's); yield (base_url, token, process)."""
    token = secrets.token_hex(16)
    port = free_port()
    for d in ("config", "runtime"):
        (work / d).mkdir(parents=True, exist_ok=True)
    files = app_files(work / "app")
    if tornado:
        config = json.loads(json.dumps(VOILA_CONFIG))
        config["Voila"]["tornado_settings"].update(tornado)
        (files / "config" / "voila.json").write_text(json.dumps(config))
    env = app_environment(files)
    env.update(
        JUPYTER_CONFIG_DIR=str(work / "config"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTER_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # tiny demo model: one intra-op thread is faster on a shared CPU
    )
    cmd = voila_command(notebook, port, token=token)
    base = f"http://127.0.0.1:{port}"
    log_path = work / "voila.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=notebook.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_S
        while "Voilà is running at" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                pytest.fail(f"Voila exited ({proc.returncode}):\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Voila did not start in {SERVER_START_S:.0f} s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield base, token, proc
    finally:
        stop_server(proc, base, token)


@pytest.fixture(scope="module")
def quickstart_app(tmp_path_factory: pytest.TempPathFactory, jupyter_data_dir: Path):
    """The quick start served as an app from a copy of notebooks/: (base, token, work dir)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)")
    work = tmp_path_factory.mktemp("voila")
    root = work / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOKS / QUICKSTART, root / QUICKSTART)
    with voila_app(root / QUICKSTART, jupyter_data_dir, work) as (base, token, _proc):
        yield base, token, work


@pytest.mark.browser
@needs_chromium
def test_the_app_needs_its_token(quickstart_app) -> None:
    """Without the token (or with a wrong one) the page is not served: a redirect to the
    login form, whose body holds no app (and runs no kernel)."""
    base, token, _work = quickstart_app

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for url in (f"{base}/", f"{base}/?token=wrong{token}"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            opener.open(url, timeout=30)
        assert exc.value.code in (302, 403), (url, exc.value.code)
        if exc.value.code == 302:
            assert "/login" in exc.value.headers["Location"], exc.value.headers["Location"]


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(420)
def test_quickstart_renders_as_an_app(quickstart_app, artifact_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, token, work = quickstart_app
    prefix = "voila-quickstart"
    code = notebook_code(NOTEBOOKS / QUICKSTART)
    assert "from richviz.train import train" in code  # the control: lines the page must not show
    assert any("Explorer(run)" in line for line in code)
    console: list[str] = []
    external: list[str] = []
    info: dict[str, object] = {}
    t0 = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))

            def route(r) -> None:  # no network: the server only
                if r.request.url.startswith(base):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)

            def assert_no_errors(when: str) -> None:
                text = page.inner_text("body")
                bad = output_errors(text) + [t for t in ("There was an error when executing",)
                                            if t in text]  # fmt: skip
                assert not bad, f"the app {when}: the page shows {bad}:\n{text[-3000:]}"

            try:
                page.goto(f"{base}/?token={token}", timeout=120_000)
                # the Explorer appears once the cell has run; its heatmap a little later
                deadline = time.monotonic() + APP_RENDER_S
                while True:
                    page.wait_for_timeout(1000)
                    assert_no_errors("while rendering")
                    reason, measured = check_heatmap(page, artifact_dir, prefix)
                    if reason is None and page.evaluate(STEP_SLIDER_JS) is not None:
                        break
                    assert time.monotonic() < deadline, f"not rendered: {reason} ({measured})"
                info["rendered_s"] = round(time.monotonic() - t0, 1)
                info.update(measured)
                page.wait_for_timeout(3000)  # late errors and the fine field after a preview
                assert_no_errors("after rendering")

                # no code: no input areas or editors, and none of the source in the page
                counts = page.evaluate(CODE_JS)
                info["dom"] = counts
                assert counts["inputs"] == 0 and counts["editors"] == 0, counts
                assert counts["outputs"] >= 1, counts
                html, text = page.content(), page.inner_text("body")
                shown = [
                    line
                    for line in code
                    if len(line) > 12 and (line in text or escape(line, quote=False) in html
                                           or escape(line) in html)
                ]  # fmt: skip
                assert not shown, f"source lines in the page: {shown}"
                assert page.locator("text=Boundary magnification").count() >= 1  # its output

                # the step slider, moved with the keyboard, moves the views
                reason, _ = check_heatmap(page, artifact_dir, prefix)
                assert reason is None, reason
                before_step = page.evaluate(STEP_SLIDER_JS)
                before_href = page.evaluate(HEATMAP_HREF_JS)
                before_px = png_pixels(data_url_bytes_of(page))
                page.screenshot(path=str(artifact_dir / f"{prefix}-page.png"), full_page=True)
                handle = page.locator("[data-richviz-test=step-slider] .noUi-handle").first
                handle.focus()
                page.keyboard.press("Home")
                deadline = time.monotonic() + RENDER_S
                while True:
                    page.wait_for_timeout(1000)
                    assert_no_errors("after moving the step")
                    step = page.evaluate(STEP_SLIDER_JS)
                    reason, measured = check_heatmap(page, artifact_dir, f"{prefix}-step0")
                    href = page.evaluate(HEATMAP_HREF_JS)
                    if step != before_step and reason is None and href != before_href:
                        break
                    assert time.monotonic() < deadline, (
                        f"the views did not move: step {before_step!r} -> {step!r}, heatmap "
                        f"{'changed' if href != before_href else 'unchanged'}, {reason}"
                    )
                info["steps"] = (before_step, step)
                assert before_step == "200" and step == "0", info["steps"]
                page.wait_for_timeout(2000)  # a preview may be followed by the fine field
                after_px = png_pixels(data_url_bytes_of(page))
                changed = (
                    before_px.shape != after_px.shape
                    or float(abs(before_px - after_px)[..., :3].mean()) > 1.0
                )
                assert changed, "the heatmap's pixels are the same at step 0 and step 200"
                # the viewer says which step it shows (its field status line)
                assert re.search(r"\bstep 0\b", page.inner_text("body")), "no 'step 0' shown"
                page.screenshot(path=str(artifact_dir / f"{prefix}-step0-page.png"), full_page=True)
                # nothing left the machine but Voila's own Font Awesome stylesheet requests
                hosts = {re.sub(r"^\w+://([^/]+)/.*$", r"\1", u) for u in external}
                info["external"] = sorted(hosts)
                assert hosts <= KNOWN_EXTERNAL, external
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(artifact_dir / f"{prefix}-last.png"), full_page=True)
                (artifact_dir / f"{prefix}-console.log").write_text("\n".join(console) + "\n")
                with contextlib.suppress(OSError):
                    shutil.copy(work / "voila.log", artifact_dir / f"{prefix}-voila.log")
        finally:
            browser.close()
    print(f"voila test: {info}")


def data_url_bytes_of(page) -> bytes:
    """The marked heatmap's own pixels (PNG), decoded by the browser."""
    from test_browser import IMAGE_PIXELS_JS

    return data_url_bytes(page.evaluate(IMAGE_PIXELS_JS))


def test_notebook_code_reads_the_source_lines(tmp_path: Path) -> None:
    nb = {"cells": [{"cell_type": "markdown", "source": "# t"},
                    {"cell_type": "code", "source": ["a = 1\n", "\n", "  print(a)"]}]}  # fmt: skip
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert notebook_code(tmp_path / "n.ipynb") == ["a = 1", "print(a)"]


# ---- progress while a long cell runs, and a notebook that runs past the websocket ping timeout

PROGRESS_CELLS = [
    "from richviz.widgets.progress import ProgressLine\nprogress = ProgressLine()\nprogress",
    "import time\nfrom tqdm.auto import tqdm\nreport = progress.track('work')\n"
    "for i in tqdm(range(16), desc='own-bar'):\n    time.sleep(0.5)\n    report(i + 1, 16)\n"
    "print('long cell finished')",
]
WAIT_CELLS = ["import time\ntime.sleep(6)\nprint('after the wait')"]


def watch_page(base: str, token: str, seconds: float, probe: str) -> list[object]:
    """Open the app and record ``probe`` (a JS function of no argument) once a second."""
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                       else r.abort())  # fmt: skip
            page.goto(f"{base}/?token={token}", timeout=120_000)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                seen.append(page.evaluate(probe))
                if seen[-1] == "stop":
                    break
                page.wait_for_timeout(500)
        finally:
            browser.close()
    return seen


PROGRESS_PROBE = """
() => {
  const text = document.body.innerText;
  if (text.includes('long cell finished')) return 'stop';
  const m = text.match(/work: (\\d+) \\/ 16/);
  return {done: m ? Number(m[1]) : null, own_bar: text.includes('own-bar')};
}
"""


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
def test_a_progress_line_moves_while_the_long_cell_runs(
    tmp_path: Path, jupyter_data_dir: Path
) -> None:
    """Under Voilà a bar displayed by an earlier cell moves while the long cell works; the long
    cell's own tqdm bar is not on the page until the cell has ended (why the notebooks show a
    ``ProgressLine`` ahead of their long cells)."""
    from test_browser import write_notebook

    write_notebook(tmp_path / "progress.ipynb", PROGRESS_CELLS)
    with voila_app(tmp_path / "progress.ipynb", jupyter_data_dir, tmp_path / "j") as (b, t, _):
        seen = watch_page(b, t, 120, PROGRESS_PROBE)
    assert seen and seen[-1] == "stop", seen[-5:]
    moving = [s for s in seen[:-1] if isinstance(s, dict) and s["done"] is not None]
    partial = sorted({s["done"] for s in moving if 0 < s["done"] < 16})
    assert len(partial) >= 2, f"the bar never showed the work in progress: {seen}"
    assert not any(s["own_bar"] for s in moving), "the cell's own bar showed before it ended"


WAIT_PROBE = "() => document.body.innerText.includes('after the wait') ? 'stop' : 'waiting'"


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fixed", [True, False], ids=["richviz-config", "voila-default"])
def test_a_cell_longer_than_the_ping_timeout_still_renders(
    tmp_path: Path, jupyter_data_dir: Path, fixed: bool
) -> None:
    """Pings every second: with richviz's ``ws_ping_timeout`` a cell outlasting several pings
    still shows its output; with a 2 s timeout (Voilà's 90 s, scaled down) it never does:
    voila-dashboards/voila#1540, which ``richviz app`` and Binder's voila config work around."""
    from test_browser import write_notebook

    write_notebook(tmp_path / "wait.ipynb", WAIT_CELLS)
    tornado = {"ws_ping_interval": 1000} | ({} if fixed else {"ws_ping_timeout": 2000})
    with voila_app(tmp_path / "wait.ipynb", jupyter_data_dir, tmp_path / "j", tornado) as (
        b, t, _,
    ):  # fmt: skip
        seen = watch_page(b, t, 45, WAIT_PROBE)
    assert (seen[-1] == "stop") is fixed, seen[-3:]


# ---- the Playground's click-to-add in an app


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
def test_playground_click_adds_points_in_an_app(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    """Clicks on the Playground's heatmap reach its kernel under Voilà too: each adds a point
    (the count under the class picker grows)."""
    from playwright.sync_api import sync_playwright
    from test_browser import FIND_HEATMAP_JS, write_notebook
    from test_browser_playground import CELL, POINTS

    write_notebook(tmp_path / "pg.ipynb", [CELL])

    def count(page) -> int | None:
        found = POINTS.findall(page.inner_text("body"))
        return int(found[-1]) if found else None

    with voila_app(tmp_path / "pg.ipynb", jupyter_data_dir, tmp_path / "j") as (base, token, _):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/?token={token}", timeout=120_000)
                deadline = time.monotonic() + APP_RENDER_S
                while True:
                    page.wait_for_timeout(1000)
                    reason, info = check_heatmap(page, artifact_dir, "voila-playground")
                    text = page.inner_text("body")
                    assert not output_errors(text), output_errors(text)
                    if reason is None and "step 50 ·" in text and count(page) is not None:
                        break
                    assert time.monotonic() < deadline, f"playground not drawn: {reason} {info}"
                before = count(page)
                x, y, w, h = page.evaluate(FIND_HEATMAP_JS)["image"]
                added = 0
                for fx, fy in [(0.5, 0.5), (0.3, 0.7), (0.7, 0.3)]:
                    page.mouse.click(x + fx * w, y + fy * h)
                    wanted = f"/points: {before + added + 1}\\b/"
                    with contextlib.suppress(Exception):
                        page.wait_for_function(
                            f"() => {wanted}.test(document.body.innerText)", timeout=10_000
                        )
                    added = count(page) - before
                page.screenshot(
                    path=str(artifact_dir / "voila-playground-page.png"), full_page=True
                )
            finally:
                browser.close()
    assert 1 <= added <= 3, f"3 clicks added {added} points (count was {before})"


# ---- every notebook as an app (opt-in: minutes of CPU per notebook on a shared machine)

ALL_NOTEBOOKS = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
ALL_ENV = "RICHVIZ_VOILA_NOTEBOOKS"
# Voilà's placeholder for a cell whose outputs have not arrived (progressive rendering)
PENDING_JS = "() => document.querySelectorAll('.voila-skeleton-container').length"
NOTEBOOK_S = 600.0


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    os.environ.get(ALL_ENV) != "1",
    reason=f"every notebook under Voila takes minutes: set {ALL_ENV}=1 (the quick start above "
    "always runs)",
)
@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_every_notebook_renders_as_an_app(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path, name: str
) -> None:
    """Each notebook under ``richviz app``'s Voilà: every cell's outputs arrive (no placeholder
    left), no error, no code, at least one figure."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOKS / name, root / name)
    prefix = f"voila-{name.removesuffix('.ipynb')}"
    with voila_app(root / name, jupyter_data_dir, tmp_path / "j") as (base, token, _):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                           else r.abort())  # fmt: skip
                page.goto(f"{base}/?token={token}", timeout=120_000)
                page.wait_for_timeout(3000)
                deadline = time.monotonic() + NOTEBOOK_S
                while page.evaluate(PENDING_JS) > 0:
                    text = page.inner_text("body")
                    assert "There was an error when executing" not in text, text[-2000:]
                    assert not output_errors(text), output_errors(text)
                    assert time.monotonic() < deadline, f"{name}: cells still pending"
                    page.wait_for_timeout(2000)
                page.wait_for_timeout(5000)  # widgets' background work
                text = page.inner_text("body")
                page.screenshot(path=str(artifact_dir / f"{prefix}-page.png"), full_page=True)
                assert "There was an error when executing" not in text, text[-2000:]
                assert not output_errors(text), output_errors(text)
                counts = page.evaluate(CODE_JS)
                assert counts["inputs"] == 0 and counts["editors"] == 0, counts
                assert page.locator(".bqplot.figure").count() >= 1, f"{name}: no figure"
            finally:
                browser.close()
