"""Where sweep tasks run: a ``dask.distributed`` client for a local cluster or an address.

Dask is optional (``pip install "richviz[dask]"``) and imported only when a client opens; a
missing install is one line (:data:`DASK_HINT`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from richviz import validation
from richviz.errors import ArgumentTypeError, MissingDependencyError, RichvizError

__all__ = ["DASK_HINT", "MALLOC_TRIM", "Scheduler", "open_client"]

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


@contextlib.contextmanager
def open_client(
    scheduler: Scheduler = None, workers: int = 2, timeout: float = 30.0
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
        Number of worker processes of the local cluster (>= 1).
    timeout
        Seconds to wait for a scheduler address to answer.

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
        try:
            client = distributed.Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise RichvizError(
                f"scheduler={scheduler!r}: cannot connect ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    validation.check_int(workers, "workers", low=1)
    import dask

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off
    # glibc's adaptive mmap threshold: every tensor above 128 KiB is then a fresh mmap that
    # the kernel zero-fills, and a metrics row took ~1.5x as long as in this process. Local
    # workers start without it (a value of None unsets a variable of that config).
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), MALLOC_TRIM: None}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
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
