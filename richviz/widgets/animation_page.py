"""One animation frame on a page: the headline line (step, test accuracy, D_LR, boundary
magnification) on top, the slice view below it (drawn by
:func:`richviz.widgets.slice_export.draw_slice`, as in the viewer's PNG/SVG export: heatmap,
ellipses, boundary, points, axes, colour bar, legend) and optionally the metric curves with a
cursor at the frame's step on the right; rasterised with :func:`richviz.widgets.export.to_image`.
"""

from __future__ import annotations

import numpy as np

from richviz.animation.curves import PANEL_WIDTH, Curves, draw_curves
from richviz.widgets import export
from richviz.widgets.slice_export import draw_slice
from richviz.widgets.slice_records import Frame, SliceContext

__all__ = ["HEADER", "frame_canvas", "rasterize", "view_size"]

HEADER = 30.0  # px above the slice view, for the headline line
_CURVES_WIDTH = PANEL_WIDTH + 90.0


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
    height = HEADER + max(vh, curves.height if curves is not None else 0.0)
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
