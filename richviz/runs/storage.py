"""Runs as storage: checkpoint files safely read, checkpoint records, and writing new runs.

A run directory holds ``run.json`` (the manifest: architecture name + kwargs, data set, seed,
hyper-parameters, per-checkpoint metadata) and one ``step_XXXXXXXX.pt`` file per checkpoint,
each a ``torch.save`` of ``{"state_dict": {...}, "meta": {...}}`` that loads with
``weights_only=True``. Nothing here ever unpickles arbitrary objects, and every write is atomic
(:mod:`richviz.atomic`: temp file in the same folder + ``os.replace``).

- reading: ``weights_only`` loading with one-line :class:`~richviz.errors.CheckpointError`
  reasons (truncated, foreign, unsafe pickle), state-dict shape checks, NaN/inf detection;
- :class:`Checkpoint`: one saved step (path, meta, readable or why not);
- writing: :func:`save_checkpoint`, :func:`check_run_folder`, :class:`RunWriter`.

:class:`~richviz.runs.run.Run` (in :mod:`richviz.runs.run`) ties these to a run folder. This
module imports no numerics (no :mod:`richviz.metrics`, :mod:`richviz.geometry` or
``torch.func``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickletools
import re
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from richviz.atomic import atomic_save, atomic_write_json, atomic_write_text
from richviz.errors import (
    ArgumentError,
    ArgumentTypeError,
    CheckpointError,
    checkpoint_error,
    one_line,
)
from richviz.runs.manifest import FORMAT, FORMAT_VERSION, MANIFEST
from richviz.runs.shards import is_index, shard_files

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_READ_BYTES",
    "MAX_READ_ENV",
    "META_KEYS",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "Checkpoint",
    "checkpoint_name",
    "check_run_folder",
    "file_hash",
    "RunWriter",
    "save_checkpoint",
]

META_KEYS = ("step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")
_SUFFIXES = (".pt", ".pth")
MAX_READ_ENV = "RICHVIZ_MAX_CHECKPOINT_BYTES"
#: bytes of one checkpoint that richviz reads whole into memory (a legacy non-zip file, a zip
#: checkpoint's pickle, a pickle scanned for what it would import); zip tensors are mmapped and
#: count against no bound. Overridden by the environment variable ``RICHVIZ_MAX_CHECKPOINT_BYTES``.
MAX_READ_BYTES = 2 * 2**30
_PICKLES_SCANNED = 8  # a legacy file is 5 pickles (magic, protocol, sys info, record, keys)


def _primitive(v: Any) -> Any:
    """Meta values as JSON/weights_only-safe primitives (tensors and numpy scalars -> float/int)."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if hasattr(v, "item") and callable(v.item):
        return v.item()
    if isinstance(v, Mapping):
        return {str(k): _primitive(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_primitive(x) for x in v]
    raise ArgumentTypeError(f"meta value {v!r} of type {type(v).__name__} is not a primitive")


def save_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Save ``{"state_dict", "meta"}`` atomically; tensors are detached and moved to CPU."""
    sd = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    atomic_save({"state_dict": sd, "meta": _primitive(dict(meta))}, path)


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step`` (zero-padded so names sort by step)."""
    return f"step_{step:08d}.pt"


def max_read_bytes() -> int:
    """:data:`MAX_READ_BYTES`, or the environment's ``RICHVIZ_MAX_CHECKPOINT_BYTES`` (bytes)."""
    text = os.environ.get(MAX_READ_ENV, "").strip()
    if not text:
        return MAX_READ_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise ArgumentError(f"{MAX_READ_ENV}={text!r} must be a number of bytes") from None
    if value < 1:
        raise ArgumentError(f"{MAX_READ_ENV}={text!r} must be a positive number of bytes")
    return value


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def _too_big(path: Path, what: str, size: int, limit: int) -> CheckpointError:
    return checkpoint_error(
        path,
        f"{what} is {_gb(size)}, more than the {_gb(limit)} richviz reads whole "
        f"(set {MAX_READ_ENV} to allow more)",
    )


def _zip_pickle(z: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    return next((i for i in z.infolist() if i.filename.endswith("data.pkl")), None)


def _check_read_size(path: Path, size: int, is_zip: bool) -> None:
    """Refuse a file whose whole-read part exceeds :func:`max_read_bytes` (one line).

    A zip checkpoint's tensors are memory-mapped or read one by one, so only its pickle
    (``data.pkl``, read whole by torch) counts; a legacy non-zip file is read whole.
    """
    limit = max_read_bytes()
    if not is_zip:
        if size > limit:
            raise _too_big(path, "this non-zip (legacy torch.save or pickle) file", size, limit)
        return
    try:
        with zipfile.ZipFile(path) as z:
            info = _zip_pickle(z)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise checkpoint_error(
            path, f"truncated or corrupt checkpoint ({one_line(exc, 160)})"
        ) from None
    if info is not None and info.file_size > limit:
        raise _too_big(path, "its pickle (data.pkl)", info.file_size, limit)


def _torch_load(path: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a one-line CheckpointError.

    What is read whole is bounded first (:func:`_check_read_size`).
    """
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise checkpoint_error(path, "is a folder, not a checkpoint file")
        if size == 0:
            raise checkpoint_error(path, "checkpoint file is empty")
        with open(path, "rb") as f:
            head = f.read(4)
        is_zip = zipfile.is_zipfile(path)
    except FileNotFoundError:
        raise checkpoint_error(path, "checkpoint file is missing") from None
    except OSError as exc:
        raise checkpoint_error(
            path, f"cannot read the file ({exc.strerror or type(exc).__name__})"
        ) from None
    if head == b"PK\x03\x04" and not is_zip:
        raise checkpoint_error(
            path, "truncated or corrupt checkpoint (the zip archive is incomplete)"
        )
    _check_read_size(path, size, is_zip)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" for foreign files
            return torch.load(
                path, map_location=map_location, weights_only=True, mmap=mmap and is_zip
            )
    except Exception as exc:  # torch raises many types for foreign bytes
        msg = str(exc)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        imports = [m.group(1)] if m else _pickle_imports(path, is_zip)
        if imports:
            raise checkpoint_error(
                path,
                f"refused to load: its pickle would import and call {imports[0]}; richviz only "
                "loads tensors and primitive types (weights_only=True)",
            ) from None
        if is_zip:
            raise checkpoint_error(
                path, f"truncated or corrupt checkpoint ({type(exc).__name__}: {msg})"
            ) from None
        raise checkpoint_error(
            path, "not a PyTorch checkpoint (torch.load with weights_only=True cannot read it)"
        ) from None


class _Bounded:
    """``read`` / ``readline`` of a binary file, raising once more than ``limit`` bytes are asked
    (no ``tell``, so :func:`pickletools.genops` reports no positions)."""

    def __init__(self, f: Any, limit: int):
        self._f, self._left = f, limit

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            raise EOFError("read bound reached")
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._f.readline(min(self._left + 1, 1 << 20))
        if len(line) > self._left:
            raise EOFError("read bound reached")
        self._left -= len(line)
        return line


def _pickle_imports(path: Path, is_zip: bool) -> list[str]:
    """Names a pickle would import (``module.name``), found by scanning opcodes, never running.

    Streams ``data.pkl`` inside a zip checkpoint, or the successive pickles at the start of
    any other file (a legacy ``torch.save`` file is five: magic number, protocol, system
    info, the record, storage keys), never reading more than :func:`max_read_bytes`. Names
    that ``weights_only`` allows (``torch.*``, ``collections.OrderedDict``) are left out.
    Returns [] for bytes that are not a pickle.
    """
    found: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            if is_zip:
                z = stack.enter_context(zipfile.ZipFile(path))
                info = _zip_pickle(z)
                if info is None:
                    return []
                raw = stack.enter_context(z.open(info))
            else:
                raw = stack.enter_context(open(path, "rb"))
            f = _Bounded(raw, max_read_bytes())
            for _ in range(1 if is_zip else _PICKLES_SCANNED):
                strings: list[str] = []
                for op, arg, _ in pickletools.genops(f):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                        found.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # the end of the pickles (raw tensor bytes follow) or not a pickle at all
        pass
    return [f for f in found if not f.startswith(("torch.", "collections.OrderedDict"))]


def _split_payload(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Accept ``{"state_dict", "meta"}`` or a bare state dict; return (state_dict, meta)."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd, meta = obj["state_dict"], obj.get("meta") or {}
    else:
        sd, meta = obj, {}
    if not isinstance(sd, Mapping) or not sd:
        raise checkpoint_error(path, f"not a state dict (found {type(sd).__name__})")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise checkpoint_error(
                path, f"not a state dict (entry {k!r} is a {type(v).__name__}, not a tensor)"
            )
    if not isinstance(meta, Mapping):
        raise checkpoint_error(path, f"'meta' must be a dict, found {type(meta).__name__}")
    return dict(sd), dict(meta)


def _match(path: Path, sd: Mapping[str, torch.Tensor], reference: Mapping[str, Any]) -> None:
    """Raise if ``sd`` does not have exactly the keys and shapes of ``reference``."""
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        raise checkpoint_error(
            path, "state dict does not fit the run's architecture: " + ", ".join(parts)
        )
    for k, ref in reference.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise checkpoint_error(
                path,
                f"parameter {k!r} has shape {tuple(sd[k].shape)}, "
                f"the model expects {tuple(ref.shape)}",
            )


def _nonfinite(sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding NaN or inf.

    A finite sum proves a tensor finite (NaN and inf propagate through it) and is ~15x cheaper
    than ``isfinite(v).all()``; only a non-finite sum (NaN/inf, or an overflow of huge finite
    values) takes the exact check.
    """
    return [
        k
        for k, v in sd.items()
        if v.is_floating_point()
        and not (bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all()))
    ]


@dataclass
class Checkpoint:
    """One saved step. ``error`` is None for a readable file, else the one-line reason."""

    step: int
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    size: int = -1
    mtime_ns: int = -1

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def nonfinite(self) -> bool:
        """True when the weights contain NaN or inf (loading works; metrics are NaN)."""
        return bool(self.meta.get("nonfinite", False))

    def files(self) -> list[Path]:
        """The files holding this checkpoint: its file, and a shard index's shards
        (:mod:`richviz.runs.shards`; none listed when the index cannot be read)."""
        if not is_index(self.path):
            return [self.path]
        try:
            return [self.path, *shard_files(self.path)]
        except CheckpointError:
            return [self.path]

    def fingerprint(self) -> list[int]:
        """(size, mtime_ns) of the file now, (total size, newest mtime_ns) of a sharded
        checkpoint's files; changes when any of them is rewritten ([-1, -1]: one is missing)."""
        try:
            stats = [p.stat() for p in self.files()]
        except OSError:
            return [-1, -1]
        return [sum(st.st_size for st in stats), max(st.st_mtime_ns for st in stats)]

    def content_hash(self) -> str:
        """SHA-256 of the file's bytes now; of a sharded checkpoint, of its files' hashes in
        order ("" when one cannot be read)."""
        files = self.files()
        if len(files) == 1:
            return file_hash(self.path)
        hashes = [file_hash(p) for p in files]
        return hashlib.sha256(" ".join(hashes).encode()).hexdigest() if all(hashes) else ""


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks ("" when it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return ""
    return h.hexdigest()


def check_run_folder(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``out=`` unless ``path`` can take a new run (writes nothing)."""
    path = Path(path)
    if (path / MANIFEST).exists():
        raise ArgumentError(f"out={str(path)!r} already holds a run; choose another folder")
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"out={str(path)!r} exists and is not a folder")
    if path.is_dir() and any(p.suffix in _SUFFIXES for p in path.iterdir()):
        raise ArgumentError(f"out={str(path)!r} already holds checkpoint files")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise ArgumentError(f"out={str(path)!r}: folder {str(parent)!r} is not writable")


class RunWriter:
    """Creates a run folder: the manifest first, then checkpoints as training proceeds.

    The manifest says ``"complete": false`` until :meth:`finish` is called, so a run whose
    training was killed stays marked incomplete.
    """

    def __init__(self, path: str | os.PathLike, manifest: Mapping[str, Any]):
        self.path = Path(path)
        check_run_folder(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = {"format": FORMAT, "version": FORMAT_VERSION, **_primitive(dict(manifest))}
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.manifest["checkpoints"] = []
        self.manifest["complete"] = False
        atomic_write_json(self.manifest, self.path / MANIFEST)

    def save(self, step: int, model: nn.Module, meta: Mapping[str, Any]) -> Path:
        """Write the checkpoint for ``step`` and record it in the manifest (both atomically)."""
        name = checkpoint_name(step)
        sd = model.state_dict()
        meta = {**_primitive(dict(meta)), "step": int(step), "nonfinite": bool(_nonfinite(sd))}
        save_checkpoint(self.path / name, sd, meta)
        self.manifest["checkpoints"] = [
            e for e in self.manifest["checkpoints"] if e["step"] != step
        ]
        self.manifest["checkpoints"].append({"step": int(step), "file": name, "meta": meta})
        atomic_write_json(self.manifest, self.path / MANIFEST)
        return self.path / name

    def finish(self) -> None:
        """Mark the run complete (``"complete": true`` in the manifest)."""
        self.manifest["complete"] = True
        atomic_write_json(self.manifest, self.path / MANIFEST)

    def discard(self) -> None:
        """Remove the manifest and the checkpoints written so far (training failed to start)."""
        for e in self.manifest["checkpoints"]:
            with contextlib.suppress(OSError):
                (self.path / e["file"]).unlink()
        with contextlib.suppress(OSError):
            (self.path / MANIFEST).unlink()
