"""The metric curves beside an animation frame: one small panel per headline number over the
run's steps (log axis of step + 1, as in the metrics panel), with a cursor at the frame's step.

Drawn on an :class:`richviz.widgets.export.Canvas` (the widgets' headless drawing list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from richviz.animation.headline import HEADLINE
from richviz.widgets import export, rendering

__all__ = ["CURVE_COLORS", "Curves", "draw_curves"]

CURVE_COLORS = ("#0072b2", "#d55e00", "#009e73")
_TITLES = {"test_acc": "test accuracy", "d_lr": "D_LR", "boundary_magnification":
           "boundary magnification (decades)"}  # fmt: skip
PANEL_WIDTH = 300.0
PANEL_HEIGHT = 110.0
_GAP = 48.0  # title, x tick labels


@dataclass(frozen=True)
class Curves:
    """The run's steps and each headline metric per step (NaN where missing)."""

    steps: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_numbers(cls, steps: Sequence[int], numbers: Sequence[dict[str, float]]) -> Curves:
        return cls(
            np.asarray(steps, dtype=float),
            {k: np.array([n[k] for n in numbers], dtype=float) for k, _ in HEADLINE},
        )

    @property
    def height(self) -> float:
        return len(self.values) * (PANEL_HEIGHT + _GAP)


def _limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(0.05, 0.05 * abs(hi))
    return lo - pad, hi + pad


def draw_curves(canvas: export.Canvas, curves: Curves, step: int, x0: float, y0: float) -> None:
    """Draw the panels of ``curves`` on ``canvas`` with their top-left corner at (x0, y0) and a
    cursor (vertical line, dot on each curve) at ``step``."""
    xs = np.log10(curves.steps + 1.0)
    a0, a1 = float(xs.min()), float(xs.max())
    if a1 <= a0:
        a1 = a0 + 1.0
    ticks = rendering.step_ticks(float(curves.steps.max()) + 1.0)
    left = x0 + 50.0
    cursor = math.log10(step + 1.0)
    for k, (key, values) in enumerate(curves.values.items()):
        top = y0 + k * (PANEL_HEIGHT + _GAP) + 20.0
        b0, b1 = _limits(values)

        def tx(v: np.ndarray, left: float = left) -> np.ndarray:
            return left + (np.asarray(v, float) - a0) / (a1 - a0) * PANEL_WIDTH

        def ty(v: np.ndarray, top: float = top, b0: float = b0, b1: float = b1) -> np.ndarray:
            return top + (1 - (np.asarray(v, float) - b0) / (b1 - b0)) * PANEL_HEIGHT

        canvas.text(left, top - 6, _TITLES.get(key, key), size=11, weight="bold")
        canvas.rect(left, top, PANEL_WIDTH, PANEL_HEIGHT, stroke="#888")
        yt = rendering.nice_ticks(b0, b1, 4)
        for t, text in zip(yt, rendering.format_ticks(yt, rendering.tick_format(yt)), strict=True):
            canvas.polyline([left - 4, left], [float(ty(t))] * 2, "#444")
            canvas.text(left - 7, float(ty(t)) + 3.5, text, size=9, anchor="end")
        for t in ticks:
            x = float(tx(math.log10(t)))
            if left - 0.5 <= x <= left + PANEL_WIDTH + 0.5:
                canvas.polyline([x, x], [top + PANEL_HEIGHT, top + PANEL_HEIGHT + 4], "#444")
                canvas.text(x, top + PANEL_HEIGHT + 15, f"{t:g}", size=9, anchor="middle")
        colour = CURVE_COLORS[k % len(CURVE_COLORS)]
        canvas.polyline(tx(xs), ty(values), colour, width=1.6)
        cx = float(tx(cursor))
        canvas.polyline([cx, cx], [top, top + PANEL_HEIGHT], "#222", width=1.0, dash="dashed")
        here = values[np.searchsorted(curves.steps, step)] if step in curves.steps else math.nan
        if math.isfinite(here):
            canvas.marker(cx, float(ty(here)), "circle", 7.0, colour, "#202020")
    bottom = y0 + (len(curves.values) - 1) * (PANEL_HEIGHT + _GAP) + 20.0 + PANEL_HEIGHT
    canvas.text(left + PANEL_WIDTH / 2, bottom + 31, "step + 1 (log)", size=10, anchor="middle")
