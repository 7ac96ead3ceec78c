"""Explorer: checkpoint browser, slice viewer and metrics panel linked by ``step``."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from richviz.widgets import export
from richviz.widgets.browser import CheckpointBrowser, run_name
from richviz.widgets.common import Step, as_run, export_row, status_html
from richviz.widgets.metrics_panel import MetricsPanel
from richviz.widgets.slice_records import COLORBAR_WIDTH, FIGURE_SIZE
from richviz.widgets.slice_viewer import SliceViewer

__all__ = [
    "Explorer",
]


class Explorer(widgets.VBox):
    """All three views of a run, linked through ``step`` (and the browser's device choice).

    Laid out to fit a 1400 x 900 screen: the slice viewer (with the step slider and Play) on
    the left, the metrics charts and the checkpoint table in two tabs on the right.

    Selecting a checkpoint in the browser, moving the metrics slider or pressing Play moves
    every view; the slice viewer loads through the same run (its LRU-cached models).
    ``run`` is a :class:`richviz.runs.Run` or its folder (``str`` / ``os.PathLike``, opened with
    :meth:`~richviz.runs.Run.open`). Keyword arguments ``viewer=`` / ``panel=`` are passed to
    :class:`SliceViewer` / :class:`MetricsPanel`.

    Attributes
    ----------
    step : Int >= 0, the step shown by all three views (linked to theirs). A value that is not
        a readable checkpoint step snaps to the nearest one (ties: the earlier); bools,
        non-integers, NaN and negative numbers raise ``traitlets.TraitError``.
    browser, viewer, panel : the :class:`CheckpointBrowser`, :class:`SliceViewer` and
        :class:`MetricsPanel`.
    header : HTML title with the run's folder name (HTML-escaped).

    A step between checkpoints (``ex.step = 9`` on a run with steps 8 and 10) shows the nearest
    one (8) in every view, whichever route it came in by (this trait, ``step=``, a linked
    widget, a slider); a refused value raises ``traitlets.TraitError`` at once and leaves the
    views as they were.

    Examples
    --------
    A tiny run (four steps of the quick start's circles task, two checkpoints), then every view
    on its last step; moving ``step`` moves them all:

    >>> from richviz.train import train
    >>> from richviz.widgets import Explorer
    >>> run = train("circles", out="runs/tiny", steps=4, progress=False,
    ...             overrides={"checkpoints": 2})
    >>> run.steps
    [0, 4]
    >>> ex = Explorer(run, viewer={"resolution": 16, "coarse_resolution": 16}, device="cpu")
    >>> ex.step, ex.viewer.step, ex.panel.step
    (4, 4, 4)
    >>> ex.step = 0
    >>> ex.viewer.step, ex.browser.step
    (0, 0)
    >>> ex.wait()
    True
    >>> ex.viewer.frame.step
    0
    >>> ex.close()
    """

    step = Step(help="step shown by all three views (snapped to the nearest checkpoint)")

    def __init__(
        self,
        run: Any,
        step: int | None = None,
        viewer: dict[str, Any] | None = None,
        panel: dict[str, Any] | None = None,
        device: str = "auto",
        **kwargs: Any,
    ):
        run = as_run(run)
        steps = list(run.steps)
        initial = step if step is not None else (steps[-1] if steps else None)
        self.run = run
        try:
            self.browser = CheckpointBrowser(run, step=initial, device=device)
            self.viewer = SliceViewer(
                run, step=initial, device=device, **{"step_slider": True, **(viewer or {})}
            )
            self.panel = MetricsPanel(run, step=initial, **(panel or {}))
        except BaseException:
            self.close()  # stop the views already started (their worker threads)
            raise
        self.header = widgets.HTML(
            value=f"<h3 style='margin:4px 0'>richviz · {html.escape(run_name(run))}</h3>"
        )
        self.panel.step_row.layout.display = "none"  # the viewer's slider moves every view
        self.viewer.layout.flex = "0 0 auto"
        self.viewer.layout.width = f"{FIGURE_SIZE + COLORBAR_WIDTH + 8}px"
        self.tabs = widgets.Tab(children=[self.panel, self.browser])
        self.tabs.titles = ("metrics", "checkpoints")
        self.status = widgets.HTML(value="")
        exports = [("view PNG", self.save_png, "90px"), ("view SVG", self.save_svg, "90px")]
        self.export_name, buttons, export_box = export_row(
            "richviz", exports, self.status, name_width="180px"
        )
        self.png_button, self.svg_button = buttons
        super().__init__(
            children=[
                widgets.HBox([self.header, export_box, self.status]),
                # side by side on a wide screen (1400 px); the tabs wrap below on a narrow one
                widgets.HBox(
                    [self.viewer, self.tabs],
                    layout={"align_items": "flex-start", "flex_flow": "row wrap"},
                ),
            ],
            **kwargs,
        )
        self._links = [traitlets.link((self.browser, "device"), (self.viewer, "device"))]
        if initial is not None:  # without checkpoints every step is refused: nothing to link
            self.step = initial  # snapped like the views' (their constructors got ``initial``)
            self._links += [
                traitlets.link((self, "step"), (view, "step"))
                for view in (self.browser, self.viewer, self.panel)
            ]

    def press(self, action: str) -> None:
        """Do what a key does over the slice figure or the step row (see
        :mod:`richviz.widgets.keyboard`): ``previous``, ``next``, ``first``, ``last`` move
        every view's step, ``toggle_play`` starts or stops Play."""
        self.viewer.press(action)

    def _checkpoint_steps(self) -> list[int]:
        """The steps ``step`` snaps to: the run's readable checkpoints (see :class:`Step`)."""
        return list(self.run.steps)

    def canvas(self) -> export.Canvas:
        """The slice view and the four charts side by side (each with colour bar / legend)."""
        viewer = self.viewer.canvas()
        charts = self.panel.canvas()
        canvas = export.Canvas(viewer.width + charts.width + 10, max(viewer.height, charts.height))
        self.viewer.canvas(canvas)
        for kind, op in charts.ops:  # shift the charts to the right of the view
            op = dict(op)
            dx = viewer.width + 10
            if "box" in op:
                x, y, w, h = op["box"]
                op["box"] = (x + dx, y, w, h)
            elif "xs" in op:
                op["xs"] = op["xs"] + dx
            else:
                op["x"] = op["x"] + dx
            canvas.ops.append((kind, op))
        return canvas

    def save_png(self, path: str | os.PathLike | None = None, scale: float = 2.0) -> Path:
        """Write the whole view (slice with colour bar and legend, every chart with its
        legend) as PNG on the server, ``scale`` x resolution; default
        ``<file box>-step<step>.png``. The status line names the file."""
        out = export.write_canvas(self.canvas(), self._export_path(path, ".png"), "png", scale)
        self.status.value = status_html(f"view written to {out.resolve()}")
        return out

    def save_svg(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole view as SVG on the server; default ``<file box>-step<step>.svg``."""
        out = export.write_canvas(self.canvas(), self._export_path(path, ".svg"), "svg")
        self.status.value = status_html(f"view written to {out.resolve()}")
        return out

    def save_animation(self, path: str | os.PathLike, curves: bool = True, **kwargs: Any) -> Any:
        """Write the slice view over the run as a GIF or MP4, by default with the metric curves
        and a moving cursor beside it: :meth:`SliceViewer.save_animation` of :attr:`viewer`
        (``kwargs``: ``fps``, ``duration``, ``show``, ...). The status line names the file."""
        anim = self.viewer.save_animation(path, curves=curves, **kwargs)
        self.status.value = status_html(f"animation written to {anim.path.resolve()}")
        return anim

    def _export_path(self, path: str | os.PathLike | None, suffix: str) -> Path:
        """``path``, or ``<file box>-step<step><suffix>``."""
        return export.export_path(path, self.export_name.value, suffix, self.step)

    @property
    def model(self) -> Any:
        """The model loaded by the browser."""
        return self.browser.model

    @property
    def checkpoint(self) -> Any:
        """The checkpoint selected (and loaded) in the browser."""
        return self.browser.checkpoint

    def wait(self, timeout: float | None = 120.0) -> bool:
        """Block until all three views finished their background work (tests, scripts)."""
        ok = self.browser.wait(timeout)
        ok = self.panel.wait(timeout) and ok
        ok = self.viewer.wait(timeout) and ok
        # a browser revert may have queued more viewer work
        return self.browser.wait(timeout) and self.viewer.wait(timeout) and ok

    def close(self) -> None:
        """Close the three views and this container (safe after a failed ``__init__``)."""
        for name in ("browser", "viewer", "panel"):
            view = getattr(self, name, None)  # absent if __init__ failed before creating it
            if view is not None:
                view.close()
        super().close()
