"""One compute lock for the whole process: every heavy torch computation runs under it.

PyTorch's forward-mode AD levels are process-wide, so two threads running ``jvp`` at once
break each other ("no level exists"). The widgets, the live trainer's frames and the sweeps
therefore share :data:`COMPUTE`. Headless: no widget imports.
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["COMPUTE", "ComputeLock"]


class ComputeLock:
    """One lock for all heavy torch work of the process, with a way for long holders to yield.

    PyTorch's forward-mode AD levels are process-wide, so two threads running ``jvp`` at once
    break each other ("no level exists"). Every computation therefore runs under
    :meth:`hold`. A long holder (the metrics panel filling its cache checkpoint by checkpoint)
    calls :meth:`yield_to_waiters` between units of work, so a waiting slice-viewer job runs
    in between instead of waiting for the whole table.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._waiting = 0
        self._owner: int | None = None

    @contextlib.contextmanager
    def hold(self):
        """Context manager: run the block while holding the lock (re-entrant per thread)."""
        me = threading.get_ident()
        if self._owner == me:
            yield
            return
        with self._cv:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._cv:
                self._waiting -= 1
                self._cv.notify_all()
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()

    def waiting_for_others(self) -> bool:
        """True when another thread holds the lock."""
        return self._lock.locked() and self._owner != threading.get_ident()

    def yield_to_waiters(self, timeout: float = 60.0) -> None:
        """Called by the holder: let threads already waiting for the lock run first."""
        if self._owner != threading.get_ident():
            return
        with self._cv:
            waiting = self._waiting
        if not waiting:
            return
        self._owner = None
        self._lock.release()
        try:
            with self._cv:
                self._cv.wait_for(lambda: self._waiting < waiting, timeout=timeout)
        finally:
            self._lock.acquire()
            self._owner = threading.get_ident()


#: The lock shared by the widgets, live frames and sweeps (and user code running jvp next to them).
COMPUTE = ComputeLock()
