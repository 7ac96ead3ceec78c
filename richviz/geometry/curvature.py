"""Gaussian and scalar curvature of the pulled-back metric on a 2-D slice.

On a slice ``x(u, v) = origin + u e1 + v e2`` the feature map gives the surface
``f(u, v) = phi(x(u, v)) / sqrt(p)`` with first fundamental form (the slice metric)

    E = f_u . f_u,   F = f_u . f_v,   G = f_v . f_v,      [[E, F], [F, G]] = (J E)^T (J E) / p.

Its Gaussian curvature ``K`` follows from the Brioschi formula, which needs the metric, its
first derivatives and, of its second derivatives, only ``S = -E_vv/2 + F_uv - G_uu/2``:

    K = (det M1 - det M2) / (E G - F^2)^2,

    M1 = [[S,           E_u/2, F_u - E_v/2],      M2 = [[0,     E_v/2, G_u/2],
          [F_v - G_u/2, E,     F          ],            [E_v/2, E,     F    ],
          [G_v/2,       F,     G          ]],           [G_u/2, F,     G    ]],

with ``E_u = 2 f_uu.f_u``, ``E_v = 2 f_uv.f_u``, ``F_u = f_uu.f_v + f_u.f_uv``,
``F_v = f_uv.f_v + f_u.f_vv``, ``G_u = 2 f_uv.f_v``, ``G_v = 2 f_vv.f_v`` and
``S = f_uu.f_vv - f_uv.f_uv`` (the third derivatives of f cancel in S). So first and second
derivatives of phi suffice; they come from forward-over-forward AD (``torch.func.jvp`` of
``jvp``), batched over grid points and chunked. In two dimensions the Ricci scalar is
``R = 2 K``.

Normalisation: the metric is ``g = J^T J / p``; scaling a metric by ``c`` scales K by ``1/c``,
so K here is ``p`` times the curvature of the unnormalised ``J^T J``. Example: the plane mapped
onto a sphere of radius rho in R^3 (p = 3) has ``K = 3 / rho^2``.

For 2-D inputs on ``Slice.square``/``Slice.covering`` (identity basis) K is the curvature of
``g`` itself. On a plane slice of a higher-dimensional input K is the intrinsic curvature of
the 2-D surface that the slice is mapped to.

Where the slice metric is (nearly) singular, ``EG - F^2 <= rtol * E G`` (``f_u``, ``f_v``
parallel or zero, e.g. dead ReLUs), K is undefined and reported as NaN. Piecewise-linear
feature maps (ReLU) have ``f_uu = f_uv = f_vv = 0`` almost everywhere, so K = 0 there: their
curvature sits on the kinks, which a grid does not see.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vmap

from richviz import validation
from richviz.devices import module_device, module_dtype
from richviz.errors import ArgumentError, ArgumentTypeError
from richviz.features import FeatureMap, as_feature_map
from richviz.geometry.field import auto_chunk_size
from richviz.geometry.slices import Slice
from richviz.progress import Progress, updater

__all__ = [
    "CurvatureField",
    "brioschi",
    "gaussian_curvature_at",
    "scalar_curvature",
    "second_order_jets",
]

FeatureFn = nn.Module | Callable[[torch.Tensor], torch.Tensor]

# One curvature pass carries 12 streams (3 tangent pairs x (primal, a, b, ab)) against the
# metric field's 3, so chunks are a quarter of the field's automatic size.
_CHUNK_DIVISOR = 4


@dataclass(frozen=True, eq=False)
class CurvatureField:
    """Curvature of the pulled-back metric on a slice grid (float64 on CPU).

    Attributes
    ----------
    gaussian : (res, res) Gaussian curvature K at grid point ``(u[j], v[i])``; NaN where the
        slice metric is degenerate.
    metric : (res, res, 2, 2) the slice metric ``[[E, F], [F, G]] = (J E)^T (J E) / p``.
    u, v : (res,) grid coordinates.
    slice : the :class:`~richviz.geometry.Slice`.
    p : feature dimension used in the ``1/p`` normalisation.
    """

    gaussian: torch.Tensor
    metric: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    slice: Slice
    p: int

    @property
    def scalar(self) -> torch.Tensor:
        """(res, res) Ricci scalar curvature ``R = 2 K`` (two dimensions)."""
        return 2 * self.gaussian

    @property
    def degenerate(self) -> torch.Tensor:
        """(res, res) bool: where K is undefined (NaN) because the metric is singular."""
        return torch.isnan(self.gaussian)

    @property
    def resolution(self) -> int:
        return int(self.u.shape[0])

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(u_min, u_max, v_min, v_max)`` for image plots."""
        return (*self.slice.u_range, *self.slice.v_range)


def second_order_jets(
    phi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second directional derivatives of ``phi`` along two directions.

    x : (N, *input_shape); basis : (2, *input_shape) directions ``e1, e2``.
    Returns ``(first (2, N, p), second (3, N, p))``: ``first = (J e1, J e2)``,
    ``second = (D^2 phi[e1, e1], D^2 phi[e1, e2], D^2 phi[e2, e2])``.

    Forward over forward: for each pair (a, b) in ((e1, e1), (e1, e2), (e2, e2)),
    ``jvp`` along b of ``x -> (phi(x), jvp(phi, x, a))`` gives ``(J a, J b, D^2 phi[a, b])``;
    the three pairs run as one ``vmap``-batched pass sharing the primal.
    """
    validation.check_finite(x, "x")
    validation.check_finite(basis, "basis")
    return _second_order_jets(phi, x, basis)


def _second_order_jets(
    phi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`second_order_jets` without argument checks (the kernel)."""

    def flat(y: torch.Tensor) -> torch.Tensor:
        out = phi(y)
        return out.reshape(out.shape[0], -1)

    def pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def inner(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(flat, (y,), (a.expand_as(y),))

        (_, ja), (jb, hab) = jvp(inner, (x,), (b.expand_as(x),))
        return ja, jb, hab

    a = basis[[0, 0, 1]]
    b = basis[[0, 1, 1]]
    ja, jb, hab = vmap(pair)(a, b)
    return torch.stack([ja[0], jb[1]]), hab


def brioschi(
    E: torch.Tensor,
    F: torch.Tensor,
    G: torch.Tensor,
    E_u: torch.Tensor,
    E_v: torch.Tensor,
    F_u: torch.Tensor,
    F_v: torch.Tensor,
    G_u: torch.Tensor,
    G_v: torch.Tensor,
    S: torch.Tensor,
    rtol: float = 1e-8,
) -> torch.Tensor:
    """Gaussian curvature from the metric ``[[E, F], [F, G]]`` and its derivatives (Brioschi).

    ``S = -E_vv/2 + F_uv - G_uu/2`` is the only combination of second derivatives needed:

        K = (det [[S, E_u/2, F_u - E_v/2], [F_v - G_u/2, E, F], [G_v/2, F, G]]
             - det [[0, E_v/2, G_u/2], [E_v/2, E, F], [G_u/2, F, G]]) / (E G - F^2)^2.

    Elementwise over tensors of one shape. NaN where ``E G - F^2 <= rtol * E G`` or ``E``,
    ``G`` vanish (degenerate metric). Non-finite input raises
    :class:`~richviz.errors.NonFiniteError` naming the argument.
    """
    named = (("E", E), ("F", F), ("G", G), ("E_u", E_u), ("E_v", E_v), ("F_u", F_u))
    for name, t in (*named, ("F_v", F_v), ("G_u", G_u), ("G_v", G_v), ("S", S)):
        validation.check_finite(validation.as_tensor(t, name), name)
    return _brioschi(E, F, G, E_u, E_v, F_u, F_v, G_u, G_v, S, rtol)


def _brioschi(
    E: torch.Tensor,
    F: torch.Tensor,
    G: torch.Tensor,
    E_u: torch.Tensor,
    E_v: torch.Tensor,
    F_u: torch.Tensor,
    F_v: torch.Tensor,
    G_u: torch.Tensor,
    G_v: torch.Tensor,
    S: torch.Tensor,
    rtol: float,
) -> torch.Tensor:
    """:func:`brioschi` without argument checks (the kernel)."""
    det = E * G - F * F
    a1, a2, a3 = F_v - G_u / 2, E, F
    b1, b2, b3 = G_v / 2, F, G
    # first determinant, expanded along its first row
    m1 = (
        S * (a2 * b3 - a3 * b2)
        - (E_u / 2) * (a1 * b3 - a3 * b1)
        + (F_u - E_v / 2) * (a1 * b2 - a2 * b1)
    )
    ev, gu = E_v / 2, G_u / 2
    m2 = -ev * (ev * G - F * gu) + gu * (ev * F - E * gu)
    k = (m1 - m2) / (det * det)
    bad = ~(det > rtol * E * G) | ~(E > 0) | ~(G > 0)
    return torch.where(bad, torch.full_like(k, math.nan), k)


def _curvature_from_jets(
    first: torch.Tensor, second: torch.Tensor, p: int, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K (N,), metric (N, 2, 2)) in float64 from ``first`` (2, N, p), ``second`` (3, N, p)."""
    j1, j2 = first.double()
    h11, h12, h22 = second.double()

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(-1) / p

    E, F, G = dot(j1, j1), dot(j1, j2), dot(j2, j2)
    h11j1, h12j1, h12j2, h22j2 = dot(h11, j1), dot(h12, j1), dot(h12, j2), dot(h22, j2)
    k = _brioschi(
        E,
        F,
        G,
        E_u=2 * h11j1,
        E_v=2 * h12j1,
        F_u=dot(h11, j2) + h12j1,
        F_v=h12j2 + dot(j1, h22),
        G_u=2 * h12j2,
        G_v=2 * h22j2,
        S=dot(h11, h22) - dot(h12, h12),
        rtol=rtol,
    )
    metric = torch.stack([E, F, F, G], -1).reshape(-1, 2, 2)
    return k, metric


def _default_rtol(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).eps)


class _ModeGuard:
    """Remember every submodule's train/eval flag and restore it on exit."""

    def __init__(self, module: nn.Module | None):
        self.modes = [(m, m.training) for m in module.modules()] if module is not None else []

    def __enter__(self) -> _ModeGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        for m, training in self.modes:
            m.training = training


def _prepare(
    phi: FeatureFn,
    layer: str | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    fallback: tuple[torch.device, torch.dtype],
) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module | None, torch.device, torch.dtype]:
    """Feature map, the module whose modes to restore, compute device and dtype.

    A module whose dtype differs from ``dtype`` is copied and cast (the caller's model is not
    changed); likewise for ``device``.
    """
    module = phi.model if isinstance(phi, FeatureMap) else phi
    if isinstance(module, nn.Module):
        dev = module_device(module) if device is None else torch.device(device)
        dt = module_dtype(module) if dtype is None else dtype
        owner = module
        if dt != module_dtype(module) or dev != module_device(module):
            module = copy.deepcopy(module).to(device=dev, dtype=dt)
        if isinstance(phi, FeatureMap):
            layer = phi.layer
        return as_feature_map(module, layer), owner, dev, dt
    if not callable(phi):
        raise ArgumentTypeError(f"phi must be an nn.Module or a callable, got {type(phi).__name__}")
    dev = fallback[0] if device is None else torch.device(device)
    dt = fallback[1] if dtype is None else dtype
    return phi, None, dev, dt


def _check_chunk(chunk_size: int | None, numel: int) -> int:
    return validation.chunk_size(chunk_size, max(1, auto_chunk_size(numel) // _CHUNK_DIVISOR))


def scalar_curvature(
    phi: FeatureFn,
    slice: Slice,
    resolution: int = 64,
    chunk_size: int | None = None,
    progress: Progress = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    rtol: float | None = None,
) -> CurvatureField:
    """Gaussian curvature K and scalar curvature ``R = 2 K`` of the pulled-back metric on a grid.

    Parameters
    ----------
    phi : an ``nn.Module`` (its feature map at ``layer``, default the input of the last
        ``nn.Linear``; its train/eval flags are restored afterwards) or any callable
        ``(N, *input_shape) -> (N, ...)`` (flattened to (N, p)). It must be twice
        differentiable for K to mean anything (smooth activations).
    slice : the :class:`~richviz.geometry.Slice`; derivatives are taken along its basis.
    resolution : grid points per axis (>= 2).
    chunk_size : grid points per pass; None picks a quarter of
        :func:`~richviz.geometry.auto_chunk_size` (one pass carries 12 streams).
    progress : None, True (tqdm bar) or ``callable(done, total)`` after each chunk.
    device, dtype : where and in what precision to compute (default: the model's; a plain
        callable: the slice's). A module in another dtype/device is copied and cast, so
        ``dtype=torch.float64`` computes a float32 model in double precision.
    rtol : degenerate-metric threshold, K = NaN where ``EG - F^2 <= rtol E G``; default
        ``sqrt(eps)`` of the compute dtype (1.5e-8 in float64, 3.5e-4 in float32).

    Returns
    -------
    CurvatureField (``gaussian``, ``scalar``, ``metric``, float64 on CPU, indexed
    ``[i, j] = (v[i], u[j])``).

    Precision: derivatives are formed in the compute dtype, the dot products and the Brioschi
    assembly in float64. In float64 the sphere check is exact to ~1e-14 relative. In float32
    (2-64-64 tanh MLPs) K differs from float64 by ~1e-6 of max |K| (median 3e-7 relative;
    larger relative error only where K crosses zero or the metric nears degeneracy), so
    float32 is fine for pictures; pass ``dtype=torch.float64`` for quantitative checks.
    """
    uv = slice.grid_uv(resolution)  # validates resolution
    res = int(resolution)
    fn, owner, dev, dt = _prepare(phi, layer, device, dtype, (slice.origin.device, slice.dtype))
    tol = _default_rtol(dt) if rtol is None else float(rtol)
    numel = int(np.prod(slice.input_shape))
    cs = _check_chunk(chunk_size, numel)
    total = uv.shape[0]
    origin = slice.origin.to(dev).reshape(1, -1)
    basis64 = slice.basis.to(dev).reshape(2, -1)
    tangents = slice.basis.to(device=dev, dtype=dt)
    gauss = torch.empty(total, dtype=torch.float64)
    metric = torch.empty(total, 2, 2, dtype=torch.float64)
    update, close = updater(progress, total, "curvature")
    p = 0
    try:
        with _ModeGuard(owner), torch.no_grad():
            for start in range(0, total, cs):
                stop = min(total, start + cs)
                x = origin + uv[start:stop].to(dev) @ basis64
                x = x.reshape(-1, *slice.input_shape).to(dt)
                first, second = _second_order_jets(fn, x, tangents)
                p = first.shape[-1]
                k, m = _curvature_from_jets(first, second, p, tol)
                gauss[start:stop] = k.cpu()
                metric[start:stop] = m.cpu()
                update(stop)
    finally:
        close()
    u, v = slice.grid(res)
    return CurvatureField(
        gaussian=gauss.reshape(res, res),
        metric=metric.reshape(res, res, 2, 2),
        u=u,
        v=v,
        slice=slice,
        p=p,
    )


def gaussian_curvature_at(
    phi: FeatureFn,
    points: torch.Tensor,
    basis: torch.Tensor | None = None,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
    rtol: float | None = None,
) -> torch.Tensor:
    """Gaussian curvature K at arbitrary inputs, (N,) float64 on CPU (``R = 2 K``).

    points : (N, *input_shape), computed on their device in their dtype (a module is copied
    and cast when it differs). basis : (2, *input_shape) directions spanning the surface;
    default the standard basis of 2-D inputs (then K is the curvature of ``g = J^T J / p``).
    NaN where the metric is degenerate (see :func:`scalar_curvature`).
    """
    x = validation.as_tensor(points, "points")
    if x.ndim < 2 or not x.is_floating_point():
        raise ArgumentError(
            f"points must be a float tensor (N, *input_shape), got {tuple(x.shape)}"
        )
    validation.check_finite(x, "points")
    shape = tuple(x.shape[1:])
    if basis is None:
        if shape != (2,):
            raise ArgumentError(
                f"basis is required for inputs of shape {shape} (default: 2-D only)"
            )
        basis = torch.eye(2)
    basis = validation.as_tensor(basis, "basis").to(device=x.device, dtype=x.dtype)
    validation.check_finite(basis, "basis")
    if tuple(basis.shape) != (2, *shape):
        raise ArgumentError(f"basis must have shape (2, *{shape}), got {tuple(basis.shape)}")
    fn, owner, _, dt = _prepare(phi, layer, x.device, x.dtype, (x.device, x.dtype))
    tol = _default_rtol(dt) if rtol is None else float(rtol)
    cs = _check_chunk(chunk_size, int(np.prod(shape)))
    out = []
    with _ModeGuard(owner), torch.no_grad():
        for start in range(0, x.shape[0], cs):
            first, second = _second_order_jets(fn, x[start : start + cs], basis)
            out.append(_curvature_from_jets(first, second, first.shape[-1], tol)[0].cpu())
    return torch.cat(out)
