"""The Playground's metrics strip: one line chart per family of live metrics, over steps.

Accuracy and loss; D_LR with its factors confinement and isotropy, and boundary
magnification; the neural-collapse statistics NC1-NC4. Rows are dicts of
:data:`richviz.live.VIEW_METRICS` plus ``"step"``; a redraw moves the data of the same marks.

The strip keeps its rows: one per drawn frame, plus one per checkpoint written between two
frames (the trainer thread queues the checkpoint's state, the frame loop computes its row),
so the strip has a point at every log-spaced step even when frames were skipped.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ipywidgets as widgets
import numpy as np

from richviz.widgets import charts
from richviz.widgets.metrics_panel import (
    BOUNDARY_SERIES,
    NC_SERIES,
    RICHNESS_SERIES,
    family_series,
)

if TYPE_CHECKING:
    from richviz.live import LiveState

__all__ = ["MAX_ROWS", "STRIP", "MetricsStrip"]

MAX_ROWS = 4000  #: rows kept at most (beyond, every second row is dropped)
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

    Attributes: ``charts`` (title -> chart), ``widget`` (an HBox of them), ``rows`` (the
    rows drawn, by step) and ``pending`` (checkpoint states waiting for their row).
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
        self.rows: list[dict[str, float]] = []
        #: checkpoint states waiting for their row (appended by the trainer thread)
        self.pending: collections.deque[LiveState] = collections.deque(maxlen=MAX_ROWS)

    def on_checkpoint(self, state: LiveState) -> None:
        """Trainer thread: a checkpoint's weights, for a row computed with the next frame."""
        self.pending.append(state)

    def checkpoint_rows(
        self, state: LiveState, metrics_of: Callable[[LiveState], dict[str, float] | None]
    ) -> list[dict[str, float]]:
        """Rows of the checkpoints queued before ``state`` (its trajectory's only, and after the
        last row), each from ``metrics_of(checkpoint state)``; ``metrics_of`` returning None
        (the trainer was replaced) ends it with no rows."""
        last = self.rows[-1]["step"] if self.rows else -1.0
        rows = []
        while self.pending:
            ck = self.pending[0]
            if ck.trajectory == state.trajectory and ck.step >= state.step:
                break  # a later checkpoint: its row comes with a later frame
            self.pending.popleft()
            if ck.trajectory != state.trajectory or ck.step <= last:
                continue  # another trajectory's, or a step the strip already has
            metrics = metrics_of(ck)
            if metrics is None:
                return []
            rows.append({"step": float(ck.step), **metrics})
            last = ck.step
        return rows

    def append(
        self,
        step: int,
        metrics: dict[str, float],
        backfill: Sequence[dict[str, float]] = (),
        classes: int | None = None,
    ) -> None:
        """Add the row of a frame at ``step`` after its ``backfill`` rows (rows from the first
        backfilled step on are replaced: a reset trajectory starts over) and draw."""
        row = {"step": float(step), **metrics}
        first = backfill[0]["step"] if backfill else row["step"]
        if self.rows and self.rows[-1]["step"] >= first:
            self.rows = [r for r in self.rows if r["step"] < first]
        self.rows.extend(backfill)
        self.rows.append(row)
        if len(self.rows) > MAX_ROWS:
            self.rows = self.rows[::2]
        self.draw(self.rows, classes)

    def draw(self, rows: list[dict[str, float]], classes: int | None) -> None:
        """Draw ``rows`` (sorted by step); ``classes`` hides statistics undefined for it."""
        steps = np.array([r["step"] for r in rows])
        for title, left, right, *_ in STRIP:
            series, note = family_series(rows, steps, left, right, classes)
            self.charts[title].set_series(series, note=note)
