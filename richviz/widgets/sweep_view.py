"""SweepView: richness and accuracy of many runs against a hyper-parameter, one point per run.

Three small bqplot scatters share the x axis (a hyper-parameter that varies across the runs,
chosen in a dropdown): the final D_LR, the final boundary magnification (2-D tasks only) and
the final test accuracy. Points are coloured by a second hyper-parameter. Clicking a point
opens that run in an :class:`~richviz.widgets.Explorer` below: the "richness is not
accuracy" picture, interactive. Given metric tables (``richviz.sweep.sweep_metrics``'s result)
it draws at once; given runs, it reads their metrics (computing missing rows) in the
background.

Several runs at once: in the "pick" mode a click adds a point to the selection (or removes
it), in the "box" mode a dragged box (a bqplot ``BrushSelector``) selects the points inside;
"Compare selected" opens them in a :class:`~richviz.widgets.Compare` below. Points that
coincide (same x, y within 1 % of the chart's range) get a count label "×k", and where several
runs of one colour share an x value (seeds) the chart draws their mean with a bar of mean +-
the population standard deviation (:func:`richviz.compare.group_bands`).
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
from richviz.widgets import chart_axes, rendering
from richviz.widgets.common import error_line, status_html
from richviz.widgets.tasks import COMPUTE, BackgroundWork, Job, Worker

__all__ = ["CHARTS", "CLICK_MODES", "COINCIDE", "SweepView", "coinciding"]

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
#: what a click on a point does: open the run below, or add it to / remove it from the selection;
#: "box": drag a box to select the points inside
CLICK_MODES = (("open run", "open"), ("pick", "pick"), ("box", "box"))
COINCIDE = 0.01  #: points closer than this fraction of the y range, at equal x, coincide
SELECTED_COLOR = "#000000"


def coinciding(x: np.ndarray, y: np.ndarray, tol: float) -> list[list[int]]:
    """Clusters (two or more indices) of points with equal ``x`` whose ``y`` values chain
    within ``tol`` of each other (sorted by y); non-finite points are never in a cluster."""
    order = [i for i in np.lexsort((y, x)) if np.isfinite(x[i]) and np.isfinite(y[i])]
    clusters: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and x[i] == x[current[-1]] and y[i] - y[current[-1]] <= tol:
            current.append(i)
            continue
        if len(current) > 1:
            clusters.append(current)
        current = [i]
    if len(current) > 1:
        clusters.append(current)
    return clusters


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
    compare
        Keyword arguments of the :class:`~richviz.widgets.Compare` of the selected runs.

    Attributes
    ----------
    x_param : Unicode
        Hyper-parameter on the x axis; one of :attr:`x_choices` (a bad value raises).
    color_param : Unicode
        Hyper-parameter of the colours, ``"none"`` or one of :attr:`color_choices`.
    selected : Unicode
        Folder of the run opened in the explorer ("" when none).
    chosen : List of Unicode
        Folders of the runs selected for "Compare selected" (pick or box); each must be one of
        the view's runs.
    click_mode : Enum ``"open"`` | ``"pick"`` | ``"box"``
        What a click does: open the run in an Explorer, add/remove it from ``chosen``; or
        drag a box that selects the points inside.
    loaded : Bool
        True once the runs' summaries are in.
    bands : dict
        Per chart key, ``[(colour value, Band)]``: at each x value where two or more runs of
        that colour group have a value, their mean and mean +- population std (``count``).
    compare : the :class:`~richviz.widgets.Compare` opened by "Compare selected", or None.
    """

    x_param = traitlets.Unicode("", help="hyper-parameter on the x axis")
    color_param = traitlets.Unicode(NONE, help="hyper-parameter of the colours, or 'none'")
    selected = traitlets.Unicode("", help="folder of the run shown in the explorer")
    loaded = traitlets.Bool(False, help="True once the summaries are in")
    chosen = traitlets.List(traitlets.Unicode(), help="run folders selected for Compare")
    click_mode = traitlets.Enum(
        [v for _, v in CLICK_MODES], "open", help="'open': open the run; 'pick'; 'box'"
    )
    wait_timeout = 300.0  # metrics of many runs may have to be computed

    def __init__(
        self,
        source: Mapping[str | os.PathLike, Sequence[Mapping[str, Any]]] | Sequence[Any],
        x: str | None = None,
        color: str | None = None,
        layer: str | None = None,
        probe_size: int = 1000,
        explorer: Mapping[str, Any] | None = None,
        compare: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.summaries: list[RunSummary] = []
        self.compare: Any = None
        self._compare_kwargs = dict(compare or {})
        self.bands: dict[str, list[tuple[Any, Any]]] = {}
        #: per chart key: the count labels of coinciding points, the selection rings, brush
        self.count_marks: dict[str, bqplot.Label] = {}
        self.chosen_marks: dict[str, bqplot.Scatter] = {}
        self.brushes: dict[str, bqplot.interacts.BrushSelector] = {}
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
        self.mode_buttons = widgets.ToggleButtons(
            options=CLICK_MODES, value="open", description="click",
            style={"button_width": "80px"},
        )  # fmt: skip
        self.compare_button = widgets.Button(
            description="Compare selected", disabled=True, layout={"width": "170px"}
        )
        self.clear_button = widgets.Button(
            description="clear", disabled=True, layout={"width": "70px"}
        )
        self.compare_button.on_click(lambda _b: self.open_compare())
        self.clear_button.on_click(lambda _b: setattr(self, "chosen", []))
        self.mode_buttons.observe(lambda c: self._menu("click_mode", c), names="value")
        super().__init__(
            children=[
                widgets.HBox([self.x_menu, self.color_menu]),
                widgets.HBox([self.mode_buttons, self.compare_button, self.clear_button]),
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
        self.observe(self._on_chosen, names=["chosen"])
        self.observe(self._on_mode, names=["click_mode"])
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

    @traitlets.validate("chosen")
    def _check_chosen(self, proposal: dict) -> list[str]:
        known = {str(s.path) for s in self.summaries}
        names = [str(Path(v)) for v in dict.fromkeys(proposal["value"])]
        bad = [n for n in names if n not in known]
        if bad:
            raise traitlets.TraitError(f"chosen: {bad[0]!r} is not one of this view's runs")
        return names

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
            extra = self._overlays(key, fig, x, y_all, groups)
            axis = self._x_axes[key]
            with fig.hold_sync():
                axis.scale = self._sx
                axis.label = self.x_param + (" (log)" if log else "")
                chart_axes.fit_axis(axis, x, log)  # 10ᵏ labels, at most 6 ticks
                chart_axes.fit_axis(fig.axes[1], y_all, False)
                fig.marks = extra["bands"] + marks + extra["top"]
                fig.interaction = self.brushes[key] if self.click_mode == "box" else None
        self.legend.value = (
            f'<div style="font-size:11px;padding-left:55px">{"".join(legend)}</div>'
            if legend
            else ""
        )

    def _overlays(
        self,
        key: str,
        fig: bqplot.Figure,
        x: np.ndarray,
        y_all: np.ndarray,
        groups: list[tuple[Any, list[int]]],
    ) -> dict[str, list[bqplot.Mark]]:
        """The seed bands (under the points), the count labels and selection rings (over them)
        and the box selector of one chart."""
        from richviz.compare import group_bands

        scales = {"x": self._sx, "y": fig.axes[1].scale}
        ok = np.isfinite(x) & np.isfinite(y_all)
        band_marks: list[bqplot.Mark] = []
        self.bands[key] = []
        for g, (value, idx) in enumerate(groups):
            keep = [i for i in idx if ok[i]]
            if len(keep) < 2:
                continue
            band = group_bands([([x[i]], [y_all[i]]) for i in keep], spread="std")
            rep = band.count >= 2
            if not rep.any():
                continue
            self.bands[key].append((value, band))
            color = PALETTE[g % len(PALETTE)]
            bx, lo, hi, mean = band.x[rep], band.lo[rep], band.hi[rep], band.mean[rep]
            bars_x = np.column_stack([bx, bx, np.full_like(bx, np.nan)]).ravel()[:-1]
            bars_y = np.column_stack([lo, hi, np.full_like(bx, np.nan)]).ravel()[:-1]
            band_marks.append(
                bqplot.Lines(x=bars_x, y=bars_y, scales=scales, colors=[color],
                             stroke_width=6, opacities=[0.35])
            )  # fmt: skip
            band_marks.append(
                bqplot.Lines(x=bx, y=mean, scales=scales, colors=[color], stroke_width=1.5,
                             line_style="dashed", marker="rectangle", marker_size=24,
                             opacities=[0.9])
            )  # fmt: skip
        finite_y = y_all[ok]
        span = float(np.ptp(finite_y)) if finite_y.size else 0.0
        tol = COINCIDE * span if span > 0 else 1e-12
        clusters = coinciding(np.where(ok, x, np.nan), np.where(ok, y_all, np.nan), tol)
        label = bqplot.Label(
            x=[float(x[c[0]]) for c in clusters],
            y=[float(np.mean(y_all[c])) for c in clusters],
            text=[f"×{len(c)}" for c in clusters],
            scales=scales, y_offset=-13, align="middle", default_size=12, font_weight="bold",
            colors=["#333333"],
        )  # fmt: skip
        self.count_marks[key] = label
        ring = bqplot.Scatter(
            x=[], y=[], scales=scales, default_size=160, fill=False, stroke=SELECTED_COLOR,
            stroke_width=2.0, colors=[SELECTED_COLOR],
        )  # fmt: skip
        self.chosen_marks[key] = ring
        self._draw_chosen_mark(key, x, y_all)
        brush = bqplot.interacts.BrushSelector(
            x_scale=self._sx, y_scale=fig.axes[1].scale, color="#888888"
        )
        brush.observe(
            lambda c, k=key: self._on_brush(k, c), names=["brushing", "selected_x", "selected_y"]
        )
        old = self.brushes.get(key)
        self.brushes[key] = brush
        if old is not None:
            old.close()
        top = [ring] + ([label] if clusters else [])
        return {"bands": band_marks, "top": top}

    def _draw_chosen_mark(self, key: str, x: np.ndarray | None = None, y=None) -> None:
        if x is None:
            x = self.x_values()
        if y is None:
            y = np.array([s.final.get(key, math.nan) for s in self.summaries], dtype=float)
        chosen = set(self.chosen)
        idx = [
            i
            for i, s in enumerate(self.summaries)
            if str(s.path) in chosen and np.isfinite(x[i]) and np.isfinite(y[i])
        ]
        ring = self.chosen_marks.get(key)
        if ring is not None:
            with ring.hold_sync():
                ring.x, ring.y = x[idx], y[idx]

    # ---------------------------------------------------------------- selection

    def _on_chosen(self, change: dict) -> None:
        n = len(self.chosen)
        self.compare_button.disabled = n < 1
        self.compare_button.description = f"Compare selected ({n})" if n else "Compare selected"
        self.clear_button.disabled = n == 0
        if self.loaded:
            for key in self.chosen_marks:
                self._draw_chosen_mark(key)

    def _on_mode(self, change: dict) -> None:
        self.mode_buttons.value = self.click_mode
        for key, fig in self.figures.items():
            fig.interaction = self.brushes.get(key) if self.click_mode == "box" else None

    def _on_brush(self, key: str, change: dict) -> None:
        """A box drawn (``brushing`` back to False, or its corners synced after): select the
        points inside it."""
        brush = self.brushes.get(key)
        if brush is None or brush.brushing:
            return
        box = brush.selected
        if box is None or len(box) != 2:
            return
        (x0, y0), (x1, y1) = np.asarray(box, dtype=float)
        self.select_box(key, (min(x0, x1), max(x0, x1)), (min(y0, y1), max(y0, y1)))

    def select_box(
        self, key: str, x_range: tuple[float, float], y_range: tuple[float, float]
    ) -> list[str]:
        """Select (``chosen``) the runs whose point in chart ``key`` lies in the box; returns
        their folders."""
        x = self.x_values()
        y = np.array([s.final.get(key, math.nan) for s in self.summaries], dtype=float)
        inside = (x >= x_range[0]) & (x <= x_range[1]) & (y >= y_range[0]) & (y <= y_range[1])
        self.chosen = [str(s.path) for s, hit in zip(self.summaries, inside, strict=True) if hit]
        self.status.value = status_html(
            f"{len(self.chosen)} runs selected · Compare selected opens them below"
        )
        return list(self.chosen)

    def toggle(self, path: str | os.PathLike) -> None:
        """Add the run folder ``path`` to the selection, or remove it when it is there."""
        name = str(Path(path))
        self.chosen = [c for c in self.chosen if c != name] if name in self.chosen else [
            *self.chosen, name
        ]  # fmt: skip

    def open_compare(self, paths: Sequence[str | os.PathLike] | None = None) -> Any:
        """Open the selected runs (or ``paths``) in a :class:`~richviz.widgets.Compare` below
        the charts (closing the explorer or comparison shown there); returns it."""
        from richviz.widgets.compare import Compare

        paths = [Path(p) for p in (self.chosen if paths is None else paths)]
        if not paths:
            self.status.value = status_html("select runs first (pick or box)", "error")
            return None
        try:
            view = Compare(paths, **self._compare_kwargs)
        except Exception as exc:
            self.status.value = status_html(error_line(exc), "error")
            return None
        self._close_below()
        self.compare = view
        self.explorer_box.children = [view]
        self.status.value = status_html(f"comparing {len(paths)} runs below")
        return view

    def _close_below(self) -> None:
        for attr in ("explorer", "compare"):
            old = getattr(self, attr, None)
            if old is not None:
                old.close()
                setattr(self, attr, None)

    # ---------------------------------------------------------------- clicks

    def _on_click(self, mark: bqplot.Scatter, event: Mapping[str, Any]) -> None:
        """bqplot ``on_element_click`` handler: open the clicked point's run below."""
        try:
            index = int(event["data"]["index"])
            path = self._mark_paths[id(mark)][index]
        except (KeyError, IndexError, TypeError, ValueError):
            return
        if self.click_mode == "open":
            self.open_run(path)
        else:  # pick (a click in the box mode picks too)
            self.toggle(path)

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
        self._close_below()
        self.explorer = explorer
        self.explorer_box.children = [explorer]
        self.selected = str(Path(path))
        self.status.value = status_html(f"showing {Path(path).name}")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the summaries (and an opened explorer's or comparison's work) are done."""
        ok = super().wait(timeout)
        for below in (self.explorer, self.compare):
            if below is not None:
                ok = below.wait(timeout) and ok
        return ok

    def close(self) -> None:
        """Close the explorer or comparison, stop background work and close the widgets."""
        self._close_below()
        for brush in getattr(self, "brushes", {}).values():
            brush.close()
        super().close()
