"""MetricsPanel: richness, collapse, drift from init and performance against training step.

One small bqplot chart per metric family, all on a shared logarithmic step axis. A log axis
cannot show step 0, so every chart plots ``step + 1`` (labelled as such): step 0 sits at 1,
step 9 at 10. A vertical cursor marks the current ``step``; a slider over the run's readable
steps and a Play button move it. Values come from ``run.metrics()`` (cached on disk by the
run); filling that cache runs in a background thread with a progress bar.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import traitlets

from richviz.widgets.slice_viewer import atomic_write_bytes, error_line, status_html
from richviz.widgets.tasks import COMPUTE, Job, Worker

Series = tuple[tuple[str, str], ...]

#: (title, left-axis series, right-axis series, left scale, right scale); series are
#: (row key, legend label). Series whose key no row has are left out.
FAMILIES: tuple[tuple[str, Series, Series, str, str], ...] = (
    (
        "richness",
        (("d_lr", "D_LR"),),
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


class MetricsPanel(widgets.VBox):
    """Charts of ``run.metrics()`` against step (log axis of ``step + 1``) with a step cursor.

    Traits: ``step`` (cursor; linked to the slider and Play button), ``loaded`` (metrics in).
    ``rows`` holds the metric rows once loaded; ``to_csv(path)`` writes them.
    """

    step = traitlets.Int(0, help="current step (cursor)")
    loaded = traitlets.Bool(False, help="True once the metrics are loaded")

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
        figs = list(self.charts.values())
        grid = widgets.VBox(
            [widgets.HBox(figs[i : i + 2]) for i in range(0, len(figs), 2)],
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
        x_axis = bqplot.Axis(scale=self._sx, label="step + 1", grid_lines="none")
        self._axes[title] = (
            x_axis,
            bqplot.Axis(scale=sy, side="left", grid_lines="dashed"),
            bqplot.Axis(scale=sr, side="right", grid_lines="none"),
        )
        fig = bqplot.Figure(
            title=title,
            marks=[cursor],  # data lines and their y axes join once there is data (_draw)
            axes=[x_axis],
            legend_location="top-left",
            legend_text={"font-size": "10px"},
            legend_style={"fill": "white", "fill-opacity": 0.6, "stroke-width": 0},
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 60},
            layout=widgets.Layout(width="420px", height="260px"),
        )
        self.charts[title] = fig
        self.cursors[title] = cursor
        self._families[title] = ((left, sy, lscale, False), (right, sr, rscale, True))

    # ---------------------------------------------------------------- public

    def load(self) -> None:
        """Read (or compute, with a progress bar) ``run.metrics()`` in the background."""
        self.status.value = status_html("loading metrics…", "busy")
        self._worker.submit(self._load)

    def wait(self, timeout: float | None = 120.0) -> bool:
        """Block until loading finished (tests, scripts)."""
        return self._worker.wait(timeout)

    def close(self) -> None:
        """Stop background work and close the widgets (safe after a failed ``__init__``)."""
        worker = getattr(self, "_worker", None)  # absent if __init__ failed early
        if worker is not None:
            worker.close()
        super().close()

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
        for title, sides in self._families.items():
            fig = self.charts[title]
            x_axis, left_axis, right_axis = self._axes[title]
            marks: list[bqplot.Lines] = []
            axes = [x_axis]
            for (series, scale, kind, dashed), axis, colors in zip(
                sides, (left_axis, right_axis), (_LEFT_COLORS, _RIGHT_COLORS), strict=True
            ):
                side_marks = []
                for k, (key, label) in enumerate(series):
                    y = _values(rows, key, kind == "log")
                    finite = np.flatnonzero(np.isfinite(y))
                    if not len(finite):
                        continue
                    end = finite[-1] + 1
                    side_marks.append(
                        bqplot.Lines(
                            x=x[:end],
                            y=y[:end],
                            scales={"x": self._sx, "y": scale},
                            colors=[colors[k % len(colors)]],
                            labels=[label],
                            display_legend=True,
                            line_style="dashed" if dashed else "solid",
                            stroke_width=2.0,
                        )
                    )
                if side_marks:
                    marks += side_marks
                    axes.append(axis)
            self.series[title] = marks
            with fig.hold_sync():
                fig.marks = [*marks, self.cursors[title]]
                fig.axes = axes
