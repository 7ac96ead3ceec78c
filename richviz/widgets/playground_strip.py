"""The Playground's metrics strip: one line chart per family of live metrics, over steps.

Accuracy and loss; D_LR with its factors confinement and isotropy, and boundary
magnification; the neural-collapse statistics NC1-NC4. Rows are dicts of
:data:`richviz.live.VIEW_METRICS` plus ``"step"``; a redraw moves the data of the same marks.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from richviz.widgets import charts
from richviz.widgets.metrics_panel import (
    BOUNDARY_SERIES,
    NC_SERIES,
    RICHNESS_SERIES,
    family_series,
)

__all__ = ["STRIP", "MetricsStrip"]

STRIP_WIDTH, STRIP_HEIGHT = 300, 190
#: the live metrics strip: (title, left series, right series, left log, right log, left range);
#: series are (metric key of :data:`richviz.live.VIEW_METRICS`, legend label)
STRIP = (
    ("performance", (("acc", "accuracy"),), (("loss", "loss"),), False, True, (0.0, 1.0)),
    ("richness", RICHNESS_SERIES, BOUNDARY_SERIES, False, False, (0.0, 1.0)),
    ("neural collapse", NC_SERIES, (), True, False, None),
)


class MetricsStrip:
    """One :class:`richviz.widgets.charts.LineChart` per family of :data:`STRIP`.

    Attributes: ``charts`` (title -> chart) and ``widget`` (an HBox of them).
    """

    def __init__(self) -> None:
        self.charts: dict[str, charts.LineChart] = {
            title: charts.LineChart(
                title,
                x_label="step",
                x_log=False,
                y_log=left_log,
                right_log=right_log,
                right=bool(right),
                y_range=y_range,
                width=STRIP_WIDTH,
                height=STRIP_HEIGHT,
            )
            for title, _left, right, left_log, right_log, y_range in STRIP
        }
        self.widget = widgets.HBox([c.widget for c in self.charts.values()])

    def draw(self, rows: list[dict[str, float]], classes: int | None) -> None:
        """Draw ``rows`` (sorted by step); ``classes`` hides statistics undefined for it."""
        steps = np.array([r["step"] for r in rows])
        for title, left, right, *_ in STRIP:
            series, note = family_series(rows, steps, left, right, classes)
            self.charts[title].set_series(series, note=note)
