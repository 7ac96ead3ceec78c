"""Metrics sweeps: one Dask task per missing checkpoint row, stored as tasks finish.

Workers receive paths, open the runs themselves and return rows; the client writes each
finished row into its run's ``metrics.json`` atomically as tasks complete, so a killed worker
loses nothing that finished and a rerun computes only what is missing (rows are keyed by the
run's own cache key, exactly as :meth:`richviz.runs.Run.metrics` does).
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from richviz.compute_lock import COMPUTE
from richviz.errors import RichvizError
from richviz.progress import reporter
from richviz.runs import MANIFEST, Run
from richviz.sweep.cluster import Scheduler, _require_dask, open_client, quiet_task_failures

__all__ = ["compute_metrics_entry", "sweep_metrics"]

_RUNS: OrderedDict[str, tuple[tuple, Run]] = OrderedDict()
_RUNS_MAX = 4
# PyTorch's forward-mode AD levels are process-wide: one metrics row at a time per process


def _signature(path: Path) -> tuple | None:
    """(name, size, mtime_ns) of the manifest and every checkpoint file of a run folder."""
    out = []
    try:
        for p in sorted(path.iterdir()):
            if p.name == MANIFEST or p.suffix in (".pt", ".pth"):
                st = p.stat()
                out.append((p.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return None  # Run.open says what is wrong
    return tuple(out)


def _open_cached(path: str) -> Run:
    """``Run.open(path)``, reused while the folder's files are unchanged (a few per process)."""
    sig = _signature(Path(path))
    hit = _RUNS.get(path)
    if hit is not None and sig is not None and hit[0] == sig:
        _RUNS.move_to_end(path)
        return hit[1]
    run = Run.open(path)
    _RUNS[path] = (sig, run)
    while len(_RUNS) > _RUNS_MAX:
        _RUNS.popitem(last=False)
    return run


def compute_metrics_entry(
    path: str, step: int, layer: str | None = None, probe_size: int = 1000
) -> dict[str, Any]:
    """One checkpoint's metrics cache entry ``{"step", "key", "row"}``, computed where called.

    The task a Dask worker runs: it opens the run folder ``path`` itself (kept open for the
    next task while its files are unchanged) and returns
    :meth:`richviz.runs.Run.metrics_entry`; it writes nothing.
    """
    quiet_task_failures()  # this task's failure is reported in one line by the sweep
    with COMPUTE.hold():
        return _open_cached(path).metrics_entry(step, layer, probe_size)


def _as_run(run: Run | str | os.PathLike) -> Run:
    if isinstance(run, Run):
        if not (run.path / MANIFEST).is_file():
            raise RichvizError(
                f"{run.path}: sweeps need richviz run folders with a {MANIFEST} (workers open "
                "the run by path); Run.from_state_dicts runs are computed with run.metrics()"
            )
        return Run.open(run.path)
    return Run.open(run)


def sweep_metrics(
    runs: Sequence[Run | str | os.PathLike],
    scheduler: Scheduler = None,
    workers: int = 2,
    layer: str | None = None,
    probe_size: int = 1000,
    progress: bool | Callable[[int, int], None] | None = True,
) -> dict[Path, list[dict[str, Any]]]:
    """Metrics tables of many runs, one Dask task per missing checkpoint row.

    Parameters
    ----------
    runs
        Run folders (paths or :class:`~richviz.runs.Run` opened from a folder).
    scheduler, workers
        Where tasks run (see :func:`open_client`): a new local cluster of ``workers``
        processes by default.
    layer, probe_size
        As for :meth:`richviz.runs.Run.metrics` (the cache key includes them).
    progress
        True: a tqdm bar on stderr; False; or a callable ``(done, total)`` over the tasks.

    Returns
    -------
    dict
        ``{run path: rows}``, each table equal to ``Run.open(path).metrics(...)``.

    Raises
    ------
    MissingDependencyError
        dask.distributed is not installed.
    RichvizError
        A task failed (rows of the others are stored; a rerun retries only the missing ones).
    """
    distributed = _require_dask()
    opened: dict[Path, Run] = {}
    for r in runs:
        run = _as_run(r)
        opened.setdefault(run.path.resolve(), run)
    tasks = [(p, s) for p, run in opened.items() for s in run.pending_metrics(layer, probe_size)]
    bar, report = reporter(progress, len(tasks), "sweep", unit="task")
    failures: list[str] = []
    try:
        if tasks:
            with open_client(scheduler, workers) as client:
                futures = {}
                tag = uuid.uuid4().hex[:8]
                for path, step in tasks:
                    fut = client.submit(
                        compute_metrics_entry,
                        str(path),
                        step,
                        layer,
                        probe_size,
                        key=f"richviz-metrics-{path.name}-{step}-{tag}",
                        pure=False,
                    )
                    futures[fut] = (path, step)
                done = 0
                # rows are fetched batch by batch as tasks finish (one gather from this thread
                # per batch: the event loop never serves overlapping per-future fetches)
                for batch in distributed.as_completed(futures).batches():
                    ok = [f for f in batch if f.status == "finished"]
                    results = dict(zip(ok, client.gather(ok, errors="skip"), strict=False))
                    by_run: dict[Path, list[dict[str, Any]]] = {}
                    for fut in batch:
                        path, step = futures[fut]
                        if fut in results:
                            by_run.setdefault(path, []).append(results[fut])
                        else:  # a task error must not lose the others
                            exc = fut.exception() if fut.status == "error" else fut.status
                            failures.append(
                                f"{path}: step {step}: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}"
                            )
                        fut.release()
                    for path, entries in by_run.items():
                        opened[path].store_metrics_rows(entries)
                    done += len(batch)
                    report(done)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        raise RichvizError(
            f"{len(failures)} of {len(tasks)} metrics tasks failed, e.g. {failures[0]}"
        )
    return {
        p: run.metrics(progress=False, layer=layer, probe_size=probe_size)
        for p, run in opened.items()
    }
