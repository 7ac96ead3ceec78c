"""One colour range and one class count for a whole animation, so the colour bar is the same
in every frame: :func:`richviz.views.run_color_limits` of every shown checkpoint's log10
volume field (robust 1st-99th percentile), [0, 1] for the entropy, and the largest class seen.
Grids are duck-typed: anything with ``log10_volume`` and ``predicted`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["color_limits", "num_classes"]


def color_limits(grids: Sequence[Any], show: str) -> tuple[float, float]:
    """The colour range of the run's frames for ``show`` (``"volume"``: ``run_color_limits``
    of every grid's ``log10_volume``; otherwise the entropy's [0, 1])."""
    from richviz import views

    if show == "volume":
        return views.run_color_limits([g.log10_volume for g in grids])
    return 0.0, 1.0


def num_classes(grids: Sequence[Any], labels: np.ndarray | None) -> int:
    """One class count for the run: the largest predicted class or data label, plus 1 (>= 2)."""
    n = 2
    for g in grids:
        if g.predicted is not None and g.predicted.size:
            n = max(n, int(g.predicted.max()) + 1)
    if labels is not None and len(labels):
        n = max(n, int(np.max(labels)) + 1)
    return n
