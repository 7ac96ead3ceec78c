"""Explorer: checkpoint browser, slice viewer and metrics panel linked by ``step``."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import traitlets

from richviz.widgets.browser import CheckpointBrowser, run_name
from richviz.widgets.metrics_panel import MetricsPanel
from richviz.widgets.slice_viewer import SliceViewer

__all__ = [
    "Explorer",
]


class Explorer(widgets.VBox):
    """All three views of a run, linked through ``step`` (and the browser's device choice).

    Selecting a checkpoint in the browser, moving the metrics slider or pressing Play moves
    every view; the slice viewer loads through the same run (its LRU-cached models).
    Keyword arguments ``viewer=`` / ``panel=`` are passed to :class:`SliceViewer` /
    :class:`MetricsPanel`.

    Attributes
    ----------
    step : Int >= 0, the step shown by all three views (linked to theirs).
    browser, viewer, panel : the :class:`CheckpointBrowser`, :class:`SliceViewer` and
        :class:`MetricsPanel`.
    header : HTML title with the run's folder name (HTML-escaped).

    A bad ``step`` raises ``traitlets.TraitError`` at once and leaves the views as they were.
    """

    step = traitlets.Int(0, min=0, help="step shown by all three views")

    def __init__(
        self,
        run: Any,
        step: int | None = None,
        viewer: dict[str, Any] | None = None,
        panel: dict[str, Any] | None = None,
        device: str = "auto",
        **kwargs: Any,
    ):
        steps = list(run.steps)
        initial = step if step is not None else (steps[-1] if steps else 0)
        self.run = run
        try:
            self.browser = CheckpointBrowser(run, step=initial, device=device)
            self.viewer = SliceViewer(run, step=initial, device=device, **(viewer or {}))
            self.panel = MetricsPanel(run, step=initial, **(panel or {}))
        except BaseException:
            self.close()  # stop the views already started (their worker threads)
            raise
        self.header = widgets.HTML(
            value=f"<h3 style='margin:4px 0'>richviz · {html.escape(run_name(run))}</h3>"
        )
        super().__init__(
            children=[
                self.header,
                widgets.HBox([self.browser, self.viewer]),
                self.panel,
            ],
            **kwargs,
        )
        self.step = initial
        self._links = [
            traitlets.link((self, "step"), (self.browser, "step")),
            traitlets.link((self, "step"), (self.viewer, "step")),
            traitlets.link((self, "step"), (self.panel, "step")),
            traitlets.link((self.browser, "device"), (self.viewer, "device")),
        ]

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
