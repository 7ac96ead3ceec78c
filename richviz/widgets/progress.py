"""A progress bar shown ahead of the work: visible while later cells run, in Voilà too.

Voilà (0.5) sends a cell's outputs to the page only when the cell has finished, so a progress
bar that a long cell opens for itself (a tqdm bar) appears at 100 %. A bar displayed by an
earlier cell is already on the page, and moves while the long cell reports to it::

    progress = ProgressLine()       # a cell of its own: the bar is shown at once
    progress                        # (display it)

    run = train("moons", out="runs/demo", progress=progress.track("training"))
    rows = run.metrics(progress=progress.track("metrics"))

``track(label)`` returns a ``callable(done, total)``: the ``progress=`` argument richviz's
long functions take (training, metrics, sweeps).
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets

from richviz.errors import ArgumentError

__all__ = ["ProgressLine"]


class ProgressLine(widgets.HBox):
    """One labelled progress bar for a notebook's long cells (see the module docstring).

    Attributes
    ----------
    bar : ipywidgets.FloatProgress
        The bar, from 0 to 1.
    label : ipywidgets.HTML
        What runs and how far: ``"training: 120 / 400"``; ``"training: done"`` at the end.

    Examples
    --------
    >>> from richviz.widgets.progress import ProgressLine
    >>> line = ProgressLine()
    >>> report = line.track("metrics")
    >>> report(3, 12)
    >>> line.bar.value, line.label.value
    (0.25, 'metrics: 3 / 12')
    >>> report(12, 12)
    >>> line.label.value
    'metrics: done (12)'
    """

    def __init__(self, description: str = "progress", **kwargs):
        self.bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description=description, bar_style="info",
            layout=widgets.Layout(width="360px"),
        )  # fmt: skip
        self.label = widgets.HTML("waiting for the cells below")
        super().__init__([self.bar, self.label], **kwargs)

    def track(self, label: str) -> Callable[[int, int], None]:
        """A ``progress=`` callable ``(done, total)`` that shows ``label`` and moves the bar."""
        text = html.escape(str(label))

        def report(done: int, total: int) -> None:
            if total < 0 or done < 0:
                raise ArgumentError(f"progress: done and total must be >= 0, got {done}, {total}")
            fraction = 1.0 if total == 0 else min(1.0, done / total)
            finished = total == 0 or done >= total
            self.bar.value = fraction
            self.bar.bar_style = "success" if finished else "info"
            self.label.value = (
                f"{text}: done ({total})" if finished else f"{text}: {done} / {total}"
            )

        report(0, 1)
        self.label.value = f"{text}: starting"
        return report
