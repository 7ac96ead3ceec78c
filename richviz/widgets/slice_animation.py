"""A run's slice view over training as a GIF or an MP4, for slides: :func:`save_animation`.

Each frame is the slice view of one checkpoint as the viewer exports it, under a headline
line, optionally beside the metric curves (:mod:`.animation_page`). The grids come from
:mod:`richviz.views` (one :func:`~richviz.views.slice_frame` pass per checkpoint, under the
process-wide compute lock) through the grid cache of :mod:`richviz.animation.fields`; the
colour range, the headline numbers, the frame plan and the writers are the headless parts in
:mod:`richviz.animation`. Headless (no widget is built; no kernel or browser needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from richviz.animation import ranges
from richviz.animation.fields import FieldStore, RunFieldStore, gather
from richviz.animation.headline import Curves, caption, headline, rows_by_step
from richviz.animation.plan import make_plan
from richviz.animation.result import Animation
from richviz.animation.writers import require_ffmpeg, write_frames
from richviz.compute_lock import COMPUTE
from richviz.errors import ArgumentTypeError, RichvizError
from richviz.features import PENULTIMATE, layer_names
from richviz.progress import Progress, reporter
from richviz.validation import check_choice, check_int, check_number
from richviz.widgets.animation_page import frame_canvas, rasterize, view_size
from richviz.widgets.slice_compose import compose_frame
from richviz.widgets.slice_records import FieldRecord, Frame, FrameRequest, check_color_limits

__all__ = ["ViewSettings", "compose", "field_record", "save_animation"]


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


def field_record(model: Any, slice: Any, settings: ViewSettings) -> FieldRecord:  # noqa: A002
    """One :func:`richviz.views.slice_frame` pass (under the compute lock) as the viewer's
    :class:`~richviz.widgets.slice_records.FieldRecord`, with the ellipses ``settings`` ask for."""
    from richviz import views

    with COMPUTE.hold():
        f = views.slice_frame(model, slice, resolution=settings.resolution, layer=settings.layer)
    record = FieldRecord(f.u, f.v, f.log10_volume, f.margin, f.boundary, f.field,
                         entropy=f.entropy, predicted=f.predicted)  # fmt: skip
    return record


def _with_ellipses(record: FieldRecord, settings: ViewSettings) -> FieldRecord:
    from richviz import views

    key = (settings.density, settings.mode)
    if settings.density > 0 and key not in record.ellipses:
        record.ellipses[key] = views.frame_ellipses(
            record.metric_field, record.margin, density=settings.density, mode=settings.mode,
            band=views.NEAR_BAND,
        )  # fmt: skip
    return record


def compose(record: FieldRecord, step: int, settings: ViewSettings,
            limits: tuple[float, float], classes: int, first_step: int = 0) -> Frame:  # fmt: skip
    """The slice view of ``step`` from its grid, coloured with the run's ``limits``."""
    req = FrameRequest(
        step=int(step), layer=settings.layer, resolution=settings.resolution,
        density=settings.density, mode=settings.mode, relative=False, theory="off",
        device="auto", version=0, show=settings.show, decision=settings.decision,
    )  # fmt: skip
    return compose_frame(
        req, settings.resolution, record, None, None, first_step=first_step,
        limits=lambda cmap, values: limits, num_classes=lambda: classes,
    )  # fmt: skip


def _open(run: Any) -> Any:
    if isinstance(run, (str, os.PathLike)):
        from richviz.runs import Run

        return Run.open(run)
    if not (hasattr(run, "steps") and hasattr(run, "load") and hasattr(run, "checkpoint")):
        raise ArgumentTypeError(
            f"run must be a richviz Run or a run folder, got {type(run).__name__}"
        )
    return run


def _metric_rows(run: Any, device: Any) -> dict[int, dict[str, Any]]:
    """The run's metrics rows by step (``Run.metrics``, cached beside the run); none when the
    run cannot compute them (no data set): the frames then show dashes."""
    try:
        with COMPUTE.hold():  # missing rows take jvp passes (the boundary magnification)
            return rows_by_step(run.metrics(progress=False, device=device))
    except (RichvizError, ValueError):
        return {}


def _context(run: Any, slice: Any) -> Any:  # noqa: A002 - the geometry name
    """The slice and its data points, as the slice viewer builds them (run's test split)."""
    from richviz.widgets.slice_context import build_context
    from richviz.widgets.sources import ModelSource

    source = ModelSource(run)
    data = source.data()
    x, y = data if data is not None else (None, None)
    shape = tuple(x.shape[1:]) if x is not None else source.input_shape(run.template())
    return build_context(0, shape, x, y, slice=slice)


def save_animation(
    run: Any,
    path: str | os.PathLike,
    *,
    fps: float = 4.0,
    show: str = "volume",
    duration: float | None = None,
    resolution: int = 96,
    layer: str = PENULTIMATE,
    curves: bool = False,
    ellipses: int = 12,
    ellipse_mode: str = "stretch",
    decision: bool = True,
    scale: float = 1.0,
    device: Any = None,
    progress: Progress = True,
    color_limits: tuple[float, float] | None = None,
    slice: Any = None,  # noqa: A002 - the geometry name
    context: Any = None,
    fields: FieldStore | None = None,
    load: Callable[[int], Any] | None = None,
) -> Animation:
    """Write the slice view of ``run`` over training to ``path`` (``.gif`` or ``.mp4``).

    Each frame is the slice view of one checkpoint as the viewer exports it (heatmap with its
    colour bar, ellipses, decision boundary, data points, axes, legend), under a headline line
    with the step, the test accuracy, D_LR and the boundary magnification of that checkpoint
    (from ``Run.metrics``, cached in the run's ``metrics.json``). The colour range is fixed
    over the run (:func:`richviz.views.run_color_limits` of every frame's field), so colours
    compare across frames. Grids are computed once per checkpoint (one
    :func:`richviz.views.slice_frame` pass) and kept in a process-wide LRU
    (:data:`richviz.animation.FIELDS`): a second export of the run is fast.

    Parameters
    ----------
    run : a :class:`richviz.runs.Run` or its folder.
    path : the file to write; its suffix picks GIF (Pillow) or MP4 (H.264 through the optional
        extra ``animation``, ``imageio-ffmpeg``). Written atomically; parent folders are made.
    fps : frames per second, in (0, 60].
    show : the heatmap: ``"volume"`` (log10 volume element), ``"regions"`` (argmax class
        regions) or ``"entropy"`` (softmax entropy, log base C).
    duration : seconds; None: one frame per checkpoint. Else ``round(duration * fps)`` frames,
        each checkpoint held for an equal share (or the checkpoints spread evenly over fewer
        frames).
    resolution : grid points per side of the field.
    layer : feature layer of the metric (``"penultimate"``, a submodule name, ``"logits"``).
    curves : draw the headline metrics over the steps beside the view, with a cursor.
    ellipses, ellipse_mode, decision : ellipses per side (0: none), ``"stretch"`` |
        ``"unit_ball"``, draw the decision boundary (as the viewer's traits).
    scale : pixels per CSS pixel of the page (1: about 565 x 555 px, 955 x 555 with curves).
    device : where the models run (default: as ``Run.load``).
    progress : True (a tqdm bar), False/None, or ``callable(done, total)``.
    color_limits : ``(lo, hi)`` of the volume heatmap (e.g. a range shared with other runs);
        default: the run's own.
    slice : the :class:`richviz.geometry.Slice` (default: as the slice viewer, the square
        covering the test data of a 2-D task, else the plane through three test inputs).
    context, fields, load : what the slice viewer passes to reuse its own slice context, grid
        cache (``get(step)``/``put(step, record)``) and model copies; leave them out.

    Returns
    -------
    Animation
        The path, per-frame steps, captions and numbers, the frame size, the colour range and
        how many grids were computed.

    Raises
    ------
    ArgumentError : a bad argument (suffix, fps, duration, show, layer, ...), before any work.
    MissingDependencyError : an ``.mp4`` without ``imageio-ffmpeg``, before any work.

    Examples
    --------
    A tiny run (the circles task, three checkpoints) as a GIF of three frames, then again:
    the second export finds every grid in the cache.

    >>> from richviz.train import train
    >>> from richviz.widgets.slice_animation import save_animation
    >>> run = train("circles", out="runs/anim", steps=4, progress=False,
    ...             overrides={"checkpoints": 3})
    >>> anim = save_animation(run, "circles.gif", resolution=16, progress=False)
    >>> anim.steps, anim.computed
    ((0, 1, 4), 3)
    >>> anim.captions[0]
    'step 0 · test acc ... · D_LR ... · boundary mag. ...'
    >>> save_animation(run, "circles.gif", resolution=16, progress=False).computed
    0
    """
    run = _open(run)
    steps = list(run.steps)
    plan = make_plan(path, len(steps), fps, show, duration)
    resolution = check_int(resolution, "resolution", low=2, high=1024)
    ellipses = check_int(ellipses, "ellipses", low=0, high=64)
    scale = check_number(scale, "scale", low=0, high=8, low_open=True)
    fixed = check_color_limits(color_limits)
    check_choice(layer, "layer", tuple(layer_names(run.template())))
    if plan.fmt == "mp4":
        require_ffmpeg()  # before any work: a missing extra costs nothing
    shown = sorted(set(plan.indices))
    settings = ViewSettings(
        layer=layer, resolution=resolution, show=plan.view_show, density=ellipses,
        mode=ellipse_mode, decision=bool(decision),
    )  # fmt: skip
    total = 2 + 2 * len(shown)  # metrics, grids, pages, the file
    bar, report = reporter(progress, total, desc="animation", unit="step")
    try:
        ctx = context if context is not None else _context(run, slice)
        rows = _metric_rows(run, device)
        report(1)
        load = load if load is not None else (lambda step: run.load(step, device=device))
        store = fields if fields is not None else RunFieldStore(run, ctx.slice, resolution, layer)
        records, computed = gather(
            [steps[i] for i in shown], store,
            lambda step: field_record(load(step), ctx.slice, settings),
            report=lambda done: report(1 + done),
        )  # fmt: skip
        records = [_with_ellipses(r, settings) for r in records]
        limits = fixed if fixed is not None and settings.show == "volume" else None
        limits = limits or ranges.color_limits(records, settings.show)
        classes = ranges.num_classes(records, ctx.labels)
        numbers = {i: headline(rows.get(steps[i])) for i in shown}
        chart = Curves.from_rows(steps, rows) if curves else None
        images: dict[int, np.ndarray] = {}
        size = None
        for k, (i, record) in enumerate(zip(shown, records, strict=True)):
            frame = compose(record, steps[i], settings, limits, classes, steps[0])
            size = size or view_size(frame, ctx)
            page = frame_canvas(frame, ctx, caption(steps[i], numbers[i]), chart, size)
            images[i] = rasterize(page, scale)
            report(1 + len(shown) + k + 1)
        sequence = [images[i] for i in plan.indices]
        out = write_frames(plan.fmt, sequence, plan.path, plan.fps)
        report(total)
    finally:
        if bar is not None:
            bar.close()
    height, width = sequence[0].shape[:2]
    return Animation(
        path=out, fmt=plan.fmt, fps=plan.fps,
        steps=tuple(steps[i] for i in plan.indices),
        captions=tuple(caption(steps[i], numbers[i]) for i in plan.indices),
        numbers=tuple(dict(numbers[i]) for i in plan.indices),
        size=(width, height), color_limits=(float(limits[0]), float(limits[1])),
        computed=computed,
    )  # fmt: skip
