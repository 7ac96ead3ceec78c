"""Opening the runs of a comparison: one :class:`RunEntry` per item, never raising for one.

Items are :class:`~richviz.runs.Run` objects, run folders, :class:`~richviz.summary.RunSummary`
points (a sweep view's), or a sweep's table ``{folder: metric rows}``
(:func:`richviz.sweep.sweep_metrics`'s result). A run folder is read from its manifest
(``run.json``) and its metrics cache (``metrics.json``) alone, with no checkpoint loaded, so
hundreds of runs open in a fraction of a second; :func:`richviz.compare.fill_missing` later
opens each run for real, checks the cache against the checkpoints' content and computes
what is missing.

A broken item (no such folder, an empty folder, an unreadable manifest, no checkpoints) gets
its one-line ``error`` and the others stay usable; so do runs of a different task or input
shape than most runs, and runs without a checkpoint step in common with the others
(:func:`check_comparable`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from richviz.errors import RichvizError, one_line
from richviz.summary import hyperparameters

__all__ = ["META_KEYS", "RunEntry", "check_comparable", "open_runs", "rows_from_cache"]

#: checkpoint-meta values a metrics row carries (as :meth:`richviz.runs.Run.metrics` adds them)
META_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "epoch", "time")
_NAN = float("nan")


@dataclass
class RunEntry:
    """One run of a comparison (see the module docstring).

    Attributes
    ----------
    name : unique display name (the folder's name; ``-2``, ``-3`` ... on clashes).
    path : the run folder (None for an item that is not one).
    run : the opened :class:`~richviz.runs.Run`, or None until :meth:`open`.
    hparams : flat hyper-parameters of the manifest (:func:`richviz.summary.hyperparameters`).
    task : what the run learns, ``"xor"`` or ``"moons {"n": 400} · input 2"``: runs compare
        only with runs of the same task.
    rows : metric rows, one per checkpoint, as :meth:`~richviz.runs.Run.metrics` returns
        them (metric values NaN for the steps in ``missing``).
    missing : steps whose metrics are not cached yet.
    error : one line saying why the run is left out of the comparison, or None.
    num_classes : the model's output count from the manifest (None when it does not say).
    """

    name: str
    path: Path | None = None
    run: Any = None
    hparams: dict[str, Any] = field(default_factory=dict)
    task: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    error: str | None = None
    task_key: str = ""
    num_classes: int | None = None

    @property
    def usable(self) -> bool:
        """True when the run takes part in the comparison (no ``error``)."""
        return self.error is None

    @property
    def steps(self) -> list[int]:
        """Steps of the run's rows, ascending."""
        return [int(r["step"]) for r in self.rows]

    def open(self) -> Any:
        """The :class:`~richviz.runs.Run` (opened from :attr:`path` on first use)."""
        if self.run is None:
            if self.path is None:
                raise RichvizError(f"{self.name}: no run folder to open")
            from richviz.runs import Run

            self.run = Run.open(self.path)
        return self.run


def _task(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(key, label) of the task: the data spec and the model's input size."""
    data = manifest.get("data") if isinstance(manifest.get("data"), Mapping) else None
    arch = manifest.get("architecture") if isinstance(manifest.get("architecture"), Mapping) else {}
    kwargs = arch.get("kwargs") if isinstance(arch.get("kwargs"), Mapping) else {}
    size = kwargs.get("in_features", kwargs.get("in_channels"))
    name = str(data.get("name")) if data else "unknown data"
    dkw = dict(data.get("kwargs") or {}) if data else {}
    spec = json.dumps(dkw, sort_keys=True, default=str) if dkw else ""
    key = json.dumps([name, spec, size], default=str)
    label = name + (f" {spec}" if spec else "") + (f" · input {size}" if size is not None else "")
    return key, label


def rows_from_cache(
    path: Path, checkpoints: Sequence[tuple[int, Mapping[str, Any]]]
) -> tuple[list[dict[str, Any]], list[int]]:
    """(rows, missing steps) of a run folder from its ``metrics.json``, no checkpoint loaded.

    ``checkpoints``: (step, meta) of the run's checkpoints. Each row is the cached row of its
    step (as :meth:`~richviz.runs.Run.metrics` would return it while the cache is current)
    with the meta's losses and accuracies; a step without a cached row gets a row of its meta
    values alone and is listed in the missing steps.
    """
    from richviz.runs.analysis import METRICS_CACHE, read_metrics_cache

    cached = read_metrics_cache(path / METRICS_CACHE)["rows"]
    rows, missing, seen = [], [], set()
    for step, meta in sorted(checkpoints, key=lambda c: c[0]):
        if step in seen:
            continue
        seen.add(step)
        entry = cached.get(str(step))
        row = dict(entry["row"]) if entry else {"step": step}
        if not entry:
            missing.append(step)
        for k in META_KEYS:
            v = meta.get(k)
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _NAN
        rows.append(row)
    return rows, missing


def _from_folder(path: Path, rows: Sequence[Mapping[str, Any]] | None = None) -> RunEntry:
    from richviz.runs.manifest import MANIFEST, validate_manifest

    entry = RunEntry(path.name or str(path), path)
    mpath = path / MANIFEST
    try:
        if not path.is_dir():
            entry.error = f"{path}: no such run folder"
            return entry
        files = set(os.listdir(path))  # one listing, not a stat per checkpoint
        if MANIFEST not in files or not mpath.is_file():
            empty = not files
            entry.error = (
                f"{path}: empty folder (no {MANIFEST}, no checkpoints)"
                if empty
                else f"{path}: not a richviz run folder (no {MANIFEST}); pass "
                "Run.from_checkpoints(folder, ...) instead"
            )
            return entry
        manifest = validate_manifest(json.loads(mpath.read_text()), mpath)
    except RichvizError as exc:
        entry.error = one_line(exc)
        return entry
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        entry.error = f"{mpath}: invalid run manifest ({one_line(exc, 160)})"
        return entry
    _describe(entry, manifest)
    if rows is not None:  # a sweep's table: the rows are given
        entry.rows = sorted((dict(r) for r in rows), key=lambda r: r.get("step", 0))
    else:
        listed = [
            (int(c["step"]), c.get("meta") or {})
            for c in manifest.get("checkpoints", [])
            if c["file"] in files
        ]
        entry.rows, entry.missing = rows_from_cache(path, listed)
    if not entry.rows:
        entry.error = f"{path}: no checkpoints"
    return entry


def _from_run(run: Any) -> RunEntry:
    entry = RunEntry(run.path.name or str(run.path), run.path, run)
    _describe(entry, run.manifest)
    readable = [(c.step, c.meta) for c in run.checkpoints if c.readable]
    entry.rows, entry.missing = rows_from_cache(run.path, readable)
    if not entry.rows:
        bad = next((c.error for c in run.checkpoints if c.error), None)
        entry.error = f"{run.path}: no readable checkpoint" + (f" ({bad})" if bad else "")
    return entry


def _describe(entry: RunEntry, manifest: Mapping[str, Any]) -> None:
    entry.hparams = hyperparameters(manifest)
    entry.task_key, entry.task = _task(manifest)
    arch = manifest.get("architecture") if isinstance(manifest.get("architecture"), Mapping) else {}
    kwargs = arch.get("kwargs") if isinstance(arch.get("kwargs"), Mapping) else {}
    classes = kwargs.get("out_features", kwargs.get("num_classes"))
    whole = isinstance(classes, int) and not isinstance(classes, bool)
    entry.num_classes = classes if whole else None


def _one(item: Any) -> RunEntry:
    from richviz.runs import Run
    from richviz.summary import RunSummary

    try:
        if isinstance(item, Run):
            return _from_run(item)
        if isinstance(item, RunSummary):
            return _from_folder(Path(item.path))
        if isinstance(item, (str, os.PathLike)):
            return _from_folder(Path(item))
    except Exception as exc:  # one bad item never stops the others
        return RunEntry(str(item)[-60:], error=f"{item}: {type(exc).__name__}: {one_line(exc)}")
    return RunEntry(
        type(item).__name__,
        error=f"{type(item).__name__} is not a run: pass Runs, run folders or a sweep's table",
    )


def open_runs(items: Sequence[Any] | Mapping[Any, Sequence[Mapping[str, Any]]]) -> list[RunEntry]:
    """One :class:`RunEntry` per item, in order; bad items carry their one-line ``error``.

    ``items``: Runs, run folders, RunSummary points, or a sweep's table ``{folder: rows}``.
    Names are made unique, then :func:`check_comparable` marks the runs that cannot be
    compared with the rest.

    Examples
    --------
    >>> import os, tempfile
    >>> from richviz.compare import open_runs
    >>> from richviz.train import train
    >>> root = tempfile.mkdtemp()
    >>> _ = train("xor", os.path.join(root, "a"), steps=3, progress=False, device="cpu")
    >>> os.mkdir(os.path.join(root, "empty"))
    >>> a, empty = open_runs([os.path.join(root, "a"), os.path.join(root, "empty")])
    >>> a.usable, a.steps, a.task
    (True, [0, 1, 2, 3], 'xor · input 2')
    >>> empty.error.endswith("empty folder (no run.json, no checkpoints)")
    True
    """
    if isinstance(items, Mapping):
        entries = []
        for path, rows in items.items():
            try:
                entries.append(_from_folder(Path(path), rows))
            except Exception as exc:
                entries.append(RunEntry(str(path), error=f"{path}: {one_line(exc)}"))
    else:
        entries = [_one(item) for item in items]
    used: Counter[str] = Counter()
    for e in entries:
        used[e.name] += 1
        if used[e.name] > 1:
            e.name = f"{e.name}-{used[e.name]}"
    check_comparable(entries)
    return entries


def check_comparable(entries: Sequence[RunEntry]) -> None:
    """Set ``error`` on usable runs that cannot be compared with the others.

    The task of most usable runs (the first seen on ties) is the comparison's; a run of
    another task or input shape gets a reason. Among the rest, the run sharing a checkpoint
    step with the most others is the reference; a run with no step in common with it gets a
    reason.
    """
    usable = [e for e in entries if e.usable]
    if len(usable) < 2:
        return
    counts = Counter(e.task_key for e in usable)
    best = max(counts.values())
    main = next(e for e in usable if counts[e.task_key] == best)
    for e in usable:
        if e.task_key != main.task_key:
            e.error = (
                f"{e.path or e.name}: task {e.task!r} differs from {main.task!r} (the task of "
                f"{'most runs' if best > 1 else main.name}); not compared"
            )
    usable = [e for e in usable if e.usable]
    steps = {e.name: set(e.steps) for e in usable}
    shared = {a: sum(bool(steps[a] & steps[b]) for b in steps if b != a) for a in steps}
    ref = max(usable, key=lambda e: shared[e.name])
    for e in usable:
        if e is not ref and not steps[e.name] & steps[ref.name]:
            e.error = (
                f"{e.path or e.name}: no checkpoint step in common with {ref.name} (steps "
                f"{min(e.steps)}..{max(e.steps)} vs {min(ref.steps)}..{max(ref.steps)})"
            )
