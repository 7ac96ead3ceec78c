"""A bounded-rate frame loop: draw the newest submitted item, skip instead of queueing.

The viewers' side of live training: :class:`FrameLoop` runs ``draw(item)`` on a thread of its
own at most ``fps`` times a second; items that arrive faster replace each other, so drawing
never falls behind the trainer and never makes it wait.
"""

from __future__ import annotations

import atexit
import math
import numbers
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from richviz.errors import ArgumentError, ArgumentTypeError

__all__ = ["FrameLoop"]


#: every frame loop not yet closed, stopped at interpreter exit (see :func:`_close_at_exit`)
_OPEN_LOOPS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Stop open frame loops before the interpreter tears down: a daemon thread still inside torch's
    C++ code at teardown aborts the process ("terminate called without an active exception")."""
    for obj in list(_OPEN_LOOPS):
        obj.close(timeout=5.0)


class FrameLoop:
    """Draw the newest submitted item on a thread of its own, at most ``fps`` times a second.

    :meth:`submit` never blocks: it replaces any item not drawn yet (counted in ``skipped``).
    ``draw(item)`` runs on the loop's thread; an exception goes to ``on_error`` (default:
    kept in ``last_error``) and the loop goes on. ``frames`` counts finished draws.

    ``max_duty`` bounds the share of wall time spent drawing: after a frame that took ``d``
    seconds the next starts no sooner than ``max(1 / fps, d / max_duty)`` after it began, so a
    slow frame lowers the frame rate instead of taking CPU (and the GIL) from training.
    ``clock``: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        draw: Callable[[Any], None],
        fps: float = 10.0,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "richviz-frames",
        max_duty: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not 0 < max_duty <= 1:
            raise ArgumentError(f"max_duty={max_duty!r} must lie in (0, 1]")
        self._draw = draw
        self._clock = clock
        self.max_duty = float(max_duty)
        self.fps = fps
        self.on_error = on_error
        self.frames = 0
        self.skipped = 0
        self.last_error: BaseException | None = None
        self._item: Any = None
        self._pending = False
        self._drawing = False
        self._closed = False
        self._cv = threading.Condition()
        self._next = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        _OPEN_LOOPS.add(self)

    @property
    def fps(self) -> float:
        """Frames per second at most (finite and > 0)."""
        return self._fps

    @fps.setter
    def fps(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgumentTypeError(f"fps={value!r} must be a number, not {type(value).__name__}")
        if not (math.isfinite(value) and value > 0):
            raise ArgumentError(f"fps={value!r} must be a positive number")
        self._fps = float(value)

    def submit(self, item: Any) -> None:
        """Offer ``item`` for the next frame (replacing an undrawn one). Never blocks long."""
        with self._cv:
            if self._pending:
                self.skipped += 1
            self._item, self._pending = item, True
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or drawing (for tests and scripts)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._closed or (not self._pending and not self._drawing), timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop (after the frame being drawn, if any); idempotent."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._pending)
                if self._closed:
                    return
                delay = self._next - self._clock()
                if delay > 0:  # too early: newer items may replace this one meanwhile
                    self._cv.wait_for(lambda: self._closed, timeout=delay)
                    if self._closed:
                        return
                item, self._item, self._pending = self._item, None, False
                self._drawing = True
                start = self._clock()
            try:
                self._draw(item)
                self.frames += 1
            except BaseException as exc:
                self.last_error = exc
                if self.on_error is not None:
                    self.on_error(exc)
            finally:
                took = self._clock() - start
                with self._cv:
                    self._next = start + max(1.0 / self._fps, took / self.max_duty)
                    self._drawing = False
                    self._cv.notify_all()
