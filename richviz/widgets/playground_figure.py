"""The Playground's slice figure: a heatmap, its overlays, the data, and what one frame draws.

:func:`render_frame` turns a :class:`richviz.live.LiveView` into what the figure shows (a PNG
background, decision-boundary lines, metric ellipses); :class:`SliceFigure` owns the bqplot
figure, whose marks are fixed from the start (a figure whose marks change after display
re-creates their views, and the heatmap's new view could lose its click handler), and moves
a frame and the data points onto them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np

from richviz.live import LiveView
from richviz.widgets import rendering

__all__ = [
    "CLICK_THROUGH_CLASS",
    "CLICK_THROUGH_CSS",
    "FIGURE_MARGIN",
    "FIGURE_SIZE",
    "LiveFrame",
    "SliceFigure",
    "legend_html",
    "render_frame",
]

FIGURE_SIZE = 440
FIGURE_MARGIN = {"top": 30, "bottom": 40, "left": 45, "right": 15}
CLICK_THROUGH_CLASS = "richviz-click-through"
#: the figure's lines (``.curve``/``.line``: ellipses, boundaries) and dots (``.dot``: data)
#: ignore the pointer, so every click on the plot reaches the heatmap and adds a point
CLICK_THROUGH_CSS = (
    f"<style>.{CLICK_THROUGH_CLASS} .curve, .{CLICK_THROUGH_CLASS} .line, "
    f".{CLICK_THROUGH_CLASS} .dot {{ pointer-events: none; }}</style>"
)

Lines = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass
class LiveFrame:
    """What is on screen: the state drawn, its numbers and the background image."""

    step: int
    trajectory: int
    view: LiveView
    mode: str
    png: bytes
    boundary: Lines


def render_frame(
    view: LiveView, mode: str, density: int, step: int, trajectory: int
) -> tuple[LiveFrame, Lines]:
    """The frame of ``view`` with the ``mode`` background (``"volume"``, ``"classes"`` or
    ``"entropy"``) and its metric ellipses (``density`` per side, 0: none) as NaN-separated
    line coordinates."""
    if mode == "classes":
        rgba = rendering.class_regions_rgba(view.predicted)
    elif mode == "entropy":
        rgba = rendering.field_to_rgba(view.entropy, 0.0, 1.0, "viridis")
    else:
        vmin, vmax = rendering.color_limits(view.log10_volume)
        rgba = rendering.field_to_rgba(view.log10_volume, vmin, vmax, "viridis")
    png = rendering.encode_png(rgba)
    boundary = view.boundary
    if boundary is None:  # a view made without its boundary lines
        boundary = rendering.decision_boundary_lines(view.margin, view.predicted, view.u, view.v)
    ellipses: Lines = (np.array([]), np.array([]))
    if density > 0:
        from richviz.geometry import metric_ellipses

        e = metric_ellipses(view.field, density=min(density, len(view.u)))
        ellipses = (e.xs, e.ys)
    return LiveFrame(step, trajectory, view, mode, png, boundary), ellipses


def legend_html(classes: Iterable[int]) -> str:
    """The slice figure's legend: class dots, decision boundaries, ellipses."""
    dots = "".join(
        f'<span style="white-space:nowrap;margin-right:10px"><svg width="12" height="12" '
        f'style="vertical-align:middle"><circle cx="6" cy="6" r="4.5" '
        f'fill="{rendering.class_color(c)}" stroke="#202020"/></svg> class {int(c)}</span>'
        for c in classes
    )
    line = (
        '<span style="white-space:nowrap;margin-right:10px"><svg width="22" height="12" '
        'style="vertical-align:middle"><line x1="1" y1="6" x2="21" y2="6" stroke="{}" '
        'stroke-width="{}"/></svg> {}</span>'
    )
    return (
        '<div class="richviz-legend" style="font-size:11px;padding-left:40px">'
        f"{dots}{line.format('#000000', 2, 'decision boundaries')}"
        f"{line.format('#9a9a9a', 1, 'ellipses: how the features stretch a small disk')}</div>"
    )


class SliceFigure:
    """The bqplot figure of the Playground and its legend.

    Attributes: ``figure``; marks ``image_mark`` (the background, clicks call ``on_click``),
    ``ellipse_mark``, ``boundary_mark``, ``points_mark``; scales ``sx``, ``sy``; ``legend``
    (HTML below the figure); ``css`` (a hidden HTML that makes the overlays click-through).
    """

    def __init__(self, on_click: Callable[[Any, dict], None]):
        self.sx = bqplot.LinearScale(min=-1.0, max=1.0)
        self.sy = bqplot.LinearScale(min=-1.0, max=1.0)
        xy = {"x": self.sx, "y": self.sy}
        blank = rendering.encode_png(np.full((1, 1, 4), 255, np.uint8))
        self.image_mark = bqplot.Image(
            image=widgets.Image(value=blank, format="png"), scales=xy, x=[-1, 1], y=[-1, 1]
        )
        self.image_mark.on_element_click(on_click)
        nothing = {"x": [np.nan], "y": [np.nan]}
        self.ellipse_mark = bqplot.Lines(
            **nothing, scales=xy, colors=["white"], stroke_width=1.0, opacities=[0.8]
        )
        self.boundary_mark = bqplot.Lines(**nothing, scales=xy, colors=["black"], stroke_width=2)
        self.points_mark = bqplot.Scatter(
            x=[], y=[], scales=xy, default_size=28, stroke="white", stroke_width=0.8
        )
        axes = [
            bqplot.Axis(scale=self.sx, label="x1", grid_lines="none"),
            bqplot.Axis(scale=self.sy, label="x2", side="left", grid_lines="none"),
        ]
        # The overlays let clicks through to the heatmap (bqplot hit-tests its marks, so a
        # click on a boundary line, an ellipse or a data point would otherwise be lost).
        self.css = widgets.HTML(value=CLICK_THROUGH_CSS, layout=widgets.Layout(display="none"))
        self.figure = bqplot.Figure(
            marks=[self.image_mark, self.ellipse_mark, self.boundary_mark, self.points_mark],
            axes=axes,
            min_aspect_ratio=1.0,
            max_aspect_ratio=1.0,
            padding_x=0.0,
            padding_y=0.0,
            fig_margin=dict(FIGURE_MARGIN),
            title="click to add a point",
            title_style={"font-size": "13px"},
            layout=widgets.Layout(width=f"{FIGURE_SIZE}px", height=f"{FIGURE_SIZE}px"),
        )
        self.figure.add_class(CLICK_THROUGH_CLASS)
        self.legend = widgets.HTML(value=legend_html([]))

    def show(self, frame: LiveFrame, ellipses: Lines) -> None:
        """Move ``frame`` (background, boundaries) and ``ellipses`` onto the fixed marks."""
        (u0, u1), (v0, v1) = rendering.image_extent(frame.view.u, frame.view.v)
        (x0, x1), (y0, y1) = rendering.square_limits((u0, u1), (v0, v1))
        if (self.sx.min, self.sx.max, self.sy.min, self.sy.max) != (x0, x1, y0, y1):
            with self.sx.hold_sync():
                self.sx.min, self.sx.max = x0, x1
            with self.sy.hold_sync():
                self.sy.min, self.sy.max = y0, y1
        old = self.image_mark.image  # bqplot redraws on a new image widget, not a new value
        self.image_mark.image = widgets.Image(value=frame.png, format="png")
        old.close()
        if list(self.image_mark.x) != [u0, u1] or list(self.image_mark.y) != [v0, v1]:
            with self.image_mark.hold_sync():
                self.image_mark.x, self.image_mark.y = [u0, u1], [v0, v1]
        light = frame.mode != "volume"
        self.ellipse_mark.colors = ["#333333" if light else "white"]
        self.points_mark.stroke = "#222222" if light else "white"
        for mark, (xs, ys) in ((self.ellipse_mark, ellipses), (self.boundary_mark, frame.boundary)):
            if len(xs) and np.isnan(xs[-1]):
                xs, ys = xs[:-1], ys[:-1]  # bqplot labels a curve at its last point
            if not len(xs):  # nothing to draw: one invisible point (never an empty mark)
                xs, ys = np.array([np.nan]), np.array([np.nan])
            with mark.hold_sync():
                mark.x, mark.y = xs, ys

    def show_points(self, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
        """Draw the data ``x`` (N, 2) in the colours of their labels ``y`` (N,) and a legend of
        the classes that have points."""
        with self.points_mark.hold_sync():
            self.points_mark.x, self.points_mark.y = x[:, 0], x[:, 1]
            self.points_mark.colors = [rendering.class_color(c) for c in y] or ["#444444"]
        counts = np.bincount(y, minlength=num_classes) if len(y) else []
        self.legend.value = legend_html(range(len(counts)))
