"""Curves of a run's metric rows: the x axis (step or fraction of training) and EMA smoothing.

Pure numpy on plain rows (``Run.metrics()`` rows: dicts with ``step`` and metric keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from richviz.errors import ArgumentError

__all__ = ["X_AXES", "column", "curve", "ema", "x_values"]

#: "step": step + 1 (a log axis cannot show 0, as in the metrics panel); "fraction": step
#: divided by the run's last step, in [0, 1] (runs of different lengths side by side)
X_AXES = ("step", "fraction")


def column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """Values of ``key`` over ``rows`` as float64 (NaN where missing or not a number)."""
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = float(v)
    return out


def x_values(steps: Sequence[int] | np.ndarray, axis: str = "step") -> np.ndarray:
    """The x coordinates of ``steps`` (ascending) on ``axis`` (:data:`X_AXES`).

    ``"fraction"`` divides by the last step (a run with only step 0 sits at 0).
    """
    s = np.asarray(steps, float)
    if axis == "step":
        return s + 1.0
    if axis == "fraction":
        last = float(s.max()) if s.size else 0.0
        return s / last if last > 0 else np.zeros_like(s)
    raise ArgumentError(f"x_axis={axis!r} must be one of {', '.join(X_AXES)}")


def ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average: ``s_0 = v_0``, ``s_t = w s_(t-1) + (1 - w) v_t``.

    ``weight`` w in [0, 1) (0: no smoothing). A NaN value is skipped (its output is NaN and
    the average carries over it); the first finite value starts the average. In closed form
    (no NaN) ``s_t = w^t v_0 + (1 - w) sum_(k=1..t) w^(t-k) v_k``.

    Examples
    --------
    >>> from richviz.compare import ema
    >>> ema([0.0, 1.0, 1.0], 0.5).tolist()
    [0.0, 0.5, 0.75]
    """
    if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and 0 <= weight < 1):
        raise ArgumentError(f"smoothing weight={weight!r} must be a number in [0, 1)")
    v = np.asarray(values, float)
    out = np.full(v.shape, np.nan)
    state = None
    for i, x in enumerate(v):
        if not np.isfinite(x):
            continue
        state = x if state is None else weight * state + (1.0 - weight) * x
        out[i] = state
    return out


def curve(
    rows: Sequence[Mapping[str, Any]], key: str, axis: str = "step", smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of metric ``key`` over ``rows`` (sorted by step), EMA-smoothed by
    ``smoothing`` (0: raw)."""
    rows = sorted(rows, key=lambda r: r.get("step", 0))
    x = x_values([int(r.get("step", 0)) for r in rows], axis)
    y = column(rows, key)
    return x, (ema(y, smoothing) if smoothing else y)
