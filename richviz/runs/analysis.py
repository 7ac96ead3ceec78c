"""The per-run metrics table: one row per checkpoint, cached in ``metrics.json`` beside the run.

This is the numerical side of a run (it imports :mod:`richviz.metrics` and
:mod:`richviz.geometry`); :mod:`richviz.runs.storage` reads and writes runs and imports no
numerics. :class:`~richviz.runs.run.Run`'s ``metrics``, ``pending_metrics``,
``metrics_entry`` and ``store_metrics_rows`` methods call the functions here; this module
never imports :mod:`richviz.runs.run` (a ``run`` argument is only annotated as one).

A cached row is keyed by everything that determines it (content hashes of the checkpoint and
of the init checkpoint, the model identity, layer, outputs, probe set and
:data:`METRICS_VERSION`); a stale or malformed row is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from richviz import __version__, validation
from richviz.devices import best_device, module_device
from richviz.errors import ArgumentError, CheckpointError, ModelError, one_line
from richviz.features import FeatureMap, model_output, select_model_output, select_output
from richviz.metrics import METRIC_KEYS, OUTPUTS, checkpoint_metrics
from richviz.progress import reporter
from richviz.runs.storage import Checkpoint, atomic_write_text

if TYPE_CHECKING:
    from richviz.runs.run import Run

__all__ = [
    "METRICS_CACHE",
    "METRICS_VERSION",
    "boundary_magnification_row",
    "metrics_entry",
    "metrics_table",
    "pending_metrics",
    "read_metrics_cache",
    "store_metrics_rows",
]

METRICS_CACHE = "metrics.json"
"""File name of the metrics cache inside a run folder."""
METRICS_VERSION = f"{__version__}/2"  #: 2: confinement, isotropy, outputs; other versions recompute
_NAN = float("nan")
_TEXT_KEYS = ("error", "note")  # the only row values that may be text

# probe sets (x, y, hash) by run and size, computed once per run object
_PROBES: weakref.WeakKeyDictionary[Any, dict[int, tuple[torch.Tensor, torch.Tensor, str]]] = (
    weakref.WeakKeyDictionary()
)
# per run object: the feature layers already checked against its architecture, and the init
# model last loaded with ((init step, content hash), device): every row of a table (or every
# task a sweep worker runs for the run) reuses them instead of rebuilding and reloading
_CHECKED_LAYERS: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_INIT_MODELS: weakref.WeakKeyDictionary[Any, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def metrics_table(
    run: Run,
    progress: bool | Callable[[int, int], None] | None = True,
    layer: str | None = None,
    probe_size: int = 1000,
    outputs: str = "last_linear",
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """One row of metrics per readable checkpoint of ``run`` (see :meth:`Run.metrics`)."""
    device = best_device(device)  # a bad device is refused even when every row is cached
    todo = pending_metrics(run, layer, probe_size, outputs)
    entries = read_metrics_cache(run.path / METRICS_CACHE)["rows"]
    computed: dict[str, Any] = {}
    bar, report = reporter(progress, len(todo))
    try:
        for done, step in enumerate(todo, 1):
            entry = metrics_entry(run, step, layer, probe_size, outputs, device)
            computed[str(step)] = {"key": entry["key"], "row": entry["row"]}
            entries = store_metrics_rows(run, [entry])
            report(done)
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for c in run.checkpoints:
        if not c.readable:
            continue
        row = dict({**entries, **computed}[str(c.step)]["row"])
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch", "time"):
            row[k] = _float(c.meta.get(k))
        rows.append(row)
    return rows


def _setup(
    run: Run, layer: str | None, probe_size: int, outputs: str = "last_linear"
) -> tuple[torch.Tensor, torch.Tensor, Checkpoint | None, Callable[[Checkpoint], Any]]:
    """(probe x, probe y, init checkpoint, cache key function) of a metrics table.

    Checks ``outputs``, ``probe_size`` and ``layer`` first (``ArgumentError`` /
    ``ModelError``, nothing cached).
    """
    if outputs not in OUTPUTS:
        raise ArgumentError(f"outputs={outputs!r} must be one of {', '.join(OUTPUTS)}")
    validation.check_int(probe_size, "probe_size", low=2)
    layer_key = layer or "penultimate"
    checked = _CHECKED_LAYERS.setdefault(run, set())
    template = None  # built once for both checks (~15 ms for a centred MLP)
    if layer_key not in checked:
        template = run.template()
        try:
            FeatureMap(template, layer)
        except ValueError as exc:
            raise ModelError(f"{run.path}: {one_line(str(exc), 400)}") from None
        checked.add(layer_key)
    probes = _PROBES.setdefault(run, {})
    if probe_size not in probes:
        x, y = run.probe(probe_size)
        probes[probe_size] = (x, y, _tensor_hash(x, y))
    x, y, probe_key = probes[probe_size]
    if "output" not in checked:
        _check_output(run, x, template)
        checked.add("output")
    readable = [c for c in run.checkpoints if c.readable]
    hashes: dict[int, str] = {}  # computed on first use: a worker keys one row

    def content_hash(c: Checkpoint) -> str:
        if c.step not in hashes:
            hashes[c.step] = c.content_hash()
        return hashes[c.step]

    init = readable[0] if readable else None
    init_key = [init.step, content_hash(init)] if init else None
    model_key = hashlib.sha256(
        json.dumps(run.identity, sort_keys=True, default=repr).encode()
    ).hexdigest()[:16]

    def key(c: Checkpoint) -> dict[str, Any]:
        return {
            "file": c.path.name,
            "sha256": content_hash(c),
            "init": init_key,
            "model": model_key,
            "layer": layer_key,
            "probe": probe_key,
            "outputs": outputs,
            "version": METRICS_VERSION,
        }

    return x, y, init, key


def _check_output(run: Run, x: torch.Tensor, template: nn.Module | None = None) -> None:
    """Refuse, in one line naming the run, a model whose forward returns a tuple, list or dict
    that no ``output=`` selector turns into the logits tensor: every row would fail alike, so
    the table stops before any row is computed or cached. Runs the architecture on two probe
    inputs (on the ``meta`` device when it allows: no memory, no weights). ``template``: the
    run's template model, built already (it is changed: given real, unset tensors)."""
    try:
        model = run.template() if template is None else template
        if run.output is not None:
            select_model_output(model, run.output)
        if sum(p.numel() for p in model.parameters()) <= 2**20:  # meta kernels import dynamo
            model = model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype))  # (~1 s) on CPU
        with torch.no_grad():
            select_output(model.eval()(x[:2].to(module_device(model))), None)
    except ModelError as exc:
        raise ModelError(f"{run.path}: {one_line(str(exc), 400)}") from None
    except Exception:  # e.g. a model that cannot run on the meta device: the rows will say
        return


def pending_metrics(
    run: Run, layer: str | None = None, probe_size: int = 1000, outputs: str = "last_linear"
) -> list[int]:
    """Steps of the readable checkpoints whose cached metrics row is missing or stale."""
    key = _setup(run, layer, probe_size, outputs)[3]
    entries = read_metrics_cache(run.path / METRICS_CACHE)["rows"]
    return [
        c.step
        for c in run.checkpoints
        if c.readable and entries.get(str(c.step), {}).get("key") != key(c)
    ]


def metrics_entry(
    run: Run,
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
    x, y, init, key = _setup(run, layer, probe_size, outputs)
    c = run.checkpoint(step)
    entry_key = key(c)
    dev = best_device(device)
    init_model = _init_model(run, init, entry_key["init"], dev) if init is not None else None
    row = _metrics_row(run, c, x, y, init_model, layer, outputs, dev)
    return {"step": c.step, "key": entry_key, "row": row}


def _init_model(run: Run, init: Checkpoint, ident: list, device: torch.device) -> nn.Module | None:
    """The init checkpoint's model on ``device``, loaded once per run object while its
    content (``ident`` = [step, sha256]) is unchanged; None when it cannot be loaded."""
    want = (tuple(ident), str(device))
    hit = _INIT_MODELS.get(run)
    if hit is not None and hit[0] == want:
        return hit[1]
    model = _safe_load(run, init, device)[0]
    if model is not None:
        _INIT_MODELS[run] = (want, model)
    return model


def store_metrics_rows(run: Run, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge :func:`metrics_entry` results into ``metrics.json`` (one atomic write).

    Returns the cache's rows (by step as a string), including ``entries`` even when the
    file cannot be written (a warning says so).
    """
    path = run.path / METRICS_CACHE
    with run.lock:
        cache = read_metrics_cache(path)
        for e in entries:
            cache["rows"][str(int(e["step"]))] = {"key": e["key"], "row": e["row"]}
        if entries:
            try:
                atomic_write_text(_cache_text(cache), path)
            except OSError as exc:
                _warn_once(run, "cache-write", f"{path}: cannot write the metrics cache ({exc})")
    return cache["rows"]


_WARNED: weakref.WeakKeyDictionary[Run, set[str]] = weakref.WeakKeyDictionary()


def _warn_once(run: Run, cause: str, message: str) -> None:
    """One warning per run per cause (a read-only run would warn at every stored row, and the
    filters that ``catch_warnings`` resets make Python's own once-per-place rule forget)."""
    seen = _WARNED.setdefault(run, set())
    if cause not in seen:
        seen.add(cause)
        warnings.warn(message, stacklevel=4)


def _cache_text(cache: dict[str, Any]) -> str:
    """``metrics.json`` text: one line per row, each written by json's C encoder (an indented
    dump runs in pure Python; the cache is rewritten after every finished row)."""
    head = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in cache.items() if k != "rows")
    rows = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in cache["rows"].items())
    return f'{{{head}, "rows": {{\n  {rows}\n}}}}\n' if rows else f'{{{head}, "rows": {{}}}}\n'


def _safe_load(
    run: Run, c: Checkpoint, device: torch.device | None = None
) -> tuple[nn.Module | None, str | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run.load(c.step, device), None
    except CheckpointError as exc:
        return None, str(exc)


def _metrics_row(
    run: Run,
    c: Checkpoint,
    x: torch.Tensor,
    y: torch.Tensor,
    init_model: nn.Module | None,
    layer: str | None,
    outputs: str = "last_linear",
    device: torch.device | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": c.step}
    row.update({k: _NAN for k in METRIC_KEYS})
    two_d = tuple(x.shape[1:]) == (2,)
    if two_d:
        row["boundary_magnification"] = _NAN
    model, err = _safe_load(run, c, device)
    if model is None:
        row["error"] = err
        return row
    if c.nonfinite:
        row["error"] = f"{c.path}: weights contain NaN or inf; metrics are NaN"
        return row
    try:
        dev = module_device(model)
        with torch.no_grad():
            model_output(model, x[:2].to(dev))  # a tuple/dict output: say so, with output=
            values = checkpoint_metrics(
                model,
                x.to(dev),
                y.to(dev),
                init_model=init_model,
                layer=layer,
                outputs=outputs,
            )
        row.update({k: _float(v) for k, v in values.items()})
        if outputs == "learned" and math.isnan(row["d_lr"]):
            row["note"] = (
                "the learned function alpha*(f - f0) is constant on the probe set (zero at "
                "step 0): D_LR, confinement and isotropy are undefined (NaN)"
            )
        if two_d:
            row["boundary_magnification"] = boundary_magnification_row(model, x)
        row["error"] = None
    except Exception as exc:  # a metrics failure must not stop the table
        row["error"] = f"{c.path}: metrics failed ({type(exc).__name__}: {one_line(str(exc), 200)})"
    return row


def _valid_row(step: str, entry: Any) -> bool:
    """A cache entry ``{"key": {...}, "row": {"step": int, k: number}}``; error/note: text."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), dict):
        return False
    row = entry.get("row")
    want = _as_int_or_none(step)
    if not isinstance(row, dict) or want is None or not _is_int(row.get("step")):
        return False
    if row["step"] != want:
        return False
    if not all(isinstance(row.get(k), (str, type(None))) for k in _TEXT_KEYS):
        return False
    return all(
        k in _TEXT_KEYS
        or (isinstance(v, (int, float)) and not isinstance(v, bool))
        or (v is None and k != "step")
        for k, v in row.items()
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_int_or_none(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d{1,30}", text) else None


def read_metrics_cache(path: str | os.PathLike) -> dict[str, Any]:
    """The metrics cache at ``path`` with only its well-formed rows (empty when unreadable).

    Never raises: a missing, unreadable or malformed file, or a row of the wrong shape, just
    means those rows are recomputed.
    """
    empty: dict[str, Any] = {"format": "richviz-metrics", "rows": {}}
    try:
        cache = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return empty
    if not isinstance(cache, dict) or not isinstance(cache.get("rows"), dict):
        return empty
    rows = {k: v for k, v in cache["rows"].items() if _valid_row(k, v)}
    return {"format": "richviz-metrics", "rows": rows}


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


def boundary_magnification_row(model: nn.Module, x: torch.Tensor, resolution: int = 48) -> float:
    """Boundary magnification of a 2-D-input model on a square covering the data ``x`` (N, 2).

    The square is ``Slice.covering(x, margin=0.05)`` at ``resolution`` points per side; the
    number is the mean ``log10 sqrt(det g)`` over the 10 % of grid cells with the smallest
    top-2 logit margin minus the mean over the other cells
    (:func:`richviz.geometry.boundary_magnification`).
    """
    from richviz.geometry import Slice
    from richviz.views import slice_frame  # metric and logits in one pass

    s = Slice.covering(x.detach().cpu(), margin=0.05)
    return _float(slice_frame(model, s, resolution=resolution).boundary_magnification)
