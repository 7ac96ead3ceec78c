"""Shared pytest configuration: markers, the test device, a test-artifact directory, a kernel.

Device: ``pytest --device cuda`` (or ``RICHVIZ_TEST_DEVICE=cuda``) runs the device-dependent
tests on that device; the default is ``cuda`` when ``torch.cuda.is_available()`` else ``cpu``.
The choice is also exported as ``RICHVIZ_DEVICE`` for the session, so library defaults
(``Run.load``, the trainer, the widgets' "auto" device) follow it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_DEVICE_KEY = pytest.StashKey[torch.device]()


DEVICE_ENV = "RICHVIZ_TEST_DEVICE"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default=None,
        help=f"torch device for device-dependent tests (default: ${DEVICE_ENV}, else cuda "
        "when available, else cpu)",
    )


def _test_device(config: pytest.Config) -> torch.device:
    name = config.getoption("--device") or os.environ.get(DEVICE_ENV) or None
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise pytest.UsageError(f"--device / {DEVICE_ENV}={name!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device / {DEVICE_ENV}={name!r}: CUDA is not available")
    return dev


def pytest_configure(config: pytest.Config) -> None:
    dev = _test_device(config)
    config.stash[_DEVICE_KEY] = dev
    os.environ["RICHVIZ_DEVICE"] = str(dev)  # library defaults follow the test device
    config.addinivalue_line(
        "markers", "browser: real-browser tests (JupyterLab + headless Chromium)"
    )
    config.addinivalue_line("markers", "slow: tests that take more than a few seconds")


def pytest_report_header(config: pytest.Config) -> str:
    return f"richviz test device: {config.stash[_DEVICE_KEY]}"


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The torch device of device-dependent tests (``--device`` / ``RICHVIZ_TEST_DEVICE``)."""
    return pytestconfig.stash[_DEVICE_KEY]


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    """``cuda`` for tests that compare CUDA with CPU; skipped (with a reason) without CUDA."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (torch.cuda.is_available() is False): CUDA-vs-CPU comparison")
    return torch.device("cuda")


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
