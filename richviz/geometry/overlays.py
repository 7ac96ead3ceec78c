"""What is drawn over a metric field: ellipses, the decision field, entropy, class regions.

Ellipses show how the feature map stretches a small disk at a subgrid of points (axes along the
eigenvectors of G, half-lengths proportional to sqrt(eigenvalue)). The decision field holds the
top-2 logit margin (the boundary is where it vanishes), the softmax entropy ``H / log C`` in
[0, 1] and the predicted class per grid point. :func:`boundary_magnification` turns a field and
a margin into one number: mean ``log10 sqrt(det G)`` near the boundary minus the mean away
from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from richviz.devices import module_device, module_dtype
from richviz.errors import ArgumentError, ArgumentTypeError
from richviz.features import (
    in_eval_mode,
)
from richviz.geometry.chunking import ChunkPlan
from richviz.geometry.field import MetricField
from richviz.geometry.jets import FeatureFn
from richviz.geometry.slices import Slice, _check_resolution
from richviz.progress import Progress, updater

__all__ = [
    "DecisionField",
    "Ellipses",
    "boundary_magnification",
    "boundary_mask",
    "decision_field",
    "decision_margin",
    "ellipse_sites",
    "metric_ellipses",
    "predicted_class",
    "softmax_entropy",
]


def ellipse_sites(field: MetricField, density: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of a ``density`` x ``density`` subgrid at the centres of equal cells.

    Returns ``(rows, cols)``: int arrays (density,) into the field's ``v`` and ``u`` axes.
    """
    if isinstance(density, bool) or not isinstance(density, (int, np.integer)) or density < 1:
        raise ArgumentError(f"density must be a positive integer, got {density!r}")
    res = field.resolution
    if density > res:
        raise ArgumentError(f"density={density} exceeds the field resolution {res}")
    idx = np.round((np.arange(density) + 0.5) * res / density - 0.5).astype(int)
    idx = np.clip(idx, 0, res - 1)
    return idx, idx.copy()


@dataclass(frozen=True, eq=False)
class Ellipses:
    """Ellipses of a metric field as NaN-separated paths (one ``bqplot.Lines`` draws them all).

    Attributes
    ----------
    xs, ys : 1-D float64 arrays (u and v coordinates); each ellipse is
        ``points_per_ellipse + 1`` points (closed) followed by one NaN, row-major over the subgrid.
    centers : (count, 2) float64 centres ``(u, v)`` in the same order.
    """

    xs: np.ndarray
    ys: np.ndarray
    centers: np.ndarray

    @property
    def count(self) -> int:
        """Number of ellipses (``density**2``)."""
        return int(self.centers.shape[0])


def metric_ellipses(
    field: MetricField,
    density: int = 12,
    mode: Literal["stretch", "unit_ball"] = "stretch",
    weights: np.ndarray | torch.Tensor | None = None,
    points_per_ellipse: int = 32,
    fill: float = 0.9,
) -> Ellipses:
    """Ellipses showing the metric at a ``density`` x ``density`` subgrid, as NaN-separated paths.

    Each ellipse has axes along the eigenvectors of ``G`` and half-lengths proportional to
    ``sqrt(eigenvalue)`` (``mode="stretch"``: how the feature map stretches a small disk; these
    are the singular values of ``J E / sqrt(p)``) or ``1 / sqrt(eigenvalue)``
    (``mode="unit_ball"``: the metric's unit ball), times the optional per-ellipse ``weights``
    (density, density) or (density**2,) (e.g. emphasis near the decision boundary; 0 hides
    one). One global scale makes the largest half-length ``fill / 2`` of a cell. Drawn in
    (u, v) coordinates of the field's slice (equal axis scales needed to see true shapes).

    Returns :class:`Ellipses`: ``xs``, ``ys`` 1-D float64 arrays, each ellipse
    ``points_per_ellipse + 1`` points (closed) followed by one NaN, ordered row-major over the
    subgrid; ``centers`` (density**2, 2).
    """
    if mode not in ("stretch", "unit_ball"):
        raise ArgumentError(f"mode must be 'stretch' or 'unit_ball', got {mode!r}")
    if points_per_ellipse < 3:
        raise ArgumentError(f"points_per_ellipse must be >= 3, got {points_per_ellipse}")
    rows, cols = ellipse_sites(field, density)
    n = density * density
    g = field.metric.detach().cpu().double().numpy()[np.ix_(rows, cols)].reshape(n, 2, 2)
    u = field.u.cpu().double().numpy()
    v = field.v.cpu().double().numpy()
    centers = np.stack(np.meshgrid(u[cols], v[rows], indexing="xy"), -1).reshape(n, 2)
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(
            weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights,
            dtype=np.float64,
        )
        if w.size != n:
            raise ArgumentError(f"weights must have density**2 = {n} entries, got shape {w.shape}")
        w = w.reshape(n)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ArgumentError("weights must be finite and >= 0")
    g = np.where(np.isfinite(g), g, np.nan)
    ok = np.all(np.isfinite(g.reshape(n, 4)), axis=1)
    g[~ok] = 0.0
    lam, vecs = np.linalg.eigh(0.5 * (g + np.swapaxes(g, 1, 2)))  # ascending, (n, 2), (n, 2, 2)
    lam = np.clip(lam, 0.0, None)
    if mode == "stretch":
        half = np.sqrt(lam)
    else:
        lam_max = lam.max() if lam.size else 0.0
        floor = max(lam_max * 1e-12, np.finfo(np.float64).tiny)
        half = 1.0 / np.sqrt(np.maximum(lam, floor))
    half = half * w[:, None]
    half[~ok] = 0.0
    cell = min(
        (field.slice.u_range[1] - field.slice.u_range[0]) / density,
        (field.slice.v_range[1] - field.slice.v_range[0]) / density,
    )
    biggest = half.max() if half.size else 0.0
    scale = fill * cell / 2 / biggest if biggest > 0 else 0.0
    theta = np.linspace(0.0, 2 * np.pi, points_per_ellipse + 1)
    circle = np.stack([np.cos(theta), np.sin(theta)])  # (2, m+1)
    # offsets[e] = vecs[e] @ diag(half[e] * scale) @ circle -> (n, 2, m+1)
    offsets = np.einsum("nij,nj,jt->nit", vecs, half * scale, circle)
    pts = centers[:, :, None] + offsets
    nan = np.full((n, 1), np.nan)
    xs = np.concatenate([pts[:, 0, :], nan], axis=1).reshape(-1)
    ys = np.concatenate([pts[:, 1, :], nan], axis=1).reshape(-1)
    return Ellipses(xs=xs, ys=ys, centers=centers)


def _two_class(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ArgumentError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if logits.shape[1] == 1:  # one binary logit z: class 1 iff z > 0, like softmax([0, z])
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def decision_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit, (N,) for logits (N, C) (C = 1: a binary logit z, margin |z|).

    Zero exactly on a decision boundary, positive elsewhere.
    """
    z = _two_class(torch.as_tensor(logits))
    top = torch.topk(z, 2, dim=1).values
    return top[:, 0] - top[:, 1]


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy in log base C, in [0, 1]: (N,) for logits (N, C) (C = 1: binary)."""
    z = _two_class(torch.as_tensor(logits))
    logp = torch.log_softmax(z, dim=1)
    h = -(logp.exp() * logp).sum(1) / math.log(z.shape[1])
    return h.clamp(0.0, 1.0)


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """Arg-max class (N,) int64 for logits (N, C) (C = 1: 1 where z > 0)."""
    return _two_class(torch.as_tensor(logits)).argmax(1)


@dataclass(frozen=True, eq=False)
class DecisionField:
    """Decision quantities on a slice grid, indexed ``[i, j] = (v[i], u[j])``, on CPU.

    margin : (res, res) top-1 minus top-2 logit (float64); zero on the decision boundary.
    entropy : (res, res) softmax entropy, log base C, in [0, 1] (float64).
    predicted : (res, res) int64 predicted class.
    logits : (res, res, C) the raw outputs (compute dtype).
    """

    margin: torch.Tensor
    entropy: torch.Tensor
    predicted: torch.Tensor
    logits: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    slice: Slice

    @property
    def num_classes(self) -> int:
        return max(2, int(self.logits.shape[-1]))

    @property
    def boundary(self) -> torch.Tensor:
        """(res, res) bool: cells whose predicted class differs from a 4-neighbour's."""
        return boundary_mask(self.predicted)


def boundary_mask(predicted: torch.Tensor) -> torch.Tensor:
    """(H, W) bool mask of cells whose class differs from a right/left/up/down neighbour."""
    pr = torch.as_tensor(predicted)
    mask = torch.zeros_like(pr, dtype=torch.bool)
    dh = pr[1:, :] != pr[:-1, :]
    dw = pr[:, 1:] != pr[:, :-1]
    mask[1:, :] |= dh
    mask[:-1, :] |= dh
    mask[:, 1:] |= dw
    mask[:, :-1] |= dw
    return mask


@in_eval_mode
def decision_field(
    logits_fn_or_model: FeatureFn,
    slice: Slice,
    resolution: int = 128,
    chunk_size: int | None = None,
    progress: Progress = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DecisionField:
    """Margin, entropy and predicted class of a classifier's outputs on the slice grid.

    ``logits_fn_or_model``: an ``nn.Module`` (its output, in eval mode; its train/eval
    modes are restored on return) or a callable
    ``(N, *input_shape) -> (N, C)``.

    Examples
    --------
    Logits ``(x1, -x1)`` put the decision boundary on the line ``x1 = 0``:

    >>> import torch
    >>> from richviz.geometry import Slice, decision_field
    >>> square = Slice.square(torch.zeros(2), 1.0)  # [-1, 1]^2, u = x1, v = x2
    >>> dec = decision_field(lambda x: torch.stack([x[:, 0], -x[:, 0]], 1), square, resolution=5)
    >>> dec.predicted[0]  # the row v = -1, from u = -1 to u = 1
    tensor([1, 1, 0, 0, 0])
    >>> dec.margin[0]  # top-1 minus top-2 logit, |2 x1|
    tensor([2., 1., 0., 1., 2.], dtype=torch.float64)
    >>> dec.entropy.max().item()  # log base C: 1 on the boundary, where the classes tie
    1.0
    >>> dec.boundary.sum().item()  # cells next to a cell of the other class: 2 per row
    10
    """
    res = _check_resolution(resolution)
    if isinstance(logits_fn_or_model, nn.Module):
        model = logits_fn_or_model
        fn: Callable[[torch.Tensor], torch.Tensor] = model
        dev = module_device(model) if device is None else torch.device(device)
        dt = module_dtype(model) if dtype is None else dtype
    elif callable(logits_fn_or_model):
        fn = logits_fn_or_model
        dev = slice.origin.device if device is None else torch.device(device)
        dt = slice.dtype if dtype is None else dtype
    else:
        raise ArgumentTypeError(
            "logits_fn_or_model must be an nn.Module or callable, "
            f"got {type(logits_fn_or_model).__name__}"
        )
    numel = int(np.prod(slice.input_shape))
    uv = slice.grid_uv(res)
    total = uv.shape[0]
    plan = ChunkPlan(total, numel, dev, chunk_size)
    update, close = updater(progress, total, "decision field")
    outs = []
    try:
        with torch.no_grad():
            for start, stop in plan:
                x = slice.to_input(uv[start:stop], dtype=dt, device=dev)
                try:
                    z = fn(x)
                except torch.OutOfMemoryError:
                    del x
                    plan.out_of_memory()
                    continue
                outs.append(z.reshape(z.shape[0], -1).cpu())
                update(stop)
    finally:
        close()
    logits = torch.cat(outs)
    u, v = slice.grid(res)
    c = logits.shape[1]
    return DecisionField(
        margin=decision_margin(logits).double().reshape(res, res),
        entropy=softmax_entropy(logits.double()).reshape(res, res),
        predicted=predicted_class(logits).reshape(res, res),
        logits=logits.reshape(res, res, c),
        u=u,
        v=v,
        slice=slice,
    )


def boundary_magnification(
    log10_volume: torch.Tensor | np.ndarray,
    margin: torch.Tensor | np.ndarray,
    band: float = 0.1,
    threshold: float | None = None,
) -> float:
    """Mean log10 volume element near the decision boundary minus the mean away from it.

    "Near" is the ``band`` fraction of grid points with the smallest margin (default: the
    lowest 10 %; a quantile is invariant to the logits' scale, so lazy and rich checkpoints are
    comparable), or, when ``threshold`` is given, the points with ``margin < threshold``.
    "Away" is every other point. Positive values mean the metric magnifies areas near the
    boundary (the paper's finding for trained networks); ~0 for a uniform field.

    Points where either input is not finite (NaN, or -inf log volume where the volume is zero)
    are ignored. Returns NaN when either group is empty. Raises ``ValueError`` when the two
    arrays' shapes differ or ``band`` is not in (0, 1).
    """
    lv = np.asarray(
        log10_volume.detach().cpu() if isinstance(log10_volume, torch.Tensor) else log10_volume,
        dtype=np.float64,
    )
    mg = np.asarray(
        margin.detach().cpu() if isinstance(margin, torch.Tensor) else margin, dtype=np.float64
    )
    if lv.shape != mg.shape:
        raise ArgumentError(
            f"log10_volume and margin must have the same shape, got {lv.shape} and {mg.shape}"
        )
    ok = np.isfinite(lv) & np.isfinite(mg)
    lv, mg = lv[ok], mg[ok]
    if lv.size == 0:
        return float("nan")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ArgumentError(f"threshold must be finite, got {threshold!r}")
        near = mg < threshold
    else:
        if not (0 < band < 1):
            raise ArgumentError(f"band must be a fraction in (0, 1), got {band!r}")
        k = max(1, int(round(band * mg.size)))
        order = np.argsort(mg, kind="stable")
        near = np.zeros(mg.size, dtype=bool)
        near[order[:k]] = True
    if not near.any() or near.all():
        return float("nan")
    return float(lv[near].mean() - lv[~near].mean())
