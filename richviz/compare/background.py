"""Metrics still missing, computed through the runs' own cache (as ``Run.metrics`` and the
Dask sweep do): open each run, ask :meth:`~richviz.runs.Run.pending_metrics` which rows are
missing or stale (content hashes), compute those with :meth:`~richviz.runs.Run.metrics`
(each row stored in ``metrics.json`` atomically as it is done), and refresh the entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from richviz.compare.sources import RunEntry, rows_from_cache
from richviz.compute_lock import COMPUTE
from richviz.errors import one_line

__all__ = ["fill_missing"]


def fill_missing(
    entries: Sequence[RunEntry],
    progress: Callable[[float], None] | None = None,
    check: Callable[[], None] | None = None,
    layer: str | None = None,
    probe_size: int = 1000,
) -> list[RunEntry]:
    """Open each usable entry's run, compute its missing or stale metrics rows, refresh it.

    ``progress(fraction)`` is called as runs and their rows finish; ``check()`` between rows
    (a widget's job raises there when it is no longer wanted). A run that fails to open or to
    compute gets its one-line ``error``; the others go on. Returns the entries whose rows
    changed.

    Examples
    --------
    >>> import os, tempfile
    >>> from richviz.compare import fill_missing, open_runs
    >>> from richviz.train import train
    >>> folder = os.path.join(tempfile.mkdtemp(), "xor")
    >>> _ = train("xor", folder, steps=2, progress=False, device="cpu")
    >>> entry, = open_runs([folder])
    >>> entry.missing  # no metrics cached yet
    [0, 1, 2]
    >>> _ = fill_missing([entry])
    >>> entry.missing, 0 <= entry.rows[-1]["d_lr"] <= 1
    ([], True)
    """
    todo = [e for e in entries if e.usable]
    changed = []
    stopped: list[BaseException] = []  # what check() raised: it ends the loop, not one run

    def guard() -> None:
        if check is not None:
            try:
                check()
            except BaseException as exc:
                stopped.append(exc)
                raise

    for i, e in enumerate(todo):
        guard()

        def report(done: int, total: int, i: int = i) -> None:
            guard()
            if progress is not None:
                progress((i + (done / total if total else 1.0)) / len(todo))
            COMPUTE.yield_to_waiters()  # a waiting slice-viewer job runs between rows

        try:
            run = e.open()
            pending = run.pending_metrics(layer, probe_size)
            if pending or e.missing:
                with COMPUTE.hold():
                    e.rows = run.metrics(progress=report, layer=layer, probe_size=probe_size)
                e.missing = []
                changed.append(e)
            elif [c.step for c in run.checkpoints if c.readable] != e.steps:
                readable = [(c.step, c.meta) for c in run.checkpoints if c.readable]
                e.rows, e.missing = rows_from_cache(run.path, readable)
                changed.append(e)
            if not e.rows:
                e.error = f"{run.path}: no readable checkpoint"
        except Exception as exc:
            if stopped:
                raise
            e.error = one_line(f"{e.path or e.name}: {exc}")
            changed.append(e)
        if progress is not None:
            progress((i + 1) / len(todo))
    return changed
