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

import itertools
import math
import os
import queue
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from richviz.compute_lock import COMPUTE
from richviz.errors import RichvizError
from richviz.progress import reporter
from richviz.runs import MANIFEST, Checkpoint, Run
from richviz.sweep.cluster import Scheduler, _require_dask, open_client, quiet_task_failures

__all__ = [
    "ROWS_PER_TASK",
    "STORE_EVERY_S",
    "TASKS_PER_THREAD",
    "compute_metrics_entries",
    "compute_metrics_entry",
    "run_checkpoints",
    "sweep_metrics",
    "task_groups",
]

#: most checkpoint rows one sweep task carries
ROWS_PER_TASK = 8
#: fewer rows per task while the sweep would have fewer than this many tasks per worker thread
TASKS_PER_THREAD = 3
#: seconds: a run's finished rows are written to its ``metrics.json`` at most this often (its
#: first row, its last row and any rows left when the sweep stops are written at once)
STORE_EVERY_S = 0.25

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


def _open_cached(path: str, known: Sequence[Checkpoint] = ()) -> Run:
    """``Run.open(path, known=known)``, reused while the folder's files are unchanged (a few
    per process)."""
    sig = _signature(Path(path))
    hit = _RUNS.get(path)
    if hit is not None and sig is not None and hit[0] == sig:
        _RUNS.move_to_end(path)
        return hit[1]
    run = Run.open(path, known=known)
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


def run_checkpoints(path: str) -> list[Checkpoint]:
    """The checkpoints of the run folder ``path`` as :meth:`Run.open` inspects them, inspected
    where called: the task that opens a run on a worker (kept open for its rows' tasks), so the
    client takes the result (``Run.open(path, known=...)``) without reading every file itself."""
    quiet_task_failures()  # the client opens the run itself when this fails
    with COMPUTE.hold():
        return list(_open_cached(path).checkpoints)


def _folder(run: Run | str | os.PathLike) -> Path:
    """The run folder ``run`` names, as :meth:`Run.open` reads it (a path to its manifest file
    names the folder holding it)."""
    folder = run.path if isinstance(run, Run) else Path(run)
    return folder.parent if folder.name == MANIFEST and folder.is_file() else folder


def _as_run(run: Run | str | os.PathLike, known: Sequence[Checkpoint] = ()) -> Run:
    if isinstance(run, Run):
        if not (run.path / MANIFEST).is_file():
            raise RichvizError(
                f"{run.path}: sweeps need richviz run folders with a {MANIFEST} (workers open "
                "the run by path); Run.from_state_dicts runs are computed with run.metrics()"
            )
        return Run.open(run.path, known=known)
    return Run.open(run, known=known)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _event_sender(topic: str | None) -> Callable[[list[dict[str, Any]]], None]:
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
    known: Sequence[Checkpoint] = (),
) -> list[dict[str, Any]]:
    """Metrics cache entries of several checkpoints of one run, in order, computed where called.

    The task a Dask worker runs: it opens the run folder ``path`` once (kept open for the next
    task while its files are unchanged) and computes :meth:`richviz.runs.Run.metrics_entry` of
    each step in turn. Each result is ``{"path", "step", "entry"}``, or ``{"path", "step",
    "error"}`` (one line) for a row that failed (the others still run). The rows are also sent
    while the task runs, as Dask events on ``topic`` (the sweep stores them at once): the first
    row as soon as it is done, later ones together once :data:`STORE_EVERY_S` has passed since
    the last event (the client writes a run's rows no more often; the task's result brings the
    rest). ``known``: the run's checkpoints as the client has them (see :func:`run_checkpoints`),
    so that opening the run reads no file again. Writes nothing.
    """
    quiet_task_failures()  # a whole task's failure is reported in one line by the sweep
    send = _event_sender(topic)
    out: list[dict[str, Any]] = []
    unsent: list[dict[str, Any]] = []
    sent_at = -math.inf
    with COMPUTE.hold():
        run = _open_cached(path, known)
        for step in steps[:-1]:
            out.append(item := _entry_item(run, path, step, layer, probe_size))
            unsent.append(item)
            if time.monotonic() - sent_at >= STORE_EVERY_S:
                send(unsent)
                unsent, sent_at = [], time.monotonic()
        if steps:  # the last row comes with the task's result
            out.append(_entry_item(run, path, steps[-1], layer, probe_size))
    return out


def _entry_item(
    run: Run, path: str, step: int, layer: str | None, probe_size: int
) -> dict[str, Any]:
    """``{"path", "step", "entry"}``, or ``{"path", "step", "error"}`` in one line."""
    item: dict[str, Any] = {"path": path, "step": int(step)}
    try:
        item["entry"] = run.metrics_entry(int(step), layer, probe_size)
    except Exception as exc:  # this row fails alone, in one line
        item["error"] = _one_line(exc)
    return item


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
        a rerun retries only the missing ones. A run folder that cannot be opened stops the
        sweep with its own one-line error (a ``RunError``); the rows finished by then are kept.
    """
    _require_dask()
    runs = list(runs)
    for r in runs:  # the cheap check first: a mistyped folder fails before any work
        if not (_folder(r) / MANIFEST).is_file():
            _as_run(r)  # raises the one-line reason
    opened: dict[Path, Run] = {}
    pending: dict[Path, list[int]] = {}
    inspected: dict[int, Any] = {}  # run index -> future of run_checkpoints, once a cluster is up
    reached = [0]  # index of the run with_rows opened last

    def with_rows() -> Iterator[Path]:
        """Open the runs in turn, yielding those with rows to compute: the client opens run
        k + 1 while the workers compute run k's rows. Until the first run with rows is found
        (no cluster yet) the client inspects the checkpoint files itself; then the workers
        inspect the remaining runs (:func:`run_checkpoints`, all at once) and the client opens
        each with their result (if that fails, by itself: the same checks, the same errors)."""
        for i, r in enumerate(runs):
            reached[0] = i
            known: Sequence[Checkpoint] = ()
            if i in inspected:
                try:
                    known = inspected.pop(i).result()
                except Exception:
                    known = ()
            run = _as_run(r, known)
            path = run.path.resolve()
            if path not in opened:
                opened[path] = run
                pending[path] = run.pending_metrics(layer, probe_size)
                if pending[path]:
                    yield path

    todo = with_rows()
    first = next(todo, None)
    failures: list[str] = []
    total = 0
    if first is None:
        reporter(progress, 0, "sweep", unit="task")
    else:
        with open_client(scheduler, workers) as client:
            homes = _worker_addresses(client)
            for i in range(reached[0] + 1, len(runs)):
                where = {"workers": [homes[i % len(homes)]], "allow_other_workers": True}
                inspected[i] = client.submit(
                    run_checkpoints,
                    str(_folder(runs[i]).resolve()),
                    key=f"richviz-checkpoints-{i}-{uuid.uuid4().hex[:8]}",
                    pure=False,
                    **(where if homes else {}),
                )
            try:
                total = _run_tasks(
                    client, opened, pending, itertools.chain([first], todo), len(runs),
                    layer, probe_size, progress, failures,
                )  # fmt: skip
            finally:
                for fut in inspected.values():  # not reached (a failure stopped the sweep)
                    fut.release()
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
    todo: Iterator[Path],
    runs: int,
    layer: str | None,
    probe_size: int,
    progress: bool | Callable[[int, int], None] | None,
    failures: list[str],
) -> int:
    """Submit each run's tasks as soon as ``todo`` has opened it, then store every row as it
    arrives (a row event from the worker, or the task's result: whichever comes first),
    reporting the rows stored so far. Returns the number of rows."""
    tag = uuid.uuid4().hex[:8]
    topic = f"richviz-metrics-rows-{tag}"
    inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    client.subscribe_topic(topic, lambda event: inbox.put(("rows", event[1])))
    homes = _worker_addresses(client)
    threads = _threads(client)
    futures: dict[Any, tuple[Path, list[int]]] = {}
    store = _RowStore(opened, pending)
    bar = None
    try:
        per_task = 0
        for r, path in enumerate(todo):
            if not per_task:  # sized by the first run's rows times the number of runs
                per_task = _rows_per_task(len(pending[path]) * runs, threads)
            # the tasks of one run prefer one worker, which then opens the run (manifest, probe
            # set, init model) once; any worker may still take them (stealing, a lost worker)
            where = {"workers": [homes[r % len(homes)]], "allow_other_workers": True}
            for group in task_groups(pending[path], per_task):
                fut = client.submit(
                    compute_metrics_entries,
                    str(path),
                    group,
                    layer,
                    probe_size,
                    topic,
                    opened[path].checkpoints,
                    key=f"richviz-metrics-{path.name}-{group[0]}-{len(group)}-{tag}",
                    pure=False,
                    **(where if homes else {}),
                )
                futures[fut] = (path, group)
                fut.add_done_callback(lambda f: inbox.put(("done", f)))
        total = sum(len(v) for v in pending.values())
        bar, report = reporter(progress, total, "sweep", unit="task")
        settled: set[tuple[Path, int]] = set()  # rows received (stored soon) or failed
        left = len(futures)
        while left:
            items = store.wait(inbox)
            while True:  # everything that has arrived meanwhile, in one go
                try:
                    items.append(inbox.get_nowait())
                except queue.Empty:
                    break
            results = [row for kind, msg in items if kind == "rows" for row in msg]
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
            for item in results:
                path = Path(item["path"])
                key = (path, int(item["step"]))
                if key in settled or path not in opened:
                    continue
                settled.add(key)
                if "entry" in item:
                    store.add(path, item["entry"])
                else:
                    store.settle(path)
                    failures.append(f"{path}: step {item['step']}: {item['error']}")
            store.flush(due_only=True)
            report(len(settled) - store.unsaved)
    finally:
        store.flush()  # rows received before a stop (an error, Ctrl-C) are kept
        client.unsubscribe_topic(topic)
        for fut in futures:
            fut.release()
        if bar is not None:
            bar.close()
    return total


class _RowStore:
    """The client's writer of finished rows: each run's rows are merged into its
    ``metrics.json`` in one atomic write at most every :data:`STORE_EVERY_S` seconds, and at
    once for a run's first and last rows (a sweep of 200 rows rewrote and fsynced each file
    after every row, a third of a core on the client, which on 2 cores is a worker's)."""

    def __init__(self, opened: dict[Path, Run], pending: dict[Path, list[int]]) -> None:
        self._opened = opened
        self._pending = pending  # filled as the runs are opened
        self._received: dict[Path, int] = {}
        self._rows: dict[Path, list[dict[str, Any]]] = {}
        self._written: dict[Path, float] = {}

    @property
    def unsaved(self) -> int:
        """Rows received and not yet written."""
        return sum(len(v) for v in self._rows.values())

    def add(self, path: Path, entry: dict[str, Any]) -> None:
        self._rows.setdefault(path, []).append(entry)
        self.settle(path)

    def settle(self, path: Path) -> None:
        """A row of ``path`` received (or failed: nothing to write), one fewer to wait for."""
        self._received[path] = self._received.get(path, 0) + 1

    def _due(self, path: Path, now: float) -> float:
        """When ``path``'s unsaved rows are to be written (``now`` or earlier: at once)."""
        if self._received.get(path, 0) >= len(self._pending[path]) or path not in self._written:
            return now
        return self._written[path] + STORE_EVERY_S

    def wait(self, inbox: queue.SimpleQueue) -> list[tuple[str, Any]]:
        """The next message, or none once unsaved rows are due to be written."""
        now = time.monotonic()
        timeout = min((self._due(p, now) for p in self._rows), default=None)
        try:
            if timeout is None:
                return [inbox.get()]
            return [inbox.get(timeout=max(0.0, timeout - now))]
        except queue.Empty:
            return []

    def flush(self, due_only: bool = False) -> None:
        """Write the unsaved rows (only those due with ``due_only``)."""
        now = time.monotonic()
        for path in list(self._rows):
            if due_only and self._due(path, now) > now:
                continue
            self._opened[path].store_metrics_rows(self._rows.pop(path))
            self._written[path] = time.monotonic()
