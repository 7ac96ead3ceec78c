"""MetricsPanel: richness, collapse, drift from init and performance against training step.

One small bqplot chart per metric family, all on a shared logarithmic step axis. A log axis
cannot show step 0, so every chart plots ``step + 1`` (labelled as such): step 0 sits at 1,
step 9 at 10. A vertical cursor marks the current ``step``; a slider over the run's readable
steps and a Play button move it. Values come from ``run.metrics()`` (cached on disk by the
run); filling that cache runs in a background thread with a progress bar.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import traitlets

from richviz.widgets import rendering
from richviz.widgets.slice_viewer import atomic_write_bytes, error_line, status_html
from richviz.widgets.tasks import COMPUTE, BackgroundWork, Job, Worker

__all__ = [
    "CHART_MARGIN",
    "FAMILIES",
    "MAX_TICKS",
    "legend_html",
    "MetricsPanel",
    "rows_to_csv",
    "Series",
]

Series = tuple[tuple[str, str], ...]

#: (title, left-axis series, right-axis series, left scale, right scale); series are
#: (row key, legend label). Series whose key no row has are left out. The richness chart
#: shows D_LR with its two factors, 1 - D_LR = confinement x isotropy (all in [0, 1]).
FAMILIES: tuple[tuple[str, Series, Series, str, str], ...] = (
    (
        "richness",
        (("d_lr", "D_LR"), ("confinement", "confinement"), ("isotropy", "isotropy")),
        (("boundary_magnification", "boundary magnification"),),
        "linear",
        "linear",
    ),
    (
        "neural collapse",
        (
            ("nc1", "NC1"),
            ("nc2_equinorm", "NC2 equinorm"),
            ("nc2_equiangular", "NC2 equiangular"),
            ("nc3", "NC3"),
            ("nc4", "NC4"),
        ),
        (),
        "log",
        "linear",
    ),
    (
        "drift from init",
        (("cka_init", "similarity to init"),),
        (("param_dist_sq", "|θ − θ₀|²"),),
        "linear",
        "linear",
    ),
    (
        "performance",
        (("train_acc", "train acc"), ("test_acc", "test acc")),
        (("train_loss", "train loss"), ("test_loss", "test loss")),
        "linear",
        "log",
    ),
)

CHART_WIDTH, CHART_HEIGHT = 400, 240  # px, every chart the same size
CHART_MARGIN = {"top": 30, "bottom": 40, "left": 55, "right": 55}
MAX_TICKS = 5  # y ticks per axis at most

_LEFT_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
_RIGHT_COLORS = ("#ff7f0e", "#d62728", "#e377c2", "#bcbd22")


def _values(rows: Sequence[dict], key: str, log: bool) -> np.ndarray:
    """Column ``key`` as float64 (NaN where missing; on a log axis also where <= 0)."""
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        try:
            out[i] = float(row.get(key))
        except (TypeError, ValueError):
            pass
    if log:
        out[~(out > 0)] = np.nan
    return out


def rows_to_csv(rows: Sequence[dict]) -> str:
    """Metric rows as CSV text: ``step`` first, then every key in first-seen order."""
    columns: list[str] = ["step"]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for key in columns:
            v = row.get(key)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append("nan" if math.isnan(v) else repr(v))
            else:
                cells.append(str(v))
        writer.writerow(cells)
    return buf.getvalue()


class MetricsPanel(BackgroundWork, widgets.VBox):
    """Charts of ``run.metrics()`` against step (log axis of ``step + 1``) with a step cursor.

    Attributes
    ----------
    step : Int >= 0, the cursor (linked to the slider and Play button).
    loaded : Bool, True once the metrics are loaded.
    rows : the metric rows once loaded (plain attribute); ``to_csv(path)`` writes them.

    A bad ``step`` raises ``traitlets.TraitError`` at once and leaves the panel as it was.
    """

    step = traitlets.Int(0, min=0, help="current step (cursor)")
    loaded = traitlets.Bool(False, help="True once the metrics are loaded")
    wait_timeout = 120.0  # filling a run's metrics cache can take a while

    def __init__(
        self,
        run: Any,
        step: int | None = None,
        layer: str | None = None,
        autoload: bool = True,
        **kwargs: Any,
    ):
        self.run = run
        self.layer = layer
        self.rows: list[dict] = []
        self.load_count = 0  #: number of times run.metrics() was called
        self._worker = Worker("richviz-metrics")
        self.steps = list(run.steps)
        hi = (self.steps[-1] if self.steps else 1) + 1
        self._sx = bqplot.LogScale(min=1.0, max=float(max(hi, 2)))
        self.charts: dict[str, bqplot.Figure] = {}
        #: per chart, its legend (HTML below the figure, so it never covers the lines)
        self.legends: dict[str, widgets.HTML] = {}
        self.cursors: dict[str, bqplot.Lines] = {}
        self._axes: dict[str, tuple[bqplot.Axis, bqplot.Axis, bqplot.Axis]] = {}
        self._families: dict[str, tuple[tuple[Series, bqplot.Scale, str, bool], ...]] = {}
        #: per chart, the Lines marks drawn (one per series with data)
        self.series: dict[str, list[bqplot.Lines]] = {}
        for title, left, right, lscale, rscale in FAMILIES:
            self._make_chart(title, left, right, lscale, rscale)

        options = [(str(s), s) for s in self.steps] or [("–", 0)]
        self.slider = widgets.SelectionSlider(
            options=options,
            description="step",
            continuous_update=True,
            layout=widgets.Layout(width="460px"),
        )
        self.play = widgets.Play(
            value=0, min=0, max=max(len(options) - 1, 0), step=1, interval=500, description="play"
        )
        traitlets.link((self.play, "value"), (self.slider, "index"))
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="metrics", layout={"width": "260px"}
        )
        self.status = widgets.HTML(value="")
        self.export_name = widgets.Text(
            value="richviz-metrics", description="file", layout={"width": "220px"}
        )
        self.csv_button = widgets.Button(description="CSV", layout={"width": "80px"})
        self.png_button = widgets.Button(description="PNG (browser)", layout={"width": "120px"})
        self.svg_button = widgets.Button(description="SVG (browser)", layout={"width": "120px"})
        self.csv_button.on_click(lambda _b: self._guard(self.to_csv))
        self.png_button.on_click(lambda _b: self._guard(self.save_png))
        self.svg_button.on_click(lambda _b: self._guard(self.save_svg))
        cells = [
            widgets.VBox([fig, self.legends[title]], layout={"margin": "0 8px 8px 0"})
            for title, fig in self.charts.items()
        ]
        grid = widgets.VBox(
            [widgets.HBox(cells[i : i + 2]) for i in range(0, len(cells), 2)],
        )
        super().__init__(
            children=[
                widgets.HBox([self.play, self.slider]),
                grid,
                widgets.HBox([self.progress, self.status]),
                widgets.HBox([self.export_name, self.csv_button, self.png_button, self.svg_button]),
            ],
            **kwargs,
        )
        self.slider.observe(self._on_slider, names="value")
        self.observe(self._on_step, names="step")
        initial = step if step is not None else (self.steps[-1] if self.steps else 0)
        if initial == self.step:
            self._on_step({"new": initial})
        else:
            self.step = initial
        if autoload:
            self.load()

    # ---------------------------------------------------------------- construction

    def _make_chart(
        self, title: str, left: Series, right: Series, lscale: str, rscale: str
    ) -> None:
        sy = bqplot.LogScale() if lscale == "log" else bqplot.LinearScale()
        sr = bqplot.LogScale() if rscale == "log" else bqplot.LinearScale()
        cursor_scale = bqplot.LinearScale(min=0.0, max=1.0)
        cursor = bqplot.Lines(
            x=[1.0, 1.0],
            y=[0.0, 1.0],
            scales={"x": self._sx, "y": cursor_scale},
            colors=["#b00020"],
            stroke_width=1.5,
        )
        ticks = rendering.step_ticks(self._sx.max)
        tick_style = {"font-size": "10px"}
        x_axis = bqplot.Axis(
            scale=self._sx,
            label="step + 1",
            grid_lines="none",
            tick_values=ticks,
            tick_format="~g",
            tick_style=tick_style,
        )
        # Tick values are set from the data (_draw): a few round values, never a crowd.
        self._axes[title] = (
            x_axis,
            bqplot.Axis(scale=sy, side="left", grid_lines="dashed", tick_style=tick_style),
            bqplot.Axis(scale=sr, side="right", grid_lines="none", tick_style=tick_style),
        )
        # No bqplot legend (drawn inside the plot area, over the lines): an HTML legend below.
        fig = bqplot.Figure(
            title=title,
            marks=[cursor],  # data lines and their y axes join once there is data (_draw)
            axes=[x_axis],
            title_style={"font-size": "13px"},
            fig_margin=dict(CHART_MARGIN),
            layout=widgets.Layout(width=f"{CHART_WIDTH}px", height=f"{CHART_HEIGHT}px"),
        )
        self.charts[title] = fig
        self.legends[title] = widgets.HTML(
            value="", layout=widgets.Layout(width=f"{CHART_WIDTH}px", min_height="22px")
        )
        self.cursors[title] = cursor
        self._families[title] = ((left, sy, lscale, False), (right, sr, rscale, True))

    # ---------------------------------------------------------------- public

    def load(self) -> None:
        """Read (or compute, with a progress bar) ``run.metrics()`` in the background."""
        self.status.value = status_html("loading metrics…", "busy")
        self._worker.submit(self._load)

    def to_csv(self, path: str | Path | None = None) -> Path:
        """Write the metric rows as CSV (atomically); default ``<file box>.csv``."""
        if not self.rows:
            self.wait()
        if not self.rows:
            raise ValueError("no metrics loaded yet; nothing to write")
        path = Path(path if path is not None else f"{self.export_name.value}.csv")
        out = atomic_write_bytes(path, rows_to_csv(self.rows).encode())
        self.status.value = status_html(f"metrics written to {out}")
        return out

    def save_png(self, prefix: str | None = None) -> None:
        """Ask the browser to save every chart as ``<prefix>-<family>.png``."""
        prefix = prefix or self.export_name.value
        for title, fig in self.charts.items():
            fig.save_png(f"{prefix}-{title.replace(' ', '_')}.png")

    def save_svg(self, prefix: str | None = None) -> None:
        """Ask the browser to save every chart as ``<prefix>-<family>.svg``."""
        prefix = prefix or self.export_name.value
        for title, fig in self.charts.items():
            fig.save_svg(f"{prefix}-{title.replace(' ', '_')}.svg")

    # ---------------------------------------------------------------- observers

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:
            self.status.value = status_html(error_line(exc), "error")

    def _on_slider(self, change: dict) -> None:
        if change["new"] is not None and self.steps:
            self.step = change["new"]

    def _on_step(self, change: dict) -> None:
        step = change["new"]
        if step in self.steps and self.slider.value != step:
            self.slider.value = step
        x = float(step) + 1.0
        for cursor in self.cursors.values():
            cursor.x = [x, x]

    # ---------------------------------------------------------------- loading

    def _load(self, job: Job) -> None:
        self.progress.value = 0.0
        self.progress.bar_style = "info"

        def report(done: int, total: int) -> None:
            self.progress.value = done / total if total else 1.0
            COMPUTE.yield_to_waiters()  # let a waiting slice-viewer job run between checkpoints

        try:
            self.load_count += 1
            with COMPUTE.hold():
                rows = self.run.metrics(progress=report, layer=self.layer)
        except Exception as exc:
            self.status.value = status_html(f"metrics: {error_line(exc)}", "error")
            self.progress.bar_style = "danger"
            return
        job.check()
        self.rows = list(rows)
        self._draw()
        self.progress.value = 1.0
        self.progress.bar_style = "success"
        errors = [r for r in self.rows if r.get("error")]
        if errors:
            self.status.value = status_html(
                f"{len(self.rows)} checkpoints; {len(errors)} with errors, e.g. "
                f"{errors[0]['error']}",
                "error",
            )
        else:
            self.status.value = status_html(f"metrics of {len(self.rows)} checkpoints")
        self.loaded = True

    def _draw(self) -> None:
        """One ``Lines`` mark per series (left axis solid, right axis dashed).

        A series whose values are all missing is left out, and trailing missing values are
        cut: bqplot draws a curve label at a line's last point and an empty line as an invalid
        path. Missing values inside a series stay NaN (gaps).
        """
        rows = sorted(self.rows, key=lambda r: r.get("step", 0))
        x = np.array([float(r.get("step", 0)) + 1.0 for r in rows])
        if not len(x):
            return
        with self._sx.hold_sync():
            self._sx.min, self._sx.max = 1.0, float(max(x.max(), 2.0))
        step_ticks = rendering.step_ticks(self._sx.max)
        for title, sides in self._families.items():
            fig = self.charts[title]
            x_axis, left_axis, right_axis = self._axes[title]
            x_axis.tick_values = step_ticks
            marks: list[bqplot.Lines] = []
            axes = [x_axis]
            legend: list[tuple[str, str, bool]] = []
            for (series, scale, kind, dashed), axis, colors in zip(
                sides, (left_axis, right_axis), (_LEFT_COLORS, _RIGHT_COLORS), strict=True
            ):
                side_marks = []
                values = []
                for k, (key, label) in enumerate(series):
                    y = _values(rows, key, kind == "log")
                    finite = np.flatnonzero(np.isfinite(y))
                    if not len(finite):
                        continue
                    end = finite[-1] + 1
                    values.append(y[finite])
                    legend.append((label, colors[k % len(colors)], dashed))
                    side_marks.append(
                        bqplot.Lines(
                            x=x[:end],
                            y=y[:end],
                            scales={"x": self._sx, "y": scale},
                            colors=[colors[k % len(colors)]],
                            labels=[label],
                            display_legend=False,
                            line_style="dashed" if dashed else "solid",
                            stroke_width=2.0,
                        )
                    )
                if side_marks:
                    marks += side_marks
                    axes.append(axis)
                    _fit_axis(axis, np.concatenate(values), kind == "log")
            self.series[title] = marks
            with fig.hold_sync():
                fig.marks = [*marks, self.cursors[title]]
                fig.axes = axes
            self.legends[title].value = legend_html(legend, two_axes=len(axes) == 3)


def _fit_axis(axis: bqplot.Axis, values: np.ndarray, log: bool) -> None:
    """Scale range = the data's range; at most ``MAX_TICKS`` round ticks inside it."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:  # a constant series: a small range around it
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = (lo / 2, lo * 2) if log else (lo - pad, hi + pad)
    ticks = (
        rendering.log_ticks(lo, hi, MAX_TICKS) if log else rendering.nice_ticks(lo, hi, MAX_TICKS)
    )
    with axis.scale.hold_sync():
        axis.scale.min, axis.scale.max = lo, hi
    # Format first, in its own message: bqplot redraws the axis on new tick values and would
    # label them with the old format if both changed in one update.
    axis.tick_format = "~g" if log else rendering.tick_format(ticks)
    axis.tick_values = ticks


def legend_html(entries: Sequence[tuple[str, str, bool]], two_axes: bool = False) -> str:
    """A one-line HTML legend: a line sample (dashed for the right axis) and label per series."""
    items = []
    for label, color, dashed in entries:
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        side = " (right)" if dashed and two_axes else ""
        items.append(
            '<span style="white-space:nowrap;margin-right:12px">'
            f'<svg width="22" height="8" style="vertical-align:middle">'
            f'<line x1="1" y1="4" x2="21" y2="4" stroke="{html.escape(color)}" '
            f'stroke-width="2"{dash}/></svg>'
            f" {html.escape(label)}{side}</span>"
        )
    return f'<div style="font-size:11px;line-height:16px;padding-left:40px">{"".join(items)}</div>'
