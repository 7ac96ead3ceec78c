"""The slice views of an animation: one grid per checkpoint (from a :class:`FieldStore`, else
computed), ONE colour range for the whole run, and each checkpoint's view composed as the slice
viewer composes it (:func:`richviz.widgets.slice_compose.compose_frame`).

The colour range of the volume heatmap is :func:`richviz.views.run_color_limits` over every
shown checkpoint's field at the export's resolution (so the colour bar is the same in every
frame); class regions use one class count for the run, the entropy its fixed [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from richviz.animation.fields import FieldStore, field_record
from richviz.widgets.slice_compose import compose_frame
from richviz.widgets.slice_records import FieldRecord, Frame, FrameRequest

__all__ = ["ViewSettings", "color_limits", "compose", "gather_fields", "num_classes"]


@dataclass(frozen=True)
class ViewSettings:
    """What each frame's slice view shows (as the slice viewer's traits of the same names).

    ``show`` is the view's name: ``"volume"``, ``"classes"`` or ``"entropy"``.
    """

    layer: str
    resolution: int
    show: str = "volume"
    density: int = 12
    mode: str = "stretch"
    decision: bool = True
    device: str = "auto"


def gather_fields(
    steps: Sequence[int],
    load: Callable[[int], Any],
    slice: Any,  # noqa: A002 - the geometry name
    settings: ViewSettings,
    store: FieldStore,
    report: Callable[[int], object] = lambda done: None,
) -> tuple[list[FieldRecord], int]:
    """The grid of every step in ``steps`` (from ``store``, else one pass each, then stored),
    with the ellipses the settings ask for. Returns ``(records, number computed)``;
    ``report(done)`` after each step."""
    from richviz import views

    records, computed = [], 0
    for i, step in enumerate(steps):
        record = store.get(step)
        if record is None:
            record = field_record(load(step), slice, settings.resolution, settings.layer)
            computed += 1
            store.put(step, record)
        key = (settings.density, settings.mode)
        if settings.density > 0 and key not in record.ellipses:
            record.ellipses[key] = views.frame_ellipses(
                record.metric_field, record.margin, density=settings.density,
                mode=settings.mode, band=views.NEAR_BAND,
            )  # fmt: skip
        records.append(record)
        report(i + 1)
    return records, computed


def color_limits(records: Sequence[FieldRecord], show: str) -> tuple[float, float]:
    """The one colour range of the run's frames: ``run_color_limits`` of every volume field;
    [0, 1] for the entropy (class regions set their own, by class count)."""
    from richviz import views

    if show == "volume":
        return views.run_color_limits([r.log10_volume for r in records])
    return 0.0, 1.0


def num_classes(records: Sequence[FieldRecord], labels: np.ndarray | None) -> int:
    """One class count for the whole run: the largest predicted class or data label, plus 1."""
    n = 2
    for r in records:
        if r.predicted is not None and r.predicted.size:
            n = max(n, int(r.predicted.max()) + 1)
    if labels is not None and len(labels):
        n = max(n, int(np.max(labels)) + 1)
    return n


def compose(
    record: FieldRecord,
    step: int,
    settings: ViewSettings,
    limits: tuple[float, float],
    classes: int,
    first_step: int = 0,
) -> Frame:
    """The slice view of ``step`` from its grid, coloured with the run's ``limits``."""
    req = FrameRequest(
        step=int(step), layer=settings.layer, resolution=settings.resolution,
        density=settings.density, mode=settings.mode, relative=False, theory="off",
        device=settings.device, version=0, show=settings.show, decision=settings.decision,
    )  # fmt: skip
    return compose_frame(
        req, settings.resolution, record, None, None, first_step=first_step,
        limits=lambda cmap, values: limits, num_classes=lambda: classes,
    )  # fmt: skip
