"""Real-browser test of keyboard control: the Explorer's step and Play, the Playground's Step
and Start/Pause, from the keyboard in JupyterLab (headless Chromium).

Reuses the JupyterLab harness of ``test_browser.py`` on a two-cell notebook: an Explorer of a
tiny run (8 checkpoints) and a small Playground, each with a label the *kernel* writes from
the widget's traits (``kernel step 3 · playing False``), so every check reads both what the page
shows (the slider's readout) and what the kernel holds. Two routes, as a user takes them:

- focus by Tab (here ``focus()``): the step slider's handle takes ArrowRight / ArrowLeft /
  Home / End; the Play/Pause toggle takes Space (starts Play: the step advances; again: it
  stops and stays);
- focus by pointer: over the slice figure, ArrowLeft / ArrowRight / End move the step and ``k``
  toggles Play; over the Playground's figure, ArrowRight trains one Step and Space starts and
  pauses training.

Screenshots (focus outline on the slider handle, on the figure that has the keys) land in
``test-artifacts/``.
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
pytest.importorskip("ipyevents", reason="keyboard control needs ipyevents")

from test_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    RUN_ALL_JS,
    RUN_ALL_S,
    jupyterlab,
    needs_chromium,
    output_errors,
)

NOTEBOOK = "keyboard.ipynb"
EXPLORER_CELL = """import ipywidgets as widgets
from richviz.train import train
from richviz.widgets import Explorer

run = train("circles", out="runs/keys", steps=40, progress=False, overrides={"checkpoints": 8})
ex = Explorer(run, viewer={"resolution": 16, "coarse_resolution": 8, "ellipse_density": 4},
              panel={"autoload": False}, device="cpu")
ex.viewer.step_play.interval = 1000
ex.add_class("rv-test-explorer")
ex.viewer.step_slider.add_class("rv-test-step")
ex.viewer.figure.add_class("rv-test-figure")
ex_label = widgets.HTML()
def ex_state(_=None):
    ex_label.value = f"kernel step {ex.step} · playing {ex.viewer.step_play.playing}"
ex.observe(ex_state, names="step")
ex.viewer.step_play.observe(ex_state, names="playing")
ex_state()
print("steps", run.steps)
widgets.VBox([ex, ex_label])"""
PLAYGROUND_CELL = """from richviz.widgets import Playground

pg = Playground(data="moons", n=60, width=4, depth=1, device="cpu", root="runs/pg",
                steps_per_click=5, resolution=24, ellipse_density=0, fps=5)
pg.add_class("rv-test-playground")
pg_label = widgets.HTML()
def pg_state(_=None):
    pg_label.value = f"kernel trained {pg.trainer.step_count} · running {pg.running}"
pg.observe(pg_state, names=["drawn_step", "running"])
pg_state()
widgets.VBox([pg, pg_label])"""
EXPLORER_STATE = re.compile(r"kernel step (\d+) · playing (True|False)")
PLAYGROUND_STATE = re.compile(r"kernel trained (\d+) · running (True|False)")
WAIT_S = 60.0


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    nb.cells = [
        nbformat.v4.new_code_cell(EXPLORER_CELL),
        nbformat.v4.new_code_cell(PLAYGROUND_CELL),
    ]
    nbformat.write(nb, path)


class Page:
    """The notebook page and the states the kernel writes into it."""

    def __init__(self, page) -> None:
        self.page = page
        self.panel = page.locator(".jp-NotebookPanel").first

    def text(self) -> str:
        return self.panel.inner_text()

    def explorer(self) -> tuple[int, bool] | None:
        found = EXPLORER_STATE.findall(self.text())
        return (int(found[-1][0]), found[-1][1] == "True") if found else None

    def playground(self) -> tuple[int, bool] | None:
        found = PLAYGROUND_STATE.findall(self.text())
        return (int(found[-1][0]), found[-1][1] == "True") if found else None

    def readout(self) -> str:
        return self.page.locator(".rv-test-step .widget-readout").first.inner_text().strip()

    def wait(self, what: str, predicate, timeout: float = WAIT_S):
        """Poll ``predicate()`` until truthy; fail naming ``what`` and the last states."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            bad = output_errors(self.text())
            assert not bad, f"while waiting for {what}: {bad}"
            assert time.monotonic() < deadline, (
                f"{what}: not within {timeout:.0f} s (explorer {self.explorer()}, readout "
                f"{self.readout()!r}, playground {self.playground()})"
            )
            self.page.wait_for_timeout(200)


@pytest.mark.browser
@needs_chromium
@pytest.mark.timeout(480)
def test_keys_move_the_step_and_toggle_play_in_jupyterlab(
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
            p = Page(page)
            try:
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?reset&token={token}", timeout=60_000)
                page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
                p.panel.wait_for(timeout=60_000)
                page.evaluate(RUN_ALL_JS, NOTEBOOK)
                page.wait_for_function(
                    "() => window.__richvizRun && window.__richvizRun.done",
                    timeout=RUN_ALL_S * 1000,
                )
                assert page.evaluate("() => window.__richvizRun")["ok"] is True
                steps = [int(s) for s in re.findall(r"\d+", p.wait(
                    "the run's steps", lambda: re.search(r"steps \[[\d, ]+\]", p.text())
                ).group(0))]  # fmt: skip
                assert len(steps) == 8, steps
                p.wait("the Explorer", lambda: p.explorer() == (steps[-1], False))
                p.wait("the Playground", lambda: p.playground() == (0, False))
                explorer_by_focus(p, steps, artifact_dir)
                explorer_by_pointer(p, steps, artifact_dir)
                playground_by_pointer(p, artifact_dir)
                page.screenshot(path=str(artifact_dir / "keyboard-page.png"), full_page=True)
                assert not output_errors(p.text()), output_errors(p.text())
                errors = [c for c in console if c.startswith("[pageerror]")]
                assert not errors, errors
            finally:
                with contextlib.suppress(Exception):
                    page.screenshot(
                        path=str(artifact_dir / "keyboard-page-final.png"), full_page=True
                    )
                (artifact_dir / "keyboard-console.log").write_text("\n".join(console) + "\n")
                browser.close()


def active_outline(page) -> list[str]:
    """The focused element's outline (style, width), as drawn."""
    return page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth]; }"
    )


def explorer_by_focus(p: Page, steps: list[int], artifacts: Path) -> None:
    """Tab route: the focused slider handle takes the arrows, Home and End; the focused
    Play/Pause toggle takes Space."""
    page = p.page
    handle = page.locator(".rv-test-step .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    assert page.evaluate("() => document.activeElement.classList.contains('noUi-handle')")
    # a screen reader's view of the controls: a slider role, and labelled Play/Pause buttons
    assert handle.get_attribute("role") == "slider"
    toggle = page.locator(".rv-test-explorer button[title*='Space']").first
    assert toggle.inner_text().strip() == "Play"
    # one play control: the Play widget's own icon button gives way to the labelled toggle,
    # its stop and repeat buttons stay
    shown = page.evaluate(
        """() => [...document.querySelectorAll('.rv-test-explorer .widget-hbox')]
                 .filter(r => r.querySelector(':scope > .rv-test-step'))
                 .flatMap(r => [...r.querySelectorAll('.widget-play > button')])
                 .map(b => getComputedStyle(b).display !== 'none')"""
    )
    assert shown == [False, True, True], shown
    # focus is visible: the handle's outline is drawn (our CSS), 2 px
    assert active_outline(page) == ["solid", "2px"], active_outline(page)
    row = page.locator(".rv-test-explorer .widget-hbox", has=page.locator(".rv-test-step")).last
    row.screenshot(path=str(artifacts / "keyboard-focus.png"))
    last = len(steps) - 1
    for key, index in [("ArrowLeft", last - 1), ("ArrowLeft", last - 2), ("ArrowRight", last - 1),
                       ("Home", 0), ("ArrowRight", 1), ("End", last), ("Home", 0)]:  # fmt: skip
        page.keyboard.press(key)
        want = steps[index]
        p.wait(f"{key} -> step {want} in the page", lambda w=want: p.readout() == str(w))
        p.wait(f"{key} -> step {want} in the kernel", lambda w=want: p.explorer() == (w, False))
    # Play/Pause from the keyboard: Space on the focused toggle
    toggle.focus()
    page.keyboard.press("Space")
    p.wait("Play to start", lambda: (e := p.explorer()) and e[1] and e[0] > steps[0])
    assert toggle.inner_text().strip() == "Pause"
    page.keyboard.press("Space")
    stopped = p.wait("Play to stop", lambda: (e := p.explorer()) and not e[1] and e)
    assert stopped[0] < steps[-1], "Play ran to the end: nothing showed it stop"
    page.wait_for_timeout(2500)  # more than two Play intervals (1 s)
    assert p.explorer() == stopped, "the step moved after Pause"
    assert p.readout() == str(stopped[0])
    assert toggle.inner_text().strip() == "Play"


def explorer_by_pointer(p: Page, steps: list[int], artifacts: Path) -> None:
    """Pointer route: over the slice figure, the keys of richviz.widgets.keyboard.KEYS."""
    page = p.page
    start = p.explorer()[0]
    figure = page.locator(".rv-test-figure").first
    figure.scroll_into_view_if_needed()
    figure.hover()
    p.wait("the figure to take the keys", lambda: page.evaluate(
        "() => document.activeElement.classList.contains('rv-test-figure')"
    ))  # fmt: skip
    assert active_outline(page) == ["solid", "2px"], active_outline(page)  # it shows
    cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex")
    i = steps.index(start)
    for key, index in [("ArrowRight", i + 1), ("ArrowLeft", i), ("End", len(steps) - 1),
                       ("Home", 0), ("ArrowRight", 1)]:  # fmt: skip
        page.keyboard.press(key)
        want = steps[index]
        p.wait(f"{key} over the figure -> step {want}", lambda w=want: p.explorer() == (w, False))
        p.wait(f"{key} over the figure -> readout {want}", lambda w=want: p.readout() == str(w))
    figure.screenshot(path=str(artifacts / "keyboard-figure-focus.png"))
    page.keyboard.press("k")
    p.wait("k to start Play", lambda: (e := p.explorer()) and e[1] and e[0] > steps[1])
    page.keyboard.press("k")
    stopped = p.wait("k to stop Play", lambda: (e := p.explorer()) and not e[1] and e)
    assert stopped[0] < steps[-1], "Play ran to the end: nothing showed it stop"
    page.wait_for_timeout(2500)
    assert p.explorer() == stopped, "the step moved after k"
    # JupyterLab's own command-mode keys (k: select the cell above) did not fire
    now = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex")
    assert now == cells, f"the notebook's active cell moved from {cells} to {now}"
    page.mouse.move(2, 2)  # the figure lets the keys go


def playground_by_pointer(p: Page, artifacts: Path) -> None:
    """Over the Playground's figure: ArrowRight trains one Step (5 steps), Space starts and
    pauses training."""
    page = p.page
    figure = page.locator(".rv-test-playground .bqplot.figure").first
    figure.scroll_into_view_if_needed()
    figure.hover()
    p.wait("the Playground figure to take the keys", lambda: page.evaluate(
        "() => document.activeElement.closest('.rv-test-playground') !== null"
    ))  # fmt: skip
    assert active_outline(page) == ["solid", "2px"], active_outline(page)
    figure.screenshot(path=str(artifacts / "keyboard-playground-focus.png"))
    page.keyboard.press("ArrowRight")
    p.wait("ArrowRight -> one Step (5 steps)", lambda: p.playground() == (5, False))
    page.keyboard.press("Space")
    p.wait("Space to start training", lambda: (g := p.playground()) and g[1] and g[0] > 5)
    page.keyboard.press("Space")
    stopped = p.wait("Space to pause training", lambda: (g := p.playground()) and not g[1] and g)
    page.wait_for_timeout(2000)
    assert p.playground() == stopped, "training went on after Space"
    page.mouse.move(2, 2)
