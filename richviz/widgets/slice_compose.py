"""A frame of the slice viewer composed from computed grids: which values the heatmap shows,
their colours and range, and the lines drawn over it (ellipses, boundary, theory contours).

Pure numpy over :mod:`.slice_records` (no widgets): the figure and the exports draw the
:class:`~richviz.widgets.slice_records.Frame` this returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from richviz.widgets import rendering
from richviz.widgets.slice_records import (
    EMPHASIS_COLOR,
    THEORY_COLOR,
    FieldRecord,
    Frame,
    FrameRequest,
)

__all__ = ["colorbar_pixels", "compose_frame", "contour_labels", "legend_entries"]

_EMPTY = (np.array([]), np.array([]))


@dataclass
class _Heatmap:
    values: np.ndarray
    vmin: float
    vmax: float
    cmap: str
    label: str
    bar_label: str
    rgba: np.ndarray | None = None
    classes: int = 0


def _volume_heatmap(
    req: FrameRequest,
    fld: FieldRecord,
    base: FieldRecord | None,
    theory: np.ndarray | None,
    first_step: int,
    limits: Callable[[str, np.ndarray], tuple[float, float]],
    notes: list[str],
) -> _Heatmap:
    """The (relative, theory-difference, full-space) log10 volume heatmap; ``limits(cmap,
    values)`` gives its colour range."""
    full = req.volume == "full"
    values = fld.full_log10 if full else fld.log10_volume
    what = f"effective log10 volume (top {fld.full_k} s.v.)" if full else "log10 volume"
    cmap, label = "viridis", what if full else "log10 volume element"
    bar_label = "effective log10 volume" if full else "log10 volume"
    if base is not None:
        values = values - (base.full_log10 if full else base.log10_volume)
        cmap = "diverging"
        label = f"{what}: step {req.step} − step {first_step}"
        bar_label = f"Δ {bar_label} from step {first_step}"
    elif req.theory == "difference" and theory is not None:
        values = values - theory
        cmap, label = "diverging", "log10 vol − theory at init"
        bar_label = "log10 volume − theory"
    vmin, vmax = limits(cmap, values)
    raw = fld.full_log10 if full else fld.log10_volume
    finite = raw[np.isfinite(raw)]
    if finite.size and float(np.ptp(finite)) < 1e-6 * max(1.0, float(np.abs(finite).max())):
        notes.append(
            f"layer {req.layer}: the volume element is constant on this slice "
            "(an affine function of the input)"
        )
    return _Heatmap(values, vmin, vmax, cmap, label, bar_label)


def _heatmap(
    req: FrameRequest,
    fld: FieldRecord,
    base: FieldRecord | None,
    theory: np.ndarray | None,
    first_step: int,
    limits: Callable[[str, np.ndarray], tuple[float, float]],
    num_classes: Callable[[], int],
    notes: list[str],
) -> _Heatmap:
    if req.show == "classes":
        classes = int(num_classes())
        return _Heatmap(
            fld.predicted.astype(float), -0.5, classes - 0.5, "classes",
            "class regions (argmax)", "predicted class",
            rgba=rendering.class_regions_rgba(fld.predicted), classes=classes,
        )  # fmt: skip
    if req.show == "entropy":
        return _Heatmap(fld.entropy, 0.0, 1.0, "viridis", "softmax entropy (log base C)", "entropy")
    if req.show == "curvature":
        vmin, vmax = rendering.color_limits(fld.curvature, symmetric=True, percentile=2.0)
        return _Heatmap(
            fld.curvature, vmin, vmax, "diverging", "scalar curvature R = 2K", "R = 2K (per step)"
        )
    return _volume_heatmap(req, fld, base, theory, first_step, limits, notes)


def compose_frame(
    req: FrameRequest,
    res: int,
    fld: FieldRecord,
    base: FieldRecord | None,
    theory: np.ndarray | None,
    *,
    first_step: int,
    limits: Callable[[str, np.ndarray], tuple[float, float]],
    num_classes: Callable[[], int],
    theory_note: str = "",
) -> Frame:
    """The :class:`Frame` for ``req`` from the grid ``fld`` (``base``: the first step's grid for
    relative views; ``theory``: the theory's log10 volume on the grid, or None).

    ``limits(cmap, values) -> (vmin, vmax)``: the colour range of a volume heatmap (run-wide,
    locked or the values' own); ``num_classes()``: the class count of the class-region view.
    """
    notes: list[str] = []
    hm = _heatmap(req, fld, base, theory, first_step, limits, num_classes, notes)
    rgba = hm.rgba
    if rgba is None:
        rgba = rendering.field_to_rgba(hm.values, hm.vmin, hm.vmax, hm.cmap)
    far, near = fld.ellipses.get((req.density, req.mode), (_EMPTY, _EMPTY))
    if req.density <= 0:
        far, near = _EMPTY, _EMPTY
    elif not req.decision and len(near[0]):  # no emphasis without a decision boundary
        far = (np.concatenate([far[0], near[0]]), np.concatenate([far[1], near[1]]))
        near = _EMPTY
    theory_lines, theory_labels = _EMPTY, None
    if req.theory == "contours" and theory is not None:
        finite = theory[np.isfinite(theory)]
        levels = rendering.nice_ticks(float(finite.min()), float(finite.max()), 7)
        levels = levels[(levels > finite.min()) & (levels < finite.max())]
        theory_lines = rendering.contour_lines(theory, fld.u, fld.v, levels)
        theory_labels = contour_labels(theory, fld.u, fld.v, levels)
    if req.theory != "off" and theory_note:
        notes.append(theory_note)
    return Frame(
        step=req.step,
        layer=req.layer,
        resolution=res,
        values=hm.values,
        vmin=hm.vmin,
        vmax=hm.vmax,
        cmap=hm.cmap,
        label=hm.label,
        png=rendering.encode_png(rgba),
        extent=rendering.image_extent(fld.u, fld.v),
        ellipses=far,
        ellipses_near=near,
        boundary=fld.boundary if req.decision else _EMPTY,
        theory_lines=theory_lines,
        bar_label=hm.bar_label,
        note=" · ".join(notes),
        rgba=rgba,
        theory_labels=theory_labels,
        classes=hm.classes,
        decision=req.decision,
    )


def colorbar_pixels(frame: Frame) -> np.ndarray:
    """The colour bar's image (bottom = vmin): a gradient, or one swatch per class."""
    if frame.cmap == "classes":
        return rendering.class_regions_rgba(np.arange(frame.classes).reshape(-1, 1))
    return rendering.colorbar_rgba(frame.cmap)


def contour_labels(
    values: np.ndarray, u: np.ndarray, v: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One label per contour level: the level's value at the middle point of its line."""
    xs, ys, texts = [], [], []
    ticks_fmt = rendering.tick_format(np.asarray(levels)) if len(levels) > 1 else ".2g"
    for level, text in zip(
        levels, rendering.format_ticks(np.asarray(levels), ticks_fmt), strict=True
    ):
        lx, ly = rendering.contour_lines(values, u, v, np.array([level]))
        ok = np.flatnonzero(np.isfinite(lx))
        if len(ok):
            i = ok[len(ok) // 2]
            xs.append(lx[i])
            ys.append(ly[i])
            texts.append(text)
    return np.array(xs), np.array(ys), texts


def legend_entries(frame: Frame, labels: np.ndarray | None) -> list[tuple[str, str, str]]:
    """(kind, colour, label) of what the figure shows: classes of the data points (``labels``,
    or None), the boundary, the near-boundary ellipses, the theory contours."""
    entries = []
    if labels is not None and len(labels):
        for c in sorted({int(c) for c in labels}):
            entries.append(("point", rendering.class_color(c), f"class {c}"))
    if frame.decision and len(frame.boundary[0]):
        entries.append(("line", "#000000", "decision boundary"))
    if len(frame.ellipses_near[0]):
        entries.append(("line", EMPHASIS_COLOR, "ellipses near the boundary"))
    if len(frame.theory_lines[0]):
        entries.append(("dash", THEORY_COLOR, "theory at init (log10 vol)"))
    return entries
