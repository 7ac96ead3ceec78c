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

from richviz.atomic import atomic_write_bytes
from richviz.widgets import chart_axes, charts, export
from richviz.widgets.common import Step, as_run, error_line, export_row, status_html
from richviz.widgets.tasks import COMPUTE, BackgroundWork, Job, Worker

__all__ = [
    "BOUNDARY_SERIES",
    "FAMILIES",
    "family_series",
    "NC_SERIES",
    "RICHNESS_SERIES",
    "MAX_TICKS",
    "legend_html",
    "MetricsPanel",
    "rows_to_csv",
    "Series",
    "UNDEFINED",
]

Series = tuple[tuple[str, str], ...]

#: D_LR with its two factors, 1 - D_LR = confinement x isotropy (all in [0, 1])
RICHNESS_SERIES: Series = (
    ("d_lr", "D_LR"),
    ("confinement", "confinement"),
    ("isotropy", "isotropy"),
)
#: the neural-collapse statistics
NC_SERIES: Series = (
    ("nc1", "NC1"),
    ("nc2_equinorm", "NC2 equinorm"),
    ("nc2_equiangular", "NC2 equiangular"),
    ("nc3", "NC3"),
    ("nc4", "NC4"),
)
#: boundary magnification (2-D tasks), beside D_LR on the right axis
BOUNDARY_SERIES: Series = (("boundary_magnification", "boundary magnification"),)

#: (title, left-axis series, right-axis series, left scale, right scale); series are
#: (row key, legend label). Series whose key no row has are left out. The richness chart
#: shows D_LR with its two factors, 1 - D_LR = confinement x isotropy (all in [0, 1]).
FAMILIES: tuple[tuple[str, Series, Series, str, str], ...] = (
    ("richness", RICHNESS_SERIES, BOUNDARY_SERIES, "linear", "linear"),
    ("neural collapse", NC_SERIES, (), "log", "linear"),
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

CHART_WIDTH, CHART_HEIGHT = 300, 205  # px, every chart the same size
MAX_TICKS = chart_axes.MAX_TICKS  # ticks per axis at most
#: why a series is hidden for a class count (key -> (hidden when classes ==, note))
UNDEFINED = {
    "nc2_equiangular": (2, "NC2 equiangular hidden (undefined for 2 classes)"),
}


def _values(rows: Sequence[dict], key: str) -> np.ndarray:
    """Column ``key`` as float64 (NaN where missing)."""
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        try:
            out[i] = float(row.get(key))
        except (TypeError, ValueError):
            pass
    return out


def family_series(
    rows: Sequence[dict],
    x: np.ndarray,
    left: Series,
    right: Series,
    num_classes: int | None = None,
) -> tuple[list[charts.Series], str]:
    """The chart series of one metric family from metric ``rows`` plotted against ``x``.

    ``left`` and ``right`` are (row key, legend label) pairs. A series undefined for
    ``num_classes`` (:data:`UNDEFINED`) is left out and the returned note says why.
    """
    series, notes = [], []
    for side, group in (("left", left), ("right", right)):
        for key, label in group:
            hidden = UNDEFINED.get(key)
            if hidden and num_classes == hidden[0]:
                notes.append(hidden[1])
                continue
            series.append(charts.Series(label, x, _values(rows, key), side))
    return series, "; ".join(notes)


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
    step : Int >= 0, the cursor (linked to the slider and Play button). A value that is not a
        readable checkpoint step snaps to the nearest one (ties: the earlier); bools,
        non-integers, NaN and negative numbers raise ``traitlets.TraitError``.
    loaded : Bool, True once the metrics are loaded.
    rows : the metric rows once loaded (plain attribute); ``to_csv(path)`` writes them.

    ``run`` is a :class:`richviz.runs.Run` or its folder (``str`` / ``os.PathLike``).
    A refused ``step`` raises ``traitlets.TraitError`` at once and leaves the panel as it was.
    """

    step = Step(help="current step (cursor; snapped to the nearest checkpoint)")
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
        run = as_run(run)
        self.run = run
        self.layer = layer
        self.rows: list[dict] = []
        self.load_count = 0  #: number of times run.metrics() was called
        self._worker = Worker("richviz-metrics")
        self.steps = list(run.steps)
        #: per chart, its :class:`richviz.widgets.charts.LineChart`
        self.line_charts: dict[str, charts.LineChart] = {}
        for title, _left, right, lscale, rscale in FAMILIES:
            self.line_charts[title] = charts.LineChart(
                title,
                y_log=lscale == "log",
                right_log=rscale == "log",
                right=bool(right),
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
                cursor=True,
            )
        self.charts: dict[str, bqplot.Figure] = {t: c.figure for t, c in self.line_charts.items()}
        #: per chart, its legend (HTML below the figure, so it never covers the lines)
        self.legends: dict[str, widgets.HTML] = {t: c.legend for t, c in self.line_charts.items()}
        self.cursors: dict[str, bqplot.Lines] = {t: c.cursor for t, c in self.line_charts.items()}
        #: per chart, the Lines marks drawn (one per series with data)
        self.series: dict[str, list[bqplot.Lines]] = {t: [] for t in self.line_charts}
        self.num_classes: int | None = None  #: the task's class count, once known

        options = [(str(s), s) for s in self.steps] or [("–", 0)]
        self.slider = widgets.SelectionSlider(
            options=options,
            description="step",
            continuous_update=True,
            layout=widgets.Layout(width="420px"),
        )
        self.play = widgets.Play(
            value=0, min=0, max=max(len(options) - 1, 0), step=1, interval=500, description="play"
        )
        traitlets.link((self.play, "value"), (self.slider, "index"))
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="metrics", layout={"width": "240px"}
        )
        self.status = widgets.HTML(value="")
        exports = [("CSV", self.to_csv), ("PNG", self.save_png), ("SVG", self.save_svg)]
        self.export_name, buttons, export_box = export_row("richviz-metrics", exports, self.status)
        self.csv_button, self.png_button, self.svg_button = buttons
        cells = [c.widget for c in self.line_charts.values()]
        self.grid = widgets.VBox(
            [widgets.HBox(cells[i : i + 2]) for i in range(0, len(cells), 2)],
        )
        #: the Play button and step slider (the Explorer hides it: its viewer has one)
        self.step_row = widgets.HBox([self.play, self.slider])
        super().__init__(
            children=[
                self.step_row,
                self.grid,
                widgets.HBox([self.progress, self.status]),
                export_box,
            ],
            **kwargs,
        )
        self.slider.observe(self._on_slider, names="value")
        self.observe(self._on_step, names="step")
        initial = step if step is not None else (self.steps[-1] if self.steps else None)
        old = self.step
        if initial is not None:
            self.step = initial  # snapped (or refused) by the Step trait
        if self.step == old:  # no change notification: place the cursor here
            self._on_step({"new": self.step})
        if autoload:
            if self._cached():
                self._load(None)  # everything on disk: draw before the first display
            else:
                self.load()

    def _cached(self) -> bool:
        try:
            return bool(self.steps) and not self.run.pending_metrics(self.layer)
        except Exception:
            return False

    # ---------------------------------------------------------------- public

    def load(self) -> None:
        """Read (or compute, with a progress bar) ``run.metrics()`` in the background."""
        self.status.value = status_html("loading metrics…", "busy")
        self._worker.submit(self._load)

    def _await_first_load(self) -> None:
        """Before an export: wait for the first load, whose worker sets the rows before it
        draws the charts (so neither alone says the panel is ready)."""
        if not self.loaded:
            self.wait()

    def to_csv(self, path: str | Path | None = None) -> Path:
        """Write the metric rows as CSV (atomically); default ``<file box>.csv``."""
        self._await_first_load()
        if not self.rows:
            raise ValueError("no metrics loaded yet; nothing to write")
        path = export.export_path(path, self.export_name.value, ".csv")
        out = atomic_write_bytes(rows_to_csv(self.rows).encode(), path)
        self.status.value = status_html(f"metrics written to {out}")
        return out

    def canvas(self) -> export.Canvas:
        """The four charts (2 x 2, each with its legend and the step cursor) on one canvas."""
        items = list(self.line_charts.values())
        cell_h = max(c.height_with_legend() for c in items)
        canvas = export.Canvas(2 * CHART_WIDTH + 10, 2 * cell_h + 4)
        for i, chart in enumerate(items):
            chart.canvas(
                canvas, (i % 2) * (CHART_WIDTH + 10), (i // 2) * cell_h, cursor=self.step + 1.0
            )
        return canvas

    def save_png(self, path: str | Path | None = None, scale: float = 2.0) -> Path:
        """Write the charts with legends as a PNG on the server (``scale`` x resolution);
        default ``<file box>.png``. The status line names the file."""
        self._await_first_load()
        path = export.export_path(path, self.export_name.value, ".png")
        out = export.write_canvas(self.canvas(), path, "png", scale)
        self.status.value = status_html(f"charts written to {out.resolve()}")
        return out

    def save_svg(self, path: str | Path | None = None) -> Path:
        """Write the charts with legends as an SVG on the server; default ``<file box>.svg``."""
        self._await_first_load()
        path = export.export_path(path, self.export_name.value, ".svg")
        out = export.write_canvas(self.canvas(), path, "svg")
        self.status.value = status_html(f"charts written to {out.resolve()}")
        return out

    # ---------------------------------------------------------------- observers

    def _checkpoint_steps(self) -> list[int]:
        """The steps ``step`` snaps to: the run's readable checkpoints (see :class:`Step`)."""
        return self.steps

    def _on_slider(self, change: dict) -> None:
        if change["new"] is not None and self.steps:
            self.step = change["new"]

    def _on_step(self, change: dict) -> None:
        step = change["new"]
        if step in self.steps and self.slider.value != step:
            self.slider.value = step
        for chart in self.line_charts.values():
            chart.set_cursor(float(step) + 1.0)

    # ---------------------------------------------------------------- loading

    def _load(self, job: Job | None) -> None:
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
        if job is not None:
            job.check()
        self.rows = list(rows)
        if self.num_classes is None:
            try:
                self.num_classes = int(self.run.data().num_classes)
            except Exception:
                self.num_classes = None
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
        """Every chart's series from the rows (left axis solid, right axis dashed; NaN = gap).

        A series whose values are all missing is left out, and so is one that is undefined for
        the task's class count (:data:`UNDEFINED`; the legend says why).
        """
        rows = sorted(self.rows, key=lambda r: r.get("step", 0))
        x = np.array([float(r.get("step", 0)) + 1.0 for r in rows])
        if not len(x):
            return
        for title, left, right, _ls, _rs in FAMILIES:
            chart = self.line_charts[title]
            series, note = family_series(rows, x, left, right, self.num_classes)
            chart.set_series(series, note=note)
            self.series[title] = list(chart.marks)


def legend_html(entries: Sequence[tuple[str, str, bool]], two_axes: bool = False) -> str:
    """HTML legend from ``(label, colour, dashed)`` entries (see :func:`charts.legend_html`)."""
    return charts.legend_html(
        [
            (
                label + (" (right)" if dashed and two_axes else ""),
                color,
                "dashed" if dashed else "solid",
                None,
            )
            for label, color, dashed in entries
        ]  # fmt: skip
    )
