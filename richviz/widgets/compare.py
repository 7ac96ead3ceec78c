"""Compare: many runs side by side — a run table, overlaid metric charts, one shared cursor.

The numbers come from the headless :mod:`richviz.compare` (runs opened from their manifests
and metrics caches, stable colours, EMA, fraction-of-training axis, group bands, CSV); this
widget draws them. Every chart shares the run colours (a run keeps its colour and dash in every
chart and across re-selections) and one step cursor, which also moves the geometry row below
(two to four slice viewers of the first selected runs on one colour range, from
:mod:`richviz.widgets.compare_geometry`). Metrics still missing from the runs' caches are
computed in the background with a progress bar, through the same cache as ``Run.metrics``.
The PNG/SVG/CSV export is the mixin :class:`richviz.widgets.compare_export.CompareExport`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from richviz.compare import (
    SPREADS,
    X_AXES,
    RunColors,
    RunEntry,
    curve,
    fill_missing,
    group_bands,
    group_entries,
    group_label,
    open_runs,
    varying_hparams,
)
from richviz.widgets import charts
from richviz.widgets.common import error_line, export_row, nearest_step, status_html
from richviz.widgets.compare_export import COLUMNS, SPREAD_TEXT, CompareExport
from richviz.widgets.compare_table import RunTable
from richviz.widgets.metrics_panel import UNDEFINED
from richviz.widgets.tasks import BackgroundWork, Cancelled, Job, Worker

__all__ = ["CHARTS", "Compare"]

#: (row key, chart title, y scale) of every chart; a chart without data for the selected runs
#: is hidden (boundary magnification exists for 2-D inputs only)
CHARTS: tuple[tuple[str, str, str], ...] = (
    ("d_lr", "D_LR", "linear"),
    ("confinement", "confinement (1 − D_LR = conf. × iso.)", "linear"),
    ("isotropy", "isotropy", "linear"),
    ("boundary_magnification", "boundary magnification", "linear"),
    ("nc1", "NC1", "log"),
    ("nc2_equinorm", "NC2 equinorm", "log"),
    ("nc2_equiangular", "NC2 equiangular", "log"),
    ("nc3", "NC3", "log"),
    ("nc4", "NC4", "log"),
    ("cka_init", "similarity to init", "linear"),
    ("test_acc", "test accuracy", "linear"),
    ("train_loss", "train loss", "log"),
    ("test_loss", "test loss", "log"),
)
RAW_OPACITY = 0.3  #: opacity of the raw curve behind a smoothed one
DEFAULT_SELECTED = 8  #: runs selected at first (one per colour of the palette)


class Compare(CompareExport, BackgroundWork, widgets.VBox):
    """Compare runs: a run table, overlaid metric charts with one cursor, geometry below.

    Parameters
    ----------
    runs
        Runs, run folders, RunSummary points or a sweep's table ``{folder: rows}``
        (:func:`richviz.compare.open_runs`). A run that cannot be compared (broken or empty
        folder, another task or input shape, no step in common) is listed with its reason.
    selected
        Names of the runs selected at first (default: the first 8 that can be compared).
    step
        The cursor's first step (default: the last checkpoint step of the selected runs).
    metrics
        Row keys of the charts to show (default: every key of :data:`CHARTS`).
    geometry
        Slice viewers of the first selected runs side by side (True: 2, or 2 to 4; False:
        none); needs :mod:`richviz.widgets.compare_geometry`.
    fill
        ``"missing"``: compute the metrics rows missing from the runs' caches in the
        background; ``"all"``: also check every cached row against its checkpoint's content
        (opens every run); ``None``: neither.
    layer, probe_size
        Passed to ``Run.metrics`` for the missing rows.
    geometry_options
        Keyword arguments of every slice viewer of the geometry row (``resolution``, ...).

    Attributes
    ----------
    selected : List of Unicode
        Names of the selected runs (their curves are drawn); a name that is unknown or whose
        run is not compared raises ``traitlets.TraitError``.
    step : Int
        The shared cursor, snapped to the nearest checkpoint step of the selected runs.
    x_axis : Enum("step", "fraction")
        x against ``step + 1`` (log axis) or the fraction of each run's training (step / its
        last step; the cursor sits at step / the longest selected run's last step).
    smoothing : Float in [0, 1)
        EMA weight (:func:`richviz.compare.ema`); above 0 the raw curve stays, faint.
    group_by : Unicode
        A hyper-parameter ("" = none): one line per value, the mean over its runs with a
        spread band, the group named in the table.
    spread : Enum("std", "minmax")
        The band: mean +- population std, or min..max (:func:`richviz.compare.group_bands`).
    loaded : Bool
        True once the background metrics work is done.
    entries, colors, table, charts, geometry, geometry_box, legend, progress, status
        The runs (:class:`richviz.compare.RunEntry`), their :class:`~richviz.compare.RunColors`,
        the :class:`~richviz.widgets.compare_table.RunTable`, ``{key: LineChart}``, the
        geometry row (or None), its box, the run legend, the progress bar, the status line.

    Examples
    --------
    >>> import os, tempfile
    >>> from richviz.train import train
    >>> from richviz.widgets import Compare
    >>> root = tempfile.mkdtemp()
    >>> for alpha in (0.5, 2.0):
    ...     _ = train("xor", os.path.join(root, f"alpha{alpha}"), steps=3, alpha=alpha,
    ...               progress=False, device="cpu")
    >>> view = Compare([os.path.join(root, n) for n in ("alpha0.5", "alpha2.0")], geometry=False)
    >>> view.wait()  # the metrics missing from the caches, computed in the background
    True
    >>> view.selected, view.colors.color("alpha2.0")
    (['alpha0.5', 'alpha2.0'], '#E69F00')
    >>> view.step = 2
    >>> view.charts["d_lr"].cursor.x.tolist()  # every chart's cursor at step + 1
    [3.0, 3.0]
    >>> view.close()
    """

    selected = traitlets.List(traitlets.Unicode(), help="names of the selected runs")
    step = traitlets.Int(0, min=0, help="shared cursor (snapped to a step of the selected runs)")
    x_axis = traitlets.Enum(X_AXES, "step", help="x against step + 1 or fraction of training")
    smoothing = traitlets.Float(0.0, help="EMA weight in [0, 1); 0 = raw curves")
    group_by = traitlets.Unicode("", help="hyper-parameter to group by ('' = none)")
    spread = traitlets.Enum(SPREADS, "std", help="band: mean +- std, or min..max")
    loaded = traitlets.Bool(False, help="True once the background metrics work is done")
    wait_timeout = 600.0  # missing metrics of many runs may have to be computed

    def __init__(
        self,
        runs: Sequence[Any] | Mapping[Any, Sequence[Mapping[str, Any]]],
        selected: Sequence[str] | None = None,
        step: int | None = None,
        metrics: Sequence[str] | None = None,
        geometry: bool | int = True,
        fill: str | None = "missing",
        layer: str | None = None,
        probe_size: int = 1000,
        chart_width: int = 290,
        chart_height: int = 200,
        geometry_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        from richviz.errors import ArgumentError

        keys = [k for k, _t, _s in CHARTS]
        metrics = list(keys if metrics is None else metrics)
        unknown = [m for m in metrics if m not in keys]
        if unknown:
            raise ArgumentError(f"metrics={unknown!r}: choose from {keys}")
        if fill not in ("missing", "all", None):
            raise ArgumentError(f"fill={fill!r} must be 'missing', 'all' or None")
        count = 2 if geometry is True else int(geometry or 0)
        if geometry is not False and not 2 <= count <= 4:
            raise ArgumentError(f"geometry={geometry!r} must be True, False or 2 to 4 viewers")
        self._metrics = metrics
        self._geometry_count = count if geometry is not False else 0
        self._layer, self._probe_size = layer, probe_size
        self._geometry_options = dict(geometry_options or {})
        self._size = (int(chart_width), int(chart_height))
        self._lock = threading.RLock()
        self._export_note = ""
        self._first_step: int | None = -1 if step is None else int(step)  # until first drawn
        self._worker = Worker("richviz-compare")
        self.entries: list[RunEntry] = open_runs(runs)
        self._by_name = {e.name: e for e in self.entries}
        self.colors = RunColors([e.name for e in self.entries])
        self.group_colors = RunColors()
        self.params = varying_hparams(self.entries)
        self.geometry: Any = None
        self._geometry_names: list[str] = []
        self.charts: dict[str, charts.LineChart] = {}

        self.table = RunTable(self.entries, self.colors, self.params)
        self.legend = widgets.HTML(value="")
        self.grid = widgets.VBox([])
        self.slider = widgets.SelectionSlider(
            options=[("–", 0)], description="step", continuous_update=True,
            layout=widgets.Layout(width="460px"),
        )  # fmt: skip
        self.axis_buttons = widgets.ToggleButtons(
            options=[("step", "step"), ("fraction of training", "fraction")],
            value="step", style={"button_width": "170px"},
        )  # fmt: skip
        self.smoothing_slider = widgets.FloatSlider(
            value=0.0, min=0.0, max=0.99, step=0.01, description="smoothing",
            layout={"width": "300px"},
        )  # fmt: skip
        self.group_menu = widgets.Dropdown(
            options=[("none", ""), *((p, p) for p in self.params)], value="",
            description="group by", layout={"width": "220px"},
        )  # fmt: skip
        self.spread_menu = widgets.Dropdown(
            options=[(text, key) for key, text in SPREAD_TEXT], value="std",
            description="band", layout={"width": "200px"},
        )  # fmt: skip
        self.geometry_box = widgets.VBox([])
        self.progress = widgets.FloatProgress(
            value=1.0, min=0.0, max=1.0, description="metrics", layout={"width": "240px"}
        )
        self.status = widgets.HTML(value="")
        exports = [("CSV", self.save_csv), ("PNG", self.save_png), ("SVG", self.save_svg)]
        self.export_name, buttons, export_box = export_row(
            "richviz-compare", exports, self.status, name_width="240px"
        )
        self.csv_button, self.png_button, self.svg_button = buttons
        super().__init__(
            children=[
                self.table,
                widgets.HBox([self.axis_buttons, self.smoothing_slider]),
                widgets.HBox([self.group_menu, self.spread_menu]),
                self.slider,
                self.legend,
                self.grid,
                self.geometry_box,
                widgets.HBox([self.progress, self.status]),
                export_box,
            ],
            **kwargs,
        )
        self._build_charts()
        usable = [e.name for e in self.entries if e.usable]
        first = list(selected) if selected is not None else usable[:DEFAULT_SELECTED]
        traitlets.link((self.axis_buttons, "value"), (self, "x_axis"))
        traitlets.link((self.smoothing_slider, "value"), (self, "smoothing"))
        traitlets.link((self.group_menu, "value"), (self, "group_by"))
        traitlets.link((self.spread_menu, "value"), (self, "spread"))
        traitlets.link((self.table, "selected"), (self, "selected"))
        self.slider.observe(self._on_slider, names="value")
        self.observe(self._on_selected, names="selected")
        self.observe(self._on_step, names="step")
        self.observe(self._on_axis, names="x_axis")
        self.observe(lambda _c: self.redraw(), names=["smoothing", "group_by", "spread"])
        try:
            self.selected = first
            if not first:
                self._on_selected({"new": []})
        except BaseException:
            self.close()
            raise
        self._note()
        self._start_fill(fill)

    # ---------------------------------------------------------------- traits

    @traitlets.validate("selected")
    def _check_selected(self, proposal: dict) -> list[str]:
        names = list(dict.fromkeys(proposal["value"]))
        for name in names:
            entry = self._by_name.get(name)
            if entry is None:
                raise traitlets.TraitError(
                    f"selected: no run named {name!r} (runs: {list(self._by_name)[:8]} ...)"
                )
            if not entry.usable:
                raise traitlets.TraitError(f"selected: run {name!r} is not compared: {entry.error}")
        return names

    @traitlets.validate("smoothing")
    def _check_smoothing(self, proposal: dict) -> float:
        value = float(proposal["value"])
        if not 0.0 <= value < 1.0:
            raise traitlets.TraitError(f"smoothing={value!r} must be in [0, 1)")
        return value

    @traitlets.validate("group_by")
    def _check_group(self, proposal: dict) -> str:
        value = proposal["value"]
        known = {k for e in self.entries if e.usable for k in e.hparams}
        if value and value not in known:
            raise traitlets.TraitError(
                f"group_by={value!r} is not a hyper-parameter of these runs ({sorted(known)})"
            )
        return value

    @traitlets.validate("step")
    def _check_step(self, proposal: dict) -> int:
        steps = self.cursor_steps()
        return nearest_step(int(proposal["value"]), steps) if steps else int(proposal["value"])

    # ---------------------------------------------------------------- selection

    def selected_entries(self) -> list[RunEntry]:
        """The selected runs, in table order."""
        chosen = set(self.selected)
        return [e for e in self.entries if e.name in chosen and e.usable]

    def cursor_steps(self) -> list[int]:
        """Steps the cursor snaps to: every checkpoint step of the selected runs."""
        chosen = self.selected_entries() if self.selected else []
        return sorted({s for e in chosen for s in e.steps})

    def cursor_x(self) -> float:
        """Where the cursor sits on the charts' x axis (see :attr:`x_axis`)."""
        if self.x_axis == "step":
            return float(self.step) + 1.0
        last = max((e.steps[-1] for e in self.selected_entries() if e.steps), default=0)
        return float(self.step) / last if last > 0 else 0.0

    def _on_selected(self, change: dict) -> None:
        with self._lock:
            steps = self.cursor_steps()
            options = [(str(s), s) for s in steps] or [("–", 0)]
            keep = self.step if self._first_step is None else self._first_step
            with self.slider.hold_trait_notifications():
                self.slider.options = options
            if steps:
                self._first_step = None
                self.step = nearest_step(keep if keep >= 0 else steps[-1], steps)
                if self.slider.value != self.step:
                    self.slider.value = self.step
            self.redraw()
            self._update_geometry()

    def _on_slider(self, change: dict) -> None:
        if change["new"] is not None and self.cursor_steps():
            self.step = change["new"]

    def _on_step(self, change: dict) -> None:
        if self.slider.value != self.step and self.step in self.cursor_steps():
            self.slider.value = self.step
        self._place_cursor()
        if self.geometry is not None:
            try:
                self.geometry.step = self.step
            except Exception as exc:
                self.status.value = status_html(f"geometry: {error_line(exc)}", "error")

    def _place_cursor(self) -> None:
        x = self.cursor_x()
        for chart in self.charts.values():
            chart.set_cursor(x)

    # ---------------------------------------------------------------- charts

    def _build_charts(self) -> None:
        """(Re)build the charts for the current x axis (a LineChart's x scale is fixed)."""
        old = list(self.charts.values())
        width, height = self._size
        step_axis = self.x_axis == "step"
        scales = {k: s for k, _t, s in CHARTS}
        titles = {k: t for k, t, _s in CHARTS}
        self.charts = {
            key: charts.LineChart(
                titles[key],
                x_label="step + 1" if step_axis else "fraction of training",
                x_log=step_axis,
                y_log=scales[key] == "log",
                width=width,
                height=height,
                cursor=True,
            )  # fmt: skip
            for key in self._metrics
        }
        cells = [c.widget for c in self.charts.values()]
        self.grid.children = [
            widgets.HBox(cells[i : i + COLUMNS]) for i in range(0, len(cells), COLUMNS)
        ]
        for chart in old:
            for mark in [*chart.marks, *chart.band_marks]:
                mark.close()
            chart.widget.close()
            chart.figure.close()

    def _on_axis(self, change: dict) -> None:
        with self._lock:
            self._build_charts()
            self.redraw()

    def _run_series(self, key: str) -> list[charts.Series]:
        out = []
        for e in self.selected_entries():
            look = self.colors.style(e.name)
            x, raw = curve(e.rows, key, self.x_axis)
            style = dict(color=look.color, line_style=look.dash, marker=look.marker, legend=False)
            if self.smoothing:
                out.append(charts.Series(f"{e.name} (raw)", x, raw, opacity=RAW_OPACITY, **style))
                out.append(charts.Series(e.name, x, curve(e.rows, key, self.x_axis,
                                                          self.smoothing)[1], **style))  # fmt: skip
            else:
                out.append(charts.Series(e.name, x, raw, **style))
        return out

    def groups(self) -> list[tuple[str, list[RunEntry]]]:
        """(label, runs) per group of the selected runs (one group per run without group_by)."""
        if not self.group_by:
            return [(e.name, [e]) for e in self.selected_entries()]
        return [
            (group_label(self.group_by, v), members)
            for v, members in group_entries(self.selected_entries(), self.group_by)
        ]

    def _group_series(self, key: str) -> list[charts.Series]:
        out = []
        for label, members in self.groups():
            look = self.group_colors.style(label)
            style = dict(color=look.color, line_style=look.dash, marker=look.marker, legend=False)
            raw = [curve(e.rows, key, self.x_axis) for e in members]
            band = group_bands(
                [curve(e.rows, key, self.x_axis, self.smoothing) for e in members], self.spread
            )
            if self.smoothing:
                mean = group_bands(raw, self.spread).mean
                out.append(charts.Series(f"{label} (raw)", band.x, mean, opacity=RAW_OPACITY,
                                         **style))  # fmt: skip
            out.append(charts.Series(label, band.x, band.mean, band=(band.lo, band.hi), **style))
        return out

    def redraw(self) -> None:
        """Draw every chart, the legend and the table's group column for the selection."""
        with self._lock:
            legend = []
            if self.group_by:
                groups = self.groups()
                names = {}
                for label, members in groups:
                    look = self.group_colors.style(label)
                    legend.append((f"{label} ({len(members)} runs)", look.color, look.dash,
                                   look.marker))  # fmt: skip
                    names.update({e.name: (label, look.color) for e in members})
                self.table.set_groups(names)
            else:
                names = {}
                if self.table.groups:
                    self.table.set_groups({})
                for e in self.selected_entries():
                    look = self.colors.style(e.name)
                    legend.append((e.name, look.color, look.dash, look.marker))
            if self.geometry is not None:
                self.geometry.set_colors(self._swatch_colors(self.geometry.names))
            classes = {e.num_classes for e in self.selected_entries()}
            for key, chart in self.charts.items():
                hidden = UNDEFINED.get(key)
                if hidden and classes == {hidden[0]}:  # undefined for this class count
                    chart.set_series([])
                    chart.widget.layout.display = "none"
                    continue
                series = self._group_series(key) if self.group_by else self._run_series(key)
                with chart.figure.hold_sync():
                    chart.set_series(series)
                shown = None if chart.drawn else "none"
                if chart.widget.layout.display != shown:
                    chart.widget.layout.display = shown
            note = "" if legend else "select runs in the table to draw their curves"
            self.legend.value = charts.legend_html(legend, note)
            self._place_cursor()

    # ---------------------------------------------------------------- geometry

    def _geometry_runs(self) -> list[RunEntry]:
        """The first selected runs (in the order they were selected) of the first one's task."""
        chosen = [self._by_name[n] for n in self.selected]
        if not chosen:
            return []
        same = [e for e in chosen if e.task_key == chosen[0].task_key]
        return same[: self._geometry_count]

    def _swatch_colors(self, names: list[str]) -> list[str]:
        """Each geometry view's colour: that of its curve (its group's while grouped)."""
        groups = {}
        if self.group_by:
            for label, members in self.groups():
                groups.update({e.name: self.group_colors.color(label) for e in members})
        return [groups.get(n) or self.colors.color(n) for n in names]

    def _update_geometry(self) -> None:
        """Slice viewers of the first 2-4 selected runs of one task (rebuilt when they change)."""
        if not self._geometry_count:
            return
        chosen = self._geometry_runs()
        names = [e.name for e in chosen]
        if names == self._geometry_names:
            return
        if self.geometry is not None:
            self.geometry.close()
            self.geometry = None
        self._geometry_names = names
        self.geometry_box.children = []
        if len(chosen) < 2:
            return
        try:
            from richviz.widgets.compare_geometry import GeometryRow
        except ImportError:
            return
        try:
            self.geometry = GeometryRow(
                [e.open() for e in chosen],
                colors=self._swatch_colors(names),
                step=self.step,
                names=names,
                **self._geometry_options,
            )
        except Exception as exc:
            self.status.value = status_html(f"geometry: {error_line(exc)}", "error")
            return
        self.geometry_box.children = [self.geometry]

    # ---------------------------------------------------------------- background

    def _start_fill(self, fill: str | None) -> None:
        todo = [e for e in self.entries if e.usable and (fill == "all" or e.missing)]
        if fill is None or not todo:
            self.loaded = True
            return
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = status_html(f"metrics of {len(todo)} runs…", "busy")
        self._worker.submit(self._fill, todo)

    def _fill(self, job: Job, todo: list[RunEntry]) -> None:
        def report(fraction: float) -> None:
            self.progress.value = fraction

        try:
            changed = fill_missing(
                todo, report, job.check, layer=self._layer, probe_size=self._probe_size
            )
        except Cancelled:
            raise
        except Exception as exc:
            self.status.value = status_html(f"metrics: {error_line(exc)}", "error")
            self.progress.bar_style = "danger"
            return
        with self._lock, self.hold_sync():
            self.table.refresh()
            bad = {e.name for e in changed if not e.usable}
            if bad & set(self.selected):
                self.selected = [n for n in self.selected if n not in bad]
            elif {e.name for e in changed} & set(self.selected):
                self._on_selected({"new": self.selected})
            self.progress.value = 1.0
            self.progress.bar_style = "success"
            self._note()
            self.loaded = True

    def _note(self) -> None:
        usable = sum(e.usable for e in self.entries)
        missing = sum(bool(e.missing) for e in self.entries if e.usable)
        text = f"{len(self.entries)} runs, {usable} compared"
        if usable < len(self.entries):
            first = next(e for e in self.entries if not e.usable)
            text += f"; {len(self.entries) - usable} not compared, e.g. {first.error}"
        if missing:
            text += f"; {missing} runs without all their metrics yet"
        self.status.value = status_html(text, "error" if usable < len(self.entries) else "")

    # ---------------------------------------------------------------- lifetime

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background metrics (and the geometry row's views) are done."""
        ok = super().wait(timeout)
        if self.geometry is not None and hasattr(self.geometry, "wait"):
            ok = bool(self.geometry.wait(timeout)) and ok
        return ok

    def close(self) -> None:
        """Stop background work, close the geometry row, the charts and the widgets."""
        geometry = getattr(self, "geometry", None)
        if geometry is not None:
            geometry.close()
        for chart in getattr(self, "charts", {}).values():
            for mark in [*chart.marks, *chart.band_marks]:
                mark.close()
            chart.widget.close()
            chart.figure.close()
        table = getattr(self, "table", None)
        if table is not None:
            table.close()
        super().close()
