"""Checkpoint runs: discover, validate, safely load, and summarise a training run on disk.

A run directory holds ``run.json`` (the manifest: architecture name + kwargs, data set, seed,
hyper-parameters, per-checkpoint metadata) and one ``step_XXXXXXXX.pt`` file per checkpoint,
each a ``torch.save`` of ``{"state_dict": {...}, "meta": {...}}`` that loads with
``weights_only=True``. Nothing here ever unpickles arbitrary objects, and every write is atomic
(temp file in the same folder + ``os.replace``).

A user's own model works too: :meth:`Run.from_state_dicts` takes a model factory and a folder
of state dicts (``*.pt``/``*.pth``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickletools
import re
import tempfile
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
from richviz.devices import best_device, module_device
from richviz.errors import CheckpointError, DataError
from richviz.metrics import METRIC_KEYS, checkpoint_metrics

MANIFEST = "run.json"
METRICS_CACHE = "metrics.json"
FORMAT = "richviz-run"
FORMAT_VERSION = 1
METRICS_VERSION = 1
META_KEYS = ("step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time")
_SUFFIXES = (".pt", ".pth")
_NAN = float("nan")


# --------------------------------------------------------------------------- atomic writes


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write via a temp file in ``path``'s folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically: readers see the old file or the new one, never half."""
    _atomic(Path(path), lambda f: torch.save(obj, f), "wb")


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=1, sort_keys=False)
    _atomic(Path(path), lambda f: f.write(text), "w")


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


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: {_one_line(reason)}")


def _torch_load(path: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a one-line CheckpointError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(path, "checkpoint file is missing") from None
    if size == 0:
        raise _fail(path, "checkpoint file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = zipfile.is_zipfile(path)
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
    return [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]


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
        except FileNotFoundError:
            return [-1, -1]
        return [st.st_size, st.st_mtime_ns]


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
    ):
        self.path = Path(path)
        self.manifest = manifest
        self.cache_size = cache_size
        self._factory = factory
        self._data = data
        self._cache: OrderedDict[tuple[int, str], nn.Module] = OrderedDict()
        self._lock = threading.RLock()  # load() may be called from widget threads
        self._reference = self._reference_state()
        self.checkpoints: list[Checkpoint] = sorted(
            (self._inspect(step, p, meta) for step, p, meta in files), key=lambda c: c.step
        )

    # ---- construction

    @classmethod
    def open(cls, path: str | os.PathLike, cache_size: int = 8) -> Run:
        """Open a run folder (or its ``run.json``). Unreadable checkpoints are listed, marked.

        Raises ``CheckpointError`` naming the manifest when it is missing or invalid.
        """
        path = Path(path)
        if path.name == MANIFEST and path.is_file():
            path = path.parent
        mpath = path / MANIFEST
        if not path.exists():
            raise CheckpointError(f"{path}: no such run folder")
        if not mpath.is_file():
            raise CheckpointError(
                f"{mpath}: run manifest is missing (for a folder of state dicts use "
                "Run.from_state_dicts(factory, folder))"
            )
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{mpath}: invalid run manifest ({_one_line(str(exc))})"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{mpath}: not a richviz run manifest (no 'format': {FORMAT!r})")
        version = manifest.get("version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{mpath}: manifest version {version!r} is not one this richviz understands "
                f"(<= {FORMAT_VERSION})"
            )
        spec = manifest.get("architecture")
        from richviz.architectures import build_model

        def factory() -> nn.Module:
            return build_model(spec)

        listed: dict[str, dict[str, Any]] = {}
        for entry in manifest.get("checkpoints", []):
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                listed[entry["file"]] = dict(entry.get("meta") or {}, step=entry.get("step"))
        names = set(listed) | {p.name for p in path.iterdir() if p.suffix in _SUFFIXES}
        files = []
        for name in sorted(names, key=_natural_key):
            meta = listed.get(name, {})
            step = meta.get("step")
            if not isinstance(step, int):
                nums = re.findall(r"\d+", Path(name).stem)
                step = int(nums[-1]) if nums else -1
            files.append((step, path / name, meta))
        try:
            return cls(path, manifest, factory, files, cache_size=cache_size)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(
                f"{mpath}: cannot build the architecture ({_one_line(str(exc))})"
            ) from None

    @classmethod
    def from_state_dicts(
        cls,
        factory: Callable[[], nn.Module],
        folder: str | os.PathLike,
        data: datasets.Dataset | str | None = None,
        cache_size: int = 8,
    ) -> Run:
        """A run from a model factory and a folder of ``*.pt``/``*.pth`` state dicts.

        Files are sorted naturally; steps are the last integer in each name (``step_100.pt`` ->
        100) when all names carry distinct integers, else 0, 1, 2, ... Each file is a bare
        state dict or ``{"state_dict", "meta"}``. ``data``: a Dataset or a data set name.
        """
        folder = Path(folder)
        if not callable(factory):
            raise TypeError(f"factory must be a callable returning an nn.Module, got {factory!r}")
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
        )

    # ---- validation

    def _reference_state(self) -> dict[str, Any]:
        """The architecture's state dict for key/shape checks (on the meta device if possible)."""
        try:
            with torch.device("meta"):
                model = self._factory()
        except Exception:
            model = self._factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"factory returned {type(model).__name__}, not an nn.Module")
        return {k: v for k, v in model.state_dict().items()}

    def _inspect(self, step: int, path: Path, meta: dict[str, Any]) -> Checkpoint:
        """Cheap validity check: mmap-load with weights_only, compare keys and shapes."""
        ck = Checkpoint(step, path, dict(meta))
        ck.size, ck.mtime_ns = ck.fingerprint()
        try:
            sd, file_meta = _split_payload(path, _torch_load(path, mmap=True))
            _match(path, sd, self._reference)
            ck.meta.update(file_meta)
            if "nonfinite" not in ck.meta and sum(v.numel() for v in sd.values()) <= 2_000_000:
                ck.meta["nonfinite"] = bool(_nonfinite(sd))
        except CheckpointError as exc:
            ck.error = str(exc)
        if (
            isinstance(ck.meta.get("step"), int)
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

    def checkpoint(self, step: int) -> Checkpoint:
        """The checkpoint at ``step`` (ValueError if there is none)."""
        for c in self.checkpoints:
            if c.step == step:
                return c
        raise ValueError(
            f"step={step} is not in run {self.path} (steps: {[c.step for c in self.checkpoints]})"
        )

    def load(self, step: int, device: str | torch.device | None = None) -> nn.Module:
        """The model at ``step`` in eval mode on ``device`` (CUDA when available).

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
            model = self._factory()
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

    # ---- metrics

    def metrics(
        self,
        progress: bool | Callable[[int, int], None] | None = True,
        layer: str | None = None,
        probe_size: int = 1000,
        device: str | torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """One row of metrics per readable checkpoint, cached in ``metrics.json`` beside the run.

        Each row: step, epoch, train/test loss and accuracy (from the checkpoint meta), every
        key of :func:`richviz.metrics.checkpoint_metrics` (init model = the first checkpoint),
        ``boundary_magnification`` for 2-D inputs, and ``error`` (None, or why the row is NaN).
        A cached row is reused while the checkpoint file (size, mtime), the init checkpoint, the
        layer and the probe set are unchanged. ``progress``: True (tqdm bar), False, or a
        callable ``(done, total)``. ``device``: where the models run (default: as
        :meth:`load`); the probe set moves there, the rows are plain floats.
        """
        dev = best_device(device)
        x, y = self.probe(probe_size)
        probe_key = _tensor_hash(x, y)
        layer_key = layer or "penultimate"
        cache_path = self.path / METRICS_CACHE
        cache = self._read_cache(cache_path)
        readable = [c for c in self.checkpoints if c.readable]
        init = readable[0] if readable else None
        init_fp = [init.step, *init.fingerprint()] if init else None

        def key(c: Checkpoint) -> dict[str, Any]:
            return {
                "file": c.path.name,
                "fingerprint": c.fingerprint(),
                "init": init_fp,
                "layer": layer_key,
                "probe": probe_key,
                "version": METRICS_VERSION,
            }

        entries = cache.setdefault("rows", {})
        todo = [c for c in readable if entries.get(str(c.step), {}).get("key") != key(c)]
        bar, report = _progress(progress, len(todo))
        init_model = self._safe_load(init, dev)[0] if todo and init is not None else None
        try:
            for done, c in enumerate(todo, 1):
                row = self._metrics_row(c, x, y, init_model, layer, dev)
                entries[str(c.step)] = {"key": key(c), "row": row}
                self._write_cache(cache_path, cache)
                report(done)
        finally:
            if bar is not None:
                bar.close()
        rows = []
        for c in readable:
            row = dict(entries[str(c.step)]["row"])
            for k in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch", "time"):
                row[k] = _float(c.meta.get(k))
            rows.append(row)
        return rows

    def _safe_load(
        self, c: Checkpoint, device: torch.device | None = None
    ) -> tuple[nn.Module | None, str | None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.load(c.step, device), None
        except CheckpointError as exc:
            return None, str(exc)

    def _metrics_row(
        self,
        c: Checkpoint,
        x: torch.Tensor,
        y: torch.Tensor,
        init_model: nn.Module | None,
        layer: str | None,
        device: torch.device | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {"step": c.step}
        row.update({k: _NAN for k in METRIC_KEYS})
        two_d = tuple(x.shape[1:]) == (2,)
        if two_d:
            row["boundary_magnification"] = _NAN
        model, err = self._safe_load(c, device)
        if model is None:
            row["error"] = err
            return row
        if c.nonfinite:
            row["error"] = f"{c.path}: weights contain NaN or inf; metrics are NaN"
            return row
        try:
            dev = module_device(model)
            with torch.no_grad():
                values = checkpoint_metrics(
                    model, x.to(dev), y.to(dev), init_model=init_model, layer=layer
                )
            row.update({k: _float(v) for k, v in values.items()})
            if two_d:
                row["boundary_magnification"] = _boundary_magnification(model, x)
            row["error"] = None
        except Exception as exc:  # a metrics failure must not stop the table
            row["error"] = (
                f"{c.path}: metrics failed ({type(exc).__name__}: {_one_line(str(exc), 200)})"
            )
        return row

    @staticmethod
    def _read_cache(path: Path) -> dict[str, Any]:
        try:
            cache = json.loads(path.read_text())
            if isinstance(cache, dict) and isinstance(cache.get("rows"), dict):
                return cache
        except (OSError, ValueError):
            pass
        return {"format": "richviz-metrics", "rows": {}}

    @staticmethod
    def _write_cache(path: Path, cache: dict[str, Any]) -> None:
        try:
            atomic_write_json(cache, path)
        except OSError as exc:
            warnings.warn(f"{path}: cannot write the metrics cache ({exc})", stacklevel=3)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return _NAN


def _tensor_hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _progress(
    progress: bool | Callable[[int, int], None] | None, total: int
) -> tuple[Any, Callable[[int], None]]:
    if callable(progress):
        progress(0, total)
        return None, lambda done: progress(done, total)
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="metrics", unit="ckpt")
        return bar, lambda done: bar.update(1)
    return None, lambda done: None


def _boundary_magnification(model: nn.Module, x: torch.Tensor, resolution: int = 48) -> float:
    """Boundary magnification on a square covering the 2-D data (DESIGN §3)."""
    from richviz.geometry import Slice, boundary_magnification, decision_field, pullback_metric

    s = Slice.covering(x.detach().cpu(), margin=0.05)
    field = pullback_metric(model, s, resolution=resolution)
    dec = decision_field(model, s, resolution=resolution)
    return _float(boundary_magnification(field.log10_volume, dec.margin))


# --------------------------------------------------------------------------- writing runs


class RunWriter:
    """Creates a run folder: the manifest first, then checkpoints as training proceeds."""

    def __init__(self, path: str | os.PathLike, manifest: Mapping[str, Any]):
        self.path = Path(path)
        if (self.path / MANIFEST).exists():
            raise ValueError(f"out={str(self.path)!r} already holds a run; choose another folder")
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out={str(self.path)!r} exists and is not a folder")
        if self.path.is_dir() and any(p.suffix in _SUFFIXES for p in self.path.iterdir()):
            raise ValueError(f"out={str(self.path)!r} already holds checkpoint files")
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = {"format": FORMAT, "version": FORMAT_VERSION, **_primitive(dict(manifest))}
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.manifest["checkpoints"] = []
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
