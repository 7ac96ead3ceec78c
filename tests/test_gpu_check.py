"""scripts/gpu-check.sh: it refuses a machine without CUDA, fits in 5 minutes, and the suite it
runs collects (skipping with a reason) where the widget and notebook packages are missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
# what a GPU machine with only PyTorch lacks
WIDGET_STACK = (
    "ipywidgets,bqplot,bqscales,traitlets,nbformat,nbclient,ipykernel,jupyterlab,playwright,"
    "dask,distributed"
)


def test_step_limits_add_up_to_five_minutes():
    limits = [int(m) for m in re.findall(r'^step "[^"]+" (\d+) ', SCRIPT.read_text(), re.M)]
    assert len(limits) == 6 and sum(limits) <= 300, limits


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_2():
    out = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "CUDA is not available" in out.stderr


def pytest_without_widget_stack(*args: str) -> subprocess.CompletedProcess:
    """``pytest -q -rs ARGS`` in a subprocess with :data:`WIDGET_STACK` unimportable."""
    env = {
        **os.environ,
        "RICHVIZ_HIDE_PACKAGES": WIDGET_STACK,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "hide_packages", "-q", "-rs",
         "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def test_the_suite_collects_without_the_widget_stack():
    out = pytest_without_widget_stack("--collect-only", "tests")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text  # a collection error interrupts with exit code 2
    skipped = set(re.findall(r"SKIPPED \[\d+\] (tests/test_\w+\.py)", text))
    # the widget, notebook and browser files skip, each with its reason ...
    assert {"tests/test_widgets.py", "tests/test_playground.py", "tests/test_charts.py",
            "tests/test_notebooks.py", "tests/test_browser.py"} <= skipped, text  # fmt: skip
    # ... and the numerical core is still collected
    collected = int(re.search(r"(\d+) tests? collected", text).group(1))
    assert collected > 300, text
    assert "tests/test_geometry.py::" in text and "tests/test_metrics.py::" in text


def test_api_and_import_checks_pass_without_the_widget_stack():
    out = pytest_without_widget_stack("tests/test_api.py", "tests/test_imports.py")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "richviz.widgets needs ipywidgets and bqplot" in text  # skipped, with the reason
