"""Training sweeps: one Dask task per grid point, each training one run atomically.

A run trains into a hidden sibling folder renamed onto its place at the end, so a run folder
never holds half a run, and a rerun trains only the points still missing.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from richviz.architectures import ARCHITECTURES
from richviz.compute_lock import COMPUTE
from richviz.errors import ArgumentError, RichvizError
from richviz.progress import reporter
from richviz.runs import MANIFEST, Run
from richviz.runs.manifest import check_request
from richviz.sweep.cluster import Scheduler, _require_dask, open_client, quiet_task_failures
from richviz.sweep.grid import grid_points, run_name
from richviz.train import resolve, train

__all__ = ["train_run", "train_sweep"]


def _overrides(config: Any, params: Mapping[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """(seed, Config overrides) of a grid point; raises ValueError for an invalid point."""
    over = {k: v for k, v in params.items() if k not in ("seed", "width", "batch_norm")}
    kw = dict(config.arch_kwargs)
    if "width" in params:
        if "hidden" in kw:
            kw["hidden"] = [params["width"]] * len(kw["hidden"])
        elif "width" in kw:
            kw["width"] = params["width"]
        else:
            raise ArgumentError(f"sweep width: architecture {config.arch!r} has no width to vary")
    if "batch_norm" in params:
        builder = ARCHITECTURES.get(config.arch)
        if builder is None or "batch_norm" not in inspect.signature(builder).parameters:
            raise ArgumentError(
                f"sweep batch_norm: architecture {config.arch!r} has no BatchNorm to switch"
            )
        kw["batch_norm"] = params["batch_norm"]
    if kw != config.arch_kwargs:
        check_request("architecture", {"kwargs": kw}, "sweep")  # the bound on a manifest's spec
        over["arch_kwargs"] = kw
    dataclasses.replace(config, **over)  # validates (Config.__post_init__)
    return params.get("seed"), over


def train_run(
    preset: Any,
    out: str,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    data_root: str | None = None,
) -> str:
    """Train one run into ``out`` atomically; the task a Dask worker runs for a training sweep.

    Training writes into a hidden sibling folder ``.<name>.partial-<id>`` renamed onto
    ``out`` at the end, so ``out`` never holds half a run; a folder that already holds a run is
    left as it is. Returns ``out``.
    """
    quiet_task_failures()  # this task's failure is reported in one line by the sweep
    final = Path(out)
    if (final / MANIFEST).is_file():
        return str(final)
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with COMPUTE.hold():
            train(
                preset,
                tmp,
                seed=seed,
                device=device,
                progress=False,
                data_root=data_root,
                overrides=overrides,
            )
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(final)


def train_sweep(
    preset: Any,
    out: str | os.PathLike,
    grid: Mapping[str, Sequence[Any]],
    scheduler: Scheduler = None,
    workers: int = 2,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress: bool | Callable[[int, int], None] | None = True,
) -> list[Run]:
    """Train one run per grid point on a Dask cluster; runs land in ``out/<run_name(point)>``.

    Parameters
    ----------
    preset
        A preset name or a :class:`richviz.train.Config`.
    out
        Parent folder of the runs (created).
    grid
        ``{key: values}`` over :data:`GRID_KEYS`, e.g. ``{"alpha": [0.1, 1], "seed": [0, 1]}``.
    scheduler, workers
        Where tasks run (see :func:`open_client`).
    seed, overrides
        Seed and :class:`~richviz.train.Config` fields of every run unless the grid varies them.
    device, data_root
        As for :func:`richviz.train.train`, on each worker.
    progress
        True: a tqdm bar over the runs on stderr; False; or a callable ``(done, total)``.

    Returns
    -------
    list of Run
        In grid order. Runs already in place are reused, not retrained; a killed task leaves
        only a hidden ``.<name>.partial-*`` folder, removed by the next sweep.
    """
    distributed = _require_dask()
    _, config = resolve(preset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"out={str(out)!r} exists and is not a folder")
    base = dict(overrides or {})
    if base:
        config = dataclasses.replace(config, **base)
    jobs = []
    for params in grid_points(grid):
        point_seed, over = _overrides(config, params)
        path = out / run_name(params)
        jobs.append((path, seed if point_seed is None else point_seed, {**base, **over}))
    todo = []
    for path, s, over in jobs:
        if (path / MANIFEST).is_file():
            continue
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ArgumentError(f"{path}: exists and holds no richviz run; move it away first")
        todo.append((path, s, over))
    out.mkdir(parents=True, exist_ok=True)
    for path, _, _ in todo:  # leftovers of killed tasks
        for stale in out.glob(f".{_glob_escape(path.name)}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    bar, report = reporter(progress, len(todo), "train", unit="task")
    try:
        if todo:
            with open_client(scheduler, workers) as client:
                futures = [
                    client.submit(
                        train_run,
                        preset,
                        str(path.resolve()),
                        s,
                        over,
                        device,
                        data_root,
                        key=f"richviz-train-{path.name}-{uuid.uuid4().hex[:8]}",
                        pure=False,
                    )
                    for path, s, over in todo
                ]
                failures = []
                for done, fut in enumerate(distributed.as_completed(futures), 1):
                    try:
                        fut.result()
                    except Exception as exc:
                        failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                    report(done)
                if failures:
                    raise RichvizError(
                        f"{len(failures)} of {len(todo)} training runs failed, e.g. "
                        f"{failures[0][:300]}"
                    )
    finally:
        if bar is not None:
            bar.close()
    return [Run.open(path) for path, _, _ in jobs]


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)
