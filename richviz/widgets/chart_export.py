"""A line chart's picture: :class:`richviz.widgets.charts.LineChart` drawn on a canvas.

:func:`chart_canvas` draws what the figure shows (title, axes, ticks, bands, lines, markers,
cursor) and its legend below the plot area on an :class:`richviz.widgets.export.Canvas`,
written as SVG or PNG by :mod:`richviz.widgets.export`; :func:`canvas_height` is the height
of that drawing. The chart's ticks and ranges are read from it, never recomputed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from richviz.widgets import export

if TYPE_CHECKING:
    from richviz.widgets.charts import LineChart

__all__ = ["canvas_height", "chart_canvas", "fill_band", "legend_columns"]


def legend_columns(width: float) -> int:
    """Legend entries per row in a picture ``width`` px wide (about 160 px each)."""
    return max(1, int((width - 20) // 160))


def canvas_height(chart: LineChart) -> float:
    """Height of :func:`chart_canvas`'s drawing of ``chart`` (chart plus legend rows)."""
    shown = sum(s.legend for s in chart.drawn)
    rows = max(1, math.ceil(shown / legend_columns(chart.width))) + bool(chart.note)
    return chart.height + 16 * rows + 6


def chart_canvas(
    chart: LineChart,
    canvas: export.Canvas | None = None,
    x0: float = 0.0,
    y0: float = 0.0,
    cursor: float | None = None,
) -> export.Canvas:
    """Draw ``chart`` (title, axes, ticks, lines, legend below) at (x0, y0) on ``canvas``.

    A new canvas of the chart's size is made when ``canvas`` is None; ``cursor`` draws a
    vertical cursor line at that x. Returns the canvas.
    """
    shown = [s for s in chart.drawn if s.legend]  # the legend's entries
    per_row = legend_columns(chart.width)
    if canvas is None:
        canvas = export.Canvas(chart.width, canvas_height(chart))
    m = chart.margin
    px0, py0 = x0 + m["left"], y0 + m["top"]
    pw, ph = chart.width - m["left"] - m["right"], chart.height - m["top"] - m["bottom"]

    def tx(v: np.ndarray) -> np.ndarray:
        lo, hi = chart.limits.get("x", (1.0, 10.0))
        v = np.asarray(v, float)
        if chart.x_log:
            with np.errstate(divide="ignore", invalid="ignore"):
                f = (np.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            f = (v - lo) / (hi - lo)
        return px0 + f * pw

    def ty(v: np.ndarray, side: str) -> np.ndarray:
        lo, hi = chart.limits.get(side, (0.0, 1.0))
        v = np.asarray(v, float)
        if chart.logs[side]:
            with np.errstate(divide="ignore", invalid="ignore"):
                f = (np.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            f = (v - lo) / (hi - lo)
        return py0 + (1 - f) * ph

    canvas.text(x0 + chart.width / 2, y0 + 18, chart.title, size=13, anchor="middle")
    canvas.rect(px0, py0, pw, ph, stroke="#888")
    for t, s in zip(chart.ticks.get("x", []), chart.tick_text.get("x", []), strict=True):
        x = float(tx(t))
        canvas.polyline([x, x], [py0 + ph, py0 + ph + 4], "#444")
        canvas.text(x, py0 + ph + 15, s, size=10, anchor="middle")
    canvas.text(px0 + pw / 2, py0 + ph + 32, chart.labels["x"], size=11, anchor="middle")
    for side in chart.scales:
        if side not in chart.limits:
            continue
        edge = px0 if side == "left" else px0 + pw
        sign = -1 if side == "left" else 1
        for t, s in zip(chart.ticks[side], chart.tick_text[side], strict=True):
            y = float(ty(t, side))
            canvas.polyline([edge, edge + 4 * sign], [y, y], "#444")
            canvas.text(edge + 7 * sign, y + 3.5, s, size=10,
                        anchor="end" if side == "left" else "start")  # fmt: skip
        if chart.labels[side]:
            lx = edge + 46 * sign
            canvas.text(lx, py0 + ph / 2, chart.labels[side], size=11, anchor="middle",
                        rotate=-90 if side == "left" else 90)  # fmt: skip
    for s in chart.drawn:
        if s.band is not None:
            fill_band(canvas, tx(s.x), ty(s.band[0], s.side), ty(s.band[1], s.side), s.color,
                      chart.band_opacity)  # fmt: skip
    for s in chart.drawn:
        y = np.asarray(s.y, float)
        xs, ys = tx(s.x), ty(y, s.side)
        canvas.polyline(xs, ys, s.color, width=2.0, dash=s.line_style, opacity=s.opacity)
        if s.marker:
            for a, b in zip(xs, ys, strict=True):
                if np.isfinite(a) and np.isfinite(b):
                    canvas.marker(a, b, s.marker, 5, s.color)
    if cursor is not None and "x" in chart.limits:
        cx = float(tx(cursor))
        canvas.polyline([cx, cx], [py0, py0 + ph], "#b00020", width=1.5)
    # legend below the plot area
    ly = y0 + chart.height + 8
    two = len({s.side for s in chart.drawn}) == 2
    for i, s in enumerate(shown):
        lx = x0 + 20 + (i % per_row) * (chart.width - 20) / per_row
        row = ly + 16 * (i // per_row)
        canvas.polyline([lx, lx + 22], [row, row], s.color, width=2.0, dash=s.line_style)
        if s.marker:
            canvas.marker(lx + 11, row, s.marker, 5, s.color)
        canvas.text(lx + 26, row + 4, chart.legend_label(s, two), size=10)
    if chart.note:
        row = ly + 16 * math.ceil(len(shown) / per_row)
        canvas.text(x0 + 20, row + 4, chart.note, size=10, color="#666")
    return canvas


def fill_band(
    canvas: export.Canvas,
    xs: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    color: str,
    opacity: float,
) -> None:
    """Fill between ``lo`` and ``hi`` (canvas coordinates over ``xs``) at ``opacity``, one
    polygon per run of finite points (NaN = a gap)."""
    xs, lo, hi = (np.asarray(v, float) for v in (xs, lo, hi))
    ok = np.isfinite(xs) & np.isfinite(lo) & np.isfinite(hi)
    start = None
    for i in range(len(xs) + 1):
        if i < len(xs) and ok[i]:
            start = i if start is None else start
            continue
        if start is not None and i - start >= 2:
            px = np.concatenate([xs[start:i], xs[start:i][::-1]])
            py = np.concatenate([hi[start:i], lo[start:i][::-1]])
            canvas.polygon(px, py, color, opacity=opacity)
        start = None
