"""SweepView: richness and accuracy of many runs against a hyper-parameter, one point per run.

Three small bqplot scatters share the x axis (a hyper-parameter that varies across the runs,
chosen in a dropdown): the final D_LR, the final boundary magnification (2-D tasks only) and
the final test accuracy. Points are coloured by a second hyper-parameter. Clicking a point
opens that run in an :class:`~richviz.widgets.Explorer` below: the "richness is not
accuracy" picture, interactive. Given metric tables (``richviz.sweep.sweep_metrics``'s result)
it draws at once; given runs, it reads their metrics (computing missing rows) in the
background.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import traitlets

from richviz.summary import RunSummary, summarize, varying
from richviz.widgets import charts, rendering
from richviz.widgets.common import error_line, status_html
from richviz.widgets.tasks import COMPUTE, BackgroundWork, Job, Worker

__all__ = ["CHARTS", "SweepView"]

#: (final-value key, chart title); a chart whose values are all missing is hidden.
CHARTS = (
    ("d_lr", "D_LR (final)"),
    ("boundary_magnification", "boundary magnification (final)"),
    ("test_acc", "test accuracy (final)"),
)
NONE = "none"
RUN_INDEX = "run"  # x choice when no numeric hyper-parameter varies: the run's index
PALETTE = rendering.CLASS_COLORS  # one colour per colour group (d3's category10)
CHART_WIDTH, CHART_HEIGHT = 320, 260


def _fmt(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


class SweepView(BackgroundWork, widgets.VBox):
    """Final D_LR, boundary magnification and test accuracy of runs against a hyper-parameter.

    Parameters
    ----------
    source
        ``{run folder: metric rows}`` (as returned by ``richviz.sweep.sweep_metrics``), or a
        sequence of runs / run folders (their ``metrics()`` load in the background).
    x, color
        Initial hyper-parameters for the x axis and the colours.
    layer, probe_size
        Passed to ``run.metrics`` when ``source`` holds runs.
    explorer
        Keyword arguments of the :class:`~richviz.widgets.Explorer` opened on a click.

    Attributes
    ----------
    x_param : Unicode
        Hyper-parameter on the x axis; one of :attr:`x_choices` (a bad value raises).
    color_param : Unicode
        Hyper-parameter of the colours, ``"none"`` or one of :attr:`color_choices`.
    selected : Unicode
        Folder of the run opened in the explorer ("" when none).
    loaded : Bool
        True once the runs' summaries are in.
    """

    x_param = traitlets.Unicode("", help="hyper-parameter on the x axis")
    color_param = traitlets.Unicode(NONE, help="hyper-parameter of the colours, or 'none'")
    selected = traitlets.Unicode("", help="folder of the run shown in the explorer")
    loaded = traitlets.Bool(False, help="True once the summaries are in")
    wait_timeout = 300.0  # metrics of many runs may have to be computed

    def __init__(
        self,
        source: Mapping[str | os.PathLike, Sequence[Mapping[str, Any]]] | Sequence[Any],
        x: str | None = None,
        color: str | None = None,
        layer: str | None = None,
        probe_size: int = 1000,
        explorer: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.summaries: list[RunSummary] = []
        self.x_choices: list[str] = []
        self.color_choices: list[str] = [NONE]
        self.explorer: Any = None
        self._explorer_kwargs = dict(explorer or {})
        self._wanted = (x, color)
        self._layer, self._probe_size = layer, probe_size
        self._worker = Worker("richviz-sweep")
        #: per chart key, its Scatter marks (one per colour group)
        self.marks: dict[str, list[bqplot.Scatter]] = {}
        self._mark_paths: dict[int, list[Path]] = {}
        self._sx: bqplot.Scale = bqplot.LinearScale()
        self.figures: dict[str, bqplot.Figure] = {}
        self._x_axes: dict[str, bqplot.Axis] = {}
        for key, title in CHARTS:
            sy = bqplot.LinearScale()
            x_axis = bqplot.Axis(scale=self._sx, label="", grid_lines="none")
            y_axis = bqplot.Axis(scale=sy, side="left", grid_lines="dashed")
            self._x_axes[key] = x_axis
            self.figures[key] = bqplot.Figure(
                title=title,
                marks=[],
                axes=[x_axis, y_axis],
                title_style={"font-size": "13px"},
                fig_margin={"top": 30, "bottom": 40, "left": 55, "right": 15},
                layout=widgets.Layout(width=f"{CHART_WIDTH}px", height=f"{CHART_HEIGHT}px"),
            )
        self.x_menu = widgets.Dropdown(options=[], description="x", layout={"width": "200px"})
        self.color_menu = widgets.Dropdown(
            options=[NONE], value=NONE, description="colour", layout={"width": "200px"}
        )
        self.legend = widgets.HTML(value="")
        self.status = widgets.HTML(value="")
        self.explorer_box = widgets.VBox([])
        super().__init__(
            children=[
                widgets.HBox([self.x_menu, self.color_menu]),
                widgets.HBox(list(self.figures.values())),
                self.legend,
                self.status,
                self.explorer_box,
            ],
            **kwargs,
        )
        self.x_menu.observe(lambda c: self._menu("x_param", c), names="value")
        self.color_menu.observe(lambda c: self._menu("color_param", c), names="value")
        self.observe(self._on_params, names=["x_param", "color_param"])
        if isinstance(source, Mapping):
            try:
                self._set_summaries([summarize(p, rows) for p, rows in source.items()])
            except BaseException:
                self.close()
                raise
        else:
            runs = list(source)
            self.status.value = status_html(f"loading metrics of {len(runs)} runs…", "busy")
            self._worker.submit(self._load, runs)

    # ---------------------------------------------------------------- traits

    @traitlets.validate("x_param")
    def _check_x(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in self.x_choices and not (value == "" and not self.loaded):
            raise traitlets.TraitError(f"x_param={value!r} must be one of {self.x_choices}")
        return value

    @traitlets.validate("color_param")
    def _check_color(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in self.color_choices:
            raise traitlets.TraitError(f"color_param={value!r} must be one of {self.color_choices}")
        return value

    def _menu(self, name: str, change: dict) -> None:
        if change["new"] is not None and getattr(self, name) != change["new"]:
            setattr(self, name, change["new"])

    def _on_params(self, change: dict) -> None:
        self.x_menu.value = self.x_param or None
        self.color_menu.value = self.color_param
        if self.loaded:
            self._draw()

    # ---------------------------------------------------------------- loading

    def _load(self, job: Job, runs: list[Any]) -> None:
        from richviz.runs import Run

        summaries = []
        try:
            for i, r in enumerate(runs):
                run = r if hasattr(r, "metrics") else Run.open(r)
                with COMPUTE.hold():
                    rows = run.metrics(
                        progress=False, layer=self._layer, probe_size=self._probe_size
                    )
                summaries.append(summarize(run.path, rows))
                job.check()
                self.status.value = status_html(f"metrics of {i + 1}/{len(runs)} runs…", "busy")
        except Exception as exc:
            self.status.value = status_html(error_line(exc), "error")
            return
        self._set_summaries(summaries)

    def _set_summaries(self, summaries: list[RunSummary]) -> None:
        self.summaries = summaries
        self.x_choices = varying(summaries, numeric=True) or [RUN_INDEX]
        self.color_choices = [NONE, *varying(summaries)]
        x, color = self._wanted
        note = f"{len(summaries)} runs · click a point to open the run below"
        if x is not None and x not in self.x_choices:
            note = f"x={x!r} does not vary across these runs; choose one of {self.x_choices}"
            x = None
        if color is not None and color not in self.color_choices:
            color = None
        x = x or self.x_choices[0]
        if color is None:
            others = [c for c in self.color_choices[1:] if c != x]
            color = others[0] if others else NONE
        with self.hold_trait_notifications():
            self.x_menu.options = list(self.x_choices)
            self.color_menu.options = list(self.color_choices)
            self.loaded = True
            self.x_param = x
            self.color_param = color
        self._on_params({})
        self.status.value = status_html(note)

    # ---------------------------------------------------------------- drawing

    def x_values(self) -> np.ndarray:
        """The x coordinate of every run (NaN where the run lacks the hyper-parameter)."""
        if self.x_param == RUN_INDEX:
            return np.arange(len(self.summaries), dtype=float)
        out = np.full(len(self.summaries), np.nan)
        for i, s in enumerate(self.summaries):
            v = s.params.get(self.x_param)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i] = float(v)
        return out

    def groups(self) -> list[tuple[Any, list[int]]]:
        """(colour value, indices of its runs), values sorted; one group when colour is none."""
        if self.color_param == NONE:
            return [(None, list(range(len(self.summaries))))]
        by: dict[str, tuple[Any, list[int]]] = {}
        for i, s in enumerate(self.summaries):
            v = s.params.get(self.color_param)
            by.setdefault(repr(v), (v, []))[1].append(i)
        return sorted(
            by.values(), key=lambda g: (not isinstance(g[0], (int, float)), str(type(g[0])), g[0])
        )

    def _draw(self) -> None:
        x = self.x_values()
        finite = x[np.isfinite(x)]
        log = bool(len(finite)) and finite.min() > 0 and finite.max() / finite.min() >= 100
        self._sx = bqplot.LogScale() if log else bqplot.LinearScale()
        groups = self.groups()
        self.marks = {}
        self._mark_paths = {}
        legend = []
        for g, (value, _) in enumerate(groups):
            if value is not None:
                color = PALETTE[g % len(PALETTE)]
                label = f"{self.color_param}={_fmt(value)}"
                legend.append(
                    '<span style="white-space:nowrap;margin-right:12px">'
                    f'<span style="color:{color}">●</span> {html.escape(label)}</span>'
                )
        for key, _title in CHARTS:
            fig = self.figures[key]
            y_all = np.array([s.final.get(key, math.nan) for s in self.summaries], dtype=float)
            show = bool(np.isfinite(y_all).any())
            fig.layout.display = None if show else "none"
            marks = []
            for g, (_value, idx) in enumerate(groups):
                keep = [i for i in idx if np.isfinite(x[i]) and np.isfinite(y_all[i])]
                if not keep:
                    continue
                mark = bqplot.Scatter(
                    x=x[keep],
                    y=y_all[keep],
                    scales={"x": self._sx, "y": fig.axes[1].scale},
                    colors=[PALETTE[g % len(PALETTE)]],
                    default_size=48,
                    stroke="white",
                    tooltip=bqplot.Tooltip(fields=["x", "y"], formats=["~g", ".4g"]),
                )
                mark.on_element_click(self._on_click)
                self._mark_paths[id(mark)] = [self.summaries[i].path for i in keep]
                marks.append(mark)
            self.marks[key] = marks
            axis = self._x_axes[key]
            with fig.hold_sync():
                axis.scale = self._sx
                axis.label = self.x_param + (" (log)" if log else "")
                charts.fit_axis(axis, x, log)  # 10ᵏ labels, at most 6 ticks
                charts.fit_axis(fig.axes[1], y_all, False)
                fig.marks = marks
        self.legend.value = (
            f'<div style="font-size:11px;padding-left:55px">{"".join(legend)}</div>'
            if legend
            else ""
        )

    # ---------------------------------------------------------------- clicks

    def _on_click(self, mark: bqplot.Scatter, event: Mapping[str, Any]) -> None:
        """bqplot ``on_element_click`` handler: open the clicked point's run below."""
        try:
            index = int(event["data"]["index"])
            path = self._mark_paths[id(mark)][index]
        except (KeyError, IndexError, TypeError, ValueError):
            return
        self.open_run(path)

    def open_run(self, path: str | os.PathLike) -> None:
        """Show the run folder ``path`` in an Explorer below the charts (closing the last one)."""
        from richviz.runs import Run
        from richviz.widgets.explorer import Explorer

        try:
            run = Run.open(path)
            explorer = Explorer(run, **self._explorer_kwargs)
        except Exception as exc:
            self.status.value = status_html(f"{path}: {error_line(exc)}", "error")
            return
        if self.explorer is not None:
            self.explorer.close()
        self.explorer = explorer
        self.explorer_box.children = [explorer]
        self.selected = str(Path(path))
        self.status.value = status_html(f"showing {Path(path).name}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the summaries (and an opened explorer's views) are done."""
        ok = super().wait(timeout)
        if self.explorer is not None:
            ok = self.explorer.wait(timeout) and ok
        return ok

    def close(self) -> None:
        """Close the explorer, stop background work and close the widgets."""
        explorer = getattr(self, "explorer", None)
        if explorer is not None:
            explorer.close()
        super().close()
