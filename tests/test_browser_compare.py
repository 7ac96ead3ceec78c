"""Real-browser test of Compare: JupyterLab + headless Chromium on a comparison of three runs.

A notebook trains three small XOR runs (alpha 1, 10, 100; seeds 0, 1, 2) and shows
``Compare`` of them with the geometry of the first two side by side. Checked in the page
(the rendered SVG and the screenshot's pixels, not the Python objects):

- every chart draws three curves, one in each run's colour (pixels of each colour in the
  chart's screenshot, and one line path per colour in its SVG);
- the shared cursor stands at the same step in every chart (the cursor line's screen position
  read back through each chart's own x-axis ticks: equal to the notebook's step + 1);
- the geometry shows two heatmaps (not blank) and exactly one visible colour bar, with ticks;
- clicking a run's checkbox in the table (a real mouse click) removes that run's curves from
  every chart (its colour's pixels and its line paths are gone), and a second click brings
  them back.

The page screenshot lands in ``test-artifacts/compare-page.png``.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jupyterlab", reason="browser tests need JupyterLab")
pytest.importorskip("ipywidgets", reason="browser tests need ipywidgets")

from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    RENDER_S,
    RUN_ALL_JS,
    RUN_ALL_S,
    SHUTDOWN_JS,
    blank_reason,
    colour_pixels,
    jupyterlab,
    needs_chromium,
    output_errors,
    png_pixels,
    write_notebook,
)

NOTEBOOK = "compare.ipynb"
CELL = """\
import shutil

from richviz.train import train
from richviz.widgets import Compare

paths = []
for seed, alpha in enumerate((1.0, 10.0, 100.0)):  # other seeds: the curves do not coincide
    out = f"runs/cmp_alpha_{alpha:g}"
    shutil.rmtree(out, ignore_errors=True)
    run = train("xor", out=out, steps=60, alpha=alpha, seed=seed, progress=False,
                overrides={"checkpoints": 8})
    paths.append(run.path)
view = Compare(
    paths,
    metrics=["d_lr", "test_acc", "boundary_magnification"],
    geometry=2,
    geometry_options={"resolution": 32, "coarse_resolution": 16, "ellipse_density": 6},
)
view.wait()
view.step = view.cursor_steps()[len(view.cursor_steps()) // 2]
view.geometry.wait()
print("RICHVIZ_COMPARE " + json.dumps({"step": view.step, "cursor_x": view.cursor_x(),
      "runs": [e.name for e in view.entries],
      "colors": [view.colors.color(e.name) for e in view.entries]}))
view
"""
CHART_TITLES = ("D_LR", "test accuracy", "boundary magnification")
MIN_RUN_PIXELS = 20  # pixels of a run's colour in a chart with its curve drawn
CURSOR_RGB = "rgb(176, 0, 32)"  # richviz.widgets.charts: the cursor's #b00020

# Per visible bqplot figure: title, box, stroke colours of its drawn line paths, the cursor's
# screen x and the x axis's ticks (screen x, text), its images (box, href) and axes count.
PAGE_JS = """
() => {
  const out = [];
  document.querySelectorAll('.bqplot.figure').forEach((fig, index) => {
    const box = fig.getBoundingClientRect();
    if (box.width < 5 || box.height < 5 || fig.offsetParent === null) return;
    fig.setAttribute('data-richviz-cmp', String(index));
    const title = (fig.querySelector('.mainheading') || {}).textContent || '';
    const strokes = [];
    let cursor = null;
    fig.querySelectorAll('.curve path.line').forEach(p => {
      const d = p.getAttribute('d') || '';
      const r = p.getBoundingClientRect();
      if (d.length < 4 || d.includes('NaN') || (r.width < 1 && r.height < 1)) return;
      const s = getComputedStyle(p).stroke;
      if (s === '%CURSOR%') { cursor = r.x + r.width / 2; return; }
      strokes.push(s);
    });
    let xTicks = [];
    const axes = fig.querySelectorAll('.axis');
    axes.forEach(ax => {
      const ticks = [];
      ax.querySelectorAll('.tick').forEach(t => {
        const r = t.getBoundingClientRect();
        const text = (t.querySelector('text') || {}).textContent || '';
        if (text) ticks.push([r.x + r.width / 2, text]);
      });
      const spread = ticks.length >= 2 ? Math.abs(ticks[0][0] - ticks[ticks.length - 1][0]) : 0;
      const horizontal = spread > 20;
      if (horizontal && xTicks.length === 0) {
        const ys = [...ax.querySelectorAll('.tick')].map(t => t.getBoundingClientRect().y);
        if (Math.max(...ys) - Math.min(...ys) < 3) xTicks = ticks;
      }
    });
    const images = [...fig.querySelectorAll('svg image')].map(i => {
      const r = i.getBoundingClientRect();
      return [r.width, r.height];
    }).filter(([w, h]) => w > 4 && h > 4);
    out.push({index, title: title.trim(), box: [box.x, box.y, box.width, box.height],
              strokes, cursor, xTicks, images, axes: axes.length});
  });
  return out;
}
""".replace("%CURSOR%", CURSOR_RGB)

# Mark the checkbox in the run table's row of the run named ``name`` (the grid's pairs: a
# checkbox, then the row's HTML cell holding the name).
MARK_CHECKBOX_JS = """
(name) => {
  for (const cell of document.querySelectorAll('.widget-html')) {
    const text = cell.textContent || '';
    if (!text.includes(name)) continue;
    const prev = cell.previousElementSibling;
    const box = prev && prev.querySelector('input[type=checkbox]');
    if (box) { box.setAttribute('data-richviz-cmp-box', name); return box.checked; }
  }
  return null;
}
"""


def hex_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def css_rgb(color: str) -> str:
    r, g, b = hex_rgb(color)
    return f"rgb({r}, {g}, {b})"


def tick_value(text: str) -> float:
    """A tick label as a number ('10³', '1e3', '0.5', '−1')."""
    sup = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
    text = text.replace("−", "-").strip()
    m = re.fullmatch(r"10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)", text)
    if m:
        return 10.0 ** int(m.group(1).translate(sup))
    return float(text)


def screen_to_data(px: float, ticks: list[list]) -> float:
    """Data x of screen x ``px`` from an axis's ticks (log axis: interpolated in log10)."""
    xs = np.array([t[0] for t in ticks], float)
    vs = np.array([tick_value(t[1]) for t in ticks], float)
    log = bool((vs > 0).all() and len(vs) >= 2 and vs.max() / vs.min() >= 9.9)
    vv = np.log10(vs) if log else vs
    slope, icpt = np.polyfit(xs, vv, 1)
    value = slope * px + icpt
    return float(10**value if log else value)


def charts_of(figures: list[dict]) -> dict[str, dict]:
    return {f["title"]: f for f in figures if f["title"] in CHART_TITLES}


def run_pixels(page, fig: dict, colors: list[str], artifacts: Path, tag: str) -> list[int]:
    shot = page.locator(f"[data-richviz-cmp='{fig['index']}']").screenshot()
    (artifacts / f"compare-{tag}.png").write_bytes(shot)
    rgba = png_pixels(shot)
    return [colour_pixels(rgba, hex_rgb(c)) for c in colors]


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(600)
def test_compare_of_three_runs_in_jupyterlab(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / NOTEBOOK, ["import json", CELL])
    console: list[str] = []
    with jupyterlab(root, jupyter_data_dir, tmp_path / "jupyter") as (base, token):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                # tall enough for the whole comparison (JupyterLab scrolls inside its panel)
                page = browser.new_page(viewport={"width": 1400, "height": 2000})
                page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
                panel = page.locator(".jp-NotebookPanel").first
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=60_000)
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                panel.wait_for(timeout=60_000)
                page.evaluate(
                    "() => window.jupyterapp.commands.execute('application:toggle-left-area')"
                )
                page.evaluate(RUN_ALL_JS, NOTEBOOK)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                run = page.evaluate("() => window.__richvizRun")
                text = panel.inner_text()
                assert run["ok"] is True, f"Run All failed: {run}\n{text[-3000:]}"
                line = next(ln for ln in text.splitlines() if ln.startswith("RICHVIZ_COMPARE "))
                info = json.loads(line.removeprefix("RICHVIZ_COMPARE "))
                colors, names = info["colors"], info["runs"]
                assert len(set(colors)) == 3

                # wait until every chart draws its three curves and the geometry is on screen
                deadline = time.monotonic() + RENDER_S
                while True:
                    page.wait_for_timeout(1000)
                    assert not output_errors(panel.inner_text()), panel.inner_text()[-3000:]
                    figures = page.evaluate(PAGE_JS)
                    charts = charts_of(figures)
                    drawn = len(charts) == len(CHART_TITLES) and all(
                        all(css_rgb(c) in f["strokes"] for c in colors) for f in charts.values()
                    )
                    ready = "One colour range for all 2 runs" in panel.inner_text()
                    if drawn and ready:
                        break
                    if time.monotonic() >= deadline:
                        page.screenshot(path=str(artifact_dir / "compare-page.png"), full_page=True)
                        (artifact_dir / "compare-dom.html").write_text(
                            page.evaluate(
                                "() => [...document.querySelectorAll('.bqplot.figure')]"
                                ".map(f => f.outerHTML.slice(0, 20000)).join('\\n\\n')"
                            )
                        )
                    assert time.monotonic() < deadline, (
                        f"charts {sorted(charts)} with strokes "
                        f"{[f['strokes'] for f in charts.values()]}; geometry ready {ready}"
                    )
                page.wait_for_timeout(1500)  # images decode and paint
                page.screenshot(path=str(artifact_dir / "compare-page.png"), full_page=True)

                # three coloured curves per chart: line paths and pixels of each run's colour
                figures = page.evaluate(PAGE_JS)
                charts = charts_of(figures)
                for title, fig in charts.items():
                    for c in colors:
                        assert fig["strokes"].count(css_rgb(c)) >= 1, (title, c, fig["strokes"])
                    counts = run_pixels(page, fig, colors, artifact_dir, f"chart-{title}")
                    assert min(counts) >= MIN_RUN_PIXELS, (
                        title,
                        dict(zip(names, counts, strict=True)),
                    )

                # one cursor, at the same step in every chart (read through each chart's ticks)
                at = {}
                for title, fig in charts.items():
                    assert fig["cursor"] is not None, f"{title}: no cursor line"
                    assert len(fig["xTicks"]) >= 2, (title, fig["xTicks"])
                    at[title] = screen_to_data(fig["cursor"], fig["xTicks"])
                for title, x in at.items():
                    assert math.isclose(x, info["cursor_x"], rel_tol=0.06), (title, at, info)

                # two heatmaps, one visible colour bar
                heatmaps = [
                    f for f in figures
                    if any(w > 100 and h > 100 and abs(w - h) < 0.1 * w for w, h in f["images"])
                ]  # fmt: skip
                bars = [
                    f for f in figures
                    if f["images"] and all(w < h / 4 for w, h in f["images"]) and f["axes"] >= 1
                ]  # fmt: skip
                assert len(heatmaps) == 2, [f["images"] for f in figures]
                assert len(bars) == 1, [(f["box"], f["images"]) for f in bars]
                for k, fig in enumerate(heatmaps):
                    shot = page.locator(f"[data-richviz-cmp='{fig['index']}']").screenshot()
                    (artifact_dir / f"compare-heatmap{k}.png").write_bytes(shot)
                    assert blank_reason(png_pixels(shot)) is None
                bar_shot = page.locator(f"[data-richviz-cmp='{bars[0]['index']}']").screenshot()
                (artifact_dir / "compare-colorbar.png").write_bytes(bar_shot)

                # a click on the third run's checkbox removes its curves from every chart ...
                gone, colour = names[2], colors[2]
                assert page.evaluate(MARK_CHECKBOX_JS, gone) is True
                page.locator(f"[data-richviz-cmp-box='{gone}']").click()
                deadline = time.monotonic() + RENDER_S
                while True:
                    page.wait_for_timeout(700)
                    charts = charts_of(page.evaluate(PAGE_JS))
                    if all(css_rgb(colour) not in f["strokes"] for f in charts.values()):
                        break
                    assert time.monotonic() < deadline, "the run's curves stayed after the click"
                page.wait_for_timeout(700)
                page.screenshot(path=str(artifact_dir / "compare-page-toggled.png"), full_page=True)
                for title, fig in charts.items():
                    counts = run_pixels(page, fig, colors, artifact_dir, f"chart-off-{title}")
                    assert counts[2] < 3, (title, dict(zip(names, counts, strict=True)))
                    assert min(counts[:2]) >= MIN_RUN_PIXELS, (
                        title,
                        dict(zip(names, counts, strict=True)),
                    )
                    assert all(css_rgb(c) in fig["strokes"] for c in colors[:2])
                # ... and a second click brings them back
                assert page.evaluate(MARK_CHECKBOX_JS, gone) is False
                page.locator(f"[data-richviz-cmp-box='{gone}']").click()
                deadline = time.monotonic() + RENDER_S
                while True:
                    page.wait_for_timeout(700)
                    charts = charts_of(page.evaluate(PAGE_JS))
                    if all(css_rgb(colour) in f["strokes"] for f in charts.values()):
                        break
                    assert time.monotonic() < deadline, "the run's curves did not come back"
                assert not output_errors(panel.inner_text()), panel.inner_text()[-3000:]
                page.evaluate(SHUTDOWN_JS, NOTEBOOK)
            finally:
                (artifact_dir / "compare-console.log").write_text("\n".join(console) + "\n")
                browser.close()


SWEEP_NOTEBOOK = "sweep_select.ipynb"
SWEEP_CELL = """\
import shutil

from richviz.train import train
from richviz.widgets import SweepView

paths = []
for alpha in (1.0, 10.0):
    for seed in (0, 1):
        out = f"runs/sweep_alpha_{alpha:g}_seed_{seed}"
        shutil.rmtree(out, ignore_errors=True)
        paths.append(train("xor", out=out, steps=20, alpha=alpha, seed=seed, progress=False,
                           overrides={"checkpoints": 4}).path)
sweep = SweepView(paths, x="alpha", color="none", probe_size=200, compare={"geometry": False})
sweep.wait()
sweep.click_mode = "box"
sweep
"""
# The plot area of the sweep chart titled ``title``: its screen box.
PLOT_AREA_JS = """
(title) => {
  for (const fig of document.querySelectorAll('.bqplot.figure')) {
    const t = (fig.querySelector('.mainheading') || {}).textContent || '';
    if (t.trim() !== title) continue;
    const r = fig.querySelector('.plotarea_background').getBoundingClientRect();
    return [r.x, r.y, r.width, r.height];
  }
  return null;
}
"""


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(600)
def test_sweep_view_box_selection_opens_compare_in_jupyterlab(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    """A box dragged with the mouse over a SweepView chart selects the runs inside (the button
    counts them), and "Compare selected" opens them in a Compare below, all in the page."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / SWEEP_NOTEBOOK, [SWEEP_CELL])
    with jupyterlab(root, jupyter_data_dir, tmp_path / "jupyter") as (base, token):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2000})
                panel = page.locator(".jp-NotebookPanel").first
                page.goto(f"{base}/lab/tree/{SWEEP_NOTEBOOK}?reset&token={token}")
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                panel.wait_for(timeout=60_000)
                page.evaluate(RUN_ALL_JS, SWEEP_NOTEBOOK)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                assert page.evaluate("() => window.__richvizRun")["ok"] is True
                deadline = time.monotonic() + RENDER_S
                while (box := page.evaluate(PLOT_AREA_JS, "D_LR (final)")) is None:
                    assert time.monotonic() < deadline, "no D_LR chart"
                    page.wait_for_timeout(500)
                page.wait_for_timeout(1000)
                x, y, w, h = box
                # drag a box over the whole plot area: every point inside
                page.mouse.move(x + 2, y + 2)
                page.mouse.down()
                page.mouse.move(x + w / 2, y + h / 2, steps=5)
                page.mouse.move(x + w - 2, y + h - 2, steps=5)
                page.mouse.up()
                button = panel.locator("button", has_text="Compare selected")
                deadline = time.monotonic() + RENDER_S
                while "(4)" not in button.inner_text():
                    assert time.monotonic() < deadline, f"button says {button.inner_text()!r}"
                    page.wait_for_timeout(500)
                page.screenshot(path=str(artifact_dir / "sweep-select-page.png"), full_page=True)
                button.click()
                deadline = time.monotonic() + RENDER_S
                while True:  # the Compare's run table: one checked box per selected run
                    text = panel.inner_text()
                    names = [f"sweep_alpha_{a}_seed_{s}" for a in ("1", "10") for s in (0, 1)]
                    checked = page.locator(".jp-NotebookPanel input[type=checkbox]:checked")
                    if all(n in text for n in names) and checked.count() >= 4:
                        break
                    assert not output_errors(text), text[-2000:]
                    assert time.monotonic() < deadline, text[-2000:]
                    page.wait_for_timeout(700)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(artifact_dir / "sweep-compare-page.png"), full_page=True)
                assert not output_errors(panel.inner_text())
                page.evaluate(SHUTDOWN_JS, SWEEP_NOTEBOOK)
            finally:
                browser.close()
