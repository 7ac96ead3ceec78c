"""Progress reporting for long loops: nothing, a tqdm bar, or a user's callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from richviz.errors import ArgumentError

__all__ = ["Progress", "reporter", "updater"]

Progress = bool | Callable[[int, int], object] | None
"""None/False (silent), True (a tqdm bar) or ``callable(done, total)``."""


def reporter(
    progress: Progress, total: int, desc: str = "metrics", unit: str = "ckpt"
) -> tuple[Any, Callable[[int], None]]:
    """``(bar, report(done))`` for a loop of ``total`` items.

    ``report(done)`` takes the number of items finished so far (not an increment). A callable
    is called with ``(0, total)`` at once and ``(done, total)`` on each report; True opens a
    tqdm bar (``bar``, closed by the caller) moved to ``done`` on each report; anything falsy
    reports nothing. ``bar`` is None unless a tqdm bar was opened.
    """
    if callable(progress):
        progress(0, total)
        return None, lambda done: progress(done, total)
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit)
        return bar, lambda done: bar.update(done - bar.n)
    return None, lambda done: None


def updater(
    progress: Progress, total: int, desc: str, unit: str = "pt"
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """``(update(done), close())`` for a loop over ``total`` points reported in chunks.

    ``done`` is the number of points finished so far (not an increment). ``progress``: None or
    False (silent), True (a tqdm bar named ``desc``), or ``callable(done, total)``; anything else
    raises a one-line ``ValueError`` naming ``progress``.
    """
    if progress is None or progress is False:
        return (lambda done: None), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit)
        state = {"done": 0}

        def update(done: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        return update, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    raise ArgumentError(f"progress must be None, True or a callable(done, total), got {progress!r}")
