"""Benchmark: seconds from Run All to a fully drawn quick start, measured in a real browser.

Uses the browser-test harness (tests/test_browser.py): an isolated JupyterLab on 127.0.0.1 and
headless Chromium (1400 x 1000, file browser folded). Each repeat opens a fresh copy of
``notebooks/01_quickstart.ipynb`` (a fresh kernel, started before the clock runs), starts Run
All and polls every 100 ms (the notebook's text without layout) until the quick start is
fully drawn:

* the slice viewer shows its full-resolution field (status ``step N · penultimate · 96×96``,
  no coarse preview) and the heatmap image on screen is not blank;
* the metrics panel says ``metrics of K checkpoints`` and its four charts have their lines;
* no widget reports an error or is busy.

Prints each repeat and the median. richviz's sources are byte-compiled first, as an installed
package's are (a machine with ``PYTHONDONTWRITEBYTECODE=1`` would compile them in every kernel).
Needs Chromium (/usr/bin/chromium or $RICHVIZ_CHROMIUM).

The kernel warm-up (``richviz.kernel_warmup``, installed into the environment by
``scripts/setup-env.sh``: the kernel imports torch and the widget stack in a background thread
as it starts) is measured both ways by default, repeats alternating on and off in the same
JupyterLab (``RICHVIZ_KERNEL_WARMUP`` set by the kernel spec), so that one run gives both medians.
Run All follows as soon as the kernel is up (a reader who does not stop to read), or
``--pause`` seconds later (one who reads the page first; the clock starts at Run All).

``--before DIR`` measures an earlier checkout beside this one in the same run (its notebook, its
``richviz`` first on the kernel's ``PYTHONPATH``), repeats alternating, for before/after figures:

    git worktree add /tmp/richviz-before <commit>
    python benchmarks/browser_quickstart.py --warmup on --before /tmp/richviz-before

``--floor`` also times, alternating with the quick start, a one-cell notebook that only imports
torch and prints a line: the part of the window that kernel start-up, ``import torch`` and one
output round-trip take on this machine, whatever richviz does.

    python benchmarks/browser_quickstart.py [--repeats 3] [--warmup both|on|off] [--pause S]
        [--before DIR] [--floor]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_browser as harness  # noqa: E402

DRAWN = re.compile(r"step \d+ · penultimate · 96×96(?! \(coarse)")
METRICS = re.compile(r"metrics of \d+ checkpoints")
# The notebook's text without layout (textContent, hidden widgets included): innerText lays the
# page out at every poll, work the browser would otherwise not do (a core's worth at 10 Hz,
# taken from the kernel on a 2-core machine).
PANEL_TEXT_JS = """
() => { const p = document.querySelector('.jp-NotebookPanel'); return p ? p.textContent : ''; }
"""
OUTPUT_TEXT_JS = """
() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output'))
  .map(o => o.textContent).join('\\n')
"""
LINES_JS = """
() => Array.from(document.querySelectorAll('.jp-NotebookPanel .bqplot.figure'))
  .filter(f => f.getBoundingClientRect().width > 20)
  .map(f => f.querySelectorAll('g.curve path.line').length)
"""


KERNEL_UP_JS = """
async (name) => {
  const app = window.jupyterapp;
  await app.restored;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path.endsWith(name)) {
      await w.context.ready;
      await w.sessionContext.ready;
      return w.sessionContext.session.kernel.name;
    }
  }
  throw new Error('notebook is not open: ' + name);
}
"""
KERNEL = "richviz-benchmark"  # the copies' kernel: a name only this data dir has
FLOOR_DONE = "richviz-floor: torch imported"


def kernel_spec_dir(
    tmp: Path, warmup: bool = True, name: str = KERNEL, source: Path | None = None
) -> Path:
    """A Jupyter data dir whose ``name`` kernel is this interpreter, with the kernel warm-up
    on or off (and ``source``'s richviz first on its path); called again, it rewrites the spec
    (read at each kernel start). A venv's own ``python3`` spec would win over a data dir's
    (jupyter_core prefers the environment's)."""
    spec = tmp / "data" / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    path = [f"PYTHONPATH={source}"] if source is not None else []
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                # through env(1): jupyter_server does not pass a kernel spec's "env" on
                "argv": [
                    "/usr/bin/env",
                    f"RICHVIZ_KERNEL_WARMUP={int(warmup)}",
                    *path,
                    sys.executable,
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "Python 3 (richviz benchmark)",
                "language": "python",
            }
        )
    )
    return tmp / "data"


def floor_notebook(kernel: str) -> dict:
    """The floor: one cell that imports torch and prints :data:`FLOOR_DONE` (no richviz)."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {},
                "outputs": [],
                "source": ["import torch\n", f"print({FLOOR_DONE!r})"],
            }
        ],
        "metadata": {"kernelspec": {"name": kernel, "display_name": KERNEL, "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _run_all(page, base: str, token: str, name: str, pause: float) -> float:
    """Open notebook ``name``, start Run All (``pause`` s after its kernel is up); the clock."""
    panel = page.locator(".jp-NotebookPanel").first
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    panel.wait_for(timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    if pause:
        page.evaluate(KERNEL_UP_JS, name)
        page.wait_for_timeout(pause * 1000)  # kernel up, the reader reads
    page.evaluate(harness.RUN_ALL_JS, name)  # returns once the kernel is up and Run All started
    return time.perf_counter()


def floor_run(page, base: str, token: str, name: str, pause: float = 0.0) -> float:
    """Seconds from Run All to the floor notebook's printed line on the page."""
    t0 = _run_all(page, base, token, name, pause)
    while FLOOR_DONE not in page.evaluate(OUTPUT_TEXT_JS):  # the source holds it too
        if time.perf_counter() - t0 > 120:
            raise RuntimeError(f"{name}: no output after 120 s")
        page.wait_for_timeout(20)
    elapsed = time.perf_counter() - t0
    page.evaluate(harness.SHUTDOWN_JS, name)
    return elapsed


def one_run(page, base: str, token: str, name: str, pause: float = 0.0) -> float:
    t0 = _run_all(page, base, token, name, pause)
    while True:
        text = page.evaluate(PANEL_TEXT_JS)
        bad = harness.output_errors(text)
        if bad:
            raise RuntimeError(f"{name}: {bad}")
        if (
            DRAWN.search(text)
            and METRICS.search(text)
            and not harness.BUSY_PATTERN.search(text)
            and sum(n >= 1 for n in page.evaluate(LINES_JS)) >= 5  # slice + four charts
        ):
            seen = time.perf_counter()  # the screenshot below shows the page from here on
            reason, _ = harness.check_heatmap(page, Path(tempfile.gettempdir()), "bench")
            if reason is None:
                elapsed = seen - t0  # the screenshot's own ~0.2 s is not the notebook's
                break
        if time.perf_counter() - t0 > 120:
            state = {
                "drawn": bool(DRAWN.search(text)),
                "metrics": bool(METRICS.search(text)),
                "busy": bool(harness.BUSY_PATTERN.search(text)),
                "lines": page.evaluate(LINES_JS),
                "heatmap": harness.check_heatmap(page, Path(tempfile.gettempdir()), "bench")[0],
            }
            raise RuntimeError(f"{name}: not drawn after 120 s: {state}")
        page.wait_for_timeout(100)
    page.evaluate(harness.SHUTDOWN_JS, name)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each setting")
    parser.add_argument("--warmup", choices=["both", "on", "off"], default="both")
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds from kernel up to Run All"
    )
    parser.add_argument(
        "--before", type=Path, help="an earlier checkout to measure beside this one, alternating"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a one-cell notebook that only imports torch, alternating (the floor)",
    )
    args = parser.parse_args()
    warmups = {"both": [True, False], "on": [True], "off": [False]}[args.warmup]
    trees: dict[str, Path | None] = {"this": None}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "this": None}
    for source in trees.values():  # as an installed package is (PYTHONDONTWRITEBYTECODE aside)
        compileall.compile_dir(str((source or REPO) / "richviz"), quiet=1)
    settings = [(tree, w) for tree in trees for w in warmups]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        root.mkdir()
        plan = [(k, t, w) for k in range(args.repeats) for t, w in settings]  # alternating
        names = {
            (k, t, w): f"quickstart_{k}_{t}_warmup_{'on' if w else 'off'}.ipynb" for k, t, w in plan
        }
        for (_k, tree, _w), name in names.items():
            notebook = json.loads(
                ((trees[tree] or REPO) / "notebooks" / harness.QUICKSTART).read_text()
            )
            notebook["metadata"]["kernelspec"] = {
                "name": f"{KERNEL}-{tree}",
                "display_name": KERNEL,
                "language": "python",
            }
            (root / name).write_text(json.dumps(notebook))
        floors = {}
        if args.floor:
            for k in range(args.repeats):
                for w in warmups:
                    floors[k, w] = f"floor_{k}_warmup_{'on' if w else 'off'}.ipynb"
                    notebook = floor_notebook(f"{KERNEL}-this")
                    (root / floors[k, w]).write_text(json.dumps(notebook))
        for tree, source in trees.items():
            data = kernel_spec_dir(tmp, name=f"{KERNEL}-{tree}", source=source)
        times: dict[tuple[str, bool], list[float]] = {s: [] for s in settings}
        floor_times: dict[bool, list[float]] = {w: [] for w in warmups}
        with harness.jupyterlab(root, data, tmp / "jupyter") as (base, token):
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(harness.CHROMIUM), headless=True, args=harness.CHROMIUM_ARGS
                )
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    for k, t, w in plan:
                        kernel_spec_dir(tmp, warmup=w, name=f"{KERNEL}-{t}", source=trees[t])
                        elapsed = one_run(page, base, token, names[k, t, w], args.pause)
                        times[t, w].append(elapsed)
                        print(f"{names[k, t, w]}: fully drawn {elapsed:.2f} s", flush=True)
                        if (k, w) in floors and t == "this":
                            kernel_spec_dir(tmp, warmup=w, name=f"{KERNEL}-this")
                            elapsed = floor_run(page, base, token, floors[k, w], args.pause)
                            floor_times[w].append(elapsed)
                            print(f"{floors[k, w]}: torch imported {elapsed:.2f} s", flush=True)
                finally:
                    browser.close()
    medians = {s: statistics.median(got) for s, got in times.items()}
    for (t, w), got in times.items():
        where = "" if args.before is None else f"{t} ({trees[t] or REPO}), "
        print(
            f"quick start, {where}kernel warm-up {'on' if w else 'off'}, Run All -> fully drawn: "
            f"median {medians[t, w]:.2f} s over {len(got)} runs (min {min(got):.2f}, "
            f"max {max(got):.2f}); Run All {args.pause:g} s after the kernel was up; "
            f"{os.cpu_count()} CPUs, OMP_NUM_THREADS=1 in the kernel"
        )
    for w, got in floor_times.items():
        if not got:
            continue
        floor = statistics.median(got)
        print(
            f"floor (one cell: import torch), kernel warm-up {'on' if w else 'off'}: median "
            f"{floor:.2f} s (min {min(got):.2f}, max {max(got):.2f}); quick start minus the "
            f"floor {medians['this', w] - floor:.2f} s, quick start / floor "
            f"{medians['this', w] / floor:.2f}x, same run"
        )
    for t in trees:
        if len(warmups) == 2:
            ratio = medians[t, True] / medians[t, False]
            print(f"{t}: warm-up on / off, same run: {ratio:.2f}x")
    if args.before is not None:
        for w in warmups:
            ratio = medians["this", w] / medians["before", w]
            print(f"warm-up {'on' if w else 'off'}: this / before, same run: {ratio:.2f}x")


if __name__ == "__main__":
    main()
