"""Atomic file writes: readers see the old file or the new one, never half of either.

Every write goes to a temp file in the target's folder, is flushed and ``fsync``-ed, then moved
onto the target with ``os.replace`` (atomic on POSIX and Windows). The file gets the mode a
plain ``open`` would give it (``0o666 & ~umask``), not ``mkstemp``'s private 0600. This is the
one writer richviz uses for checkpoints, manifests, metrics caches, exports and configs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read from /proc on Linux, else by setting and restoring it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def _atomic(path: Path, write: Callable[[Any], None], mode: str, parents: bool = False) -> Path:
    """Write via a temp file in ``path``'s folder, fsync, then ``os.replace`` onto ``path``.

    ``parents=True`` creates missing parent folders first. Returns ``path``.
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: readers see the old file or the new one, never half."""
    import torch  # here: the text and JSON writers load without PyTorch

    _atomic(Path(path), lambda f: torch.save(obj, f), "wb")


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(json.dumps(obj, indent=1, sort_keys=False), path)


def atomic_write_text(text: str, path: str | os.PathLike, parents: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return _atomic(Path(path), lambda f: f.write(text), "w", parents)


def atomic_write_bytes(data: bytes, path: str | os.PathLike, parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; missing parent folders are created (exports)."""
    return _atomic(Path(path), lambda f: f.write(data), "wb", parents)
