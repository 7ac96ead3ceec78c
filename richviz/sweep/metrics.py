"""Metrics sweeps: Dask tasks of a few checkpoint rows of one run, stored as rows finish.

Workers receive paths, open the runs themselves (kept open for the next task) and compute
rows; each finished row goes to the client at once (a Dask event), and the client writes it
into its run's ``metrics.json`` atomically, so a killed worker loses only the rows it had not
finished and a rerun computes only what is missing (rows are keyed by the run's own cache key,
exactly as :meth:`richviz.runs.Run.metrics` does). A task carries up to
:data:`ROWS_PER_TASK` rows of one run (fewer when that leaves under
:data:`TASKS_PER_THREAD` tasks per worker thread): one task per row cost ~4 ms of scheduling
each, on the client's core, which on a 2-core machine is the workers' too.
"""

from __future__ import annotations

import math
import os
import queue
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

__all__ = [
    "ROWS_PER_TASK",
    "TASKS_PER_THREAD",
    "compute_metrics_entries",
    "compute_metrics_entry",
    "sweep_metrics",
    "task_groups",
]

#: most checkpoint rows one sweep task carries
ROWS_PER_TASK = 8
#: fewer rows per task while the sweep would have fewer than this many tasks per worker thread
TASKS_PER_THREAD = 3

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


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _event_sender(topic: str | None) -> Callable[[dict[str, Any]], None]:
    """``send(msg)``: a Dask event on ``topic`` from this worker; a no-op outside a worker or
    without a topic (the task's result carries every row anyway)."""
    if topic is None:
        return lambda msg: None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return lambda msg: None
    return lambda msg: worker.log_event(topic, msg)


def compute_metrics_entries(
    path: str,
    steps: Sequence[int],
    layer: str | None = None,
    probe_size: int = 1000,
    topic: str | None = None,
) -> list[dict[str, Any]]:
    """Metrics cache entries of several checkpoints of one run, in order, computed where called.

    The task a Dask worker runs: it opens the run folder ``path`` once (kept open for the next
    task while its files are unchanged) and computes :meth:`richviz.runs.Run.metrics_entry` of
    each step in turn. Each result is ``{"path", "step", "entry"}``, or ``{"path", "step",
    "error"}`` (one line) for a row that failed (the others still run); each is also sent, as
    soon as it is done, as a Dask event on ``topic`` (the sweep stores it at once). Writes
    nothing.
    """
    quiet_task_failures()  # a whole task's failure is reported in one line by the sweep
    send = _event_sender(topic)
    out: list[dict[str, Any]] = []
    with COMPUTE.hold():
        run = _open_cached(path)
        for step in steps:
            item: dict[str, Any] = {"path": path, "step": int(step)}
            try:
                item["entry"] = run.metrics_entry(int(step), layer, probe_size)
            except Exception as exc:  # this row fails alone, in one line
                item["error"] = _one_line(exc)
            send(item)
            out.append(item)
    return out


def task_groups(steps: Sequence[int], rows_per_task: int) -> list[list[int]]:
    """``steps`` (one run's) split in order into ``ceil(len / rows_per_task)`` groups of
    near-equal size (sizes differ by at most one)."""
    steps = list(steps)
    if not steps:
        return []
    k = math.ceil(len(steps) / max(1, rows_per_task))
    size, extra = divmod(len(steps), k)
    out, start = [], 0
    for g in range(k):
        stop = start + size + (g < extra)
        out.append(steps[start:stop])
        start = stop
    return out


def _rows_per_task(rows: int, threads: int) -> int:
    """Rows per task: ``ROWS_PER_TASK``, fewer while that leaves under ``TASKS_PER_THREAD``
    tasks per worker thread, at least 1."""
    return max(1, min(ROWS_PER_TASK, rows // max(1, TASKS_PER_THREAD * threads)))


def _worker_addresses(client: Any) -> list[str]:
    """The cluster's worker addresses, sorted (empty when the scheduler does not say)."""
    try:
        return sorted(str(a) for a in client.nthreads())
    except Exception:  # an unusual scheduler: no preference
        return []


def _threads(client: Any) -> int:
    try:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    except Exception:  # an unusual scheduler: assume two
        return 2


def sweep_metrics(
    runs: Sequence[Run | str | os.PathLike],
    scheduler: Scheduler = None,
    workers: int = 2,
    layer: str | None = None,
    probe_size: int = 1000,
    progress: bool | Callable[[int, int], None] | None = True,
) -> dict[Path, list[dict[str, Any]]]:
    """Metrics tables of many runs, the missing checkpoint rows computed on a Dask cluster.

    Each task carries a few rows of one run (:data:`ROWS_PER_TASK`); every row is stored in its
    run's ``metrics.json`` as soon as it is finished, so an interrupted sweep (a killed worker,
    a stopped client) keeps every finished row and a rerun computes only the missing ones.

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
        True: a tqdm bar on stderr; False; or a callable ``(done, total)`` over the rows,
        called after the rows counted in ``done`` are stored.

    Returns
    -------
    dict
        ``{run path: rows}``, each table equal to ``Run.open(path).metrics(...)``.

    Raises
    ------
    MissingDependencyError
        dask.distributed is not installed.
    RichvizError
        Rows failed (one line: how many, and the first reason); the other rows are stored and
        a rerun retries only the missing ones.
    """
    _require_dask()
    opened: dict[Path, Run] = {}
    for r in runs:
        run = _as_run(r)
        opened.setdefault(run.path.resolve(), run)
    pending = {p: run.pending_metrics(layer, probe_size) for p, run in opened.items()}
    total = sum(len(v) for v in pending.values())
    bar, report = reporter(progress, total, "sweep", unit="task")
    failures: list[str] = []
    try:
        if total:
            with open_client(scheduler, workers) as client:
                _run_tasks(client, opened, pending, layer, probe_size, report, failures)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        raise RichvizError(f"{len(failures)} of {total} metrics tasks failed, e.g. {failures[0]}")
    return {
        p: run.metrics(progress=False, layer=layer, probe_size=probe_size)
        for p, run in opened.items()
    }


def _run_tasks(
    client: Any,
    opened: dict[Path, Run],
    pending: dict[Path, list[int]],
    layer: str | None,
    probe_size: int,
    report: Callable[[int], None],
    failures: list[str],
) -> None:
    """Submit the tasks and store every row as it arrives (a row event from the worker, or the
    task's result: whichever comes first), reporting the rows stored so far."""
    tag = uuid.uuid4().hex[:8]
    topic = f"richviz-metrics-rows-{tag}"
    inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    client.subscribe_topic(topic, lambda event: inbox.put(("row", event[1])))
    per_task = _rows_per_task(sum(len(v) for v in pending.values()), _threads(client))
    homes = _worker_addresses(client)
    futures: dict[Any, tuple[Path, list[int]]] = {}
    try:
        for r, (path, steps) in enumerate(pending.items()):
            # the tasks of one run prefer one worker, which then opens the run (manifest, probe
            # set, init model) once; any worker may still take them (stealing, a lost worker)
            where = {"workers": [homes[r % len(homes)]], "allow_other_workers": True}
            for group in task_groups(steps, per_task):
                fut = client.submit(
                    compute_metrics_entries,
                    str(path),
                    group,
                    layer,
                    probe_size,
                    topic,
                    key=f"richviz-metrics-{path.name}-{group[0]}-{len(group)}-{tag}",
                    pure=False,
                    **(where if homes else {}),
                )
                futures[fut] = (path, group)
                fut.add_done_callback(lambda f: inbox.put(("done", f)))
        settled: set[tuple[Path, int]] = set()  # rows stored or failed
        left = len(futures)
        while left:
            items = [inbox.get()]
            while True:  # everything that has arrived meanwhile, in one go
                try:
                    items.append(inbox.get_nowait())
                except queue.Empty:
                    break
            results: list[dict[str, Any]] = [msg for kind, msg in items if kind == "row"]
            finished = [f for kind, f in items if kind == "done" and f in futures]
            ok = [f for f in finished if f.status == "finished"]
            if ok:  # one gather from this thread per batch
                for got in client.gather(ok, errors="skip"):
                    results += got
            for fut in finished:
                path, group = futures.pop(fut)
                left -= 1
                if fut.status != "finished":  # the whole task failed: each of its rows did
                    exc = fut.exception() if fut.status == "error" else fut.status
                    why = _one_line(exc) if isinstance(exc, BaseException) else str(exc)
                    results += [{"path": str(path), "step": s, "error": why} for s in group]
                fut.release()
            by_run: dict[Path, list[dict[str, Any]]] = {}
            for item in results:
                path = Path(item["path"])
                key = (path, int(item["step"]))
                if key in settled or path not in opened:
                    continue
                settled.add(key)
                if "entry" in item:
                    by_run.setdefault(path, []).append(item["entry"])
                else:
                    failures.append(f"{path}: step {item['step']}: {item['error']}")
            for path, entries in by_run.items():
                opened[path].store_metrics_rows(entries)
            report(len(settled))
    finally:
        client.unsubscribe_topic(topic)
        for fut in futures:
            fut.release()
