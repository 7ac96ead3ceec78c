"""Runs as storage: discover, validate, safely load and write training runs on disk.

A run directory holds ``run.json`` (the manifest: architecture name + kwargs, data set, seed,
hyper-parameters, per-checkpoint metadata) and one ``step_XXXXXXXX.pt`` file per checkpoint,
each a ``torch.save`` of ``{"state_dict": {...}, "meta": {...}}`` that loads with
``weights_only=True``. Nothing here ever unpickles arbitrary objects, and every write is atomic
(temp file in the same folder + ``os.replace``).

A user's own model works too: :meth:`Run.from_state_dicts` takes a model factory and a folder
of state dicts (``*.pt``/``*.pth``).

This module imports no numerics (no :mod:`richviz.metrics`, :mod:`richviz.geometry` or
``torch.func``); the per-run metrics table lives in :mod:`richviz.runs.analysis`, which
:meth:`Run.metrics` imports when called.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import json
import os
import pickletools
import re
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from richviz import datasets
from richviz.devices import best_device
from richviz.atomic import atomic_save, atomic_write_json, atomic_write_text
from richviz.errors import (
    CheckpointError,
    DataError,
    ModelError,
    RichvizError,
    RunError,
    one_line,
)
from richviz.features import OutputSelector, select_model_output
from richviz.runs.manifest import FORMAT, FORMAT_VERSION, MANIFEST, inside, validate_manifest

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEYS",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "Checkpoint",
    "checkpoint_name",
    "check_run_folder",
    "file_hash",
    "Run",
    "RunWriter",
    "save_checkpoint",
]

META_KEYS = ("step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")
_SUFFIXES = (".pt", ".pth")


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
    raise TypeError(f"meta value {v!r} of type {type(v).__name__} is not a primitive")


def save_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Save ``{"state_dict", "meta"}`` atomically; tensors are detached and moved to CPU."""
    sd = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    atomic_save({"state_dict": sd, "meta": _primitive(dict(meta))}, path)


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step`` (zero-padded so names sort by step)."""
    return f"step_{step:08d}.pt"


# --------------------------------------------------------------------------- reading files


def _fail(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: {one_line(reason)}")


def _torch_load(path: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a one-line CheckpointError."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise _fail(path, "is a folder, not a checkpoint file")
        if size == 0:
            raise _fail(path, "checkpoint file is empty")
        with open(path, "rb") as f:
            head = f.read(4)
        is_zip = zipfile.is_zipfile(path)
    except FileNotFoundError:
        raise _fail(path, "checkpoint file is missing") from None
    except OSError as exc:
        raise _fail(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if head == b"PK\x03\x04" and not is_zip:
        raise _fail(path, "truncated or corrupt checkpoint (the zip archive is incomplete)")
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
            raise _fail(
                path,
                f"refused to load: its pickle would import and call {imports[0]}; richviz only "
                "loads tensors and primitive types (weights_only=True)",
            ) from None
        if is_zip:
            raise _fail(
                path, f"truncated or corrupt checkpoint ({type(exc).__name__}: {msg})"
            ) from None
        raise _fail(
            path, "not a PyTorch checkpoint (torch.load with weights_only=True cannot read it)"
        ) from None


def _pickle_imports(path: Path, is_zip: bool) -> list[str]:
    """Names a pickle would import (``module.name``), found by scanning opcodes, never running.

    Scans ``data.pkl`` inside a zip checkpoint or the whole file otherwise; names that
    ``weights_only`` allows (``torch.*``, ``collections.OrderedDict``) are left out. Returns []
    for bytes that are not a pickle.
    """
    try:
        if is_zip:
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return []
                data = z.read(name)
        else:
            data = path.read_bytes()
        strings: list[str] = []
        found: list[str] = []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle at all
        return []
    return [f for f in found if not f.startswith(("torch.", "collections.OrderedDict"))]


def _split_payload(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Accept ``{"state_dict", "meta"}`` or a bare state dict; return (state_dict, meta)."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd, meta = obj["state_dict"], obj.get("meta") or {}
    else:
        sd, meta = obj, {}
    if not isinstance(sd, Mapping) or not sd:
        raise _fail(path, f"not a state dict (found {type(sd).__name__})")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise _fail(
                path, f"not a state dict (entry {k!r} is a {type(v).__name__}, not a tensor)"
            )
    if not isinstance(meta, Mapping):
        raise _fail(path, f"'meta' must be a dict, found {type(meta).__name__}")
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
        raise _fail(path, "state dict does not fit the run's architecture: " + ", ".join(parts))
    for k, ref in reference.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise _fail(
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


# --------------------------------------------------------------------------- data model


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

    def fingerprint(self) -> list[int]:
        """(size, mtime_ns) of the file now; changes when the file is rewritten."""
        try:
            st = self.path.stat()
        except OSError:
            return [-1, -1]
        return [st.st_size, st.st_mtime_ns]

    def content_hash(self) -> str:
        """SHA-256 of the file's bytes now ("" when it cannot be read)."""
        return file_hash(self.path)


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


def _as_step(step: Any) -> int:
    """A step given as an int, an integer-valued number or a numeric string ("2000")."""
    if isinstance(step, bool):
        raise ValueError(f"step={step!r} must be an integer step")
    if isinstance(step, str) and re.fullmatch(r"\s*[+-]?\d+\s*", step):
        return int(step)
    try:
        value = int(step)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"step={step!r} must be an integer step") from None
    if isinstance(step, float) and value != step:
        raise ValueError(f"step={step!r} must be an integer step")
    return value


def _source_hash(obj: Any) -> str:
    """Hash of an object's source code ("" when Python cannot find it, e.g. a builtin).

    Remembered per object (``inspect.getsource`` parses the whole module, ~10 ms): a class or
    function object keeps its code for its lifetime, and a redefinition is a new object.
    """
    try:
        return _remembered_source_hash(obj)
    except TypeError:  # unhashable callable
        return _read_source_hash(obj)


def _read_source_hash(obj: Any) -> str:
    try:
        src = inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(src.encode()).hexdigest()[:16]


_remembered_source_hash = functools.lru_cache(maxsize=1024)(_read_source_hash)


def _model_identity(model: nn.Module) -> str:
    """Hash of a model's structure: its repr, parameter names/shapes, its classes' source."""
    h = hashlib.sha256(repr(model).encode())
    for k, v in model.state_dict().items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        h.update(f"{cls.__module__}.{cls.__qualname__}:{_source_hash(cls)};".encode())
    return h.hexdigest()[:16]


def _callable_identity(fn: Any) -> str:
    """Qualified name plus source hash of a callable (a factory or an output selector)."""
    if isinstance(fn, (int, str)) or fn is None:
        return repr(fn)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', '?')}.{name}:{_source_hash(fn)}"


def _mark_duplicates(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """Mark every checkpoint whose step another (readable, earlier-listed) one has as unreadable.

    ``checkpoints`` is sorted by step, ties in listing order (files named in the manifest
    first); the first readable file of a step keeps it.
    """
    keeper: dict[int, Checkpoint] = {}
    for c in checkpoints:
        if c.readable:
            keeper.setdefault(c.step, c)
    for c in checkpoints:
        k = keeper.get(c.step)
        if k is not None and k is not c and c.readable:
            c.error = str(
                _fail(c.path, f"duplicate of step {c.step} (already in {k.path.name}); ignored")
            )
    return checkpoints


def _natural_key(name: str) -> list[Any]:
    return [
        (0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t
    ]


def _steps_from_names(files: list[Path]) -> list[int]:
    """Last integer in each stem when all have one and they are unique, else the sorted index."""
    steps = []
    for f in files:
        nums = re.findall(r"\d+", f.stem)
        steps.append(int(nums[-1]) if nums else None)
    if None in steps or len(set(steps)) != len(steps):
        return list(range(len(files)))
    return steps  # type: ignore[return-value]


# --------------------------------------------------------------------------- the run


class Run:
    """A training run on disk: manifest, checkpoints, safe cached loading and metrics.

    Build with :meth:`open` (a richviz run folder) or :meth:`from_state_dicts` (a user's model
    factory plus a folder of state dicts).
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        factory: Callable[[], nn.Module],
        files: list[tuple[int, Path, dict[str, Any]]],
        data: datasets.Dataset | None = None,
        cache_size: int = 8,
        output: OutputSelector = None,
        confine: bool = False,
    ):
        self.path = Path(path)
        self.manifest = manifest
        self.cache_size = cache_size
        self.output = output
        self._factory = factory
        self._data = data
        self._confine = confine  # files must stay inside the folder (manifest runs)
        self._cache: OrderedDict[tuple[int, str], nn.Module] = OrderedDict()
        self._lock = threading.RLock()  # load() may be called from widget threads
        template = self.template()
        self._reference = dict(template.state_dict())
        self._identity = {
            "architecture": manifest.get("architecture"),
            "factory": None if manifest.get("architecture") else _callable_identity(factory),
            "model": _model_identity(template),
            "output": _callable_identity(output),
        }
        checkpoints = sorted(
            (self._inspect(step, p, meta) for step, p, meta in files), key=lambda c: c.step
        )
        self.checkpoints: list[Checkpoint] = _mark_duplicates(checkpoints)

    # ---- construction

    @classmethod
    def open(cls, path: str | os.PathLike, cache_size: int = 8) -> Run:
        """Open a run folder (or its ``run.json``). Unreadable checkpoints are listed, marked.

        Raises ``RunError`` (a ``CheckpointError``) naming the manifest and the field when the
        manifest is missing or invalid, or names a file outside the run folder.
        """
        path = Path(path)
        if path.name == MANIFEST and path.is_file():
            path = path.parent
        mpath = path / MANIFEST
        if not path.exists():
            raise RunError(f"{path}: no such run folder")
        if not mpath.is_file():
            raise RunError(
                f"{mpath}: run manifest is missing (for a folder of state dicts use "
                "Run.from_state_dicts(factory, folder))"
            )
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RunError(f"{mpath}: invalid run manifest ({one_line(str(exc))})") from None
        manifest = validate_manifest(manifest, mpath)
        spec = manifest["architecture"]
        from richviz.architectures import build_model

        def factory() -> nn.Module:
            return build_model(spec)

        listed: dict[str, dict[str, Any]] = {}
        for entry in manifest.get("checkpoints", []):
            listed[entry["file"]] = dict(entry.get("meta") or {}, step=entry["step"])
        try:
            found = {p.name for p in path.iterdir() if p.suffix in _SUFFIXES}
        except OSError as exc:
            raise RunError(f"{path}: cannot list the run folder ({exc.strerror})") from None
        files = []
        # files the manifest lists come first, so they win a step over an unlisted duplicate
        for name in sorted(set(listed) | found, key=lambda n: (n not in listed, _natural_key(n))):
            meta = listed.get(name, {})
            step = meta.get("step")
            if not isinstance(step, int):
                nums = re.findall(r"\d+", Path(name).stem)
                step = int(nums[-1]) if nums else -1
            files.append((step, path / name, meta))
        try:
            return cls(path, manifest, factory, files, cache_size=cache_size, confine=True)
        except RichvizError:
            raise
        except Exception as exc:  # any failure to build the architecture the manifest names
            raise RunError(
                f"{mpath}: field 'architecture': cannot build the architecture "
                f"({type(exc).__name__}: {one_line(str(exc), 200)})"
            ) from None

    @classmethod
    def from_state_dicts(
        cls,
        factory: Callable[[], nn.Module],
        folder: str | os.PathLike,
        data: datasets.Dataset | str | None = None,
        cache_size: int = 8,
        output: OutputSelector = None,
    ) -> Run:
        """A run from a model factory and a folder of ``*.pt``/``*.pth`` state dicts.

        Files are sorted naturally; steps are the last integer in each name (``step_100.pt`` ->
        100) when all names carry distinct integers, else 0, 1, 2, ... Each file is a bare
        state dict or ``{"state_dict", "meta"}``. ``data``: a Dataset or a data set name.
        ``output``: for a model that returns a tuple, list or dict, what picks the logits
        tensor: an index, a key or a callable ``output(raw) -> Tensor``.
        """
        folder = Path(folder)
        if isinstance(factory, nn.Module):
            name = type(factory).__name__
            raise ModelError(
                f"factory= got a model instance ({name}); pass a callable that builds a fresh "
                f"model, e.g. factory=lambda: {name}(...)"
            )
        if not callable(factory):
            raise ModelError(
                f"factory= must be a callable returning an nn.Module, got {type(factory).__name__}"
            )
        if output is not None and not (isinstance(output, (int, str)) or callable(output)):
            raise ModelError(
                f"output= must be an index, a key or a callable, got {type(output).__name__}"
            )
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: no such folder of state dicts")
        paths = sorted(
            (p for p in folder.iterdir() if p.suffix in _SUFFIXES),
            key=lambda p: _natural_key(p.name),
        )
        if not paths:
            raise CheckpointError(f"{folder}: no *.pt or *.pth files")
        if isinstance(data, str):
            data = datasets.load(data)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "architecture": None,
            "factory": getattr(factory, "__qualname__", repr(factory)),
            "data": {"name": data.name, "kwargs": data.kwargs} if data is not None else None,
            "checkpoints": [],
        }
        steps = _steps_from_names(paths)
        return cls(
            folder,
            manifest,
            factory,
            [(s, p, {}) for s, p in zip(steps, paths, strict=True)],
            data,
            cache_size,
            output,
        )

    # ---- validation

    def _build(self) -> nn.Module:
        model = self._factory()
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"factory= returned {type(model).__name__}, not an nn.Module; pass a callable "
                "that builds the model"
            )
        return model

    def template(self) -> nn.Module:
        """The architecture, built on the ``meta`` device when it allows (no memory used)."""
        try:
            with torch.device("meta"):
                return self._build()
        except ModelError:
            raise
        except Exception:
            return self._build()

    @property
    def complete(self) -> bool | None:
        """True when training finished, False while it runs or after it was killed; None when
        the run does not say (a folder of state dicts, or a run from an older richviz)."""
        value = self.manifest.get("complete")
        return value if isinstance(value, bool) else None

    def _inspect(self, step: int, path: Path, meta: dict[str, Any]) -> Checkpoint:
        """Cheap validity check: mmap-load with weights_only, compare keys and shapes.

        Whether the weights hold NaN/inf is computed from the tensors, never taken from a
        stored flag. Any failure marks the checkpoint unreadable with a one-line reason.
        """
        ck = Checkpoint(step, path, {k: v for k, v in meta.items() if k != "nonfinite"})
        ck.size, ck.mtime_ns = ck.fingerprint()
        try:
            if self._confine and not inside(self.path, path):
                raise _fail(path, "links to a file outside the run folder; refused")
            sd, file_meta = _split_payload(path, _torch_load(path, mmap=True))
            _match(path, sd, self._reference)
            ck.meta.update({k: v for k, v in file_meta.items() if k != "nonfinite"})
            ck.meta["nonfinite"] = bool(_nonfinite(sd))
        except CheckpointError as exc:
            ck.error = str(exc)
        except Exception as exc:  # one bad entry never stops the run from opening
            ck.error = str(_fail(path, f"cannot read ({type(exc).__name__}: {exc})"))
        if (
            isinstance(ck.meta.get("step"), int)
            and not isinstance(ck.meta.get("step"), bool)
            and ck.meta["step"] != step
            and self.manifest.get("architecture")
        ):
            ck.step = ck.meta["step"]
        ck.meta["step"] = ck.step
        return ck

    # ---- access

    @property
    def steps(self) -> list[int]:
        """Steps of the readable checkpoints, ascending."""
        return [c.step for c in self.checkpoints if c.readable]

    def checkpoint(self, step: int | str) -> Checkpoint:
        """The checkpoint at ``step`` (an int or a numeric string; ValueError if there is none)."""
        step = _as_step(step)
        found = [c for c in self.checkpoints if c.step == step]
        if not found:
            raise ValueError(
                f"step={step} is not in run {self.path} "
                f"(steps: {[c.step for c in self.checkpoints]})"
            )
        return next((c for c in found if c.readable), found[0])

    def load(self, step: int | str, device: str | torch.device | None = None) -> nn.Module:
        """The model at ``step`` (an int or a numeric string) in eval mode on ``device``.

        ``device`` defaults to CUDA when available, else CPU. With ``output=`` (see
        :meth:`from_state_dicts`) the model's forward returns the selected tensor.
        Recently loaded models are kept in an LRU cache (``cache_size``), so the same object is
        returned for a repeated (step, device); thread-safe. Raises ``CheckpointError`` naming
        the file.
        Weights with NaN/inf load, with a warning, and ``checkpoint.meta["nonfinite"] = True``.
        """
        with self._lock:
            ck = self.checkpoint(step)
            dev = best_device(device)
            key = (ck.step, str(dev))
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if ck.error is not None:
                raise CheckpointError(ck.error)
            try:
                if self._confine and not inside(self.path, ck.path):
                    raise _fail(ck.path, "links to a file outside the run folder; refused")
                sd, _ = _split_payload(ck.path, _torch_load(ck.path, map_location="cpu"))
                _match(ck.path, sd, self._reference)
            except CheckpointError as exc:
                ck.error = str(exc)
                raise
            bad = _nonfinite(sd)
            ck.meta["nonfinite"] = bool(bad)
            if bad:
                warnings.warn(
                    f"{ck.path}: weights contain NaN or inf (in {bad[0]!r})", stacklevel=2
                )
            model = self._build()
            if self.output is not None:
                select_model_output(model, self.output)
            try:
                model.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise _fail(ck.path, f"state dict does not load: {exc}") from None
            model = model.to(dev).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._cache[key] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return model

    def data(self) -> datasets.Dataset:
        """The run's data set (loaded once; ``DataError`` when the run names none)."""
        if self._data is None:
            spec = self.manifest.get("data")
            if not spec:
                raise DataError(
                    f"run {self.path} names no data set; pass data= to Run.from_state_dicts"
                )
            self._data = datasets.load(spec["name"], **(spec.get("kwargs") or {}))
        return self._data

    def probe(self, size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed probe set: a seeded subset of at most ``size`` training samples (x, y)."""
        d = self.data()
        n = len(d.x_train)
        if n <= size:
            return d.x_train, d.y_train
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size].sort().values
        return d.x_train[idx], d.y_train[idx]

    def __repr__(self) -> str:
        bad = sum(not c.readable for c in self.checkpoints)
        return f"Run({str(self.path)!r}, checkpoints={len(self.checkpoints)}, unreadable={bad})"

    # ---- metrics (computed by richviz.runs.analysis, imported on first use)

    @property
    def identity(self) -> dict[str, str | None]:
        """What determines the model: architecture or factory identity, structure, output."""
        return dict(self._identity)

    @property
    def lock(self) -> threading.RLock:
        """The run's re-entrant lock (loading and cache writes may come from several threads)."""
        return self._lock

    def metrics(
        self,
        progress: bool | Callable[[int, int], None] | None = True,
        layer: str | None = None,
        probe_size: int = 1000,
        outputs: str = "last_linear",
        device: str | torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """One row of metrics per readable checkpoint, cached in ``metrics.json`` beside the run.

        Each row: step, epoch, train/test loss and accuracy (from the checkpoint meta), every
        key of :func:`richviz.metrics.checkpoint_metrics` (init model = the first checkpoint),
        ``boundary_magnification`` for 2-D inputs, and ``error`` (None, or why the row is NaN).
        A cached row is reused only while everything that determines it is unchanged: the
        SHA-256 of the checkpoint file's bytes and of the init checkpoint's, the architecture
        (manifest) or the factory (qualified name and source, the model's repr, parameter
        names and shapes, the source of its module classes), the ``output`` selector, the
        layer, the probe set and the richviz version. A cache file of the wrong shape is
        recomputed. ``progress``: True (tqdm bar), False, or a callable ``(done, total)``.
        An unknown ``layer`` raises ``ModelError`` before anything is computed or cached.

        ``outputs``: what D_LR, confinement and isotropy measure the features against, as in
        :func:`richviz.metrics.checkpoint_metrics`: ``"last_linear"`` (the last Linear's own
        output; for an alpha-scaled run at large alpha this stays at its initial value) or
        ``"learned"`` (alpha * (f - f0); undefined at step 0, where the row's ``note`` says
        why the three are NaN). ``device``: where the models run (default: as :meth:`load`);
        the probe set moves there, the rows are plain floats.

        The serial loop is ``pending_metrics`` -> ``metrics_entry`` -> ``store_metrics_rows``,
        the same hooks :mod:`richviz.sweep` spreads over a Dask cluster. The work is done by
        :func:`richviz.runs.analysis.metrics_table`.
        """
        from richviz.runs import analysis

        return analysis.metrics_table(self, progress, layer, probe_size, outputs, device)

    def pending_metrics(
        self, layer: str | None = None, probe_size: int = 1000, outputs: str = "last_linear"
    ) -> list[int]:
        """Steps of the readable checkpoints whose cached metrics row is missing or stale."""
        from richviz.runs import analysis

        return analysis.pending_metrics(self, layer, probe_size, outputs)

    def metrics_entry(
        self,
        step: int,
        layer: str | None = None,
        probe_size: int = 1000,
        outputs: str = "last_linear",
        device: str | torch.device | None = None,
    ) -> dict[str, Any]:
        """Compute the metrics row of ``step``: ``{"step", "key", "row"}`` for the cache.

        The key (content hashes, model identity, layer, outputs, probe) is taken before the row
        is computed, so a checkpoint rewritten meanwhile leaves a stale entry, never a wrong one.
        """
        from richviz.runs import analysis

        return analysis.metrics_entry(self, step, layer, probe_size, outputs, device)

    def store_metrics_rows(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Merge :meth:`metrics_entry` results into ``metrics.json`` (one atomic write).

        Returns the cache's rows (by step as a string), including ``entries`` even when the
        file cannot be written (a warning says so).
        """
        from richviz.runs import analysis

        return analysis.store_metrics_rows(self, entries)


# --------------------------------------------------------------------------- writing runs


def check_run_folder(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``out=`` unless ``path`` can take a new run (writes nothing)."""
    path = Path(path)
    if (path / MANIFEST).exists():
        raise ValueError(f"out={str(path)!r} already holds a run; choose another folder")
    if path.exists() and not path.is_dir():
        raise ValueError(f"out={str(path)!r} exists and is not a folder")
    if path.is_dir() and any(p.suffix in _SUFFIXES for p in path.iterdir()):
        raise ValueError(f"out={str(path)!r} already holds checkpoint files")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise ValueError(f"out={str(path)!r}: folder {str(parent)!r} is not writable")


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
