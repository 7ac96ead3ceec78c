"""The headless entry point: :func:`save_animation` writes a run's slice view over training as
a GIF or an MP4, one frame per checkpoint (or held to a fixed duration).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from richviz.animation import frames as view_frames
from richviz.animation.curves import Curves
from richviz.animation.fields import FieldStore, RunFieldStore
from richviz.animation.headline import caption, headline, rows_by_step
from richviz.animation.layout import frame_canvas, rasterize, view_size
from richviz.animation.plan import make_plan
from richviz.animation.writers import require_ffmpeg, write_frames
from richviz.errors import ArgumentTypeError, RichvizError
from richviz.features import PENULTIMATE
from richviz.progress import Progress, reporter
from richviz.validation import check_int, check_number

__all__ = ["Animation", "save_animation"]


@dataclass(frozen=True)
class Animation:
    """What :func:`save_animation` wrote.

    Attributes
    ----------
    path : the file. fmt : ``"gif"`` | ``"mp4"``. fps : frames per second.
    steps : the checkpoint step of each frame. captions : each frame's headline line.
    numbers : each frame's headline numbers (``test_acc``, ``d_lr``,
        ``boundary_magnification``; from ``Run.metrics``).
    size : ``(width, height)`` of a frame in pixels.
    color_limits : the one (vmin, vmax) of the heatmap over the run.
    computed : grids computed by this export (0 when every one came from a cache).
    """

    path: Path
    fmt: str
    fps: float
    steps: tuple[int, ...]
    captions: tuple[str, ...]
    numbers: tuple[dict[str, float], ...]
    size: tuple[int, int]
    color_limits: tuple[float, float]
    computed: int

    @property
    def frames(self) -> int:
        return len(self.steps)


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
    (:data:`richviz.animation.fields.FIELDS`): a second export of the run is fast.

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
    ArgumentError : a bad argument (suffix, fps, duration, show, ...), before any work.
    MissingDependencyError : an ``.mp4`` without ``imageio-ffmpeg``, before any work.

    Examples
    --------
    A tiny run (the circles task, three checkpoints) as a GIF of three frames, then again:
    the second export finds every grid in the cache.

    >>> from richviz.train import train
    >>> from richviz.animation import save_animation
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
    if plan.fmt == "mp4":
        require_ffmpeg()  # before any work: a missing extra costs nothing
    shown = sorted(set(plan.indices))
    settings = view_frames.ViewSettings(
        layer=layer, resolution=resolution, show=plan.view_show, density=ellipses,
        mode=ellipse_mode, decision=bool(decision),
    )  # fmt: skip
    bar, report = reporter(progress, 1 + 2 * len(shown), desc="animation", unit="step")
    try:
        ctx = context if context is not None else _context(run, slice)
        rows = _metric_rows(run, device)
        report(1)
        load = load if load is not None else (lambda step: run.load(step, device=device))
        store = fields if fields is not None else RunFieldStore(run, ctx.slice, resolution, layer)
        records, computed = view_frames.gather_fields(
            [steps[i] for i in shown], load, ctx.slice, settings, store,
            report=lambda done: report(1 + done),
        )  # fmt: skip
        limits = view_frames.color_limits(records, settings.show)
        classes = view_frames.num_classes(records, ctx.labels)
        numbers = {i: headline(rows.get(steps[i])) for i in shown}
        chart = None
        if curves:
            chart = Curves.from_numbers(steps, [headline(rows.get(s)) for s in steps])
        images: dict[int, np.ndarray] = {}
        size = None
        for k, (i, record) in enumerate(zip(shown, records, strict=True)):
            frame = view_frames.compose(record, steps[i], settings, limits, classes, steps[0])
            size = size or view_size(frame, ctx)
            page = frame_canvas(frame, ctx, caption(steps[i], numbers[i]), chart, size)
            images[i] = rasterize(page, scale)
            report(1 + len(shown) + k + 1)
        sequence = [images[i] for i in plan.indices]
        out = write_frames(plan.fmt, sequence, plan.path, plan.fps)
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
