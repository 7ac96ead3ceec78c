"""Shared pytest configuration: markers, the test device, a test-artifact directory, a kernel,
the one factory of small trained runs (``tiny_run``) and a fresh interpreter's imports
(``fresh_imports``).

Device: ``pytest --device cuda`` (or ``RICHVIZ_TEST_DEVICE=cuda``) runs the device-dependent
tests on that device; the default is ``cuda`` when ``torch.cuda.is_available()`` else ``cpu``.
The choice is also exported as ``RICHVIZ_DEVICE`` for the session, so library defaults
(``Run.load``, the trainer, the widgets' "auto" device) follow it.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
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
    workers = getattr(config, "workerinput", {}).get("workercount")
    if workers:  # an xdist worker: share the cores with the others instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))
    dev = _test_device(config)
    config.stash[_DEVICE_KEY] = dev
    os.environ["RICHVIZ_DEVICE"] = str(dev)  # library defaults follow the test device
    config.addinivalue_line(
        "markers", "browser: real-browser tests (JupyterLab + headless Chromium)"
    )
    config.addinivalue_line("markers", "slow: tests that take more than a few seconds")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` (test.sh): each test file on one worker, the browser files on one.

    A file on one worker makes its module-scoped fixtures once (a trained run and its widgets,
    a Dask cluster, a JupyterLab, the notebooks' copy) and keeps its module-level state (the
    executed notebooks the claim tests reuse). The real-browser files (``test_browser*.py``)
    share one worker: one JupyterLab and one Chromium at a time. (``--dist loadgroup`` with
    ``xdist_group`` marks would say this per test, but with pytest 9.2 and pytest-xdist 3.8 it
    silently stops grouping: pytest-dev/pytest-xdist#1386.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesBrowsersTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "browser" if Path(path).name.startswith("test_browser") else path

    return FilesBrowsersTogether(config, log)


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
def fresh_imports() -> Callable[..., list[str]]:
    """``fresh_imports(code, names)``: which of the modules ``names`` (or a submodule of one)
    are loaded after ``code`` runs in a fresh interpreter (this one's executable), in the
    order given. A failing ``code`` fails the test with its stderr."""

    def run(code: str, names: Sequence[str], timeout: float = 300) -> list[str]:
        probe = (
            f"{code}\nimport sys as _sys\nprint('FRESH_IMPORTS', [n for n in {list(names)!r} "
            "if any(m == n or m.startswith(n + '.') for m in _sys.modules)])"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout
        )
        assert out.returncode == 0, out.stderr[-2000:]
        line = [t for t in out.stdout.splitlines() if t.startswith("FRESH_IMPORTS ")][-1]
        return ast.literal_eval(line.split(" ", 1)[1])

    return run


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


def _run_key(config: object, kwargs: dict) -> str:
    """A stable text for the arguments of one tiny run (a preset name or a Config, and kwargs)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.dumps([config, kwargs], sort_keys=True, default=repr)


def _digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path``, by relative name."""
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """Factory of small trained runs, each trained once per session (once per xdist worker).

    ``tiny_run(config, *, cli=False, copy_to=None, **train_kw) -> Path``

    config
        A preset name or a :class:`richviz.train.Config`.
    train_kw
        Passed to ``richviz.train.train(config, out, progress=False, **train_kw)``.
    cli
        Train through the command line instead, ``richviz train PRESET --out DIR -q --KEY VALUE``
        for each keyword (config must be a preset name); asserts that it exits 0.
    copy_to
        None: return the shared folder, which every test of the session may be handed, so it
        must never change (checked when the session ends: every file as trained). A path:
        copy the shared run there (:func:`shutil.copytree`) and return the copy, for a test or a
        module that writes into its run (a metrics cache, a damaged file).

    The first call with given arguments trains into this session's (this worker's) temporary
    directory; later calls with equal arguments return the same folder.
    """
    root = tmp_path_factory.mktemp("tiny-runs")
    made: dict[str, tuple[Path, dict[str, str]]] = {}

    def make(config: object, *, cli: bool = False, copy_to: Path | None = None, **kw) -> Path:
        key = _run_key(config, {"cli": cli, **kw})
        if key not in made:
            name = config if isinstance(config, str) else getattr(config, "data", "run")
            out = root / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
            if cli:
                from richviz import cli as rv_cli

                flags = [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
                assert rv_cli.main(["train", config, "--out", str(out), "-q", *flags]) == 0
            else:
                from richviz.train import train

                train(config, out, progress=False, **kw)
            made[key] = (out, _digest(out))
        out = made[key][0]
        if copy_to is None:
            return out
        return Path(shutil.copytree(out, copy_to))

    yield make
    changed = [str(out) for out, digest in made.values() if _digest(out) != digest]
    assert not changed, f"a test changed a shared tiny run (use copy_to=): {changed}"
