"""Line charts: the one helper behind every line chart of the project.

A :class:`LineChart` is a bqplot figure with its scales and axes built once, before it is
displayed (nothing is swapped in later, so the axes render on the first display), and an HTML
legend below the plot area (never over the lines). Its rules:

- log axes are labelled with powers of ten, ``10⁻³ … 10²`` (never ``1e+0``), and every axis
  has at most ``MAX_TICKS`` ticks (:mod:`richviz.widgets.chart_axes`);
- on a log y axis, values at or below the floor (``hi · 10^-FLOOR_DECADES``, or the smallest
  positive value if higher) are drawn at the floor, so a series reaching 0 stays visible;
- missing values (NaN) are gaps, never joined across;
- series that coincide (within 1 % of the axis range wherever both are defined) get distinct
  dash patterns and markers, so three equal accuracy curves read as three;
- the x range is padded a little on both sides so a step cursor at the first or last point is
  not hidden by the axis line.

The same chart exports on the server: :meth:`LineChart.canvas` draws it (legend included) on an
:class:`richviz.widgets.export.Canvas` (:mod:`~richviz.widgets.chart_export`), written as SVG or
PNG by :mod:`richviz.widgets.export`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import bqplot
import ipywidgets as widgets
import numpy as np

from richviz.widgets import chart_export, export, rendering
from richviz.widgets.chart_axes import (
    MAX_TICKS,
    finite_range,
    log_axis_ticks,
    set_axis_ticks,
    two_decade_ticks,
)

__all__ = [
    "COLORS",
    "FLOOR_DECADES",
    "LINE_STYLES",
    "LineChart",
    "MARKERS",
    "Series",
    "coinciding",
    "legend_html",
]

FLOOR_DECADES = 4.0
#: Okabe & Ito's colour-blind-safe palette (black last)
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
LINE_STYLES = ("solid", "dashed", "dotted", "dash_dotted")
MARKERS = ("circle", "square", "triangle-up", "diamond")
BAND_OPACITY = 0.2  #: fill opacity of a series' band
_X_PAD = 0.03  # fraction of the x range added on both sides
_COINCIDE = 0.01  # series closer than this fraction of the axis range coincide


@dataclass
class Series:
    """One line: ``x``, ``y`` (NaN = missing), its legend label and axis side.

    ``color``, ``line_style`` and ``marker`` are picked by the chart when None.
    ``opacity`` < 1 draws the line faint (a raw curve behind its smoothed one); ``legend=False``
    keeps it out of the legend; ``band=(lo, hi)`` fills the area between two curves over the
    same ``x`` in the line's colour, faintly, under the line (a mean +- spread band).
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    side: str = "left"
    color: str | None = None
    line_style: str | None = None
    marker: str | None = None
    opacity: float = 1.0
    legend: bool = True
    band: tuple[Sequence[float], Sequence[float]] | None = None


def coinciding(ys: Sequence[np.ndarray], span: float, tol: float = _COINCIDE) -> list[int]:
    """For each series the index of the first earlier series it coincides with (else itself).

    Two series coincide when, wherever both are finite (at least one point), they differ by at
    most ``tol * span``.
    """
    out = []
    for i, a in enumerate(ys):
        match = i
        for j in range(i):
            b = ys[j]
            if len(a) != len(b):
                continue
            both = np.isfinite(a) & np.isfinite(b)
            if both.any() and np.max(np.abs(a[both] - b[both])) <= tol * span:
                match = out[j]
                break
        out.append(match)
    return out


def legend_html(entries: Sequence[tuple[str, str, str, str | None]], note: str = "") -> str:
    """HTML legend: per entry a line sample in its colour, dash and marker, then the label."""
    items = []
    for label, color, style, marker in entries:
        dash = export.DASHES.get(style, ())
        dash_attr = f' stroke-dasharray="{",".join(f"{d:g}" for d in dash)}"' if dash else ""
        c = html.escape(color)
        mark = ""
        if marker == "circle":
            mark = f'<circle cx="12" cy="5" r="3" fill="{c}"/>'
        elif marker:
            mark = f'<rect x="9" y="2" width="6" height="6" fill="{c}"/>'
        items.append(
            '<span style="white-space:nowrap;margin-right:12px">'
            f'<svg width="24" height="10" style="vertical-align:middle">'
            f'<line x1="1" y1="5" x2="23" y2="5" stroke="{c}" stroke-width="2"{dash_attr}/>'
            f"{mark}</svg> {html.escape(label)}</span>"
        )
    tail = f'<span style="color:#666">{html.escape(note)}</span>' if note else ""
    return (
        '<div class="richviz-legend" style="font-size:11px;line-height:16px;padding-left:40px">'
        f"{''.join(items)}{tail}</div>"
    )


class LineChart:
    """A bqplot line chart that follows the project's chart rules (module docstring).

    Parameters
    ----------
    title : chart title.
    x_label, y_label, right_label : axis labels (the right axis exists when ``right=True``).
    x_log, y_log, right_log : logarithmic axes.
    right : give the chart a right-hand y axis for ``Series(side="right")``.
    width, height : figure size in px.
    cursor : draw a vertical cursor line (:meth:`set_cursor`).
    y_range : fixed (min, max) of the left axis (e.g. (0, 1) for accuracies), else the data's.

    Attributes
    ----------
    figure : the ``bqplot.Figure``; legend : its ``widgets.HTML`` legend; widget : both, stacked.
    marks : the Lines marks of the current series.
    band_opacity : fill opacity of the bands, on screen and in exports.
    """

    band_opacity: float = BAND_OPACITY

    def __init__(
        self,
        title: str,
        *,
        x_label: str = "step + 1",
        y_label: str = "",
        right_label: str = "",
        x_log: bool = True,
        y_log: bool = False,
        right_log: bool = False,
        right: bool = False,
        width: int = 400,
        height: int = 240,
        cursor: bool = False,
        y_range: tuple[float, float] | None = None,
        right_range: tuple[float, float] | None = None,
    ):
        self.title = title
        self.width, self.height = int(width), int(height)
        self.x_log, self.logs = x_log, {"left": y_log, "right": right_log}
        self.fixed = {"left": y_range, "right": right_range}
        self.labels = {"x": x_label, "left": y_label, "right": right_label}
        self.margin = {"top": 30, "bottom": 40, "left": 58, "right": 58 if right else 16}
        self.sx = (
            bqplot.LogScale(min=1.0, max=10.0) if x_log else bqplot.LinearScale(min=0.0, max=1.0)
        )
        self.scales = {
            "left": bqplot.LogScale(min=0.1, max=1.0)
            if y_log
            else bqplot.LinearScale(min=0.0, max=1.0)
        }
        if right:
            self.scales["right"] = (
                bqplot.LogScale(min=0.1, max=1.0)
                if right_log
                else bqplot.LinearScale(min=0.0, max=1.0)
            )
        style = {"font-size": "10px"}
        self.x_axis = bqplot.Axis(
            scale=self.sx, label=x_label, grid_lines="none", tick_style=style, tick_values=[]
        )
        self.y_axes = {
            side: bqplot.Axis(
                scale=scale,
                side=side,
                label=self.labels[side],
                label_offset="42px",
                grid_lines="dashed" if side == "left" else "none",
                tick_style=style,
                tick_values=[],
            )
            for side, scale in self.scales.items()
        }
        self._cursor_scale = bqplot.LinearScale(min=0.0, max=1.0)
        self.cursor = (
            bqplot.Lines(
                x=[1.0, 1.0],
                y=[0.0, 1.0],
                scales={"x": self.sx, "y": self._cursor_scale},
                colors=["#b00020"],
                stroke_width=1.5,
            )  # fmt: skip
            if cursor
            else None
        )
        self.marks: list[bqplot.Lines] = []
        self.band_marks: list[bqplot.Lines] = []  #: filled bands (series with ``band``)
        self._looks: list[tuple] = []  # (label, side, colour, style, marker, opacity) per mark
        self._band_looks: list[tuple] = []  # (side, colour) of each band mark
        self.series: list[Series] = []
        self.drawn: list[Series] = []  #: the series as drawn (colour, style, clamped y)
        self.limits: dict[str, tuple[float, float]] = {}
        self.ticks: dict[str, list[float]] = {}
        self.tick_text: dict[str, list[str]] = {}
        self.floors: dict[str, float] = {}
        self.note = ""
        # Every axis is in the figure from the start: no axis joins after display.
        self.figure = bqplot.Figure(
            title=title,
            marks=[self.cursor] if self.cursor is not None else [],
            axes=[self.x_axis, *self.y_axes.values()],
            title_style={"font-size": "13px"},
            fig_margin=dict(self.margin),
            padding_x=0.0,
            padding_y=0.0,
            layout=widgets.Layout(width=f"{self.width}px", height=f"{self.height}px"),
        )
        self.legend = widgets.HTML(
            value="", layout=widgets.Layout(width=f"{self.width}px", min_height="20px")
        )
        self.widget = widgets.VBox([self.figure, self.legend], layout={"margin": "0 8px 4px 0"})

    # ---------------------------------------------------------------- data

    def set_series(self, series: Sequence[Series], note: str = "") -> None:
        """Draw ``series`` (replacing the previous ones), fit the axes and write the legend.

        When the lines look as before (same labels, axes, colours and styles) only their data
        move, so a chart redrawn many times a second (the Playground's) creates no widgets.
        """
        self.series = [s for s in series if np.isfinite(np.asarray(s.y, float)).any()]
        self.note = note
        xs = [np.asarray(s.x, float) for s in self.series]
        all_x = np.concatenate(xs) if xs else np.array([1.0, 10.0])
        self._fit_x(all_x)
        drawn: list[tuple[Series, np.ndarray, np.ndarray]] = []
        for side in self.scales:
            group = [s for s in self.series if s.side == side]
            if self.y_axes[side].visible != bool(group):
                self.y_axes[side].visible = bool(group)  # no axis without a series on it
            if not group:
                self.limits.pop(side, None)
                continue
            drawn += self._styled(side, group)
        self.drawn = [d[0] for d in drawn]
        self._draw_marks(drawn)
        two = len({s.side for s in self.drawn}) == 2
        self.legend.value = legend_html(
            [
                (self.legend_label(s, two), s.color, s.line_style, s.marker)
                for s in self.drawn
                if s.legend
            ],
            note,
        )

    def _styled(
        self, side: str, group: list[Series]
    ) -> list[tuple[Series, np.ndarray, np.ndarray]]:
        """The series of one axis with their drawn y (log axes: floored) and their looks:
        colour by series, and lines that coincide on screen told apart by style and marker."""
        ys = [np.asarray(s.y, float) for s in group]
        log = self.logs[side]
        if log:
            ys = [np.where(y > 0, y, np.where(np.isfinite(y), 0.0, np.nan)) for y in ys]
        bands = [np.asarray(b, float) for s in group if s.band is not None for b in s.band]
        lo, hi = self._fit_y(side, np.concatenate(ys + bands))

        def clamp(b: Sequence[float]) -> np.ndarray:
            b = np.asarray(b, float)
            return np.where(np.isfinite(b), np.maximum(b, self.floors[side]), np.nan) if log else b

        if log:
            floor = self.floors[side]
            ys = [np.where(np.isfinite(y), np.maximum(y, floor), np.nan) for y in ys]
            span = math.log10(hi) - math.log10(lo)
            cmp = [np.log10(y) for y in ys]
        else:
            span, cmp = hi - lo, ys
        same = coinciding(cmp, span)
        rank: dict[int, int] = {}
        drawn = []
        for k, (s, y) in enumerate(zip(group, ys, strict=True)):
            root = same[k]
            order = rank.get(root, -1) + 1
            rank[root] = order
            index = self.series.index(s)
            style = s.line_style or (
                LINE_STYLES[order % len(LINE_STYLES)]
                if order
                else ("solid" if side == "left" else "dashed")
            )
            s_out = Series(
                s.label, s.x, y, side,
                s.color or COLORS[index % len(COLORS)],
                style,
                s.marker or (MARKERS[(order - 1) % len(MARKERS)] if order else None),
                s.opacity, s.legend,
                None if s.band is None else (clamp(s.band[0]), clamp(s.band[1])),
            )  # fmt: skip
            drawn.append((s_out, np.asarray(s.x, float), y))
        return drawn

    def _draw_marks(self, drawn: list[tuple[Series, np.ndarray, np.ndarray]]) -> None:
        """Put the drawn series on the figure: new data into the same marks when they look as
        before (a live chart), else new marks (the old ones closed)."""
        looks = [(s.label, s.side, s.color, s.line_style, s.marker, s.opacity) for s in self.drawn]
        bands = [(s, x) for s, x, _y in drawn if s.band is not None]
        band_looks = [(s.side, s.color) for s, _x in bands]
        if looks == self._looks and band_looks == self._band_looks:
            for mark, (_s, x, y) in zip(self.marks, drawn, strict=True):
                with mark.hold_sync():
                    mark.x, mark.y = x, y
            for mark, (s, x) in zip(self.band_marks, bands, strict=True):
                with mark.hold_sync():
                    mark.x, mark.y = x, np.vstack(s.band)
            return
        # marks whose look is unchanged are reused (only their data move): selecting one more
        # run among ten creates one mark, not eleven
        pool: dict[tuple, list[bqplot.Lines]] = {}
        for look, mark in zip(self._looks, self.marks, strict=True):
            pool.setdefault(look, []).append(mark)
        band_pool: dict[tuple, list[bqplot.Lines]] = {}
        for look, mark in zip(self._band_looks, self.band_marks, strict=True):
            band_pool.setdefault(look, []).append(mark)
        self.marks = []
        for look, (s, x, y) in zip(looks, drawn, strict=True):
            if pool.get(look):
                mark = pool[look].pop(0)
                with mark.hold_sync():
                    mark.x, mark.y = x, y
            else:
                mark = bqplot.Lines(
                    x=x,
                    y=y,
                    scales={"x": self.sx, "y": self.scales[s.side]},
                    colors=[s.color],
                    line_style=s.line_style,
                    marker=s.marker,
                    marker_size=20,
                    stroke_width=2.0,
                    opacities=[s.opacity],
                    labels=[s.label],
                    display_legend=False,
                )
            self.marks.append(mark)
        self.band_marks = []
        for look, (s, x) in zip(band_looks, bands, strict=True):
            if band_pool.get(look):
                mark = band_pool[look].pop(0)
                with mark.hold_sync():
                    mark.x, mark.y = x, np.vstack(s.band)
            else:
                mark = bqplot.Lines(
                    x=x,
                    y=np.vstack(s.band),
                    scales={"x": self.sx, "y": self.scales[s.side]},
                    colors=[s.color, s.color],
                    fill="between",
                    fill_colors=[s.color],
                    fill_opacities=[self.band_opacity],
                    stroke_width=0.0,
                    opacities=[0.0, 0.0],
                    display_legend=False,
                )
            self.band_marks.append(mark)
        self._looks, self._band_looks = looks, band_looks
        cursor = [self.cursor] if self.cursor is not None else []
        with self.figure.hold_sync():
            self.figure.marks = [*self.band_marks, *self.marks, *cursor]
        for marks in (*pool.values(), *band_pool.values()):
            for mark in marks:
                mark.close()  # no orphaned widgets left in the kernel

    @staticmethod
    def legend_label(s: Series, two_axes: bool) -> str:
        """``s``'s legend label, marked *(right)* on a chart with two y axes."""
        return f"{s.label} (right)" if two_axes and s.side == "right" else s.label

    def set_cursor(self, x: float) -> None:
        """Move the cursor to ``x``."""
        if self.cursor is not None:
            self.cursor.x = [float(x), float(x)]

    def _fit_x(self, x: np.ndarray) -> None:
        rng = finite_range(x[x > 0] if self.x_log else x) or (1.0, 10.0)
        lo, hi = rng
        if self.x_log:
            _, _, exps = log_axis_ticks(lo, max(hi, lo * 10))
            a, b = math.log10(lo), math.log10(max(hi, lo * 1.0001))
            pad = max(b - a, 0.1) * _X_PAD
            limits = (10 ** (a - pad), 10 ** (b + pad))
            ticks = [10.0**k for k in exps if limits[0] <= 10.0**k <= limits[1]]
            if len(ticks) < 2:  # data within about a decade: reach out to the powers of ten
                limits, ticks = two_decade_ticks(lo, hi, limits)  # around it (2 labels)
            self._set_ticks("x", self.x_axis, limits, ticks, log=True)
        else:
            pad = max(hi - lo, 1e-12) * _X_PAD
            limits = (lo - pad, hi + pad)
            ticks = list(rendering.nice_ticks(lo, hi, MAX_TICKS))
            self._set_ticks("x", self.x_axis, limits, ticks, log=False)

    def _fit_y(self, side: str, values: np.ndarray) -> tuple[float, float]:
        log = self.logs[side]
        if self.fixed[side] is not None:
            lo, hi = self.fixed[side]
        elif log:
            positive = values[np.isfinite(values) & (values > 0)]
            hi = float(positive.max()) if positive.size else 1.0
            lo = float(positive.min()) if positive.size else hi / 10
            lo = max(lo, hi * 10.0**-FLOOR_DECADES)
        else:
            lo, hi = finite_range(values) or (0.0, 1.0)
            if hi <= lo:
                pad = abs(lo) * 0.1 if lo else 1.0
                lo, hi = lo - pad, hi + pad
        if log:
            lo, hi, exps = log_axis_ticks(lo, hi)
            self.floors[side] = lo
            ticks = [10.0**k for k in exps]
        else:
            ticks = list(rendering.nice_ticks(lo, hi, MAX_TICKS))
            span = hi - lo
            lo, hi = min(lo, ticks[0] if ticks else lo), max(hi, ticks[-1] if ticks else hi)
            lo, hi = lo - 0.02 * span, hi + 0.02 * span
        self._set_ticks(side, self.y_axes[side], (lo, hi), ticks, log=log)
        return lo, hi

    def _set_ticks(self, key: str, axis: bqplot.Axis, limits: tuple[float, float],
                   ticks: list[float], log: bool) -> None:  # fmt: skip
        ticks, text = set_axis_ticks(axis, limits, ticks, log)
        self.limits[key], self.ticks[key], self.tick_text[key] = limits, ticks, text

    # ---------------------------------------------------------------- export

    def canvas(self, canvas: export.Canvas | None = None, x0: float = 0.0, y0: float = 0.0,
               cursor: float | None = None) -> export.Canvas:  # fmt: skip
        """Draw the chart (title, axes, ticks, lines, legend below) at (x0, y0) on a canvas
        (:func:`richviz.widgets.chart_export.chart_canvas`)."""
        return chart_export.chart_canvas(self, canvas, x0, y0, cursor)

    def height_with_legend(self) -> float:
        """Height of :meth:`canvas`'s drawing (chart plus legend rows)."""
        return chart_export.canvas_height(self)
