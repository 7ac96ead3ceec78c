"""The Playground's slice figure: a heatmap, its overlays, the data, and what one frame draws.

:func:`render_frame` turns a :class:`richviz.live.LiveView` into what the figure shows (a PNG
background, decision-boundary lines, metric ellipses); :class:`SliceFigure` owns the bqplot
figure, whose marks are fixed from the start (a figure whose marks change after display
re-creates their views), and moves a frame and the data points onto them.

Clicks come from the figure's own element (an ``ipyevents`` listener, attached once when the
figure is displayed), not from the heatmap mark: :func:`click_point` maps the click's pixel,
relative to the figure, through the plot area (figure size less :data:`FIGURE_MARGIN`) and the
scales to input coordinates. bqplot's ``Image.on_element_click`` depended on the heatmap mark's
view: its click listener is bound inside the mark's ``draw``, on a mark whose image widget is
replaced every frame, and in about half of some runs the page dispatched the click to the
heatmap and the kernel got no ``element_click``.
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
    "click_point",
    "legend_html",
    "render_frame",
]

FIGURE_SIZE = 440
FIGURE_MARGIN = {"top": 30, "bottom": 40, "left": 45, "right": 15}
CLICK_THROUGH_CLASS = "richviz-click-through"
#: the figure's lines (``.curve``/``.line``: ellipses, boundaries) and dots (``.dot``: data)
#: ignore the pointer (no hover tooltips over the plot; clicks are the figure's, see above)
CLICK_THROUGH_CSS = (
    f"<style>.{CLICK_THROUGH_CLASS} .curve, .{CLICK_THROUGH_CLASS} .line, "
    f".{CLICK_THROUGH_CLASS} .dot {{ pointer-events: none; }}</style>"
)

Lines = tuple[np.ndarray, np.ndarray]
Limits = tuple[float, float]


def click_point(
    event: dict[str, Any],
    x_limits: Limits,
    y_limits: Limits,
    margin: dict[str, float] | None = None,
) -> tuple[float, float] | None:
    """The input coordinates of a click on the figure, or ``None`` outside its plot area.

    ``event`` is the click as ipyevents sends it: ``relativeX``/``relativeY`` (pixels from the
    figure element's top-left corner; ``clientX - boundingRectLeft`` is used when given, it keeps
    fractions of a pixel) and ``boundingRectWidth``/``boundingRectHeight`` (the element's size).
    The plot area is the element less ``margin`` (default :data:`FIGURE_MARGIN`); x grows to
    the right from ``x_limits[0]``, y upwards from ``y_limits[0]`` (the scales' min, max, which
    span the whole plot area: scales without padding).

    Examples
    --------
    >>> from richviz.widgets.playground_figure import click_point
    >>> event = {"relativeX": 235, "relativeY": 215, "boundingRectWidth": 440,
    ...          "boundingRectHeight": 440}
    >>> click_point(event, (-1.0, 1.0), (-1.0, 1.0))  # the middle of the plot area
    (0.0, 0.0)
    >>> click_point({**event, "relativeX": 10}, (-1.0, 1.0), (-1.0, 1.0)) is None  # on an axis
    True
    """
    m = dict(FIGURE_MARGIN if margin is None else margin)
    try:
        width, height = float(event["boundingRectWidth"]), float(event["boundingRectHeight"])
        if "clientX" in event and "boundingRectLeft" in event:
            px = float(event["clientX"]) - float(event["boundingRectLeft"])
            py = float(event["clientY"]) - float(event["boundingRectTop"])
        else:
            px, py = float(event["relativeX"]), float(event["relativeY"])
    except (KeyError, TypeError, ValueError):
        return None
    plot_w = width - m["left"] - m["right"]
    plot_h = height - m["top"] - m["bottom"]
    fx, fy = (
        (px - m["left"]) / plot_w if plot_w > 0 else -1,
        (py - m["top"]) / plot_h if plot_h > 0 else -1,
    )
    if not (0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0):
        return None
    (x0, x1), (y0, y1) = x_limits, y_limits
    return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)


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

    ``on_click(x1, x2)`` is called with the input coordinates of each click inside the plot
    area (:func:`click_point`). Attributes: ``figure``; marks ``image_mark`` (the background),
    ``ellipse_mark``, ``boundary_mark``, ``points_mark``; scales ``sx``, ``sy``; ``clicks`` (the
    ipyevents listener on the figure); ``legend`` (HTML below the figure); ``css`` (a hidden
    HTML that makes the overlays pointer-transparent, so hovering them shows no tooltip).
    """

    def __init__(self, on_click: Callable[[float, float], None]):
        from ipyevents import Event

        self.on_click = on_click
        # no padding: the scales map onto the whole plot area, as click_point assumes (a
        # Scatter would pad its scales by its dots' radius, sqrt(size) / 2 + 1 px)
        self.sx = bqplot.LinearScale(min=-1.0, max=1.0, allow_padding=False)
        self.sy = bqplot.LinearScale(min=-1.0, max=1.0, allow_padding=False)
        xy = {"x": self.sx, "y": self.sy}
        blank = rendering.encode_png(np.full((1, 1, 4), 255, np.uint8))
        self.image_mark = bqplot.Image(
            image=widgets.Image(value=blank, format="png"), scales=xy, x=[-1, 1], y=[-1, 1]
        )
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
        # every click on the figure's element, whatever mark is under the pointer
        self.clicks = Event(source=self.figure, watched_events=["click"])
        self.clicks.on_dom_event(self._on_dom_click)

    def _on_dom_click(self, event: dict[str, Any]) -> None:
        point = click_point(event, (self.sx.min, self.sx.max), (self.sy.min, self.sy.max))
        if point is not None:
            self.on_click(*point)

    def close(self) -> None:
        """Close the click listener."""
        self.clicks.close()

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
