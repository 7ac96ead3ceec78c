"""Where sweep tasks run: a ``dask.distributed`` client for a local cluster or an address.

Dask is optional (``pip install "richviz[dask]"``) and imported only when a client opens; a
missing install is one line (:data:`DASK_HINT`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
from collections.abc import Iterator
from typing import Any

from richviz import validation
from richviz.errors import ArgumentError, ArgumentTypeError, MissingDependencyError, RichvizError

__all__ = [
    "CONNECT_TIMEOUT",
    "DASK_HINT",
    "FILES_PER_WORKER",
    "MALLOC_TRIM",
    "Scheduler",
    "WORKER_PROFILE",
    "check_workers",
    "max_workers",
    "open_client",
    "quiet_task_failures",
]

#: seconds a scheduler address has to answer (TCP connect and Dask's handshake together)
CONNECT_TIMEOUT = 10.0
#: open files a local worker process costs the client (pipes, sockets, its nanny's)
FILES_PER_WORKER = 16
TASK_PREFIX = "richviz-"

WORKER_PROFILE = "distributed.worker.profile.enabled"
"""Dask's setting for its workers' stack sampler, off in local clusters (no dashboard)."""
MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"
"""The environment variable Dask sets for its workers and local clusters leave unset."""
DASK_HINT = 'richviz sweeps need dask.distributed: pip install "richviz[dask]"'


Scheduler = Any  # None, a scheduler address "tcp://host:8786", or a distributed.Client


def _require_dask() -> Any:
    """The ``distributed`` module, or a one-line :class:`MissingDependencyError`."""
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError(DASK_HINT) from None
    return distributed


def max_workers() -> int:
    """Most local worker processes: 4 per core, and no more than the open-file limit allows."""
    cores = os.cpu_count() or 1
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_files = 4 * cores if soft == resource.RLIM_INFINITY else (soft - 64) // FILES_PER_WORKER
    return max(1, min(4 * cores, by_files))


def check_workers(workers: Any) -> int:
    """``workers`` as an int in ``[1, max_workers()]``; one-line ``ArgumentError`` otherwise."""
    n = validation.check_int(workers, "workers", low=1)
    high = max_workers()
    if n > high:
        cores = os.cpu_count() or 1
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        raise ArgumentError(
            f"workers={n} is more than this machine runs: at most {high} "
            f"(4 per core of {cores}, open-file limit {soft})"
        )
    return n


class _OwnFailures(logging.Filter):
    """Drops Dask's multi-line "Compute Failed" log for richviz's own tasks (the sweep reports
    each failure in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            str(record.msg).startswith("Compute Failed")
            and args
            and str(args[0]).startswith(TASK_PREFIX)
        )


_FILTER = _OwnFailures()


def quiet_task_failures() -> None:
    """Install the filter on this process's ``distributed.worker`` logger (idempotent).

    Called by the worker tasks themselves, so it holds in every worker process, local or not.
    """
    logger = logging.getLogger("distributed.worker")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


@contextlib.contextmanager
def open_client(
    scheduler: Scheduler = None, workers: int = 2, timeout: float = CONNECT_TIMEOUT
) -> Iterator[Any]:
    """A ``distributed.Client`` for the duration of the ``with`` block.

    Parameters
    ----------
    scheduler
        None: start a ``LocalCluster`` of ``workers`` processes (one thread each, loopback
        ``127.0.0.1`` only, no dashboard) and stop it afterwards. A string: connect to that
        scheduler address (e.g. ``"tcp://10.0.0.5:8786"``). A ``distributed.Client``: use it as
        is (it stays open).
    workers
        Number of worker processes of the local cluster, in ``[1, max_workers()]``.
    timeout
        Seconds a scheduler address has to answer, connection and handshake together (also
        a server that accepts and never speaks Dask); then a one-line error.

    Raises
    ------
    MissingDependencyError
        dask.distributed is not installed.
    RichvizError
        The scheduler cannot be reached (one line naming the address).
    """
    distributed = _require_dask()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is not None:
        if not isinstance(scheduler, str):
            raise ArgumentTypeError(
                f"scheduler={scheduler!r} must be None, an address or a distributed.Client"
            )
        validation.check_number(timeout, "timeout", low=0, low_open=True)
        client = _connect(distributed, scheduler, timeout)
        try:
            yield client
        finally:
            client.close()
        return
    check_workers(workers)
    import dask

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off
    # glibc's adaptive mmap threshold: every tensor above 128 KiB is then a fresh mmap that
    # the kernel zero-fills, and a metrics row took ~1.5x as long as in this process. Local
    # workers start without it (a value of None unsets a variable of that config).
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), MALLOC_TRIM: None}
    # Each worker samples its own stack every 10 ms for the dashboard's profile view; a local
    # cluster has no dashboard, and on a 2-core machine the sampling took ~10% of a sweep.
    settings = {"distributed.nanny.pre-spawn-environ": environ, WORKER_PROFILE: False}
    with dask.config.set(settings):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # no dashboard; the scheduler's small HTTP endpoint (health) on a free loopback port
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _connect(distributed: Any, address: str, timeout: float) -> Any:
    """``Client(address)`` within ``timeout`` seconds, else a one-line error naming it.

    The client starts in a daemon thread joined with the deadline: Dask's own timeouts do not
    cover a server that accepts and never answers (an HTTP port), which would hang forever.
    """
    import dask

    limit = f"{timeout}s"
    box: dict[str, Any] = {}

    def start() -> None:
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": limit}):
                box["client"] = distributed.Client(address, timeout=limit, set_as_default=False)
        except Exception as exc:  # refused, unreachable, not Dask, a bad scheme
            box["error"] = exc

    thread = threading.Thread(target=start, name="richviz-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "client" in box:
        return box["client"]
    exc = box.get("error")
    why = "no answer" if exc is None else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    raise RichvizError(
        f"scheduler={address!r}: cannot connect within {timeout:g} s ({why[:160]}); "
        "is it a Dask scheduler address (tcp://host:8786)?"
    )
