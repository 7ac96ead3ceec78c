"""The grids an animation draws, one per checkpoint, kept in a process-wide LRU so a second
export of the same run is fast.

A grid is keyed by what determines it: the run (its folder, its model identity), the
checkpoint (step, file, size and modification time, so a rewritten file is computed again),
the slice (origin, basis, window), the resolution and the layer. The volume, the class regions
and the entropy all come from the same pass (:func:`richviz.views.slice_frame`), so the
heatmap shown is not part of the key. Callers that already hold grids (the slice viewer's
cache) lend them through a :class:`KeyedStore`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from richviz.lru import LRUCache

__all__ = [
    "FIELDS",
    "FieldStore",
    "KeyedStore",
    "RunFieldStore",
    "gather",
    "slice_key",
]


#: the process-wide cache of animation grids (``hits`` / ``misses`` count the lookups)
FIELDS = LRUCache(256)


class FieldStore(Protocol):
    """Where an export finds and keeps the grid of one checkpoint."""

    def get(self, step: int) -> Any: ...

    def put(self, step: int, record: Any) -> None: ...


def slice_key(slice: Any) -> str:  # noqa: A002 - the geometry name
    """A short hash of a :class:`richviz.geometry.Slice` (origin, basis, window, kind)."""
    h = hashlib.sha256()
    for t in (slice.origin, slice.basis):
        h.update(t.detach().cpu().double().contiguous().numpy().tobytes())
    h.update(repr((slice.u_range, slice.v_range, slice.kind)).encode())
    return h.hexdigest()[:16]


class RunFieldStore:
    """The grids of ``run`` on ``slice`` at ``resolution`` and ``layer``, in ``cache``."""

    def __init__(self, run: Any, slice: Any, resolution: int, layer: str,  # noqa: A002
                 cache: LRUCache = FIELDS):  # fmt: skip
        identity = json.dumps(run.identity, sort_keys=True, default=repr)
        self._base = (str(run.path.resolve()), identity, slice_key(slice), resolution, layer)
        self._run = run
        self.cache = cache

    def _key(self, step: int) -> Hashable:
        ck = self._run.checkpoint(step)
        # (size, mtime) of its file, or of all its files (a sharded checkpoint)
        return (*self._base, int(step), str(ck.path), tuple(ck.fingerprint()))

    def get(self, step: int) -> Any:
        return self.cache.get(self._key(step))

    def put(self, step: int, record: Any) -> None:
        self.cache.put(self._key(step), record)


class KeyedStore:
    """A :class:`FieldStore` over another cache's ``get``/``put`` with its own keys
    (``key(step)``): how the slice viewer lends its grid cache to an export."""

    def __init__(self, cache: Any, key: Callable[[int], Hashable]):
        self.cache = cache
        self._key = key

    def get(self, step: int) -> Any:
        return self.cache.get(self._key(step))

    def put(self, step: int, record: Any) -> None:
        self.cache.put(self._key(step), record)


def gather(
    steps: Sequence[int],
    store: FieldStore,
    compute: Callable[[int], Any],
    report: Callable[[int], object] = lambda done: None,
) -> tuple[list[Any], int]:
    """The grid of every step in ``steps``: from ``store``, else ``compute(step)`` (then
    stored). Returns ``(grids, number computed)``; ``report(done)`` after each step."""
    grids, computed = [], 0
    for i, step in enumerate(steps):
        grid = store.get(step)
        if grid is None:
            grid = compute(step)
            computed += 1
            store.put(step, grid)
        grids.append(grid)
        report(i + 1)
    return grids, computed
