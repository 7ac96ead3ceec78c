"""Background work for the widgets: one worker thread, generation counters, an LRU cache
(:class:`richviz.lru.LRUCache`, headless, re-exported).

The UI thread only *submits* work: :meth:`Worker.submit` returns at once, the job runs on a
single background thread (jobs run one after another; torch already uses all cores), and a
newer submission makes older jobs stale. A stale job notices at its next :meth:`Job.check`
(called between stages and from progress callbacks) and stops; its results are never shown.
Widget traits may be set from the worker thread (ipykernel 6+ sends comm messages from any
thread); use ``hold_sync`` for multi-trait updates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from richviz.compute_lock import COMPUTE, ComputeLock
from richviz.lru import LRUCache

__all__ = [
    "COMPUTE",
    "BackgroundWork",
    "Cancelled",
    "ComputeLock",
    "Job",
    "LRUCache",
    "Worker",
]


class Cancelled(Exception):
    """Raised inside a job when a newer job has made it stale."""


class Job:
    """Handle passed to a running job: its generation and a way to ask "am I still wanted?"."""

    def __init__(self, worker: Worker, generation: int):
        self._worker = worker
        self.generation = generation

    @property
    def stale(self) -> bool:
        """True once a newer job was submitted (or the worker was cancelled/closed)."""
        return self._worker.generation != self.generation

    def check(self) -> None:
        """Raise :class:`Cancelled` if this job is stale."""
        if self.stale:
            raise Cancelled

    def progress_callback(
        self, report: Callable[[float], None] | None = None
    ) -> Callable[[int, int], None]:
        """A ``callable(done, total)`` for numerical code: reports ``done / total`` through
        ``report`` and raises :class:`Cancelled` as soon as the job is stale, which aborts the
        computation between chunks."""

        def callback(done: int, total: int) -> None:
            self.check()
            if report is not None and total:
                report(min(1.0, done / total))

        return callback


class Worker:
    """A single background thread running the latest job; older jobs are cancelled.

    ``on_error(exc)`` is called (on the worker thread) with any exception a current job raises
    other than :class:`Cancelled`; the default re-raises nothing and keeps the exception on
    the returned future.
    """

    def __init__(
        self, name: str = "richviz-worker", on_error: Callable[[BaseException], None] | None = None
    ):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._generation = 0
        self._futures: list[Future] = []
        self.on_error = on_error

    @property
    def generation(self) -> int:
        """Generation of the newest submitted job."""
        return self._generation

    def cancel(self) -> int:
        """Make every submitted job stale; returns the new generation."""
        with self._lock:
            self._generation += 1
            return self._generation

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(job, *args, **kwargs)`` in the background; returns immediately.

        Submitting makes all earlier jobs stale (generation counter).
        """
        with self._lock:
            self._generation += 1
            job = Job(self, self._generation)
            future = self._executor.submit(self._run, fn, job, args, kwargs)
            self._futures = [f for f in self._futures if not f.done()] + [future]
        return future

    def _run(self, fn: Callable[..., Any], job: Job, args: tuple, kwargs: dict) -> Any:
        if job.stale:
            return None
        try:
            return fn(job, *args, **kwargs)
        except Cancelled:
            return None
        except BaseException as exc:
            if self.on_error is not None and not job.stale:
                self.on_error(exc)
                return None
            raise

    @property
    def busy(self) -> bool:
        """True while a submitted job has not finished."""
        with self._lock:
            return any(not f.done() for f in self._futures)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted job is done (for tests and scripts, not the UI).

        Returns False if ``timeout`` seconds passed first. Jobs submitted by running jobs
        are waited for too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                pending[0].exception(timeout=remaining)
            except FutureTimeout:
                return False
            except Exception:
                pass

    def close(self) -> None:
        """Cancel pending work and stop the thread (no wait for a running job)."""
        self.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class BackgroundWork:
    """Mixin for a widget whose heavy work runs on ``self._worker`` (a :class:`Worker`).

    Gives it ``wait`` (for tests and scripts) and a ``close`` that stops the worker first and is
    safe after a failed ``__init__``. List it before the ipywidgets base class.
    """

    _worker: Worker
    wait_timeout: float | None = 60.0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until background work is done (default :attr:`wait_timeout`); False on timeout."""
        return self._worker.wait(self.wait_timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop background work and close the widgets (safe after a failed ``__init__``)."""
        worker = getattr(self, "_worker", None)  # absent if __init__ failed early
        if worker is not None:
            worker.close()
        super().close()  # type: ignore[misc]
