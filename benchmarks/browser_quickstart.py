"""Benchmark: seconds from Run All to a fully drawn quick start, measured in a real browser.

Uses the browser-test harness (tests/test_browser.py): an isolated JupyterLab on 127.0.0.1 and
headless Chromium (1400 x 1000, file browser folded). Each repeat opens a fresh copy of
``notebooks/01_quickstart.ipynb`` (a fresh kernel, started before the clock runs), starts Run
All and polls every 100 ms until the quick start is fully drawn:

* the slice viewer shows its full-resolution field (status ``step N · penultimate · 96×96``,
  no coarse preview) and the heatmap image on screen is not blank;
* the metrics panel says ``metrics of K checkpoints`` and its four charts have their lines;
* no widget reports an error or is busy.

Prints each repeat and the median. Needs Chromium (/usr/bin/chromium or $RICHVIZ_CHROMIUM).

    python benchmarks/browser_quickstart.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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
LINES_JS = """
() => Array.from(document.querySelectorAll('.jp-NotebookPanel .bqplot.figure'))
  .filter(f => f.getBoundingClientRect().width > 20)
  .map(f => f.querySelectorAll('g.curve path.line').length)
"""


def kernel_spec_dir(tmp: Path) -> Path:
    """A Jupyter data dir whose python3 kernel is this interpreter (as tests/conftest.py)."""
    import json

    spec = tmp / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (richviz benchmark)",
                "language": "python",
            }
        )
    )
    return tmp / "data"


def one_run(page, base: str, token: str, name: str) -> float:
    panel = page.locator(".jp-NotebookPanel").first
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    panel.wait_for(timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.evaluate(harness.RUN_ALL_JS, name)  # returns once the kernel is up and Run All started
    t0 = time.perf_counter()
    while True:
        text = panel.inner_text()
        bad = harness.output_errors(text)
        if bad:
            raise RuntimeError(f"{name}: {bad}")
        if (
            DRAWN.search(text)
            and METRICS.search(text)
            and not harness.BUSY_PATTERN.search(text)
            and sum(n >= 1 for n in page.evaluate(LINES_JS)) >= 5  # slice + four charts
        ):
            reason, _ = harness.check_heatmap(page, Path(tempfile.gettempdir()), "bench")
            if reason is None:
                elapsed = time.perf_counter() - t0
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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        root.mkdir()
        names = [f"quickstart_{k}.ipynb" for k in range(args.repeats)]
        for name in names:
            shutil.copy(REPO / "notebooks" / harness.QUICKSTART, root / name)
        data = kernel_spec_dir(tmp)
        times = []
        with harness.jupyterlab(root, data, tmp / "jupyter") as (base, token):
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=str(harness.CHROMIUM), headless=True, args=harness.CHROMIUM_ARGS
                )
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    for name in names:
                        elapsed = one_run(page, base, token, name)
                        times.append(elapsed)
                        print(f"{name}: fully drawn {elapsed:.2f} s after Run All", flush=True)
                finally:
                    browser.close()
    print(
        f"quick start, Run All -> fully drawn: median {statistics.median(times):.2f} s over "
        f"{len(times)} runs (min {min(times):.2f}, max {max(times):.2f}); "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS=1 in the kernel"
    )


if __name__ == "__main__":
    main()
