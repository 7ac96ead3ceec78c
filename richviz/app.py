"""``richviz app [NOTEBOOK]``: serve a tutorial notebook as an app with Voilà, on loopback.

Voilà runs the notebook in a fresh kernel and shows its outputs and widgets only (no code).
The server listens on 127.0.0.1 only, with a random access token in its URL, on a free port
(or ``--port``); a browser opens only with ``--open``. Cells render as they run (Voilà's
progressive rendering), so the progress bars of long cells are visible while they work.

Where the notebooks are: ``NOTEBOOK`` is a path to an ``.ipynb`` file, or a name, looked up in
the richviz checkout's ``notebooks/`` folder (next to the ``richviz`` package: an editable
install or a clone) and else in ``./notebooks``. A name is a file name
(``02_geometry.ipynb``), its stem (``02_geometry``), its number (``02`` or ``2``) or the words
after it (``geometry``). A wheel installed from an index ships no notebooks: pass a path to one
(the repository's ``notebooks/`` folder has them). The default is the quick start,
``01_quickstart.ipynb``.

The kernel is this Python (the interpreter running ``richviz``), whatever other ``python3``
kernels Jupyter knows: a temporary kernel spec is put first on ``JUPYTER_PATH``. A temporary
``voila.json`` (first on ``JUPYTER_CONFIG_PATH``) keeps a notebook that runs for minutes
rendering (:data:`VOILA_CONFIG`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from richviz.errors import ArgumentError, MissingDependencyError

__all__ = [
    "DEFAULT_NOTEBOOK",
    "VOILA_CONFIG",
    "add_app_parser",
    "app_environment",
    "app_files",
    "find_notebook",
    "notebook_dirs",
    "voila_command",
]

DEFAULT_NOTEBOOK = "01_quickstart.ipynb"
"""The notebook ``richviz app`` serves when none is named: the quick start."""

HOST = "127.0.0.1"
#: the checkout's notebooks folder, if richviz runs from a clone or an editable install
_CHECKOUT_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_dirs(cwd: Path | None = None) -> list[Path]:
    """Folders searched for a notebook given by name, in order (existing folders only).

    The ``notebooks/`` folder of the richviz checkout (beside the package), then
    ``<cwd>/notebooks``.
    """
    found: list[Path] = []
    for d in (_CHECKOUT_NOTEBOOKS, (cwd or Path.cwd()) / "notebooks"):
        d = d.resolve()
        if d.is_dir() and d not in found:
            found.append(d)
    return found


def _matches(stem: str, name: str) -> bool:
    number, _, words = stem.partition("_")
    if name.isdigit() and number.isdigit():
        return int(name) == int(number)  # 2 or 02
    return name in (stem, words)


def find_notebook(name: str | None = None, dirs: Sequence[Path] | None = None) -> Path:
    """The notebook ``richviz app NAME`` serves, as an absolute path.

    Parameters
    ----------
    name : str or None
        A path to an ``.ipynb`` file; or a name of a notebook in ``dirs``: its file name, stem,
        number or the words after the number (``02_geometry.ipynb``, ``02_geometry``, ``02``,
        ``geometry``). None: :data:`DEFAULT_NOTEBOOK`.
    dirs : sequence of Path, optional
        Folders to look names up in (default :func:`notebook_dirs`).

    Raises
    ------
    ArgumentError
        One line naming ``NOTEBOOK``: no such file, not a notebook, an unknown or ambiguous
        name, or no notebooks folder to look a name up in.

    Examples
    --------
    >>> from richviz.app import find_notebook
    >>> find_notebook("02").name
    '02_geometry.ipynb'
    >>> find_notebook().name
    '01_quickstart.ipynb'
    """
    dirs = notebook_dirs() if dirs is None else [Path(d) for d in dirs]
    text = DEFAULT_NOTEBOOK if name is None else str(name).strip()
    if not text:
        raise ArgumentError("NOTEBOOK is empty: give a notebook name (e.g. 01) or a path")
    path = Path(text).expanduser()
    looks_like_path = path.suffix == ".ipynb" or os.sep in text or "/" in text
    if name is not None and (looks_like_path or path.exists()):
        if path.is_dir():
            raise ArgumentError(f"NOTEBOOK {text}: is a folder, not a notebook (.ipynb) file")
        if path.is_file():
            if path.suffix != ".ipynb":
                raise ArgumentError(f"NOTEBOOK {text}: not a notebook (expected an .ipynb file)")
            return path.resolve()
        if os.sep in text or "/" in text:
            raise ArgumentError(f"NOTEBOOK {text}: no such notebook file")
    if not dirs:
        raise ArgumentError(
            f"NOTEBOOK {text}: no notebooks/ folder to look it up in (none beside the richviz "
            "package, none in the current directory); pass the path of an .ipynb file, e.g. "
            "from the richviz repository's notebooks/ folder"
        )
    stem = text.removesuffix(".ipynb")
    for d in dirs:
        candidates = sorted(p for p in d.glob("*.ipynb") if _matches(p.stem, stem))
        if len(candidates) == 1:
            return candidates[0].resolve()
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise ArgumentError(f"NOTEBOOK {text}: ambiguous in {d} ({names})")
    known = sorted({p.stem for d in dirs for p in d.glob("*.ipynb")})
    where = ", ".join(str(d) for d in dirs)
    raise ArgumentError(
        f"NOTEBOOK {text}: no such notebook in {where} (known: {', '.join(known) or 'none'})"
    )


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def voila_command(
    notebook: Path | str,
    port: int,
    *,
    token: str,
    open_browser: bool = False,
    python: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``notebook`` with Voilà on ``127.0.0.1:port``.

    Parameters
    ----------
    notebook : Path or str
        The ``.ipynb`` file (see :func:`find_notebook`).
    port : int
        TCP port, 1..65535; Voilà tries no other (it fails if the port is taken).
    token : str
        Access token the page URL must carry (``?token=...``); empty: no token.
    open_browser : bool
        Let Voilà open the page in the default browser.
    python : str, optional
        The interpreter that runs Voilà (default: this one).
    extra : sequence of str
        More Voilà options, appended.

    Examples
    --------
    >>> from richviz.app import voila_command
    >>> cmd = voila_command("nb.ipynb", 8866, token="abc", python="python")
    >>> cmd[:4]
    ['python', '-m', 'voila', 'nb.ipynb']
    >>> "--Voila.ip=127.0.0.1" in cmd and "--no-browser" in cmd
    True
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ArgumentError(f"port must be an integer in [1, 65535], got {port!r}")
    cmd = [
        python or sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--Voila.ip={HOST}",
        f"--Voila.port={port}",
        "--Voila.port_retries=0",
        f"--Voila.token={token}",
        # cells appear as they run, so a long cell's progress bar is seen while it works
        "--VoilaConfiguration.progressive_rendering=True",
        "--VoilaConfiguration.show_tracebacks=False",
    ]
    if not open_browser:
        cmd.append("--no-browser")
    cmd += list(extra)
    return cmd


#: Voila's settings for ``richviz app`` (a ``voila.json``). jupyter_server closes a websocket
#: whose pongs are late (90 s), and Voila 0.5's progressive rendering reads no message (so no
#: pong) while its websocket runs the notebook: a notebook running longer than 90 s would stop
#: rendering (voila-dashboards/voila#1540). Keep the pings, never time out on them.
VOILA_CONFIG = {"Voila": {"tornado_settings": {"ws_ping_timeout": 7 * 24 * 3600 * 1000}}}


def app_files(root: Path, python: str | None = None) -> Path:
    """Write the Jupyter files ``richviz app`` runs Voilà with under ``root``; returns ``root``.

    ``root/data/kernels/python3/kernel.json``: a ``python3`` kernel running ``python`` (default:
    this interpreter), whatever other ``python3`` kernels Jupyter knows; ``root/config/voila.json``:
    :data:`VOILA_CONFIG`. :func:`app_environment` puts both first on Jupyter's search paths.
    """
    spec_dir = root / "data" / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (richviz)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "voila.json").write_text(json.dumps(VOILA_CONFIG, indent=1))
    return root


def app_environment(root: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with :func:`app_files`' folders under ``root`` first on
    ``JUPYTER_PATH`` (kernels) and ``JUPYTER_CONFIG_PATH`` (``voila.json``)."""
    env = dict(os.environ if base is None else base)
    for var, sub in (("JUPYTER_PATH", "data"), ("JUPYTER_CONFIG_PATH", "config")):
        rest = env.get(var)
        env[var] = os.pathsep.join([str(root / sub), *([rest] if rest else [])])
    return env


def require_voila() -> None:
    """Raise a one-line :class:`MissingDependencyError` unless Voilà can be imported."""
    try:
        found = importlib.util.find_spec("voila") is not None
    except (ImportError, ValueError):  # a broken install, or an import hook hiding it
        found = False
    if not found:
        raise MissingDependencyError(
            "Voila is not installed; install the app extra: pip install 'richviz[app]'"
        )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (an integer in 1..65535)")
    return value


def _cmd_app(args: argparse.Namespace) -> int:
    notebook = find_notebook(args.notebook)
    require_voila()
    port = args.port or free_port()
    token = secrets.token_urlsafe(24)
    url = f"http://{HOST}:{port}/?token={token}"
    with tempfile.TemporaryDirectory(prefix="richviz-app-") as tmp:
        env = app_environment(app_files(Path(tmp)))
        cmd = voila_command(notebook, port, token=token, open_browser=args.open)
        print(f"richviz app: serving {notebook.name} at {url}  (Ctrl-C stops)", flush=True)
        proc = subprocess.Popen(cmd, cwd=notebook.parent, env=env)
        previous = _stop_on_sigterm()
        try:
            return proc.wait()
        finally:  # Ctrl-C or SIGTERM here: stop Voilà (and its kernels) too
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> object:
    """Turn SIGTERM into ``SystemExit(143)`` (so cleanup runs); returns the old handler, or
    None off the main thread (where no handler can be set)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return None


def add_app_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``app`` subcommand on ``subparsers``; returns its parser.

    Its ``func`` default returns the exit status of Voilà and raises
    :class:`~richviz.errors.ArgumentError` (unknown notebook) or
    :class:`~richviz.errors.MissingDependencyError` (no Voilà) with a one-line message.

    Examples
    --------
    >>> import argparse
    >>> from richviz.app import add_app_parser
    >>> parser = argparse.ArgumentParser(prog="richviz")
    >>> _ = add_app_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["app", "02", "--port", "8900"])
    >>> (args.notebook, args.port, args.open)
    ('02', 8900, False)
    """
    p = subparsers.add_parser(
        "app",
        help="serve a notebook as an app (Voila) on 127.0.0.1",
        description=(
            "Serve a notebook as an app with Voila (outputs and widgets, no code) on 127.0.0.1 "
            "with a random token in its URL. NOTEBOOK: a path to an .ipynb file, or a name "
            "(02, 02_geometry, geometry) in the checkout's notebooks/ folder, else "
            "./notebooks. Needs the app extra: pip install 'richviz[app]'."
        ),
    )
    p.add_argument(
        "notebook",
        nargs="?",
        default=None,
        metavar="NOTEBOOK",
        help=f"notebook name or path (default: {DEFAULT_NOTEBOOK}, the quick start)",
    )
    p.add_argument("--port", type=_port, default=None, help="TCP port (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the app in the default web browser")
    p.set_defaults(func=_cmd_app)
    return p
