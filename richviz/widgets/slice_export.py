"""The slice view drawn on an :class:`richviz.widgets.export.Canvas` (SVG/PNG), from a frame
record and the slice's context: title, heatmap, lines, points, anchors, axes, colour bar,
legend. Headless (no widgets); the viewer's ``canvas``/``save_png``/``save_svg``
(:class:`.slice_export_methods.SliceExport`) call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from richviz.widgets import export, rendering
from richviz.widgets.slice_compose import colorbar_pixels, legend_entries
from richviz.widgets.slice_records import (
    COLORBAR_TICKS,
    EMPHASIS_COLOR,
    FIGURE_MARGIN,
    THEORY_COLOR,
    Frame,
    SliceContext,
)

__all__ = ["EXPORT_SIZE", "draw_colorbar", "draw_slice", "heatmap_rgba"]

_SIZE = 400.0  # px, the plot area of an exported view
EXPORT_SIZE = _SIZE

Transform = Callable[[Any], np.ndarray]


def heatmap_rgba(frame: Frame) -> np.ndarray:
    """The heatmap's pixels (row 0 at the top), as on screen."""
    if frame.rgba is not None:
        return frame.rgba
    return rendering.field_to_rgba(frame.values, frame.vmin, frame.vmax, frame.cmap)


def _field_and_lines(canvas: export.Canvas, frame: Frame, tx: Transform, ty: Transform) -> None:
    (u0, u1), (v0, v1) = frame.extent
    ix0, ix1, iy0, iy1 = float(tx(u0)), float(tx(u1)), float(ty(v1)), float(ty(v0))
    canvas.image(heatmap_rgba(frame), ix0, iy0, ix1 - ix0, iy1 - iy0)
    ellipse_colour = "#ffffff" if frame.cmap == "viridis" else "#404040"
    for (xs, ys), colour, w, dash in (
        (frame.ellipses, ellipse_colour, 1.0, "solid"),
        (frame.ellipses_near, EMPHASIS_COLOR, 1.8, "solid"),
        (frame.theory_lines, THEORY_COLOR, 1.2, "dashed"),
        (frame.boundary, "#000000", 2.0, "solid"),
    ):
        if len(xs):
            canvas.polyline(tx(xs), ty(ys), colour, width=w, dash=dash)
    if frame.theory_labels is not None:
        for x, y, t in zip(*frame.theory_labels, strict=True):
            canvas.text(float(tx(x)), float(ty(y)), t, size=11, anchor="middle",
                        color=THEORY_COLOR, weight="bold")  # fmt: skip


def _points(canvas: export.Canvas, ctx: SliceContext | None, tx: Transform, ty: Transform) -> None:
    if ctx is not None and ctx.points is not None:
        labels = ctx.labels if ctx.labels is not None else np.zeros(len(ctx.points), int)
        for (x, y), c in zip(ctx.points, labels, strict=True):
            colour = rendering.class_color(c) if ctx.labels is not None else "#444444"
            canvas.marker(float(tx(x)), float(ty(y)), "circle", 5.0, colour, "#202020")
    if ctx is not None and ctx.anchors is not None:
        for (x, y), name in zip(ctx.anchors, "ABC", strict=False):
            canvas.marker(float(tx(x)), float(ty(y)), "diamond", 10.0, "#ffffff", "#000000")
            canvas.text(float(tx(x)) + 8, float(ty(y)) - 6, name, size=12, weight="bold")


def _axes(
    canvas: export.Canvas,
    px: float,
    py: float,
    limits: tuple[tuple[float, float], tuple[float, float]],
    tx: Transform,
    ty: Transform,
) -> None:
    size = _SIZE
    canvas.rect(px, py, size, size, stroke="#888")
    for axis, (lo, hi) in zip("uv", limits, strict=True):
        ticks = rendering.nice_ticks(lo, hi, 5)
        texts = rendering.format_ticks(ticks, rendering.tick_format(ticks)) if len(ticks) else []
        for t, text in zip(ticks, texts, strict=True):
            if axis == "u":
                x = float(tx(t))
                canvas.polyline([x, x], [py + size, py + size + 4], "#444")
                canvas.text(x, py + size + 16, text, size=10, anchor="middle")
            else:
                y = float(ty(t))
                canvas.polyline([px - 4, px], [y, y], "#444")
                canvas.text(px - 7, y + 3.5, text, size=10, anchor="end")
    canvas.text(px + size / 2, py + size + 32, "u", size=11, anchor="middle")
    canvas.text(px - 40, py + size / 2, "v", size=11, anchor="middle")


def _colorbar(canvas: export.Canvas, frame: Frame, bx: float, py: float) -> None:
    size = _SIZE
    canvas.image(colorbar_pixels(frame), bx, py, 14, size)
    canvas.rect(bx, py, 14, size, stroke="#888")
    if frame.cmap == "classes":
        ticks = np.arange(frame.classes, dtype=float)
        texts = [str(int(t)) for t in ticks]
    else:
        ticks = rendering.nice_ticks(frame.vmin, frame.vmax, COLORBAR_TICKS)
        texts = rendering.format_ticks(ticks, rendering.tick_format(ticks)) if len(ticks) else []
    for t, text in zip(ticks, texts, strict=True):
        y = py + (1 - (t - frame.vmin) / (frame.vmax - frame.vmin)) * size
        canvas.polyline([bx + 14, bx + 18], [y, y], "#444")
        canvas.text(bx + 21, y + 3.5, text, size=10)
    canvas.text(bx + 70, py + size / 2, frame.bar_label, size=11, anchor="middle", rotate=90)


def draw_colorbar(canvas: export.Canvas, frame: Frame, x: float, y: float) -> None:
    """The colour bar of ``frame`` (gradient, ticks with numbers, label) with its top-left
    corner at (x, y), as beside an exported view (``EXPORT_SIZE`` px tall)."""
    _colorbar(canvas, frame, x, y)


def _legend(
    canvas: export.Canvas, entries: list[tuple[str, str, str]], lx: float, ly: float
) -> None:
    for kind, colour, label in entries:
        if kind == "point":
            canvas.marker(lx + 6, ly - 4, "circle", 8.0, colour, "#202020")
            lx += 14
        else:
            if colour == THEORY_COLOR:
                canvas.polyline([lx, lx + 20], [ly - 4, ly - 4], "#888", width=4)
            canvas.polyline([lx, lx + 20], [ly - 4, ly - 4], colour, width=2,
                            dash="dashed" if kind == "dash" else "solid")  # fmt: skip
            lx += 24
        canvas.text(lx, ly, label, size=10)
        lx += 7 * len(label) + 14


def draw_slice(
    frame: Frame,
    ctx: SliceContext | None,
    canvas: export.Canvas | None = None,
    x0: float = 0.0,
    y0: float = 0.0,
    colorbar: bool = True,
) -> export.Canvas:
    """Draw the view of ``frame`` (title, heatmap, ellipses, boundary, points, anchors, axes,
    colour bar with ticks and label, legend) on ``canvas`` (default: a new one that fits) at
    (x0, y0); ``ctx`` gives the data points and anchors (or None). ``colorbar=False`` leaves
    the colour bar out (views side by side on one shared range draw it once)."""
    m = FIGURE_MARGIN
    size = _SIZE
    if canvas is None:
        canvas = export.Canvas(m["left"] + size + 110, m["top"] + size + m["bottom"] + 44)
    px, py = x0 + m["left"], y0 + m["top"]
    (u0, u1), (v0, v1) = frame.extent
    (a0, a1), (b0, b1) = rendering.square_limits((u0, u1), (v0, v1))

    def tx(u: Any) -> np.ndarray:
        return px + (np.asarray(u, float) - a0) / (a1 - a0) * size

    def ty(v: Any) -> np.ndarray:
        return py + (1 - (np.asarray(v, float) - b0) / (b1 - b0)) * size

    canvas.text(x0 + m["left"] + size / 2, y0 + 20, f"{frame.label} · step {frame.step}",
                size=13, anchor="middle")  # fmt: skip
    _field_and_lines(canvas, frame, tx, ty)
    _points(canvas, ctx, tx, ty)
    _axes(canvas, px, py, ((a0, a1), (b0, b1)), tx, ty)
    if colorbar:
        _colorbar(canvas, frame, px + size + 14, py)
    labels = ctx.labels if ctx is not None else None
    _legend(canvas, legend_entries(frame, labels), px, py + size + 50)
    return canvas
