"""One animation frame on a page: the headline line (step, test accuracy, D_LR, boundary
magnification) on top, the slice view below it (drawn by :func:`.slice_export.draw_slice`, as
in the viewer's PNG/SVG export: heatmap, ellipses, boundary, points, axes, colour bar, legend)
and optionally the metric curves with a cursor at the frame's step on the right; rasterised
with :func:`.export.to_image`. Headless (no widgets).
"""

from __future__ import annotations

import math

import numpy as np

from richviz.animation.headline import Curves
from richviz.widgets import export, rendering
from richviz.widgets.slice_export import draw_slice
from richviz.widgets.slice_records import Frame, SliceContext

__all__ = [
    "CURVE_COLORS",
    "HEADER",
    "curves_height",
    "draw_curves",
    "frame_canvas",
    "rasterize",
    "view_size",
]

HEADER = 30.0  # px above the slice view, for the headline line
CURVE_COLORS = ("#0072b2", "#d55e00", "#009e73")
_TITLES = {"test_acc": "test accuracy", "d_lr": "D_LR",
           "boundary_magnification": "boundary magnification (decades)"}  # fmt: skip
_PANEL = (300.0, 110.0)  # px, width and height of one curve's plot area
_GAP = 48.0  # px between panels: title and tick labels
_CURVES_WIDTH = _PANEL[0] + 90.0


def _limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(0.05, 0.05 * abs(hi))
    return lo - pad, hi + pad


def curves_height(curves: Curves) -> float:
    """Height in CSS pixels of the panels of ``curves``."""
    return len(curves.values) * (_PANEL[1] + _GAP)


def draw_curves(canvas: export.Canvas, curves: Curves, step: int, x0: float, y0: float) -> None:
    """One panel per curve (log axis of step + 1, as in the metrics panel) with the top-left
    corner at (x0, y0), and a cursor at ``step``: a dashed line, a dot on each curve."""
    width, height = _PANEL
    xs = np.log10(curves.steps + 1.0)
    a0, a1 = float(xs.min()), float(xs.max())
    a1 = a1 if a1 > a0 else a0 + 1.0
    ticks = rendering.step_ticks(float(curves.steps.max()) + 1.0)
    left = x0 + 50.0
    cx = left + (math.log10(step + 1.0) - a0) / (a1 - a0) * width
    at = np.flatnonzero(curves.steps == step)
    for k, (key, values) in enumerate(curves.values.items()):
        top = y0 + k * (height + _GAP) + 20.0
        b0, b1 = _limits(values)

        def ty(v: object, top: float = top, b0: float = b0, b1: float = b1) -> np.ndarray:
            return top + (1 - (np.asarray(v, float) - b0) / (b1 - b0)) * height

        canvas.text(left, top - 6, _TITLES.get(key, key), size=11, weight="bold")
        canvas.rect(left, top, width, height, stroke="#888")
        yt = rendering.nice_ticks(b0, b1, 4)
        for t, text in zip(yt, rendering.format_ticks(yt, rendering.tick_format(yt)), strict=True):
            canvas.polyline([left - 4, left], [float(ty(t))] * 2, "#444")
            canvas.text(left - 7, float(ty(t)) + 3.5, text, size=9, anchor="end")
        for t in ticks:
            x = left + (math.log10(t) - a0) / (a1 - a0) * width
            if left - 0.5 <= x <= left + width + 0.5:
                canvas.polyline([x, x], [top + height, top + height + 4], "#444")
                canvas.text(x, top + height + 15, f"{t:g}", size=9, anchor="middle")
        colour = CURVE_COLORS[k % len(CURVE_COLORS)]
        if not np.isfinite(values).any():
            canvas.text(left + width / 2, top + height / 2, "not defined for this run",
                        size=10, anchor="middle", color="#777")  # fmt: skip
        canvas.polyline(left + (xs - a0) / (a1 - a0) * width, ty(values), colour, width=1.6)
        canvas.polyline([cx, cx], [top, top + height], "#222", width=1.0, dash="dashed")
        if at.size and math.isfinite(values[at[0]]):
            canvas.marker(cx, float(ty(values[at[0]])), "circle", 7.0, colour, "#202020")
    bottom = y0 + curves_height(curves) - _GAP + 20.0
    canvas.text(left + width / 2, bottom + 31, "step + 1 (log)", size=10, anchor="middle")


def view_size(frame: Frame, ctx: SliceContext | None) -> tuple[float, float]:
    """(width, height) in CSS pixels of the slice view of ``frame`` as drawn alone."""
    view = draw_slice(frame, ctx)  # a page that fits the view
    return view.width, view.height


def frame_canvas(
    frame: Frame,
    ctx: SliceContext | None,
    caption: str,
    curves: Curves | None = None,
    size: tuple[float, float] | None = None,
) -> export.Canvas:
    """The page of one frame (CSS pixels): headline, slice view and (``curves``) the curves.

    ``size``: the view's :func:`view_size` when known (the same for every frame of a run).
    """
    vw, vh = size if size is not None else view_size(frame, ctx)
    width = vw + (_CURVES_WIDTH if curves is not None else 0.0)
    height = HEADER + max(vh, curves_height(curves) if curves is not None else 0.0)
    canvas = export.Canvas(width, height)
    canvas.text(12, 20, caption, size=14, weight="bold")
    draw_slice(frame, ctx, canvas, 0.0, HEADER)
    if curves is not None:
        draw_curves(canvas, curves, frame.step, vw, HEADER + 8)
    return canvas


def rasterize(canvas: export.Canvas, scale: float = 1.0) -> np.ndarray:
    """The page as an (H, W, 3) uint8 RGB array, ``scale`` pixels per CSS pixel, padded with
    white to even sides (what H.264 video needs)."""
    rgb = np.asarray(export.to_image(canvas, scale))
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
    return rgb
