"""Real-browser test of the Playground: it draws, and a click on the figure adds a point.

Reuses the JupyterLab + headless Chromium harness of ``test_browser.py`` on a one-cell
notebook (the Playground of ``06_playground.ipynb``), waits for the heatmap, clicks once on
each of three points lying exactly on a decision-boundary line or ellipse drawn over it, and
after each click waits for the kernel-side point count shown under the class picker to grow by
exactly one, and for the new data point to be drawn where the pointer clicked (the kernel maps
the click's pixel through the plot area and the scales; bqplot draws the point back through
the same scales). No retry: every click must arrive. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="browser tests need nbformat")
pytest.importorskip("jupyterlab", reason="browser tests need JupyterLab")
pytest.importorskip("ipywidgets", reason="browser tests need ipywidgets")

from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    FIND_HEATMAP_JS,
    RENDER_S,
    RUN_ALL_JS,
    RUN_ALL_S,
    check_heatmap,
    jupyterlab,
    needs_chromium,
    output_errors,
)

NOTEBOOK = "playground_click.ipynb"
CELL = """from richviz.widgets import Playground

pg = Playground(data="blobs", classes=4, root="runs/playground", ellipse_density=6)
pg.step(50)
pg"""
POINTS = re.compile(r"points: (\d+)")
# Screen points that lie ON the figure's overlay lines (decision boundaries, ellipses) inside
# the marked heatmap, from each SVG path's own geometry: once a click there was taken by the
# line and lost, so the test clicks exactly there. For each point it reports what
# ``elementFromPoint`` finds and how far the nearest drawn data point is.
NEAREST_DOT_JS = """
function nearestDot(fig, x, y) {
  let best = Infinity;
  for (const dot of fig.querySelectorAll('.dot')) {
    const b = dot.getBoundingClientRect();
    best = Math.min(best, Math.hypot(b.x + b.width / 2 - x, b.y + b.height / 2 - y));
  }
  return best;
}
"""
LINE_TARGETS_JS = (
    """
() => {
"""
    + NEAREST_DOT_JS
    + """
  const img = document.querySelector('[data-richviz-test=heatmap]');
  const fig = img.closest('.bqplot.figure');
  const r = img.getBoundingClientRect();
  const out = [];
  for (const path of fig.querySelectorAll('path.line')) {
    const n = path.getTotalLength ? path.getTotalLength() : 0;
    if (!(n > 20)) continue;
    const m = path.getScreenCTM();
    for (const f of [0.5, 0.3, 0.7, 0.1, 0.9]) {
      const p = path.getPointAtLength(f * n).matrixTransform(m);
      const inside = p.x > r.x + 4 && p.x < r.right - 4 && p.y > r.y + 4 && p.y < r.bottom - 4;
      if (!inside) continue;
      const top = document.elementFromPoint(p.x, p.y);
      out.push({x: p.x, y: p.y, onImage: top === img, top: top ? top.tagName : null,
                nearestDot: nearestDot(fig, p.x, p.y)});
    }
  }
  return out;
}
"""
)


# Distance (px) from a screen point to the nearest drawn data point of the marked figure.
# (x, y) are relative to the figure's element, whose place on the page may shift between a
# click and the drawing of its point (a status line that wraps moves the figure down).
DOT_DISTANCE_JS = (
    "([x, y]) => {" + NEAREST_DOT_JS + "const fig = document.querySelector("
    "'[data-richviz-test=heatmap]').closest('.bqplot.figure');"
    "const f = fig.getBoundingClientRect(); return nearestDot(fig, f.x + x, f.y + y); }"
)
FIGURE_ORIGIN_JS = (
    "() => { const f = document.querySelector('[data-richviz-test=heatmap]')"
    ".closest('.bqplot.figure').getBoundingClientRect(); return [f.x, f.y]; }"
)
# The marked figure's element, its svg and plot area, and the heatmap image, on screen.
GEOMETRY_JS = """
() => {
  const img = document.querySelector('[data-richviz-test=heatmap]');
  const fig = img.closest('.bqplot.figure');
  const box = (e) => { const b = e.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; };
  const area = fig.querySelector('.plotarea_background') || fig.querySelector('rect');
  return {figure: box(fig), svg: box(fig.querySelector('svg')), area: area ? box(area) : null,
          image: box(img)};
}
"""
#: a click's new data point is drawn within this many pixels of the pointer
DOT_TOLERANCE_PX = 2.0


# Records every click the page dispatches (capture phase): its target and position.
RECORD_CLICKS_JS = """
() => {
  window.__richvizClicks = [];
  document.addEventListener('click', (e) => {
    const t = e.target;
    window.__richvizClicks.push([t.tagName, t.getAttribute('class'), e.clientX, e.clientY]);
  }, true);
}
"""


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nbformat.write(nb, path)


def point_count(page) -> int | None:
    found = POINTS.findall(page.locator(".jp-NotebookPanel").first.inner_text())
    return int(found[-1]) if found else None


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(300)
def test_playground_click_adds_a_point_in_jupyterlab(
    tmp_path: Path, jupyter_data_dir: Path, artifact_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / NOTEBOOK)
    console: list[str] = []
    with jupyterlab(root, jupyter_data_dir, tmp_path / "jupyter") as (base, token):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            try:
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=60_000)
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                page.locator(".jp-NotebookPanel").first.wait_for(timeout=60_000)
                page.evaluate(RUN_ALL_JS, NOTEBOOK)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                deadline = time.monotonic() + RENDER_S
                while True:  # the frame loop draws the trained state (step 50) a moment later
                    page.wait_for_timeout(500)
                    reason, info = check_heatmap(page, artifact_dir, "playground")
                    drawn = "step 50 ·" in page.locator(".jp-NotebookPanel").first.inner_text()
                    if reason is None and drawn and point_count(page) is not None:
                        break
                    assert time.monotonic() < deadline, f"playground not drawn: {reason} {info}"
                before = point_count(page)
                assert page.evaluate(FIND_HEATMAP_JS) is not None  # marks and scrolls to it
                targets = page.evaluate(LINE_TARGETS_JS)
                assert targets, "no boundary line or ellipse drawn over the heatmap"
                # three line points, away from the data points already drawn (the new point's
                # place is checked against the pointer)
                free = [t for t in targets if t["nearestDot"] > 4 * DOT_TOLERANCE_PX]
                picked = free[:: max(1, len(free) // 3)][:3]
                assert len(picked) == 3, f"too few line points clear of the data: {targets}"
                page.evaluate(RECORD_CLICKS_JS)
                x0, y0 = page.evaluate(FIGURE_ORIGIN_JS)
                relative = [(t["x"] - x0, t["y"] - y0) for t in picked]
                for k, (dx, dy) in enumerate(relative, start=1):
                    x0, y0 = page.evaluate(FIGURE_ORIGIN_JS)  # where the figure is now
                    target = {"x": x0 + dx, "y": y0 + dy}
                    page.mouse.click(target["x"], target["y"])
                    want = before + k
                    with contextlib.suppress(Exception):
                        page.wait_for_function(
                            f"() => /points: {want}\\b/.test(document.body.innerText)",
                            timeout=20_000,
                        )
                    clicks = page.evaluate("() => window.__richvizClicks")
                    assert point_count(page) == want, (
                        f"click {k} at {target} added no point (count {point_count(page)}, "
                        f"wanted {want}; clicks the page saw: {clicks}; page errors: "
                        f"{[c for c in console if c.startswith('[pageerror]')]})"
                    )
                    # the new point is drawn where the pointer clicked
                    xy = [dx, dy]
                    deadline = time.monotonic() + 20
                    while (far := page.evaluate(DOT_DISTANCE_JS, xy)) > DOT_TOLERANCE_PX:
                        assert time.monotonic() < deadline, (
                            f"click {k} at {xy} in the figure (then at {[x0, y0]}): the nearest "
                            f"data point is drawn {far:.1f} px away (tolerance "
                            f"{DOT_TOLERANCE_PX} px); {page.evaluate(GEOMETRY_JS)}"
                        )
                        page.wait_for_timeout(200)
                page.wait_for_timeout(1000)
                assert point_count(page) == before + 3, "a click added more than one point"
                page.screenshot(path=str(artifact_dir / "playground-page.png"), full_page=True)
                text = page.locator(".jp-NotebookPanel").first.inner_text()
                assert not output_errors(text), output_errors(text)
            finally:
                (artifact_dir / "playground-console.log").write_text("\n".join(console) + "\n")
                browser.close()
