"""What one live frame shows: the numbers of a model on a 2-D slice (headless).

:func:`compute_view` gives the volume element of the pulled-back metric, the decision field
(margin, entropy, predicted class), the boundary magnification and, on a probe set, loss,
accuracy, D_LR with its factors and the neural-collapse statistics, as a :class:`LiveView`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from richviz.metrics import NC_KEYS

__all__ = ["VIEW_METRICS", "LiveView", "compute_view"]

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

    u, v : grid coordinates; log10_volume : log10 sqrt(det G) of the pulled-back metric
    ``G = (J E)^T (J E) / p`` (penultimate features); margin, entropy, predicted : top-2
    logit margin, softmax entropy (log base C) and arg-max class; field : the
    :class:`richviz.geometry.MetricField` (for ellipses); metrics : ``loss``, ``acc`` on the
    probe set, ``d_lr`` with its factors ``confinement`` and ``isotropy``
    (``1 - d_lr = confinement * isotropy``), the neural-collapse statistics ``nc1``,
    ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` and ``boundary_magnification`` (mean
    log10 volume in the 10 % of grid points with the smallest margin minus the mean elsewhere).
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


def compute_view(
    model: nn.Module,
    slice: Any,  # noqa: A002 - the geometry name
    resolution: int = 64,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LiveView:
    """Everything one live frame shows for ``model`` on ``slice`` (a 2-D
    :class:`richviz.geometry.Slice`); ``probe`` = (x, y) for loss, accuracy, D_LR (with its
    factors) and the neural-collapse statistics (see :class:`LiveView`).

    Uses forward-mode AD: callers that share the process with other forward-mode work hold a
    common lock around it.
    """
    from richviz.features import features_and_outputs, last_linear_name
    from richviz.geometry import boundary_magnification, decision_field, pullback_metric
    from richviz.metrics import neural_collapse, richness

    with torch.no_grad():
        field = pullback_metric(model, slice, resolution=resolution)
        dec = decision_field(model, slice, resolution=resolution)
    lv = field.log10_volume.numpy()
    margin = dec.margin.numpy()
    metrics = dict.fromkeys(VIEW_METRICS, math.nan)
    metrics["boundary_magnification"] = float(boundary_magnification(lv, margin))
    if probe is not None and len(probe[0]) >= 2:
        x, y = probe
        dev = next(model.parameters()).device
        x, y = x.to(dev), y.to(dev)
        with torch.no_grad():
            out = model.eval()(x)
            metrics["loss"] = float(F.cross_entropy(out, y))
            metrics["acc"] = float((out.argmax(1) == y).double().mean())
            feats, lin = features_and_outputs(model, x)
            try:
                r = richness(feats, lin)
                metrics.update(d_lr=r.d_lr, confinement=r.confinement, isotropy=r.isotropy)
            except ValueError:
                pass
            if len(torch.unique(y)) == lin.shape[1]:
                last = model.get_submodule(last_linear_name(model))
                try:
                    nc = neural_collapse(feats, y, last.weight, last.bias)
                    metrics.update({k: float(nc[k]) for k in NC_KEYS})
                except ValueError:
                    pass
    return LiveView(
        u=field.u.double().numpy(),
        v=field.v.double().numpy(),
        log10_volume=lv,
        margin=margin,
        entropy=dec.entropy.numpy(),
        predicted=dec.predicted.numpy(),
        field=field,
        metrics=metrics,
    )
