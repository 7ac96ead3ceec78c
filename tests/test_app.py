"""``richviz app``: notebook lookup, the Voilà command line, the kernel it runs, one-line errors.

No server starts here (tests/test_browser_voila.py starts one and renders the quick start).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from richviz import app
from richviz.app import (
    DEFAULT_NOTEBOOK,
    VOILA_CONFIG,
    add_app_parser,
    app_environment,
    app_files,
    find_notebook,
    voila_command,
)
from richviz.errors import ArgumentError, MissingDependencyError

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"


def parser() -> argparse.ArgumentParser:
    """A ``richviz``-like parser with only the ``app`` subcommand (as cli.py registers it)."""
    p = argparse.ArgumentParser(prog="richviz")
    add_app_parser(p.add_subparsers(dest="command", required=True))
    return p


def fake_notebooks(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("{}")
    return folder


# ---- the parser


def test_parser_defaults_and_options() -> None:
    args = parser().parse_args(["app"])
    assert (args.notebook, args.port, args.open) == (None, None, False)
    assert args.func is app._cmd_app
    args = parser().parse_args(["app", "02_geometry", "--port", "9123", "--open"])
    assert (args.notebook, args.port, args.open) == ("02_geometry", 9123, True)


@pytest.mark.parametrize("bad", ["0", "65536", "http", "-5"])
def test_parser_rejects_a_bad_port_in_one_line(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["app", f"--port={bad}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"richviz app: error: argument --port: {bad!r} is not a TCP port (an integer in 1..65535)"
    )


# ---- finding the notebook


@pytest.mark.parametrize("name", ["02", "2", "02_geometry", "02_geometry.ipynb", "geometry"])
def test_names_find_the_checkout_notebook(name: str) -> None:
    assert find_notebook(name) == NOTEBOOKS / "02_geometry.ipynb"


def test_default_is_the_quick_start_and_paths_are_taken_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_NOTEBOOK == "01_quickstart.ipynb"
    assert find_notebook() == NOTEBOOKS / DEFAULT_NOTEBOOK
    own = tmp_path / "mine.ipynb"
    own.write_text("{}")
    assert find_notebook(str(own)) == own.resolve()
    # a relative path too (from the current directory)
    monkeypatch.chdir(tmp_path)
    assert find_notebook("mine.ipynb", dirs=[]) == own.resolve()


def test_the_checkout_folder_comes_first_then_the_current_directory(tmp_path: Path) -> None:
    fake_notebooks(tmp_path / "notebooks", "01_quickstart.ipynb", "09_extra.ipynb")
    dirs = app.notebook_dirs(cwd=tmp_path)
    assert dirs == [NOTEBOOKS, (tmp_path / "notebooks").resolve()]
    assert find_notebook("01", dirs) == NOTEBOOKS / "01_quickstart.ipynb"
    assert find_notebook("09", dirs) == (tmp_path / "notebooks" / "09_extra.ipynb").resolve()


def test_an_installed_package_without_a_checkout_needs_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as from a wheel: no notebooks/ beside the package, none in the current directory
    monkeypatch.setattr(app, "_CHECKOUT_NOTEBOOKS", tmp_path / "site-packages" / "notebooks")
    assert app.notebook_dirs(cwd=tmp_path) == []
    with pytest.raises(ArgumentError) as exc:
        find_notebook(None, app.notebook_dirs(cwd=tmp_path))
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"NOTEBOOK {DEFAULT_NOTEBOOK}: no notebooks/ folder")
    assert "pass the path of an .ipynb file" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("09", "NOTEBOOK 09: no such notebook in {d} (known: 01_intro, 02_a_b, 03_b)"),
        ("b", "NOTEBOOK b: ambiguous in {d} (03_b.ipynb, 04_b.ipynb)"),
        ("sub", "NOTEBOOK sub: is a folder, not a notebook (.ipynb) file"),
        ("notes.txt", "NOTEBOOK notes.txt: not a notebook (expected an .ipynb file)"),
        ("x/y.ipynb", "NOTEBOOK x/y.ipynb: no such notebook file"),
        ("  ", "NOTEBOOK is empty: give a notebook name (e.g. 01) or a path"),
    ],
)
def test_bad_names_are_one_line_errors_naming_the_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    d = fake_notebooks(tmp_path / "nbs", "01_intro.ipynb", "02_a_b.ipynb", "03_b.ipynb")
    if name == "b":
        (d / "04_b.ipynb").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError) as exc:
        find_notebook(name, [d])
    assert str(exc.value) == expected.format(d=d)


# ---- the command line and the kernel


def test_voila_command_is_loopback_token_progressive_and_quiet() -> None:
    cmd = voila_command(NOTEBOOKS / DEFAULT_NOTEBOOK, 8901, token="t0k")
    assert cmd[:4] == [sys.executable, "-m", "voila", str(NOTEBOOKS / DEFAULT_NOTEBOOK)]
    options = set(cmd[4:])
    assert {
        "--Voila.ip=127.0.0.1",
        "--Voila.port=8901",
        "--Voila.port_retries=0",
        "--Voila.token=t0k",
        "--VoilaConfiguration.progressive_rendering=True",
        "--VoilaConfiguration.show_tracebacks=False",
        "--no-browser",
    } == options
    opened = voila_command("nb.ipynb", 8901, token="t", open_browser=True, python="py")
    assert opened[0] == "py" and "--no-browser" not in opened
    assert voila_command("nb.ipynb", 1, token="", extra=["--theme=dark"])[-1] == "--theme=dark"


def test_every_option_is_one_voila_knows() -> None:
    voila_app = pytest.importorskip("voila.app", reason="needs voila (the app extra)")
    from voila.configuration import VoilaConfiguration

    traits = {
        "Voila": set(voila_app.Voila.class_traits(config=True)),
        "VoilaConfiguration": set(VoilaConfiguration.class_traits(config=True)),
    }
    for option in voila_command("nb.ipynb", 8901, token="t")[4:]:
        if option == "--no-browser":
            assert "no-browser" in voila_app.Voila.flags
            continue
        cls, _, rest = option.removeprefix("--").partition(".")
        assert rest.split("=")[0] in traits[cls], option


def test_voila_reads_the_app_config_and_python3_is_this_interpreter(tmp_path: Path) -> None:
    """Voilà itself, started the way ``richviz app`` starts it (in a child process), loads the
    app's ``voila.json`` (the websocket ping timeout) and finds this interpreter's kernel."""
    pytest.importorskip("voila", reason="needs voila (the app extra)")
    env = app_environment(app_files(tmp_path / "app"))
    code = (
        "import json; from voila.app import Voila; a = Voila(); a.initialize([]); "
        "from jupyter_client.kernelspec import KernelSpecManager as K; "
        "print(json.dumps([a.tornado_settings, K().get_kernel_spec('python3').argv[0]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    settings, python = json.loads(out.stdout.strip().splitlines()[-1])
    assert settings == VOILA_CONFIG["Voila"]["tornado_settings"]
    assert python == sys.executable


@pytest.mark.parametrize("port", [0, 70000, "8866", True])
def test_voila_command_rejects_a_bad_port(port: object) -> None:
    with pytest.raises(ArgumentError, match=r"^port must be an integer in \[1, 65535\]"):
        voila_command("nb.ipynb", port, token="t")  # type: ignore[arg-type]


def test_the_kernel_spec_makes_python3_this_interpreter(tmp_path: Path) -> None:
    """Jupyter itself (in a child process, with the environment ``richviz app`` gives Voilà)
    resolves the notebooks' ``python3`` kernel to this interpreter, even with a user-level
    ``python3`` kernel pointing elsewhere."""
    pytest.importorskip("jupyter_client")
    user = tmp_path / "user-data" / "kernels" / "python3"
    user.mkdir(parents=True)
    (user / "kernel.json").write_text(
        json.dumps(
            {"argv": ["/elsewhere/python", "-m", "ipykernel_launcher"], "language": "python"}
        )
    )
    root = app_files(tmp_path / "app")
    # user-level kernels first, as outside a virtual environment (jupyter_core's default there)
    base = {**os.environ, "JUPYTER_DATA_DIR": str(user.parents[1]), "JUPYTER_PREFER_ENV_PATH": "0"}
    env = app_environment(root, base)
    assert env["JUPYTER_PATH"].split(os.pathsep)[0] == str(root / "data")
    code = (
        "import json; from jupyter_client.kernelspec import KernelSpecManager as K; "
        "print(json.dumps(K().get_kernel_spec('python3').argv))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out)[:3] == [sys.executable, "-m", "ipykernel_launcher"]
    # and without richviz's spec, the user-level one would have won (the check can fail)
    env.pop("JUPYTER_PATH")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out)[0] == "/elsewhere/python"


# ---- the subcommand end to end, without a server


class _FakeProc:
    def __init__(self, cmd, cwd, env) -> None:
        self.cmd, self.cwd, self.env = cmd, cwd, env
        spec = Path(env["JUPYTER_PATH"].split(os.pathsep)[0]) / "kernels" / "python3"
        self.kernel = json.loads((spec / "kernel.json").read_text())  # gone after the run
        config = Path(env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0]) / "voila.json"
        self.config = json.loads(config.read_text())

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def poll(self) -> int:
        return 0


def test_app_starts_voila_in_the_notebooks_folder(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    started: list[_FakeProc] = []

    def popen(cmd, cwd, env):
        started.append(_FakeProc(cmd, cwd, env))
        return started[-1]

    monkeypatch.setattr(app.subprocess, "Popen", popen)
    args = parser().parse_args(["app", "02", "--port", "9321"])
    assert args.func(args) == 0
    (proc,) = started
    assert proc.cmd[3] == str(NOTEBOOKS / "02_geometry.ipynb")
    assert proc.cwd == NOTEBOOKS  # the demo runs land in notebooks/runs/, as in JupyterLab
    assert proc.kernel["argv"][0] == sys.executable
    assert proc.config == VOILA_CONFIG
    token = next(o for o in proc.cmd if o.startswith("--Voila.token=")).split("=", 1)[1]
    assert len(token) >= 32
    line = capsys.readouterr().out.strip()
    assert line == (
        f"richviz app: serving 02_geometry.ipynb at http://127.0.0.1:9321/?token={token}"
        "  (Ctrl-C stops)"
    )
    # no --port: a free port, a fresh token
    args = parser().parse_args(["app"])
    assert args.func(args) == 0
    port = next(o for o in started[-1].cmd if o.startswith("--Voila.port=")).split("=")[1]
    assert 1 <= int(port) <= 65535
    assert f"--Voila.token={token}" not in started[-1].cmd


class _HideVoila:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] == "voila":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_app_without_voila_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", [_HideVoila(), *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] == "voila"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(app.subprocess, "Popen", lambda *a, **k: pytest.fail("Voila started"))
    args = parser().parse_args(["app"])
    with pytest.raises(MissingDependencyError) as exc:
        args.func(args)
    assert str(exc.value) == (
        "Voila is not installed; install the app extra: pip install 'richviz[app]'"
    )
    # an unknown notebook is reported first (it does not need Voila to be found)
    args = parser().parse_args(["app", "99"])
    with pytest.raises(ArgumentError, match=r"^NOTEBOOK 99: no such notebook in "):
        args.func(args)


class _StuckProc(_FakeProc):
    """A Voilà that is still running when ``richviz app`` is interrupted."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.signals: list[str] = []

    def wait(self, timeout: float | None = None) -> int:
        if not self.signals:
            raise KeyboardInterrupt
        if timeout is not None and self.signals == ["terminate"]:
            raise subprocess.TimeoutExpired("voila", timeout)
        return -9

    def poll(self) -> int | None:
        return None if not self.signals else -9

    def terminate(self) -> None:
        self.signals.append("terminate")

    def kill(self) -> None:
        self.signals.append("kill")


def test_an_interrupted_app_stops_voila(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while Voilà runs: it is terminated, killed if it does not stop, and the interrupt
    goes on to the command line (which prints one line)."""
    started: list[_StuckProc] = []
    monkeypatch.setattr(
        app.subprocess, "Popen", lambda cmd, cwd, env: started.append(_StuckProc(cmd, cwd, env))
        or started[-1],
    )  # fmt: skip
    args = parser().parse_args(["app"])
    with pytest.raises(KeyboardInterrupt):
        args.func(args)
    assert started[0].signals == ["terminate", "kill"]


def _cli_has_app() -> bool:
    from richviz import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "app" in sub.choices


@pytest.mark.skipif(not _cli_has_app(), reason="richviz/cli.py does not register `app` yet")
def test_richviz_app_errors_through_the_command_line(monkeypatch, capsys) -> None:
    from richviz import cli

    assert cli.main(["app", "99"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("richviz app: error: NOTEBOOK 99: no such ")
    monkeypatch.setattr(sys, "meta_path", [_HideVoila(), *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] == "voila"]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["app"]) == 2
    assert capsys.readouterr().err == (
        "richviz app: error: Voila is not installed; install the app extra: "
        "pip install 'richviz[app]'\n"
    )
