"""Riemannian geometry of a feature map on 2-D slices of input space (DESIGN §3).

A feature map ``phi: (N, *input_shape) -> (N, p)`` pulls the Euclidean metric of feature space
back to input space:

    g(x) = J(x)^T J(x) / p,        J = d phi / d x,   p = feature dimension.

The ``1/p`` is the width normalisation of Zavatone-Veth et al. (arXiv 2301.11375); it keeps
numbers comparable across widths and finite as the width grows. On a 2-D slice
``x(u, v) = origin + u e1 + v e2`` the induced 2x2 metric is

    G = E^T g E = (J E)^T (J E) / p,   E = [e1 e2],

which needs only the two directional derivatives ``J e1`` and ``J e2``. They are computed by
forward-mode AD, batched over grid points and chunked so that memory stays bounded; the full
``p x d`` Jacobian is never built. Any model goes through ``torch.func.jvp`` vmapped over the
two tangents (the primal pass is shared); MLPs (chains of ``nn.Linear`` and elementwise
activations) take a hand-written version of the same recursion that avoids ``jvp``'s overheads.

Grid convention: every field array is indexed ``[i, j] = (v[i], u[j])``: rows follow ``v``,
columns follow ``u`` (image convention), shape ``(res, res)``. Flattened grid points are in
row-major order, point ``k = i * res + j`` sits at ``(u[j], v[i])``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from richviz import activations
from richviz.chunking import ChunkPlan, check_chunk_size, cpu_chunk_size
from richviz.devices import module_device, module_dtype, to_device
from richviz.features import (
    LOGITS,
    PENULTIMATE,
    FeatureMap,
    as_feature_map,
    in_eval_mode,
    last_linear_name,
)

__all__ = [
    "OUTPUT_BYTES_PER_POINT",
    "OUTPUT_MEMORY_FRACTION",
    "auto_chunk_size",
    "available_memory",
    "boundary_magnification",
    "boundary_mask",
    "chain_directional_derivatives",
    "chain_modules",
    "check_output_bytes",
    "decision_field",
    "decision_margin",
    "DecisionField",
    "directional_derivatives",
    "effective_volume",
    "ellipse_sites",
    "FeatureFn",
    "iter_metric_chunks",
    "metric_ellipses",
    "MetricField",
    "predicted_class",
    "Progress",
    "pullback_metric",
    "pullback_metric_at",
    "Slice",
    "slice_metric_and_volume",
    "softmax_entropy",
]

Progress = bool | Callable[[int, int], object] | None
FeatureFn = nn.Module | Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------------


def _as_float_tensor(x: object, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a tensor or array of numbers") from exc
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return t


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    return int(resolution)


@dataclass(frozen=True, eq=False)
class Slice:
    """A 2-D affine plane ``x(u, v) = origin + u * basis[0] + v * basis[1]`` in input space.

    Build one with :meth:`square` (2-D inputs), :meth:`plane` (three inputs of any shape) or
    :meth:`paper_plane` (the paper's coordinates).

    Attributes
    ----------
    origin : (*input_shape) float64 tensor.
    basis : (2, *input_shape) float64 tensor; orthonormal for ``square`` and ``plane``
        (lengths in (u, v) are true input-space lengths), not for ``paper_plane``.
    u_range, v_range : (min, max) of the coordinate window.
    anchors : (k, 2) float64 (u, v) coordinates of the anchor inputs, or None.
    anchor_points : (k, *input_shape) the anchor inputs themselves, or None.
    dtype : floating dtype of the inputs the slice was built from; :meth:`to_input` returns it.
    kind : ``"square"``, ``"plane"`` or ``"paper_plane"``.
    """

    origin: torch.Tensor
    basis: torch.Tensor
    u_range: tuple[float, float]
    v_range: tuple[float, float]
    anchors: torch.Tensor | None = None
    anchor_points: torch.Tensor | None = None
    dtype: torch.dtype = torch.float32
    kind: str = "plane"
    _gram: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.basis.shape != (2, *self.origin.shape):
            raise ValueError(
                f"basis must have shape (2, *origin.shape) = {(2, *self.origin.shape)}, "
                f"got {tuple(self.basis.shape)}"
            )
        for name, (lo, hi) in (("u_range", self.u_range), ("v_range", self.v_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be finite with min < max, got {(lo, hi)}")
        flat = self.basis.reshape(2, -1)
        object.__setattr__(self, "_gram", flat @ flat.T)

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def square(cls, center: object, half_width: float) -> Slice:
        """The input plane of a 2-D model: window ``center +- half_width`` on both axes.

        ``basis`` is the identity and ``origin`` zero, so ``(u, v)`` are the input coordinates
        ``(x1, x2)`` themselves and data points can be drawn as they are.
        """
        c = _as_float_tensor(center, "center")
        if c.shape != (2,):
            raise ValueError(
                f"Slice.square needs a 2-D input: center must have shape (2,), got "
                f"{tuple(c.shape)}; use Slice.plane(x0, x1, x2) for other input shapes"
            )
        try:
            h = float(half_width)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"half_width must be a number, got {half_width!r}") from exc
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"half_width must be finite and > 0, got {half_width!r}")
        c64 = c.double()
        cu, cv = float(c64[0]), float(c64[1])
        return cls(
            origin=torch.zeros(2, dtype=torch.float64, device=c.device),
            basis=torch.eye(2, dtype=torch.float64, device=c.device),
            u_range=(cu - h, cu + h),
            v_range=(cv - h, cv + h),
            dtype=c.dtype,
            kind="square",
        )

    @classmethod
    def covering(cls, points: object, margin: float = 0.1) -> Slice:
        """Square window over 2-D ``points`` (N, 2): their bounding box plus ``margin`` x side."""
        x = _as_float_tensor(points, "points")
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2), got {tuple(x.shape)}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
        x64 = x.double()
        lo, hi = x64.min(0).values, x64.max(0).values
        side = float((hi - lo).max())
        side = side if side > 0 else 1.0
        square = cls.square((lo + hi) / 2, side * (0.5 + margin))
        return dataclasses.replace(square, dtype=x.dtype)

    @classmethod
    def plane(cls, x0: object, x1: object, x2: object, margin: float = 0.25) -> Slice:
        """The plane through three inputs of any (equal) shape, with an orthonormal basis.

        Gram-Schmidt in float64: ``e1 = (x1 - x0) / |x1 - x0|``, ``e2`` the normalised part of
        ``x2 - x0`` orthogonal to ``e1``. The origin is the centroid of the three points; the
        square (u, v) window covers the three anchors with ``margin`` x its side on each side.
        """
        pts = [_as_float_tensor(x, name) for name, x in (("x0", x0), ("x1", x1), ("x2", x2))]
        dtype = _common_dtype(pts)
        p = _stack_same_shape(pts)  # (3, *shape) float64
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {margin!r}")
        flat = p.reshape(3, -1)
        a, b = flat[1] - flat[0], flat[2] - flat[0]
        scale = max(float(a.norm()), float(b.norm()), float((flat[2] - flat[1]).norm()))
        if scale == 0:
            raise ValueError(
                "x0, x1, x2 coincide; a plane needs three distinct, non-collinear points"
            )
        na = float(a.norm())
        if na <= 1e-12 * scale:
            raise ValueError("x0 and x1 coincide; a plane needs three non-collinear points")
        e1 = a / na
        b_perp = b - (b @ e1) * e1
        b_perp = b_perp - (b_perp @ e1) * e1  # second Gram-Schmidt pass for orthogonality
        nb = float(b_perp.norm())
        if nb <= 1e-9 * scale:
            raise ValueError("x0, x1, x2 are collinear (or two coincide); the plane is undefined")
        e2 = b_perp / nb
        origin = flat.mean(0)
        basis = torch.stack([e1, e2])
        uv = (flat - origin) @ basis.T  # (3, 2)
        lo, hi = uv.min(0).values, uv.max(0).values
        side = float((hi - lo).max()) * (1 + 2 * margin)
        mid = (lo + hi) / 2
        shape = p.shape[1:]
        return cls(
            origin=origin.reshape(shape),
            basis=basis.reshape(2, *shape),
            u_range=(float(mid[0]) - side / 2, float(mid[0]) + side / 2),
            v_range=(float(mid[1]) - side / 2, float(mid[1]) + side / 2),
            anchors=uv,
            anchor_points=p.to(dtype),
            dtype=dtype,
            kind="plane",
        )

    @classmethod
    def paper_plane(cls, x0: object, x1: object, x2: object) -> Slice:
        """The paper's coordinates: centroid origin, ``e1 = x2 - x1``,
        ``e2 = 2 sqrt(3) ((x1 + x2) / 2 - centroid)``, window ``(a, b) in [-1, 1]^2``.

        The anchors sit at ``(0, -1/sqrt 3)``, ``(-1/2, 1/(2 sqrt 3))`` and
        ``(1/2, 1/(2 sqrt 3))``: an equilateral triangle of side 1 in (a, b). The basis is not
        orthonormal, so the slice metric ``G = E^T g E`` and its volume element are in these
        (a, b) units (as in the paper), not in input-space lengths.
        """
        pts = [_as_float_tensor(x, name) for name, x in (("x0", x0), ("x1", x1), ("x2", x2))]
        dtype = _common_dtype(pts)
        p = _stack_same_shape(pts)
        flat = p.reshape(3, -1)
        origin = flat.mean(0)
        e1 = flat[2] - flat[1]
        e2 = 2 * math.sqrt(3) * ((flat[1] + flat[2]) / 2 - origin)
        n1, n2 = float(e1.norm()), float(e2.norm())
        scale = max(n1, n2, float((flat[1] - flat[0]).norm()))
        if scale == 0:
            raise ValueError(
                "x0, x1, x2 coincide; a plane needs three distinct, non-collinear points"
            )
        if n1 <= 1e-12 * scale:
            raise ValueError("x1 and x2 coincide; a plane needs three non-collinear points")
        if n2 <= 1e-12 * scale:
            raise ValueError("x0 is the midpoint of x1 and x2 (collinear); the plane is undefined")
        cos = float(e1 @ e2) / (n1 * n2)
        if 1 - abs(cos) <= 1e-12:
            raise ValueError("x0, x1, x2 are collinear; the plane is undefined")
        shape = p.shape[1:]
        basis = torch.stack([e1, e2])
        gram = basis @ basis.T
        uv = torch.linalg.solve(gram, basis @ (flat - origin).T).T
        return cls(
            origin=origin.reshape(shape),
            basis=basis.reshape(2, *shape),
            u_range=(-1.0, 1.0),
            v_range=(-1.0, 1.0),
            anchors=uv,
            anchor_points=p.to(dtype),
            dtype=dtype,
            kind="paper_plane",
        )

    # ---- geometry ---------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(2,)`` or ``(3, 32, 32)``."""
        return tuple(self.origin.shape)

    @property
    def orthonormal(self) -> bool:
        """Whether the basis is orthonormal (then (u, v) lengths are input-space lengths)."""
        eye = torch.eye(2, dtype=self._gram.dtype, device=self._gram.device)
        return bool(torch.allclose(self._gram, eye, atol=1e-10, rtol=0))

    def grid(self, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid coordinates ``(u, v)``: two float64 1-D tensors of length ``resolution``."""
        res = _check_resolution(resolution)
        u = torch.linspace(*self.u_range, res, dtype=torch.float64)
        v = torch.linspace(*self.v_range, res, dtype=torch.float64)
        return u, v

    def grid_uv(self, resolution: int) -> torch.Tensor:
        """All grid points' (u, v), (res*res, 2) float64, row-major (point ``i*res + j``)."""
        u, v = self.grid(resolution)
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        return torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=1)

    def to_input(
        self,
        uv: torch.Tensor,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Map slice coordinates (N, 2) to inputs (N, *input_shape).

        Computed in float64, returned in ``dtype`` (default: :attr:`dtype`) on ``device``
        (default: the slice's device).
        """
        uv = torch.as_tensor(uv)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv must have shape (N, 2), got {tuple(uv.shape)}")
        origin, basis = self.origin, self.basis
        if device is not None:
            origin, basis = origin.to(device), basis.to(device)
        uv = uv.to(device=origin.device, dtype=torch.float64)
        x = origin.reshape(1, -1) + uv @ basis.reshape(2, -1)
        return x.reshape(-1, *self.input_shape).to(self.dtype if dtype is None else dtype)

    def to_uv(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) coordinates of the orthogonal projection of inputs (N, *input_shape)."""
        x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x must have shape (N, *{self.input_shape}), got {tuple(x.shape)}")
        flat = x.reshape(x.shape[0], -1).to(device=self.origin.device, dtype=torch.float64)
        basis = self.basis.reshape(2, -1)
        rhs = basis @ (flat - self.origin.reshape(1, -1)).T  # (2, N)
        return torch.linalg.solve(self._gram, rhs).T


def _common_dtype(pts: list[torch.Tensor]) -> torch.dtype:
    dtype = pts[0].dtype
    for t in pts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _stack_same_shape(pts: list[torch.Tensor]) -> torch.Tensor:
    shapes = [tuple(t.shape) for t in pts]
    if len(set(shapes)) != 1:
        raise ValueError(
            f"x0, x1, x2 must have the same shape, got {shapes[0]}, {shapes[1]}, {shapes[2]}"
        )
    device = pts[0].device
    return torch.stack([t.to(device=device, dtype=torch.float64) for t in pts])


# --------------------------------------------------------------------------------------------
# Metric field
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MetricField:
    """The pulled-back metric on a slice grid (all tensors float64 on CPU).

    Attributes
    ----------
    metric : (res, res, 2, 2) ``G = (J E)^T (J E) / p`` at grid point ``(u[j], v[i])``.
    volume : (res, res) volume element ``sqrt(det G)`` (area magnification of the slice).
    u, v : (res,) grid coordinates.
    slice : the :class:`Slice`.
    p : feature dimension used in the ``1/p`` normalisation.
    """

    metric: torch.Tensor
    volume: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    slice: Slice
    p: int

    @property
    def resolution(self) -> int:
        return int(self.u.shape[0])

    @property
    def log10_volume(self) -> torch.Tensor:
        """(res, res) ``log10(volume)``; ``-inf`` where the volume element is exactly zero."""
        return torch.log10(self.volume)

    @property
    def det(self) -> torch.Tensor:
        """(res, res) ``det G = volume ** 2``."""
        return self.volume**2

    @property
    def points(self) -> torch.Tensor:
        """(res*res, *input_shape) input points of the grid, row-major (computed on access)."""
        return self.slice.to_input(self.slice.grid_uv(self.resolution))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(u_min, u_max, v_min, v_max)`` for image plots."""
        return (*self.slice.u_range, *self.slice.v_range)


def _resolve(
    phi: FeatureFn,
    layer: str | None,
    slice_: Slice,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.device, torch.dtype]:
    fn = as_feature_map(phi, layer)
    module = (
        fn.model if isinstance(fn, FeatureMap) else (phi if isinstance(phi, nn.Module) else None)
    )
    if module is not None:
        dev = module_device(module) if device is None else torch.device(device)
        dt = module_dtype(module) if dtype is None else dtype
    else:
        dev = slice_.origin.device if device is None else torch.device(device)
        dt = slice_.dtype if dtype is None else dtype
    return fn, dev, dt


def auto_chunk_size(input_numel: int) -> int:
    """Points per chunk on CPU for inputs of ``input_numel`` elements (about 1 MiB of float32
    input, at most 1024 points, at least 1); on CUDA chunks are sized from device memory
    (:class:`richviz.chunking.ChunkPlan`)."""
    return cpu_chunk_size(input_numel)


OUTPUT_BYTES_PER_POINT = 56
"""Bytes :func:`pullback_metric` keeps per grid point: the 2x2 float64 metric (32), the volume
element (8) and the point's (u, v) coordinates (16)."""

OUTPUT_MEMORY_FRACTION = 0.25
"""Default output budget of :func:`pullback_metric`: this fraction of the available memory."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; else the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_output_bytes(resolution: int, max_output_bytes: int | None = None) -> int:
    """Bytes the outputs of a ``resolution`` x ``resolution`` field need
    (``OUTPUT_BYTES_PER_POINT * resolution**2``); ``MemoryError`` naming the largest resolution
    that fits when they exceed ``max_output_bytes`` (default: ``OUTPUT_MEMORY_FRACTION`` of
    :func:`available_memory`; no check where that is unknown)."""
    need = OUTPUT_BYTES_PER_POINT * resolution * resolution
    if max_output_bytes is None:
        avail = available_memory()
        if avail is None:
            return need
        budget = int(avail * OUTPUT_MEMORY_FRACTION)
        what = f"{OUTPUT_MEMORY_FRACTION:g} of the available memory"
    else:
        if isinstance(max_output_bytes, bool) or not isinstance(
            max_output_bytes, (int, np.integer)
        ):
            raise ValueError(
                f"max_output_bytes must be an integer or None, got {max_output_bytes!r}"
            )
        budget, what = int(max_output_bytes), f"max_output_bytes={int(max_output_bytes)}"
    if need > budget:
        fits = math.isqrt(max(budget, 0) // OUTPUT_BYTES_PER_POINT)
        raise MemoryError(
            f"resolution={resolution} needs {need / 2**20:.0f} MiB for the field's outputs, more "
            f"than {what} ({budget / 2**20:.0f} MiB); the largest resolution that fits is {fits} "
            "(or pass a larger max_output_bytes)"
        )
    return need



def _progress_callback(progress: Progress, total: int, desc: str):
    """Return ``(update(done), close())`` for ``progress`` = None / True / callable(done, total)."""
    if progress is None or progress is False:
        return (lambda done: None), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="pt")
        state = {"done": 0}

        def update(done: int) -> None:
            bar.update(done - state["done"])
            state["done"] = done

        return update, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    raise ValueError(f"progress must be None, True or a callable(done, total), got {progress!r}")


def directional_derivatives(
    phi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tangents: torch.Tensor
) -> torch.Tensor:
    """``J(x) t`` for every tangent: (k, N, p) for x (N, *input_shape), tangents (k, *input_shape).

    One forward-mode pass: ``torch.func.jvp`` vmapped over the k tangents, so the primal
    computation is shared and the k tangent computations run as one batched pass.
    """

    def push(t: torch.Tensor) -> torch.Tensor:
        out = jvp(phi, (x,), (t.expand_as(x),))[1]
        return out.reshape(out.shape[0], -1)

    return vmap(push)(tangents)


# ---- fast path: chains of Linear layers and elementwise activations ----------------------

_ELEMENTWISE: tuple[type[nn.Module], ...] = activations.elementwise_types()
_IDENTITY: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.AlphaDropout)


def _flat_children(mods: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in mods:
        if type(m) is nn.Sequential:
            out += _flat_children(list(m.children()))
        else:
            out.append(m)
    return out


def _chain_supported(m: nn.Module) -> bool:
    if m._forward_hooks or m._forward_pre_hooks:
        return False
    if isinstance(m, nn.Linear) or isinstance(m, _ELEMENTWISE):
        return True
    if isinstance(m, _IDENTITY):
        return not m.training
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1 and m.end_dim == -1
    return False


def chain_modules(
    phi: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[list[nn.Module], bool] | None:
    """The feature map as a list of modules, when it is a plain chain.

    Returns ``(modules, nested)`` when ``phi`` is a :class:`FeatureMap` whose layer lies in an
    ``nn.Sequential`` made of ``nn.Linear``, elementwise activations, ``Flatten``, ``Identity``
    and eval-mode ``Dropout`` (``nested``: that Sequential is not the model itself, so its input
    is only presumed to be the model's input and must be checked); otherwise None.
    """
    if not isinstance(phi, FeatureMap):
        return None
    model = phi.model
    if phi.layer == LOGITS:
        container, name, nested = model, None, False
    else:
        name = last_linear_name(model) if phi.layer == PENULTIMATE else phi.layer
        parent, _, name = name.rpartition(".")
        container = model.get_submodule(parent) if parent else model
        nested = bool(parent)
    if type(container) is not nn.Sequential or container._forward_pre_hooks:
        return None
    named = list(container.named_children())
    if name is None:
        mods = [m for _, m in named]
    else:
        idx = [n for n, _ in named].index(name)
        mods = [m for _, m in named[: idx + (0 if phi.layer == PENULTIMATE else 1)]]
    mods = _flat_children(mods)
    if not all(_chain_supported(m) for m in mods):
        return None
    return mods, nested


def activation_jet(
    m: nn.Module, h: torch.Tensor, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(h), act'(h))`` for an elementwise activation module ``m``.

    The one place the chain kernel dispatches on the activation: closed forms for tanh
    (``1 - y^2``), sigmoid (``y (1 - y)``) and ReLU (``[h > 0]``), ``torch.func.jvp`` with a
    unit tangent for any other elementwise module. ``inplace``: ``act(h)`` may overwrite h.
    """
    if isinstance(m, nn.Tanh):
        y = torch.tanh(h, out=h) if inplace else torch.tanh(h)
        return y, 1 - y * y
    if isinstance(m, nn.Sigmoid):
        y = torch.sigmoid(h, out=h) if inplace else torch.sigmoid(h)
        return y, y * (1 - y)
    if isinstance(m, nn.ReLU):
        d = (h > 0).to(h.dtype)
        return (torch.relu_(h) if inplace else torch.relu(h)), d
    return jvp(m, (h,), (torch.ones_like(h),))


def _stacked_linear(jet: torch.Tensor, m: nn.Linear) -> torch.Tensor:
    """A Linear on the stacked jet ((1 + k), N, in), the bias on the primal slice 0 only
    (tangents are linear in the input). On CUDA one ``((1 + k) N, in) @ W^T`` product (fewer,
    larger launches); on CPU ``addmm`` for the primal and ``mm`` for the tangents into one
    buffer (no extra pass over the output for the bias)."""
    s, n = jet.shape[0], jet.shape[1]
    w_t = m.weight.T
    if jet.is_cuda or m.bias is None:
        out = torch.mm(jet.reshape(s * n, -1), w_t).reshape(s, n, -1)
        if m.bias is not None:
            out[0] += m.bias
        return out
    out = torch.empty((s, n, w_t.shape[1]), dtype=jet.dtype, device=jet.device)
    torch.addmm(m.bias, jet[0], w_t, out=out[0])
    torch.mm(jet[1:].reshape((s - 1) * n, -1), w_t, out=out[1:].reshape((s - 1) * n, -1))
    return out


def chain_directional_derivatives(
    mods: list[nn.Module], x: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, p) and ``J t`` (k, N, p) of a Linear/elementwise chain, by hand.

    The same forward-mode recursion as ``jvp``, without its overheads. Before the first
    nonlinearity the tangents are the same for every point and stay (k, width). From there on
    the primal and the k tangents travel as one stacked jet ((1 + k), N, width): each Linear is
    ONE ``((1 + k) N, in) @ W^T`` product (bias on the primal only), each activation
    ``y = act(h)``, ``t <- act'(h) * t`` updates the jet in place. x (N, *input_shape),
    tangents (k, *input_shape).
    """
    n, k = x.shape[0], tangents.shape[0]
    h = x
    t = tangents  # (k, *shape) while point-independent
    jet: torch.Tensor | None = None  # ((1 + k), N, width) once the tangents depend on the point
    for m in mods:
        if isinstance(m, _IDENTITY):
            continue
        if jet is not None:
            if isinstance(m, nn.Flatten):
                jet = jet.reshape(1 + k, n, -1)
            elif isinstance(m, nn.Linear):
                if jet.ndim != 3:
                    raise ValueError("Linear on a non-flat input")  # not reached: checked by caller
                jet = _stacked_linear(jet, m)
            else:
                y, d = activation_jet(m, jet[0], inplace=True)
                jet[1:] *= d
                if y.data_ptr() != jet.data_ptr():  # not computed in place
                    jet[0] = y
        elif isinstance(m, nn.Flatten):
            h = h.reshape(n, -1)
            t = t.reshape(k, -1)
        elif isinstance(m, nn.Linear):
            if h.ndim != 2:
                raise ValueError("Linear on a non-flat input")  # not reached: checked by caller
            t = t @ m.weight.T
            h = nn.functional.linear(h, m.weight, m.bias)
        else:  # first nonlinearity: the tangents become point-dependent
            y, d = activation_jet(m, h)
            jet = torch.empty((1 + k, *y.shape), dtype=y.dtype, device=y.device)
            jet[0] = y
            torch.mul(d, t.reshape(k, 1, *t.shape[1:]), out=jet[1:])
    if jet is None:
        w = t.reshape(k, -1).shape[1]
        return h.reshape(n, -1), t.reshape(k, 1, w).expand(k, n, w)
    return jet[0].reshape(n, -1), jet[1:].reshape(k, n, -1)


COMPILE_ENV = "RICHVIZ_COMPILE"
"""Set to ``1`` to run the chain kernel through ``torch.compile`` (off by default: on 2 CPU
threads it measured no faster than eager, and its first call compiles for a minute)."""

_compile_state: dict[str, object] = {"kernel": None, "failed": False}


def _chain_kernel() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The chain kernel: ``torch.compile``d when ``$RICHVIZ_COMPILE`` is 1, else eager (also
    after any compile failure, for the rest of the process)."""
    on = os.environ.get(COMPILE_ENV, "0").strip().lower() in ("1", "true", "yes", "on")
    if not on or _compile_state["failed"]:
        return chain_directional_derivatives
    if _compile_state["kernel"] is None:
        try:
            _compile_state["kernel"] = torch.compile(chain_directional_derivatives, dynamic=True)
        except Exception:  # no compiler backend on this machine: eager, silently
            _compile_state["failed"] = True
            return chain_directional_derivatives
    return _compile_state["kernel"]  # type: ignore[return-value]


def _run_chain(
    mods: list[nn.Module], x: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain kernel, falling back to eager once and quietly if the compiled one fails."""
    kernel = _chain_kernel()
    if kernel is chain_directional_derivatives:
        return kernel(mods, x, tangents)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return kernel(mods, x, tangents)
    except torch.OutOfMemoryError:
        raise
    except Exception:
        _compile_state["failed"] = True
        return chain_directional_derivatives(mods, x, tangents)


def slice_metric_and_volume(jt: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 metric (N, 2, 2) and volume element (N,) from ``jt = (J e1, J e2)`` of shape (2, N, p).

    ``det G = (|a|^2 |b|^2 - (a.b)^2) / p^2`` (a = J e1, b = J e2) cancels when a and b are
    nearly parallel; where ``det < 0.1 |a|^2 |b|^2`` (angle below ~18 degrees) it is formed
    instead as ``|a|^2 |b_perp|^2 / p^2`` with ``b_perp`` the part of b orthogonal to a, whose
    relative error stays near machine precision / sin(angle). Results are float64.
    """
    a, b = jt[0], jt[1]
    sq = (jt * jt).sum(-1)  # (2, N): |a|^2, |b|^2
    aa, bb = sq[0], sq[1]
    ab = (a * b).sum(-1)
    det = aa * bb - ab * ab
    bad = torch.nonzero(det <= 0.1 * aa * bb).squeeze(1)
    det = det.double()
    if bad.numel():
        a_bad, b_bad, aa_bad = a[bad], b[bad], aa[bad]
        safe = torch.where(aa_bad > 0, aa_bad, torch.ones_like(aa_bad))
        b_perp = b_bad - (ab[bad] / safe).unsqueeze(-1) * a_bad
        bpbp = torch.where(aa_bad > 0, (b_perp * b_perp).sum(-1), bb[bad])
        det[bad] = aa_bad.double() * bpbp.double()
    metric = torch.stack([aa, ab, ab, bb], -1).double().reshape(-1, 2, 2) / p
    volume = torch.sqrt(torch.clamp(det, min=0)) / p
    return metric, volume


@in_eval_mode
def iter_metric_chunks(
    phi: FeatureFn,
    slice: Slice,
    resolution: int = 128,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, int]]:
    """Stream the metric field chunk by chunk (for progressive displays).

    Yields ``(start, stop, metric (n, 2, 2), volume (n,), p)`` for flattened grid points
    ``start:stop`` (row-major, see module docstring), float64 on CPU.
    """
    res = _check_resolution(resolution)
    if method not in ("auto", "jvp"):
        raise ValueError(f"method must be 'auto' or 'jvp', got {method!r}")
    fn, dev, dt = _resolve(phi, layer, slice, device, dtype)
    numel = int(np.prod(slice.input_shape))
    check_chunk_size(chunk_size)
    uv = slice.grid_uv(res)
    total = uv.shape[0]
    origin = slice.origin.to(dev).reshape(1, -1)
    basis64 = slice.basis.to(dev).reshape(2, -1)
    tangents = slice.basis.to(device=dev, dtype=dt)
    chain = chain_modules(fn) if method == "auto" else None
    if chain is not None and len(slice.input_shape) != 1:
        if not (chain[0] and isinstance(chain[0][0], nn.Flatten)):
            chain = None  # a Linear would act on the last axis of a multi-axis input
    plan = ChunkPlan(total, numel, dev, chunk_size)
    with torch.no_grad():
        for start, stop in plan:
            x = origin + uv[start:stop].to(dev) @ basis64
            x = x.reshape(-1, *slice.input_shape).to(dt)
            if chain is not None and chain[1]:  # nested chain: check it is the feature map
                chain = (chain[0], False) if _chain_reproduces(fn, chain[0], x[:8]) else None
            try:
                if chain is not None:
                    jt = _run_chain(chain[0], x, tangents)[1]
                else:
                    jt = directional_derivatives(fn, x, tangents)
                p = jt.shape[-1]
                metric, volume = slice_metric_and_volume(jt, p)
            except torch.OutOfMemoryError:
                del x
                plan.out_of_memory()  # halves an automatic chunk; re-raises a given one
                continue
            yield start, stop, metric.cpu(), volume.cpu(), p


def _chain_reproduces(
    fn: Callable[[torch.Tensor], torch.Tensor], mods: list[nn.Module], x: torch.Tensor
) -> bool:
    """True when the chain ``mods`` gives the feature map ``fn`` at inputs ``x`` (rtol 1e-5)."""
    feats = fn(x)
    try:
        mine = chain_directional_derivatives(mods, x, torch.zeros_like(x[:1]))[0]
    except (RuntimeError, ValueError):  # e.g. the chain expects another width
        return False
    tol = 1e-5 * float(feats.abs().max()) + 1e-30
    return mine.shape == feats.shape and float((mine - feats).abs().max()) <= tol


@in_eval_mode
def pullback_metric(
    phi: FeatureFn,
    slice: Slice,
    resolution: int = 128,
    chunk_size: int | None = None,
    progress: Progress = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
    max_output_bytes: int | None = None,
) -> MetricField:
    """The pulled-back metric ``G = (J E)^T (J E) / p`` on a ``resolution`` x ``resolution`` grid.

    Parameters
    ----------
    phi : an ``nn.Module`` (its feature map at ``layer``, default the input of the last
        ``nn.Linear``, evaluated in eval mode; the model's train/eval mode of every submodule
        is restored on return) or any callable ``(N, *input_shape) ->
        (N, ...)`` (flattened to (N, p)).
    slice : the :class:`Slice`; ``E = slice.basis``.
    resolution : grid points per axis (>= 2).
    chunk_size : grid points per forward-mode pass. None: on CPU :func:`auto_chunk_size`
        (cache-sized); on CUDA sized from free device memory after a probe chunk, halved on
        out-of-memory (:class:`richviz.chunking.ChunkPlan`). Peak memory is that of one
        chunk's forward pass with three streams (primal and two tangents).
    progress : None, True (tqdm bar) or ``callable(done, total)`` called after each chunk.
    device, dtype : where and in what precision to compute; default the model's (for a plain
        callable: the slice's device and input dtype).
    method : ``"jvp"``: ``torch.func.jvp`` vmapped over the two tangents (any model);
        ``"auto"`` (default): the same recursion written out by hand
        (:func:`chain_directional_derivatives`) when the feature map is a chain of Linear layers
        and elementwise activations in an ``nn.Sequential`` (an MLP), else ``"jvp"``.
    max_output_bytes : memory budget of the outputs, ``OUTPUT_BYTES_PER_POINT`` (56) bytes per
        grid point, checked before anything is allocated; default a quarter of the available
        memory. Over budget: ``MemoryError`` naming the largest resolution that fits.

    Returns
    -------
    MetricField with ``metric`` (res, res, 2, 2), ``volume`` (res, res), float64 on CPU,
    indexed ``[i, j] = (v[i], u[j])``.
    """
    res = _check_resolution(resolution)
    check_output_bytes(res, max_output_bytes)
    total = res * res
    metric = torch.empty(total, 2, 2, dtype=torch.float64)
    volume = torch.empty(total, dtype=torch.float64)
    update, close = _progress_callback(progress, total, "metric field")
    p = 0
    try:
        for start, stop, m, vol, p_chunk in iter_metric_chunks(
            phi, slice, res, chunk_size, layer=layer, device=device, dtype=dtype, method=method
        ):
            p = p_chunk
            metric[start:stop] = m
            volume[start:stop] = vol
            update(stop)
    finally:
        close()
    u, v = slice.grid(res)
    return MetricField(
        metric=metric.reshape(res, res, 2, 2),
        volume=volume.reshape(res, res),
        u=u,
        v=v,
        slice=slice,
        p=p,
    )


@in_eval_mode
def pullback_metric_at(
    phi: FeatureFn,
    x: torch.Tensor,
    basis: torch.Tensor | None = None,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
) -> torch.Tensor:
    """The metric ``B g(x) B^T = (J B^T)^T (J B^T) / p`` at arbitrary inputs.

    x : (N, *input_shape); basis : (k, *input_shape) directions (default: the standard basis,
    giving the full d x d metric ``g = J^T J / p``). Returns (N, k, k) in x's dtype on x's
    device, computed by forward mode (k tangents per pass) on the model's device (x's device
    for a plain callable).
    """
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, *input_shape), got {tuple(x.shape)}")
    home = x.device
    fn = as_feature_map(phi, layer)
    module = fn.model if isinstance(fn, FeatureMap) else None
    dev = module_device(module) if module is not None else x.device
    x = to_device(x, dev)
    shape = tuple(x.shape[1:])
    numel = int(np.prod(shape))
    if basis is None:
        basis = torch.eye(numel, dtype=x.dtype, device=x.device).reshape(numel, *shape)
    basis = torch.as_tensor(basis).to(device=x.device, dtype=x.dtype)
    if tuple(basis.shape[1:]) != shape:
        raise ValueError(f"basis must have shape (k, *{shape}), got {tuple(basis.shape)}")
    plan = ChunkPlan(x.shape[0], numel * basis.shape[0], dev, chunk_size)
    out = []
    with torch.no_grad():
        for start, stop in plan:
            try:
                jt = directional_derivatives(fn, x[start:stop], basis)  # (k, n, p)
                out.append(torch.einsum("knp,lnp->nkl", jt, jt) / jt.shape[-1])
            except torch.OutOfMemoryError:
                plan.out_of_memory()
    return torch.cat(out).to(home)


# --------------------------------------------------------------------------------------------
# Ellipses
# --------------------------------------------------------------------------------------------


def ellipse_sites(field: MetricField, density: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of a ``density`` x ``density`` subgrid at the centres of equal cells.

    Returns ``(rows, cols)``: int arrays (density,) into the field's ``v`` and ``u`` axes.
    """
    if isinstance(density, bool) or not isinstance(density, (int, np.integer)) or density < 1:
        raise ValueError(f"density must be a positive integer, got {density!r}")
    res = field.resolution
    if density > res:
        raise ValueError(f"density={density} exceeds the field resolution {res}")
    idx = np.round((np.arange(density) + 0.5) * res / density - 0.5).astype(int)
    idx = np.clip(idx, 0, res - 1)
    return idx, idx.copy()


def metric_ellipses(
    field: MetricField,
    density: int = 12,
    mode: Literal["stretch", "unit_ball"] = "stretch",
    weights: np.ndarray | torch.Tensor | None = None,
    points_per_ellipse: int = 32,
    fill: float = 0.9,
    return_centers: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ellipses showing the metric at a ``density`` x ``density`` subgrid, as NaN-separated paths.

    Each ellipse has axes along the eigenvectors of ``G`` and half-lengths proportional to
    ``sqrt(eigenvalue)`` (``mode="stretch"``: how the feature map stretches a small disk; these
    are the singular values of ``J E / sqrt(p)``) or ``1 / sqrt(eigenvalue)``
    (``mode="unit_ball"``: the metric's unit ball), times the optional per-ellipse ``weights``
    (density, density) or (density**2,) (e.g. emphasis near the decision boundary; 0 hides
    one). One global scale makes the largest half-length ``fill / 2`` of a cell. Drawn in
    (u, v) coordinates of the field's slice (equal axis scales needed to see true shapes).

    Returns ``(xs, ys)``: 1-D float64 arrays, each ellipse ``points_per_ellipse + 1`` points
    (closed) followed by one NaN; ordered row-major over the subgrid. With
    ``return_centers=True`` also the centres, (density**2, 2).
    """
    if mode not in ("stretch", "unit_ball"):
        raise ValueError(f"mode must be 'stretch' or 'unit_ball', got {mode!r}")
    if points_per_ellipse < 3:
        raise ValueError(f"points_per_ellipse must be >= 3, got {points_per_ellipse}")
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
            raise ValueError(f"weights must have density**2 = {n} entries, got shape {w.shape}")
        w = w.reshape(n)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
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
    if return_centers:
        return xs, ys, centers
    return xs, ys


# --------------------------------------------------------------------------------------------
# Decision field
# --------------------------------------------------------------------------------------------


def _two_class(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
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
        raise TypeError(
            "logits_fn_or_model must be an nn.Module or callable, "
            f"got {type(logits_fn_or_model).__name__}"
        )
    numel = int(np.prod(slice.input_shape))
    uv = slice.grid_uv(res)
    total = uv.shape[0]
    plan = ChunkPlan(total, numel, dev, chunk_size)
    update, close = _progress_callback(progress, total, "decision field")
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


# --------------------------------------------------------------------------------------------
# Boundary magnification
# --------------------------------------------------------------------------------------------


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
        raise ValueError(
            f"log10_volume and margin must have the same shape, got {lv.shape} and {mg.shape}"
        )
    ok = np.isfinite(lv) & np.isfinite(mg)
    lv, mg = lv[ok], mg[ok]
    if lv.size == 0:
        return float("nan")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        near = mg < threshold
    else:
        if not (0 < band < 1):
            raise ValueError(f"band must be a fraction in (0, 1), got {band!r}")
        k = max(1, int(round(band * mg.size)))
        order = np.argsort(mg, kind="stable")
        near = np.zeros(mg.size, dtype=bool)
        near[order[:k]] = True
    if not near.any() or near.all():
        return float("nan")
    return float(lv[near].mean() - lv[~near].mean())


# --------------------------------------------------------------------------------------------
# Effective volume in the full input space
# --------------------------------------------------------------------------------------------


@in_eval_mode
def effective_volume(
    phi: FeatureFn,
    points: torch.Tensor,
    k: int = 8,
    oversample: int = 8,
    iters: int = 3,
    chunk_size: int | None = None,
    seed: int = 0,
    *,
    layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular values of ``J(x) / sqrt(p)`` and the effective log10 volume element.

    For each input x (of ``points``, (N, *input_shape)), randomized block Krylov iteration
    (Musco & Musco 2015) with ``l = k + oversample`` directions: ``Y = J Omega`` by batched
    JVPs, then ``iters`` times ``Y <- J (J^T Q)`` (VJPs then JVPs), each block orthonormalised
    against all earlier ones; the singular values of ``K^T J`` (K = all blocks, l (iters + 1)
    orthonormal columns; ``K^T J`` comes from the VJPs already made) approximate the top ones
    of J. The full Jacobian (p x d) is never formed. Cost: ``l (iters + 1)`` JVP and as many
    VJP streams per input, against p VJPs for the full Jacobian.

    Returns ``(sigma (N, k), log10_volume (N,))`` with ``log10_volume = sum_i log10 sigma_i``
    (the paper's effective volume element for d >> p). k must not exceed min(d, p).

    Accuracy: on a ResNet18 at initialisation (flat spectrum, the hard case: top-8 values
    0.063 ... 0.047) the defaults give the top 8 within 0.2 % (``iters=2``: 1.1 %), at a
    quarter of the full Jacobian's passes. Trained networks' spectra decay faster.

    Device: ``points`` move to the model's device (a plain callable: they stay where they
    are); results are float64 on CPU. The start directions are drawn on the CPU from
    ``(seed, point index)``, so the results do not depend on the device or the chunking.
    """
    x = torch.as_tensor(points)
    if x.ndim < 2:
        raise ValueError(f"points must have shape (N, *input_shape), got {tuple(x.shape)}")
    if k < 1 or oversample < 0 or iters < 0:
        raise ValueError(
            f"need k >= 1, oversample >= 0, iters >= 0; got {k}, {oversample}, {iters}"
        )
    fn = as_feature_map(phi, layer)
    module = fn.model if isinstance(fn, FeatureMap) else None
    if module is not None:
        x = to_device(x, module_device(module))
    shape = tuple(x.shape[1:])
    d = int(np.prod(shape))
    plan = ChunkPlan(x.shape[0], d * (k + oversample), x.device, chunk_size)
    sig_out, vol_out = [], []
    with torch.no_grad():
        p = fn(x[:1]).reshape(1, -1).shape[1]
    if k > min(d, p):
        raise ValueError(f"k={k} exceeds min(input dim {d}, feature dim {p})")
    ell = min(k + oversample, d, p)
    depth = max(0, min(iters, min(d, p) // ell - 1))  # the Krylov space must fit in R^min(d,p)
    with torch.no_grad():
        for start, stop in plan:
            xc = x[start:stop]
            n = xc.shape[0]
            # drawn on CPU point by point: the same directions on every device and chunking
            omega = torch.stack(
                [_point_directions(seed, start + i, ell, d) for i in range(n)], 1
            ).to(xc)

            def jmul(t: torch.Tensor, xc=xc, n=n) -> torch.Tensor:  # (l, n, d) -> (l, n, p)
                def push(ti: torch.Tensor) -> torch.Tensor:
                    return jvp(fn, (xc,), (ti.reshape(n, *shape),))[1].reshape(n, -1)

                return vmap(push)(t)

            _, pull = vjp(lambda z, n=n: fn(z).reshape(n, -1), xc)

            def jtmul(y: torch.Tensor, pull=pull, n=n) -> torch.Tensor:  # (l, n, p) -> (l, n, d)
                return vmap(lambda yi: pull(yi)[0].reshape(n, -1))(y)

            blocks: list[torch.Tensor] = []  # orthonormal Krylov blocks (l, n, p)
            pulled: list[torch.Tensor] = []  # J^T of each block (l, n, d)
            y = jmul(omega)
            for i in range(depth + 1):
                for _ in range(2):  # block Gram-Schmidt against the earlier blocks, twice
                    for qb in blocks:
                        coef = torch.einsum("anp,bnp->nab", qb, y)
                        y = y - torch.einsum("nab,anp->bnp", coef, qb)
                q = torch.linalg.qr(y.permute(1, 2, 0)).Q.permute(2, 0, 1)  # (l, n, p)
                blocks.append(q)
                pulled.append(jtmul(q))
                if i < depth:
                    y = jmul(pulled[-1])  # (J J^T) q
            b = torch.cat(pulled).permute(1, 0, 2)  # (n, l (depth + 1), d) = K^T J
            s = torch.linalg.svdvals(b.double())[:, :k] / math.sqrt(p)
            sig_out.append(s.cpu())
            vol_out.append(torch.log10(s).sum(1).cpu())
    return torch.cat(sig_out), torch.cat(vol_out)


def _point_directions(seed: int, index: int, ell: int, d: int) -> torch.Tensor:
    """(ell, d) float64 Gaussian start directions for point ``index``, from ``(seed, index)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + index)
    return torch.randn(ell, d, generator=gen, dtype=torch.float64)
