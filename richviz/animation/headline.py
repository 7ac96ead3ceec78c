"""The headline numbers of a checkpoint, as an animation frame writes them: test accuracy,
D_LR and the boundary magnification, read from the run's metrics rows (``Run.metrics``, cached
in ``metrics.json`` beside the run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HEADLINE", "Curves", "caption", "headline", "rows_by_step"]

#: (metrics key, label) of the numbers in each frame, in order
HEADLINE = (
    ("test_acc", "test acc"),
    ("d_lr", "D_LR"),
    ("boundary_magnification", "boundary mag."),
)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def rows_by_step(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Metrics rows keyed by their ``step``."""
    return {int(r["step"]): r for r in rows if r.get("step") is not None}


def headline(row: dict[str, Any] | None) -> dict[str, float]:
    """``{key: value}`` of :data:`HEADLINE` from one metrics row (NaN where missing)."""
    row = row or {}
    return {key: _number(row.get(key)) for key, _ in HEADLINE}


def _text(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.3f}"


def caption(step: int, numbers: dict[str, float]) -> str:
    """The frame's headline line, e.g. ``"step 120 · test acc 0.953 · D_LR 0.312 · ..."``
    (each number to three decimals, a dash where undefined)."""
    parts = [f"step {step}"] + [f"{label} {_text(numbers[key])}" for key, label in HEADLINE]
    return " · ".join(parts)


@dataclass(frozen=True)
class Curves:
    """The run's steps and each headline metric per step (NaN where missing), for the curves
    drawn beside the frames."""

    steps: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_rows(cls, steps: Sequence[int], rows: dict[int, dict[str, Any]]) -> Curves:
        """The curves of ``steps`` from metrics rows keyed by step (:func:`rows_by_step`)."""
        numbers = [headline(rows.get(s)) for s in steps]
        return cls(
            np.asarray(steps, dtype=float),
            {k: np.array([n[k] for n in numbers], dtype=float) for k, _ in HEADLINE},
        )
