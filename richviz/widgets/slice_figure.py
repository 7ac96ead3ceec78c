"""The slice viewer's figure: a square bqplot figure (heatmap image, ellipse, boundary and
theory lines, data points, anchors) with a colour-bar figure beside it, and how a frame record
is drawn onto them.

A mixin of :class:`richviz.widgets.slice_viewer.SliceViewer` (it uses the viewer's
``_apply_lock``, ``_worker``, ``legend``, ``thumbnails``, anchor pickers and status line).
"""

from __future__ import annotations

import html
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import torch

from richviz.widgets import rendering
from richviz.widgets.slice_compose import colorbar_pixels, legend_entries
from richviz.widgets.slice_records import (
    COLORBAR_TICKS,
    COLORBAR_WIDTH,
    EMPHASIS_COLOR,
    FIGURE_MARGIN,
    FIGURE_SIZE,
    THEORY_COLOR,
    Frame,
    SliceContext,
)

__all__ = ["SliceFigure", "colorbar_figure", "legend_html"]


def legend_html(entries: list[tuple[str, str, str]]) -> str:
    """The legend row as HTML: a small SVG sample and an escaped label per entry."""
    items = []
    for kind, color, label in entries:
        c = html.escape(color)
        if kind == "point":
            sample = f'<circle cx="7" cy="6" r="4.5" fill="{c}" stroke="#202020"/>'
            width = 14
        else:
            dash = ' stroke-dasharray="4,3"' if kind == "dash" else ""
            outline = '<line x1="1" y1="6" x2="21" y2="6" stroke="#888" stroke-width="4"/>'
            sample = (outline if color == THEORY_COLOR else "") + (
                f'<line x1="1" y1="6" x2="21" y2="6" stroke="{c}" stroke-width="2"{dash}/>'
            )
            width = 22
        items.append(
            '<span style="white-space:nowrap;margin-right:12px">'
            f'<svg width="{width}" height="12" style="vertical-align:middle">{sample}</svg> '
            f"{html.escape(label)}</span>"
        )
    return (
        '<div class="richviz-legend" style="font-size:11px;padding-left:50px">'
        f"{''.join(items)}</div>"
    )


def colorbar_figure(
    label: str, height: int, ticks: list[float] | None = None
) -> tuple[bqplot.Figure, bqplot.Image, bqplot.Axis]:
    """The colour bar beside a slice view: (figure, gradient mark, value axis).

    A figure of its own (a ColorAxis inside the slice figure is drawn over the plot): a
    vertical viridis gradient image on a linear value axis (0..1 until a frame sets it), its
    top and bottom aligned with the slice's plot area (``FIGURE_MARGIN``); ``ticks``: initial
    tick values (default: bqplot's).
    """
    margin = FIGURE_MARGIN
    sy = bqplot.LinearScale(min=0.0, max=1.0)
    mark = bqplot.Image(
        image=widgets.Image(
            value=rendering.encode_png(rendering.colorbar_rgba("viridis")), format="png"
        ),
        scales={"x": bqplot.LinearScale(min=0.0, max=1.0), "y": sy},
        x=[0.0, 1.0],
        y=[0.0, 1.0],
    )
    tick_args = {} if ticks is None else {
        "tick_values": ticks, "tick_format": rendering.tick_format(ticks)
    }  # fmt: skip
    axis = bqplot.Axis(
        scale=sy, side="right", grid_lines="none", label=label, label_offset="48px",
        tick_style={"font-size": "11px"}, **tick_args,
    )  # fmt: skip
    figure = bqplot.Figure(
        marks=[mark],
        axes=[axis],
        padding_x=0.0,
        padding_y=0.0,
        fig_margin={"top": margin["top"], "bottom": margin["bottom"], "left": 4, "right": 62},
        layout=widgets.Layout(width=f"{COLORBAR_WIDTH}px", height=f"{height}px", flex="0 0 auto"),
    )
    return figure, mark, axis


class SliceFigure:
    """Mixin: builds the figure marks and draws frames and slice contexts onto them."""

    _ctx: SliceContext | None
    frame: Frame | None

    def _build_figure(self) -> None:
        self._image_widget = widgets.Image(
            value=rendering.encode_png(np.zeros((1, 1, 4), np.uint8)), format="png"
        )
        self._sx = bqplot.LinearScale(min=-1.0, max=1.0)
        self._sy = bqplot.LinearScale(min=-1.0, max=1.0)
        xy = {"x": self._sx, "y": self._sy}
        self.image_mark = bqplot.Image(image=self._image_widget, scales=xy, x=[-1, 1], y=[-1, 1])
        self.ellipse_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=["white"], stroke_width=1.0, opacities=[0.85]
        )
        self.ellipse_near_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=[EMPHASIS_COLOR], stroke_width=1.8
        )
        self.boundary_mark = bqplot.Lines(x=[], y=[], scales=xy, colors=["black"], stroke_width=2.0)
        self.theory_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=[THEORY_COLOR], stroke_width=1.2, line_style="dashed"
        )
        # level labels of the theory contours
        self.theory_label_mark = bqplot.Label(
            x=[], y=[], text=[], scales=xy, colors=[THEORY_COLOR], default_size=11,
            font_weight="bold", align="middle",
        )  # fmt: skip
        # class colours (Okabe-Ito) filled, a dark rim so they read on any background
        self.points_mark = bqplot.Scatter(
            x=[], y=[], scales=xy, default_size=22, stroke="#202020", stroke_width=0.8,
            opacities=[0.95],
        )  # fmt: skip
        self.anchor_mark = bqplot.Scatter(
            x=[], y=[], scales=xy, marker="diamond", default_size=80, stroke="black",
            display_names=True,
        )  # fmt: skip
        self.axes = axes = [
            bqplot.Axis(scale=self._sx, label="u", grid_lines="none", tick_values=[]),
            bqplot.Axis(scale=self._sy, label="v", side="left", grid_lines="none", tick_values=[]),
        ]
        # bqplot applies the aspect ratio to the whole figure box (non-auto layout): a square
        # box with left + right == top + bottom margins gives a square plot area.
        self.figure = bqplot.Figure(
            marks=self._marks_for([]),
            axes=axes,
            min_aspect_ratio=1.0,
            max_aspect_ratio=1.0,
            padding_x=0.0,
            padding_y=0.0,
            title="log10 volume element",
            title_style={"font-size": "13px"},
            fig_margin=dict(FIGURE_MARGIN),
            layout=widgets.Layout(width=f"{FIGURE_SIZE}px", height=f"{FIGURE_SIZE}px"),
        )
        self.figure.layout.flex = "0 0 auto"
        self._build_colorbar()

    def _build_colorbar(self) -> None:
        self._colorbar_cmap = "viridis"
        ticks = rendering.nice_ticks(0.0, 1.0, COLORBAR_TICKS)
        self.colorbar, self.colorbar_mark, self.color_axis = colorbar_figure(
            "log10 volume", FIGURE_SIZE, ticks
        )
        self._cb_sy = self.color_axis.scale

    @property
    def _line_marks(self) -> list[bqplot.Lines]:
        return [self.ellipse_mark, self.ellipse_near_mark, self.theory_mark, self.boundary_mark]

    def _marks_for(self, lines: list[bqplot.Lines]) -> list[bqplot.Mark]:
        """Figure marks in drawing order with the given (non-empty) Lines marks."""
        ordered = [m for m in self._line_marks if m in lines]
        labels = [self.theory_label_mark] if len(self.theory_label_mark.x) else []
        return [self.image_mark, *ordered, *labels, self.points_mark, self.anchor_mark]

    @staticmethod
    def _colorbar_png(cmap: str) -> bytes:
        return rendering.encode_png(rendering.colorbar_rgba(cmap))

    def _draw_colorbar(self, frame: Frame) -> None:
        """Colour bar for ``frame``: gradient (or class swatches), range, round ticks, label."""
        key = f"classes{frame.classes}" if frame.cmap == "classes" else frame.cmap
        if key != self._colorbar_cmap:
            old = self.colorbar_mark.image  # bqplot redraws on a new image widget only
            self.colorbar_mark.image = widgets.Image(
                value=rendering.encode_png(colorbar_pixels(frame)), format="png"
            )
            old.close()
            self._colorbar_cmap = key
        with self._cb_sy.hold_sync():
            self._cb_sy.min, self._cb_sy.max = frame.vmin, frame.vmax
        self.colorbar_mark.y = [frame.vmin, frame.vmax]
        ticks = (
            np.arange(frame.classes, dtype=float)
            if frame.cmap == "classes"
            else rendering.nice_ticks(frame.vmin, frame.vmax, COLORBAR_TICKS)
        )
        # Format first, in its own message: bqplot redraws the axis on new tick values and
        # would label them with the old format if both changed in one update.
        self.color_axis.tick_format = rendering.tick_format(ticks)
        self.color_axis.tick_values = ticks
        self.color_axis.label = frame.bar_label

    def _draw_axes(self, frame: Frame) -> None:
        (u0, u1), (v0, v1) = frame.extent
        (x0, x1), (y0, y1) = rendering.square_limits((u0, u1), (v0, v1))
        with self._sx.hold_sync():
            self._sx.min, self._sx.max = x0, x1
        with self._sy.hold_sync():
            self._sy.min, self._sy.max = y0, y1
        for axis, (lo, hi) in zip(self.axes, ((x0, x1), (y0, y1)), strict=True):
            ticks = rendering.nice_ticks(lo, hi, 6)  # a few round ticks, never a crowd
            if len(axis.tick_values) != len(ticks) or not np.allclose(axis.tick_values, ticks):
                axis.tick_format = rendering.tick_format(ticks)
                axis.tick_values = ticks

    def _draw_image(self, frame: Frame) -> None:
        (u0, u1), (v0, v1) = frame.extent
        # bqplot's Image view redraws on a new ``image`` widget, not on its value: swap it.
        old = self.image_mark.image
        self._image_widget = widgets.Image(value=frame.png, format="png")
        self.image_mark.image = self._image_widget
        old.close()
        with self.image_mark.hold_sync():
            self.image_mark.x = [u0, u1]
            self.image_mark.y = [v0, v1]

    def _draw_lines(self, frame: Frame) -> None:
        ellipse_colour = "white" if frame.cmap == "viridis" else "#404040"
        if list(self.ellipse_mark.colors) != [ellipse_colour]:
            self.ellipse_mark.colors = [ellipse_colour]  # contrast on light diverging colours
        tx, ty, texts = frame.theory_labels or (np.array([]), np.array([]), [])
        with self.theory_label_mark.hold_sync():
            self.theory_label_mark.x, self.theory_label_mark.y = tx, ty
            self.theory_label_mark.text = list(texts)
        for mark, (xs, ys) in (
            (self.ellipse_mark, frame.ellipses),
            (self.ellipse_near_mark, frame.ellipses_near),
            (self.boundary_mark, frame.boundary),
            (self.theory_mark, frame.theory_lines),
        ):
            if len(xs) and np.isnan(xs[-1]):
                # bqplot puts a curve label at the last point: it must not be NaN
                xs, ys = xs[:-1], ys[:-1]
            with mark.hold_sync():
                mark.x, mark.y = xs, ys
        # Only non-empty Lines marks go into the figure: bqplot draws an empty one as an
        # invalid path and places its curve label at an undefined point.
        marks = self._marks_for([m for m in self._line_marks if len(m.x)])
        if marks != list(self.figure.marks):
            self.figure.marks = marks

    def _apply(self, generation: int, frame: Frame, ctx: SliceContext) -> None:
        """Draw ``frame`` unless a newer job started (``generation``); update the status."""
        with self._apply_lock:
            if generation != self._worker.generation:
                return
            self._draw_axes(frame)
            self._draw_colorbar(frame)
            self.figure.title = frame.label
            self._draw_image(frame)
            self._draw_lines(frame)
            self.frame = frame
            self.legend.value = self._legend_html(frame)
            with self.hold_trait_notifications():
                self.shown_step = frame.step
                self.shown_resolution = frame.resolution
            done = "" if frame.resolution == self.resolution else " (coarse preview)"
            note = f" · {frame.note}" if frame.note else ""
            self._status(
                f"step {frame.step} · {frame.layer} · {frame.resolution}×{frame.resolution}{done}"
                f"{note}"
            )

    def _legend_entries(self, frame: Frame) -> list[tuple[str, str, str]]:
        """(kind, colour, label) of what the figure shows: classes, lines, ellipses."""
        return legend_entries(frame, self._ctx.labels if self._ctx is not None else None)

    def _legend_html(self, frame: Frame) -> str:
        return legend_html(self._legend_entries(frame))

    def _apply_context(self, ctx: SliceContext, x_images: torch.Tensor | None) -> None:
        """Draw the slice's data points, or its anchors with their thumbnails and pickers."""
        with self._apply_lock:
            if ctx.points is not None:
                colors = (
                    [rendering.class_color(c) for c in ctx.labels]
                    if ctx.labels is not None
                    else ["#444444"]
                )
                with self.points_mark.hold_sync():
                    self.points_mark.x, self.points_mark.y = ctx.points[:, 0], ctx.points[:, 1]
                    self.points_mark.colors = colors
            if ctx.anchors is not None:
                self._apply_anchors(ctx, len(x_images) if x_images is not None else 0)

    def _apply_anchors(self, ctx: SliceContext, n: int) -> None:
        with self.anchor_mark.hold_sync():
            self.anchor_mark.x, self.anchor_mark.y = ctx.anchors[:, 0], ctx.anchors[:, 1]
            self.anchor_mark.names = ["A", "B", "C"][: len(ctx.anchors)]
            self.anchor_mark.colors = ["#ffffff"]
        self.thumbnails.children = [
            widgets.VBox(
                [
                    widgets.Image(value=png, format="png", width=64, height=64),
                    widgets.Label(label),
                ],
                layout={"margin": "0 16px 0 0", "align_items": "center"},
            )
            for png, label in zip(ctx.thumbnails, ctx.anchor_labels, strict=True)
        ]
        self._controls_sync = True
        try:
            for picker, i in zip(self.anchor_pickers, ctx.anchor_indices, strict=False):
                picker.max = max(n - 1, 0)
                picker.value = i
        finally:
            self._controls_sync = False
        self.anchor_row.layout.display = "flex"

    # the viewer provides these
    _apply_lock: Any
    _worker: Any
    _controls_sync: bool
