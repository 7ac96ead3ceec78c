"""What one live frame shows: the numbers of a model on a 2-D slice (headless).

:func:`compute_view` composes the headless view pipeline :mod:`richviz.views`: one
forward-mode pass over the grid (:func:`richviz.views.slice_frame`: volume element of the
pulled-back metric, decision field, boundary lines and magnification) and the probe set's
numbers (:func:`richviz.views.probe_metrics`: loss, accuracy, D_LR with its factors, the
neural-collapse statistics), as a :class:`LiveView`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from richviz.metrics import NC_KEYS

__all__ = ["VIEW_METRICS", "LiveView", "compute_view"]

#: the keys of :attr:`LiveView.metrics`, in display order
VIEW_METRICS = (
    "loss",
    "acc",
    "d_lr",
    "confinement",
    "isotropy",
    *NC_KEYS,
    "boundary_magnification",
)


@dataclass(frozen=True, eq=False)
class LiveView:
    """The numbers of one live frame on a slice grid indexed ``[i, j] = (v[i], u[j])``.

    u, v : (res,) grid coordinates; log10_volume : (res, res) log10 sqrt(det G) of the
    pulled-back metric ``G = (J E)^T (J E) / p`` (penultimate features); margin, entropy,
    predicted : (res, res) top-2 logit margin, softmax entropy (log base C) and arg-max class;
    field : the :class:`richviz.geometry.MetricField` (for ellipses); metrics : ``loss``,
    ``acc`` on the probe set, ``d_lr`` with its factors ``confinement`` and ``isotropy``
    (``1 - d_lr = confinement * isotropy``), the neural-collapse statistics ``nc1``,
    ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` and ``boundary_magnification`` (mean
    log10 volume in the 10 % of grid points with the smallest margin minus the mean elsewhere);
    boundary : ``(xs, ys)`` NaN-separated decision-boundary segments (None: not computed).
    A statistic that is undefined for the probe set (e.g. NC with a class missing) is NaN.
    """

    u: np.ndarray
    v: np.ndarray
    log10_volume: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    predicted: np.ndarray
    field: Any
    metrics: dict[str, float]
    boundary: tuple[np.ndarray, np.ndarray] | None = None


def compute_view(
    model: nn.Module,
    slice: Any,  # noqa: A002 - the geometry name
    resolution: int = 64,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LiveView:
    """Everything one live frame shows for ``model`` on ``slice`` (a 2-D
    :class:`richviz.geometry.Slice`); ``probe`` = (x, y) for loss, accuracy, D_LR (with its
    factors) and the neural-collapse statistics (see :class:`LiveView`).

    The model is evaluated in eval mode and given back in the train/eval mode it came in.
    Uses forward-mode AD: callers that share the process with other forward-mode work hold a
    common lock around it.
    """
    from richviz import views  # the numerics load on the first frame, not with the widgets

    frame = views.slice_frame(model, slice, resolution=resolution)
    metrics = dict.fromkeys(VIEW_METRICS, float("nan"))
    metrics["boundary_magnification"] = frame.boundary_magnification
    if probe is not None:
        metrics.update(views.probe_metrics(model, *probe))
    return LiveView(
        u=frame.u,
        v=frame.v,
        log10_volume=frame.log10_volume,
        margin=frame.margin,
        entropy=frame.entropy,
        predicted=frame.predicted,
        field=frame.field,
        metrics=metrics,
        boundary=frame.boundary,
    )
