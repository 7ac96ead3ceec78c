"""Chart axes: the ranges, ticks and tick labels of the project's bqplot axes.

Log axes are labelled with powers of ten, ``10⁻³ … 10²`` (never ``1e+0``), keyed by how
JavaScript writes the tick's number (bqplot looks ``tick_labels`` up that way); every axis has
at most :data:`MAX_TICKS` ticks. :mod:`richviz.widgets.charts` fits its axes with these, and any
other bqplot figure can (:func:`fit_axis`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import bqplot
import numpy as np

from richviz.errors import ArgumentError
from richviz.widgets import rendering

__all__ = [
    "MAX_TICKS",
    "finite_range",
    "fit_axis",
    "js_number",
    "log_axis_ticks",
    "power_label",
    "set_axis_ticks",
    "two_decade_ticks",
]

MAX_TICKS = 6
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_label(k: int) -> str:
    """``10`` with the exponent ``k`` in superscript: ``power_label(-3) == "10⁻³"``."""
    return "10" + str(int(k)).translate(_SUPERSCRIPT)


def js_number(value: float) -> str:
    """How JavaScript's ``String(number)`` writes a power of ten (keys of ``tick_labels``)."""
    k = round(math.log10(value))
    if 0 <= k < 21:
        return "1" + "0" * k
    if -7 < k < 0:
        return "0." + "0" * (-k - 1) + "1"
    return f"1e{k:+d}"


def log_axis_ticks(
    lo: float, hi: float, max_ticks: int = MAX_TICKS
) -> tuple[float, float, list[int]]:
    """Decade-aligned range and exponents of the ticks for data in ``[lo, hi]`` (lo > 0).

    Returns ``(lo', hi', exponents)``: the range widened to whole decades, and at most
    ``max_ticks`` exponents (every decade, or every 2nd, 3rd, ... when there are many).
    """
    if not (lo > 0 and hi > 0):
        raise ArgumentError(f"log axis range [{lo}, {hi}] must be positive")
    k0, k1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if k1 <= k0:
        k1 = k0 + 1
    stride = max(1, math.ceil((k1 - k0 + 1) / max_ticks))
    exps = list(range(k0, k1 + 1, stride))
    return 10.0**k0, 10.0**k1, exps


def set_axis_ticks(
    axis: bqplot.Axis, limits: tuple[float, float], ticks: Sequence[float], log: bool
) -> tuple[list[float], list[str]]:
    """Set ``axis``'s scale to ``limits`` and its ticks (at most :data:`MAX_TICKS`): powers of
    ten labelled ``10ᵏ`` on a log axis, a common format on a linear one. Returns the ticks and
    their labels."""
    ticks = [float(t) for t in ticks][:MAX_TICKS]
    if log:
        ticks = [float(f"1e{round(math.log10(t))}") for t in ticks]
        text = [power_label(round(math.log10(t))) for t in ticks]
        fmt = ""
    else:
        fmt = rendering.tick_format(np.asarray(ticks)) if ticks else ".2g"
        text = rendering.format_ticks(np.asarray(ticks), fmt) if ticks else []
    with axis.scale.hold_sync():
        axis.scale.min, axis.scale.max = float(limits[0]), float(limits[1])
    # labels and format before the values: the axis redraws on new tick values
    if log:
        axis.tick_labels = {js_number(t): s for t, s in zip(ticks, text, strict=True)}
    else:
        axis.tick_labels = {}
        axis.tick_format = fmt
    axis.tick_values = ticks
    return ticks, text


def fit_axis(axis: bqplot.Axis, values: np.ndarray, log: bool, pad: float = 0.06) -> list[str]:
    """Fit ``axis`` to the finite ``values`` (positive ones on a log axis), padded by ``pad`` of
    the span on both sides so no point sits on the axis line, with the ticks of
    :func:`set_axis_ticks`; returns the tick labels."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    if log:
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
        _, _, exps = log_axis_ticks(lo, max(hi, lo * 1.0001))
        a, b = math.log10(lo), math.log10(max(hi, lo * 1.0001))
        d = max(b - a, 0.3) * pad
        limits = (10 ** (a - d), 10 ** (b + d))
        ticks = [10.0**k for k in exps if limits[0] <= 10.0**k <= limits[1]]
    else:
        lo, hi = finite_range(finite) or (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
        d = (hi - lo) * pad
        limits = (lo - d, hi + d)
        ticks = [t for t in rendering.nice_ticks(lo, hi, MAX_TICKS) if limits[0] <= t <= limits[1]]
    return set_axis_ticks(axis, limits, ticks, log)[1]


def two_decade_ticks(
    lo: float, hi: float, limits: tuple[float, float]
) -> tuple[tuple[float, float], list[float]]:
    """Log-axis ``limits`` widened to the power of ten at or below ``lo`` and, if that still
    leaves one, the one at or above ``hi``, with those powers as ticks (at least two)."""
    k0 = math.floor(math.log10(lo) + 1e-9)
    k1 = max(k0 + 1, math.ceil(math.log10(hi) - 1e-9))
    low = min(limits[0], 10.0**k0)
    ticks = [10.0**k for k in range(k0, k1 + 1) if 10.0**k <= limits[1]]
    if len(ticks) < 2:
        ticks = [10.0**k0, 10.0**k1]
    high = max(limits[1], ticks[-1])
    return (low, high), ticks


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of the finite ``values``, or None when there are none."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    return float(finite.min()), float(finite.max())
