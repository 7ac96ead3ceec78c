"""Shared pytest configuration: markers, a test-artifact directory, a kernel of this venv."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: real-browser tests (JupyterLab + headless Chromium)"
    )
    config.addinivalue_line("markers", "slow: tests that take more than a few seconds")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: two threads only add overhead there.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    """Directory for files a test keeps for humans (screenshots): test-artifacts/ (gitignored).

    Override with the environment variable RICHVIZ_TEST_ARTIFACTS.
    """
    path = Path(os.environ.get("RICHVIZ_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def jupyter_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data directory whose ``python3`` kernel is this interpreter (sys.executable).

    Use it as JUPYTER_DATA_DIR for a server, or ``<dir>/kernels`` as a kernel-spec directory, so
    notebooks run in the venv under test whatever other ``python3`` kernels the machine has.
    """
    data = tmp_path_factory.mktemp("jupyter-data")
    spec_dir = data / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (richviz tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return data
