"""Kernel warm-up: a Jupyter kernel of richviz's environment imports PyTorch and the widget stack
in a background thread the moment it starts.

Importing torch takes ~2 s on a 2-core machine, bqplot (with pandas) and ipywidgets ~0.5 s more:
most of what a notebook's first cell waits for. The kernel starts when the notebook opens, and
the reader looks at the page before running it; the imports happen meanwhile, and a cell that
imports the same modules earlier only waits for the rest (Python's import locks make the two
threads share one import). Nothing is run but imports, and a failed import is left for the
cell to report. The thread shares the kernel's interpreter lock, so it pays off only while the
kernel is idle: while a cell runs it pauses after the module at hand, and goes on once the
kernel is idle again. Run All at once waits about as long as without it, Run All after 5 s of
reading much less (``benchmarks/browser_quickstart.py --pause 5``, README).

Enable it in an environment with ``python -m richviz.kernel_warmup install`` (run by
``scripts/setup-env.sh`` and ``binder/postBuild``): it adds this module to
``InteractiveShellApp.extensions`` in ``{sys.prefix}/etc/ipython/ipython_kernel_config.py``,
which every IPython kernel started from that environment reads (terminal IPython does not).
``python -m richviz.kernel_warmup uninstall`` takes the line out again; the environment
variable ``RICHVIZ_KERNEL_WARMUP=0`` turns it off for one kernel.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from richviz.atomic import atomic_write_text

__all__ = [
    "MODULES",
    "config_file",
    "config_line",
    "install",
    "load_ipython_extension",
    "start",
    "uninstall",
]

#: imported in this order by the warm-up thread: what the quick start's first cell imports
MODULES = ("torch", "pandas", "ipywidgets", "bqplot", "richviz.train", "richviz.widgets.explorer")
ENV_VAR = "RICHVIZ_KERNEL_WARMUP"
_MARK = "# richviz kernel warm-up"
_thread: threading.Thread | None = None
#: clear while a cell runs: the cell imports what it needs itself, a second importer beside it
#: would only share the interpreter lock (the module being imported is finished first)
_idle = threading.Event()
_idle.set()


def _pause(*_args: Any) -> None:
    _idle.clear()


def _resume(*_args: Any) -> None:
    _idle.set()


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        _idle.wait()
        try:
            importlib.import_module(name)
        except Exception:  # the cell that needs the module reports the failure itself
            return


def start(modules: tuple[str, ...] = MODULES) -> threading.Thread | None:
    """Import ``modules`` in a daemon thread (once per process); returns the thread, or None
    when ``RICHVIZ_KERNEL_WARMUP=0``."""
    global _thread
    if os.environ.get(ENV_VAR, "1").strip() == "0":
        return None
    if _thread is None:
        _thread = threading.Thread(
            target=_import_all, args=(tuple(modules),), name="richviz-warmup", daemon=True
        )
        _thread.start()
    return _thread


def load_ipython_extension(ipython: Any) -> None:
    """IPython's extension hook: start the warm-up thread (the kernel does not wait for it);
    it pauses between modules while a cell runs (IPython's ``pre_run_cell`` /
    ``post_run_cell`` events)."""
    if start() is not None:
        ipython.events.register("pre_run_cell", _pause)
        ipython.events.register("post_run_cell", _resume)


def config_file(prefix: str | os.PathLike | None = None) -> Path:
    """``{prefix}/etc/ipython/ipython_kernel_config.py`` (``prefix``: this environment's)."""
    return Path(prefix or sys.prefix) / "etc" / "ipython" / "ipython_kernel_config.py"


def config_line() -> str:
    """The line :func:`install` adds to the kernel config."""
    return f'c.InteractiveShellApp.extensions.append("richviz.kernel_warmup")  {_MARK}'


def install(prefix: str | os.PathLike | None = None) -> Path:
    """Add :func:`config_line` to :func:`config_file` (kept once; the rest of the file kept;
    written atomically). Returns the file.

    Examples
    --------
    >>> import tempfile
    >>> from richviz import kernel_warmup
    >>> prefix = tempfile.mkdtemp()
    >>> path = kernel_warmup.install(prefix)
    >>> path.relative_to(prefix).as_posix()
    'etc/ipython/ipython_kernel_config.py'
    >>> print(path.read_text().strip())
    c.InteractiveShellApp.extensions.append("richviz.kernel_warmup")  # richviz kernel warm-up
    """
    path = config_file(prefix)
    text = path.read_text() if path.exists() else ""
    if config_line() not in text.splitlines():
        kept = [line for line in text.splitlines() if _MARK not in line]
        atomic_write_text("\n".join([*kept, config_line()]) + "\n", path, parents=True)
    return path


def uninstall(prefix: str | os.PathLike | None = None) -> Path:
    """Remove the warm-up line from :func:`config_file` (if any). Returns the file."""
    path = config_file(prefix)
    if path.exists():
        lines = path.read_text().splitlines()
        kept = [line for line in lines if _MARK not in line]
        if kept != lines:
            atomic_write_text("".join(f"{line}\n" for line in kept), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m richviz.kernel_warmup",
        description="Let this environment's Jupyter kernels import torch and the widget "
        "stack in the background as they start.",
    )
    parser.add_argument("action", choices=["install", "uninstall"])
    parser.add_argument("--prefix", help="environment prefix (default: this one)")
    args = parser.parse_args(argv)
    path = (install if args.action == "install" else uninstall)(args.prefix)
    print(f"richviz: kernel warm-up {args.action}ed in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
