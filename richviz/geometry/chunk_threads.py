"""Chunks of a CPU field on parallel threads, one torch thread each, results in order.

On CPU the chain kernel runs a chunk as ~15 small operations (1024 points: a few hundred
microseconds to a few milliseconds each). With PyTorch's intra-op threads every operation is
split across the cores and joined again; when another process holds one of the cores, each
join waits for the descheduled thread, and on a loaded 2-core machine a 2-thread field took
8-12x a forward pass instead of ~2x (one thread: ~2.1-2.4x). Here each of ``n`` Python threads
(``n`` = ``torch.get_num_threads()``) runs whole chunks with ONE intra-op thread (PyTorch
releases the GIL inside its operations), so the threads never wait for each other: measured on
the same loaded machine 1.95x a 2-thread forward pass. A chunk's numbers are those of the
one-thread kernel (bit for bit: each output is computed by one thread either way).

Only for the hand-written chain kernel: ``torch.func.jvp``'s forward-mode levels are
process-wide, so two threads in ``jvp`` at once would break each other.

``torch.set_num_threads(1)`` in a worker sets that thread's OpenMP and MKL thread counts and
PyTorch's process-wide default for threads that have not run an operation yet; the caller's
value is set back when the pool closes (the calling thread's own count never changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["MIN_CHUNKS", "map_chunks", "parallel_chunks"]

T = TypeVar("T")
R = TypeVar("R")

MIN_CHUNKS = 2
"""Fewer chunks than this run in the calling thread (nothing to share)."""


def parallel_chunks(n_chunks: int, device: torch.device) -> int:
    """Threads for ``n_chunks`` chunks on ``device``: ``torch.get_num_threads()`` on CPU (at
    most one per chunk), 1 (the calling thread) elsewhere or for fewer than ``MIN_CHUNKS``."""
    if device.type != "cpu" or n_chunks < MIN_CHUNKS:
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks))


def map_chunks(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """``fn(item)`` for each item, in order, on ``threads`` threads with one torch thread
    each and grad mode off (``threads <= 1``: in the calling thread, as a plain loop).

    Results are yielded in the order of ``items`` as soon as each and all before it are done;
    an exception in ``fn`` is raised at its item (the remaining items are cancelled).
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    restore = torch.get_num_threads()

    def init() -> None:
        torch.set_num_threads(1)

    def run(item: T) -> R:
        with torch.no_grad():
            return fn(item)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="richviz-chunk", initializer=init)
    futures: list[Future[R]] = []
    try:
        futures = [pool.submit(run, item) for item in items]
        for fut in futures:
            yield fut.result()
    finally:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(restore)
