"""The :class:`Run`: a run folder (or a user's folder of state dicts) tied to safe loading.

A :class:`Run` lists its checkpoints (:class:`~richviz.runs.storage.Checkpoint`, each
validated cheaply on open), loads models from them safely into an LRU cache, and hands its
per-run metrics table to :mod:`richviz.runs.analysis`, imported only when a metrics method is
called: opening a run imports no numerics.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from richviz import datasets
from richviz.devices import best_device
from richviz.errors import (
    ArgumentError,
    ArgumentTypeError,
    CheckpointError,
    DataError,
    ModelError,
    RichvizError,
    RunError,
    checkpoint_error,
    one_line,
)
from richviz.factories import check_factory
from richviz.features import OutputSelector, check_output_selector, select_model_output
from richviz.runs.identity import callable_identity, model_identity
from richviz.runs.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_PARAMETERS,
    inside,
    validate_manifest,
)
from richviz.runs.storage import (
    _SUFFIXES,
    Checkpoint,
    _match,
    _nonfinite,
    _split_payload,
    _torch_load,
)

__all__ = ["Run"]


def _as_step(step: Any) -> int:
    """A step given as an int, an integer-valued number or a numeric string ("2000")."""
    if isinstance(step, bool):
        raise ArgumentError(f"step={step!r} must be an integer step")
    if isinstance(step, str) and re.fullmatch(r"\s*[+-]?\d+\s*", step):
        return int(step)
    try:
        value = int(step)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"step={step!r} must be an integer step") from None
    if isinstance(step, float) and value != step:
        raise ArgumentError(f"step={step!r} must be an integer step")
    return value


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
                checkpoint_error(
                    c.path, f"duplicate of step {c.step} (already in {k.path.name}); ignored"
                )
            )
    return checkpoints


def _file_key(path: Path) -> Path:
    """A file by its folder's real path and its own name (the same file, however the folder
    was named: relative, through a link)."""
    return path.parent.resolve() / path.name


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


#: reads one checkpoint file: (path, reference state dict, mmap) -> (state dict, meta)
Reader = Callable[[Path, dict[str, Any], bool], tuple[dict[str, torch.Tensor], dict[str, Any]]]


def _read_payload(
    path: Path, reference: dict[str, Any], mmap: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A richviz checkpoint or a bare state dict, read with ``weights_only=True``."""
    return _split_payload(path, _torch_load(path, map_location="cpu", mmap=mmap))


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
        reader: Reader | None = None,
        known: Iterable[Checkpoint] = (),
    ):
        self.path = Path(path)
        self.manifest = manifest
        self.cache_size = cache_size
        self.output = output
        self._factory = factory
        self._data = data
        self._confine = confine  # files must stay inside the folder (manifest runs)
        self._read = reader or _read_payload  # one file -> (state dict, meta)
        # earlier inspections (another process's open of this folder), reused per unchanged file
        self._known = {_file_key(Path(c.path)): c for c in known}
        self._cache: OrderedDict[tuple[int, str], nn.Module] = OrderedDict()
        self._lock = threading.RLock()  # load() may be called from widget threads
        self._data_lock = threading.Lock()  # data(): one load, however many threads ask
        template = self.template()
        if confine:  # a manifest's architecture: bounded before any weights are allocated
            count = sum(p.numel() for p in template.parameters())
            if count > MAX_PARAMETERS:
                raise RunError(
                    f"{self.path / MANIFEST}: field 'architecture.kwargs' asks for {count:,} "
                    f"parameters, more than {MAX_PARAMETERS:,} (the bound on a spec)"
                )
        self._reference = dict(template.state_dict())
        self._identity = {
            "architecture": manifest.get("architecture"),
            "factory": None if manifest.get("architecture") else callable_identity(factory),
            "model": model_identity(template),
            "output": callable_identity(output),
        }
        checkpoints = sorted(
            (self._inspect(step, p, meta) for step, p, meta in files), key=lambda c: c.step
        )
        self.checkpoints: list[Checkpoint] = _mark_duplicates(checkpoints)

    # ---- construction

    @classmethod
    def open(
        cls, path: str | os.PathLike, cache_size: int = 8, known: Iterable[Checkpoint] = ()
    ) -> Run:
        """Open a run folder (or its ``run.json``). Unreadable checkpoints are listed, marked.

        Every checkpoint file is inspected (read with ``weights_only``, keys and shapes checked,
        NaN/inf noted), except one listed readable in ``known`` (the ``checkpoints`` of an
        earlier open of this folder, e.g. in another process) whose size and mtime are
        unchanged: its earlier result is taken as it is.

        Raises ``RunError`` (a ``CheckpointError``) naming the manifest and the field when the
        manifest is missing or invalid, or names a file outside the run folder.

        Examples
        --------
        >>> import os, shutil, tempfile
        >>> from richviz.runs import Run
        >>> from richviz.train import train
        >>> folder = os.path.join(tempfile.mkdtemp(), "xor")
        >>> _ = train("xor", folder, steps=5, progress=False, device="cpu")
        >>> run = Run.open(folder)
        >>> run.manifest["preset"], run.steps
        ('xor', [0, 1, 2, 3, 4, 5])
        >>> model = run.load(5, device="cpu")  # weights_only loading, eval mode, cached
        >>> model.training, run.load(5, device="cpu") is model
        (False, True)
        >>> shutil.rmtree(os.path.dirname(folder))
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
            return cls(
                path, manifest, factory, files, cache_size=cache_size, confine=True, known=known
            )
        except (ArgumentError, ArgumentTypeError) as exc:  # the architecture refused its kwargs
            failure: Exception = exc
        except RichvizError:
            raise
        except Exception as exc:  # any failure to build the architecture the manifest names
            failure = exc
        raise RunError(
            f"{mpath}: field 'architecture': cannot build the architecture "
            f"({type(failure).__name__}: {one_line(str(failure), 200)})"
        ) from None

    @classmethod
    def from_checkpoints(
        cls,
        folder: str | os.PathLike,
        factory: Callable[[], nn.Module] | str | None = None,
        data: datasets.Dataset | str | None = None,
        cache_size: int = 8,
        output: OutputSelector = None,
    ) -> Run:
        """A run from the checkpoints a training stack wrote: Lightning ``*.ckpt``, Hugging Face
        ``checkpoint-N/`` folders, ``*.safetensors``, or a loop's ``*.pt`` / ``*.pth`` records.

        ``factory``: a callable, ``"torchvision:NAME"``, ``"timm:NAME"``, ``"module:function"``
        (None: a Hugging Face ``config.json``'s class). Layouts, steps, logged metrics and safe
        reading: :mod:`richviz.runs.formats`.
        """
        from richviz.runs import formats

        return cls(**formats.run_spec(folder, factory, data, cache_size, output))

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
        factory = check_factory(factory, specs=False)
        check_output_selector(output)
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
                raise checkpoint_error(path, "links to a file outside the run folder; refused")
            prior = self._known.get(_file_key(path)) if self._known else None
            same = prior is not None and [prior.size, prior.mtime_ns] == [ck.size, ck.mtime_ns]
            if same and ck.size >= 0 and prior.readable:  # unchanged since: its earlier result
                ck.meta.update(prior.meta)
                ck.step = prior.step
                return ck
            sd, file_meta = self._read(path, self._reference, True)
            _match(path, sd, self._reference)
            ck.meta.update({k: v for k, v in file_meta.items() if k != "nonfinite"})
            ck.meta["nonfinite"] = bool(_nonfinite(sd))
        except CheckpointError as exc:
            ck.error = str(exc)
        except Exception as exc:  # one bad entry never stops the run from opening
            ck.error = str(checkpoint_error(path, f"cannot read ({type(exc).__name__}: {exc})"))
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
            raise ArgumentError(
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
                    raise checkpoint_error(
                        ck.path, "links to a file outside the run folder; refused"
                    )
                sd, _ = self._read(ck.path, self._reference, False)
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
                raise checkpoint_error(ck.path, f"state dict does not load: {exc}") from None
            model = model.to(dev).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._cache[key] = model
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return model

    def data(self) -> datasets.Dataset:
        """The run's data set (loaded once; ``DataError`` when the run names none)."""
        if self._data is not None:
            return self._data
        with self._data_lock:  # not the run's lock: a metrics pass may hold that one for long
            if self._data is None:
                self._data = self._load_data()
        return self._data

    def _load_data(self) -> datasets.Dataset:
        """The data set the manifest names, a CSV path confined to the run folder."""
        spec = self.manifest.get("data")
        if not spec:
            raise DataError(
                f"run {self.path} names no data set; pass data= to Run.from_state_dicts"
            )
        kwargs = dict(spec.get("kwargs") or {})
        if spec["name"] == "csv" and self._confine and kwargs.get("path") is not None:
            # validated relative to the run folder; a link out of it is refused
            file = self.path / kwargs["path"]
            if not inside(self.path, file):
                raise DataError(f"{file}: data file links outside the run folder; refused")
            kwargs["path"] = str(file)
        return datasets.load(spec["name"], **kwargs)

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
