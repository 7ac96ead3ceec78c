"""What one slice shows for one model, headless: pure functions from (model, slice, options) to
numbers, the one place the slice viewer, the Playground, the runs' rows and exports get them.

- :func:`slice_frame`: the pulled-back metric ``G = (J E)^T (J E) / p`` and the logits from ONE
  forward-mode pass over the grid, with the decision quantities (top-2 margin, softmax
  entropy, predicted class), the decision-boundary lines and the boundary magnification;
- :func:`probe_metrics`: loss, accuracy, D_LR with its factors and the neural-collapse
  statistics of a probe set (through :mod:`richviz.metrics`);
- pieces the viewer composes: :func:`frame_ellipses` (split near / away from the boundary),
  :func:`curvature_values`, :func:`full_space_volume`, :func:`theory_overlay`,
  :func:`log10_volume_field` and :func:`run_color_limits`.

Grids are indexed ``[i, j] = (v[i], u[j])``. Nothing here takes a lock: callers that share the
process with other forward-mode work hold :data:`richviz.compute_lock.COMPUTE` around a call.
Every function gives the model back in the train/eval mode it came in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from richviz.contours import color_limits
from richviz.errors import ArgumentError, ArgumentTypeError, DataError
from richviz.features import (
    PENULTIMATE,
    eval_mode,
    feature_map,
    features_and_outputs,
    last_linear_name,
)
from richviz.geometry import (
    MetricField,
    Slice,
    boundary_magnification,
    decision_boundary_lines,
    decision_margin,
    effective_volume,
    ellipse_sites,
    iter_frame_chunks,
    metric_ellipses,
    predicted_class,
    pullback_metric,
    scalar_curvature,
    softmax_entropy,
    split_paths,
)
from richviz.geometry.field import check_output_bytes
from richviz.geometry.slices import _check_resolution
from richviz.metrics import NC_KEYS, neural_collapse, richness
from richviz.progress import Progress, updater

__all__ = [
    "BOUNDARY_BAND",
    "FULL_K",
    "NEAR_BAND",
    "PROBE_METRICS",
    "RANGE_RESOLUTION",
    "SliceFrame",
    "curvature_values",
    "frame_ellipses",
    "full_space_volume",
    "log10_volume_field",
    "probe_metrics",
    "run_color_limits",
    "slice_frame",
    "theory_overlay",
]

#: fraction of grid points with the smallest margin that count as "near the boundary" in
#: :attr:`SliceFrame.boundary_magnification`
BOUNDARY_BAND = 0.1
#: ellipses at this fraction of grid points with the smallest margin are the near-boundary ones
NEAR_BAND = 0.1
#: singular values in the full-space effective volume (the paper uses 6-10)
FULL_K = 8
#: grid points per side of the fields that fix a run's colour range
RANGE_RESOLUTION = 16
#: the keys of :func:`probe_metrics`, in display order
PROBE_METRICS = ("loss", "acc", "d_lr", "confinement", "isotropy", *NC_KEYS)


def _numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SliceFrame:
    """What one slice shows for one model, on a grid indexed ``[i, j] = (v[i], u[j])``.

    Attributes
    ----------
    u, v : (res,) float64 grid coordinates.
    field : the :class:`richviz.geometry.MetricField` (metric (res, res, 2, 2), volume).
    log10_volume : (res, res) float64 ``log10 sqrt(det G)``.
    margin : (res, res) float64 top-1 minus top-2 logit (zero on the decision boundary).
    entropy : (res, res) float64 softmax entropy, log base C, in [0, 1].
    predicted : (res, res) int64 arg-max class.
    logits : (res, res, C) the raw outputs (compute dtype).
    boundary : ``(xs, ys)`` NaN-separated decision-boundary segments (slice coordinates).
    boundary_magnification : mean log10 volume over the ``BOUNDARY_BAND`` of grid points with
        the smallest margin minus the mean elsewhere (NaN when undefined).
    """

    u: np.ndarray
    v: np.ndarray
    field: MetricField
    log10_volume: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    predicted: np.ndarray
    logits: np.ndarray
    boundary: tuple[np.ndarray, np.ndarray]
    boundary_magnification: float

    @property
    def resolution(self) -> int:
        return int(self.u.shape[0])

    @property
    def slice(self) -> Slice:
        return self.field.slice

    @property
    def num_classes(self) -> int:
        """Classes of the decision (a single binary logit counts as two)."""
        return max(2, int(self.logits.shape[-1]))


def slice_frame(
    model: nn.Module,
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int = 64,
    layer: str = PENULTIMATE,
    progress: Progress = None,
    *,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
    max_output_bytes: int | None = None,
) -> SliceFrame:
    """The metric of ``model``'s feature map at ``layer`` and its logits on ``slice``, one pass.

    One forward-mode pass per chunk gives the features (the primal), their directional
    derivatives ``J e1``, ``J e2`` and the logits (:func:`richviz.geometry.iter_frame_chunks`);
    the numbers equal :func:`richviz.geometry.pullback_metric` followed by
    :func:`richviz.geometry.decision_field` (two passes) to float rounding.

    Parameters
    ----------
    model : the classifier (evaluated in eval mode; its modes are restored on return).
    slice : the 2-D :class:`richviz.geometry.Slice`.
    resolution : grid points per axis (>= 2).
    layer : the feature layer (``"penultimate"``: the input of the last Linear; a submodule
        name; ``"logits"``).
    progress : None, True (tqdm bar) or ``callable(done, total)`` called after each chunk (a
        callback may raise to abort between chunks).
    chunk_size, device, dtype, method, max_output_bytes : as for
        :func:`richviz.geometry.pullback_metric`.

    Returns
    -------
    SliceFrame
    """
    res = _check_resolution(resolution)
    check_output_bytes(res, max_output_bytes)
    total = res * res
    metric = torch.empty(total, 2, 2, dtype=torch.float64)
    volume = torch.empty(total, dtype=torch.float64)
    logits: list[torch.Tensor] = []
    update, close = updater(progress, total, "slice frame")
    p = 0
    try:
        for chunk in iter_frame_chunks(
            model,
            slice,
            res,
            chunk_size,
            layer=layer,
            device=device,
            dtype=dtype,
            method=method,
        ):
            p = chunk.p
            metric[chunk.start : chunk.stop] = chunk.metric
            volume[chunk.start : chunk.stop] = chunk.volume
            logits.append(chunk.logits)
            update(chunk.stop)
    finally:
        close()
    u, v = slice.grid(res)
    field = MetricField(
        metric=metric.reshape(res, res, 2, 2),
        volume=volume.reshape(res, res),
        u=u,
        v=v,
        slice=slice,
        p=p,
    )
    z = torch.cat(logits)
    margin = decision_margin(z).double().reshape(res, res).numpy()
    predicted = predicted_class(z).reshape(res, res).numpy()
    un, vn = u.double().numpy(), v.double().numpy()
    lv = field.log10_volume.numpy()
    return SliceFrame(
        u=un,
        v=vn,
        field=field,
        log10_volume=lv,
        margin=margin,
        entropy=softmax_entropy(z.double()).reshape(res, res).numpy(),
        predicted=predicted,
        logits=z.reshape(res, res, -1).numpy(),
        boundary=decision_boundary_lines(margin, predicted, un, vn),
        boundary_magnification=float(boundary_magnification(lv, margin, band=BOUNDARY_BAND)),
    )


def probe_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy, D_LR and neural collapse of ``model`` on a probe set ``(x, y)``.

    Keys (:data:`PROBE_METRICS`): ``loss`` (cross-entropy), ``acc``, ``d_lr`` with its factors
    ``confinement`` and ``isotropy`` (``1 - d_lr = confinement * isotropy``,
    :func:`richviz.metrics.richness` of the penultimate features and the last Linear's output),
    ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4``
    (:func:`richviz.metrics.neural_collapse`, only when every class is present). A statistic
    that is undefined for the probe set is NaN (all of them for an empty set; everything but
    ``loss`` and ``acc`` for a single point). The
    model runs in eval mode without gradients; its modes are restored on return.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    metrics = dict.fromkeys(PROBE_METRICS, math.nan)
    if len(x) < 1:
        return metrics
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    with torch.no_grad(), eval_mode(model):
        out = model(x)
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
    return metrics


def frame_ellipses(
    field: MetricField,
    margin: np.ndarray,
    density: int = 12,
    mode: Literal["stretch", "unit_ball"] = "stretch",
    band: float = NEAR_BAND,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Metric ellipses split into those away from and near the decision boundary.

    ``density`` x ``density`` ellipses (:func:`richviz.geometry.metric_ellipses`, ``density``
    capped at the field's resolution); "near" are the sites whose margin is within the lowest
    ``band`` quantile of the (res, res) ``margin``'s finite values. Returns
    ``((xs_far, ys_far), (xs_near, ys_near))``, each NaN-separated paths.
    """
    if not 0 < band < 1:
        raise ArgumentError(f"band must be a fraction in (0, 1), got {band!r}")
    margin = np.asarray(margin, dtype=np.float64)
    density = min(int(density), field.resolution)  # a coarse preview has fewer cells
    ell = metric_ellipses(field, density=density, mode=mode)
    rows, cols = ellipse_sites(field, density)
    finite = margin[np.isfinite(margin)]
    cut = np.quantile(finite, band) if finite.size else -np.inf
    near = (margin[np.ix_(rows, cols)] <= cut).reshape(-1)
    near_xy, far_xy = split_paths(_numpy(ell.xs), _numpy(ell.ys), near)
    return far_xy, near_xy


def curvature_values(
    model: nn.Module,
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int = 64,
    layer: str = PENULTIMATE,
    progress: Progress = None,
) -> np.ndarray:
    """(res, res) float64 scalar curvature ``R = 2 K`` of the pulled-back metric (2-D inputs).

    Computed in float64 (:func:`richviz.geometry.scalar_curvature`); ``DataError`` for inputs
    that are not 2-D (the curvature is that of the metric on the input plane).
    """
    if tuple(slice.input_shape) != (2,):
        raise DataError("show='curvature' needs 2-D inputs (the metric on the input plane)")
    with eval_mode(model):  # before feature_map, which sets eval mode
        phi = feature_map(model, layer)
        out = scalar_curvature(
            phi, slice, resolution=resolution, progress=progress, dtype=torch.float64
        )
    return _numpy(out.scalar)


def full_space_volume(
    model: nn.Module,
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int = 64,
    layer: str = PENULTIMATE,
    k: int = FULL_K,
    progress: Progress = None,
    block: int = 256,
) -> tuple[np.ndarray, int]:
    """Effective log10 volume of the whole input space at the slice's grid points.

    The sum of log10 of the top-k singular values of ``J / sqrt(p)``
    (:func:`richviz.geometry.effective_volume`), k capped at the input dimension and the
    feature dimension. Returns ``((res, res) float64, k used)``. ``progress(done, total)`` is
    called after each ``block`` of points.
    """
    from richviz.devices import module_device, module_dtype

    with eval_mode(model):  # before feature_map, which sets eval mode
        phi = feature_map(model, layer)
        points = slice.to_input(
            slice.grid_uv(resolution), dtype=module_dtype(model), device=module_device(model)
        )
        with torch.no_grad():
            p = phi(points[:1]).shape[1]
        k = min(k, int(np.prod(slice.input_shape)), p)
        update, close = updater(progress, len(points), "full-space volume")
        out = []
        try:
            for start in range(0, len(points), block):
                _, logvol = effective_volume(phi, points[start : start + block], k=k)
                out.append(_numpy(logvol))
                update(min(len(points), start + block))
        finally:
            close()
    return np.concatenate(out).reshape(resolution, resolution), k


def log10_volume_field(
    model: nn.Module,
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int = RANGE_RESOLUTION,
    layer: str = PENULTIMATE,
) -> np.ndarray:
    """(res, res) float64 log10 volume element alone (no logits), e.g. to fix colour ranges."""
    with eval_mode(model):  # before feature_map, which sets eval mode
        field = pullback_metric(feature_map(model, layer), slice, resolution)
    return _numpy(field.log10_volume)


def theory_overlay(
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int,
    *,
    params: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    layer: str = PENULTIMATE,
) -> tuple[np.ndarray | None, str, dict[str, Any] | None]:
    """log10 of the infinite-width volume element at initialisation on the slice grid.

    ``params`` (``activation``, ``weight_std``, ``bias_std``) for
    :func:`richviz.theory.infinite_width_field`, or inferred from ``model`` at ``layer``
    (:func:`richviz.theory.infer_theory_params`). Returns ``(values (res, res) or None, note,
    params used)``: None and a note saying why when no theory describes the model.
    """
    from richviz.theory import NoTheoryError, infer_theory_params, infinite_width_field

    if not params:
        if model is None:
            raise ArgumentError("theory_overlay needs params= or model=")
        try:
            params = infer_theory_params(model, layer)
        except NoTheoryError as exc:
            return None, f"no theory for this model ({exc})", None
    out = _numpy(infinite_width_field(slice, resolution, **params).log10_volume)
    return out, "", dict(params)


def run_color_limits(
    fields: np.ndarray | list[np.ndarray],
    relative: bool = False,
    theory: np.ndarray | None = None,
) -> tuple[float, float]:
    """One colour range for a whole run from every step's log10 volume field (steps, res, res).

    The robust range (1st to 99th percentile) of what is shown: the fields, minus step 0's for
    ``relative`` views, minus the ``theory`` (res, res) for the difference view (symmetric about
    0 for both).
    """
    values = np.stack([np.asarray(f, dtype=np.float64) for f in fields])
    if relative:
        values = values - values[0]
    elif theory is not None:
        values = values - theory
    return color_limits(values, symmetric=relative or theory is not None)
