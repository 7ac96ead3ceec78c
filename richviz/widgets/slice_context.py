"""The slice a viewer shows and what depends on it only: the square covering 2-D data or the
plane through three inputs, the data points' slice coordinates, the anchors and thumbnails.

Pure functions over tensors (no widgets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from richviz.errors import ArgumentError, DataError
from richviz.widgets.common import thumbnail_png
from richviz.widgets.slice_records import MAX_POINTS, SliceContext, slice_points

if TYPE_CHECKING:
    from richviz.geometry import Slice

__all__ = ["anchor_indices", "build_context"]


def _numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=float)


def anchor_indices(x: torch.Tensor, y: torch.Tensor | None, anchors: list[int]) -> list[int]:
    """Three data indices spanning an image plane: ``anchors`` when three are given (checked
    against ``len(x)``), else the first inputs of three different classes (then the first
    inputs), for ``x`` (N, ...) and labels ``y`` (N,) or None."""
    n = len(x)
    if len(anchors) == 3:
        bad = [i for i in anchors if not 0 <= i < n]
        if bad:
            raise ArgumentError(f"anchors={list(anchors)}: indices must lie in [0, {n - 1}]")
        return list(anchors)
    idx: list[int] = []
    if y is not None:
        seen: set[int] = set()
        for i, label in enumerate(y.tolist()):
            if label not in seen:
                seen.add(label)
                idx.append(i)
            if len(idx) == 3:
                break
    for i in range(n):
        if len(idx) == 3:
            break
        if i not in idx:
            idx.append(i)
    if len(idx) < 3:
        raise DataError(f"an image plane needs three inputs, the data has {n}")
    return idx


def build_context(
    version: int,
    input_shape: tuple[int, ...],
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    *,
    slice: Slice | None = None,  # noqa: A002 - the geometry name
    margin: float = 0.1,
    anchors: list[int] | None = None,
) -> SliceContext:
    """The :class:`SliceContext` of a model with inputs of ``input_shape`` and data ``(x, y)``
    (either may be None).

    ``slice`` given: that slice. 2-D inputs: ``Slice.covering(x, margin)`` (the unit square
    without data) and at most ``MAX_POINTS`` data points in slice coordinates. Other inputs:
    the plane through three inputs (:func:`anchor_indices`), with their coordinates, labels
    and thumbnails.
    """
    from richviz.geometry import Slice  # when first needed: importing the widgets loads no numerics

    two_d = tuple(input_shape) == (2,)
    ctx = SliceContext(version=version, slice=None, two_d=two_d)
    if slice is not None:
        ctx.slice = slice
    elif two_d:
        ctx.slice = (
            Slice.covering(x, margin=margin) if x is not None else Slice.square(torch.zeros(2), 1.0)
        )
    else:
        if x is None:
            raise DataError("pass data=(x, y) or slice=... : an image slice needs three inputs")
        idx = anchor_indices(x, y, anchors or [])
        ctx.slice = Slice.plane(x[idx[0]], x[idx[1]], x[idx[2]])
        ctx.anchor_indices = list(idx)
        ctx.anchor_labels = [
            f"{'ABC'[k]} #{i}" + (f" (class {int(y[i])})" if y is not None else "")
            for k, i in enumerate(idx)
        ]
        ctx.thumbnails = [thumbnail_png(x[i]) for i in idx]
        ctx.anchors = _numpy(ctx.slice.to_uv(x[idx]))
    if x is not None and two_d:
        keep = slice_points(len(x), MAX_POINTS)
        ctx.points = _numpy(ctx.slice.to_uv(x[keep]))
        ctx.labels = y[keep].numpy() if y is not None else None
    return ctx
