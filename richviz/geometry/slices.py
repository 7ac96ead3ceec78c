"""Slices of input space: 2-D affine planes ``x(u, v) = origin + u e1 + v e2`` and their grids.

Grid convention: every field array is indexed ``[i, j] = (v[i], u[j])``: rows follow ``v``,
columns follow ``u`` (image convention), shape ``(res, res)``. Flattened grid points are in
row-major order, point ``k = i * res + j`` sits at ``(u[j], v[i])``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from richviz import validation
from richviz.errors import ArgumentError

__all__ = [
    "Slice",
]


def _as_float_tensor(x: object, name: str) -> torch.Tensor:
    return validation.as_float_tensor(x, name)


def _check_resolution(resolution: int) -> int:
    return validation.resolution(resolution)


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
            raise ArgumentError(
                f"basis must have shape (2, *origin.shape) = {(2, *self.origin.shape)}, "
                f"got {tuple(self.basis.shape)}"
            )
        for name, (lo, hi) in (("u_range", self.u_range), ("v_range", self.v_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ArgumentError(f"{name} must be finite with min < max, got {(lo, hi)}")
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
            raise ArgumentError(
                f"Slice.square needs a 2-D input: center must have shape (2,), got "
                f"{tuple(c.shape)}; use Slice.plane(x0, x1, x2) for other input shapes"
            )
        try:
            h = float(half_width)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"half_width must be a number, got {half_width!r}") from exc
        if not (math.isfinite(h) and h > 0):
            raise ArgumentError(f"half_width must be finite and > 0, got {half_width!r}")
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
            raise ArgumentError(f"points must have shape (N, 2), got {tuple(x.shape)}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ArgumentError(f"margin must be finite and >= 0, got {margin!r}")
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
            raise ArgumentError(f"margin must be finite and >= 0, got {margin!r}")
        flat = p.reshape(3, -1)
        a, b = flat[1] - flat[0], flat[2] - flat[0]
        scale = max(float(a.norm()), float(b.norm()), float((flat[2] - flat[1]).norm()))
        if scale == 0:
            raise ArgumentError(
                "x0, x1, x2 coincide; a plane needs three distinct, non-collinear points"
            )
        na = float(a.norm())
        if na <= 1e-12 * scale:
            raise ArgumentError("x0 and x1 coincide; a plane needs three non-collinear points")
        e1 = a / na
        b_perp = b - (b @ e1) * e1
        b_perp = b_perp - (b_perp @ e1) * e1  # second Gram-Schmidt pass for orthogonality
        nb = float(b_perp.norm())
        if nb <= 1e-9 * scale:
            raise ArgumentError(
                "x0, x1, x2 are collinear (or two coincide); the plane is undefined"
            )
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
            raise ArgumentError(
                "x0, x1, x2 coincide; a plane needs three distinct, non-collinear points"
            )
        if n1 <= 1e-12 * scale:
            raise ArgumentError("x1 and x2 coincide; a plane needs three non-collinear points")
        if n2 <= 1e-12 * scale:
            raise ArgumentError(
                "x0 is the midpoint of x1 and x2 (collinear); the plane is undefined"
            )
        cos = float(e1 @ e2) / (n1 * n2)
        if 1 - abs(cos) <= 1e-12:
            raise ArgumentError("x0, x1, x2 are collinear; the plane is undefined")
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
            raise ArgumentError(f"uv must have shape (N, 2), got {tuple(uv.shape)}")
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
            raise ArgumentError(f"x must have shape (N, *{self.input_shape}), got {tuple(x.shape)}")
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
        raise ArgumentError(
            f"x0, x1, x2 must have the same shape, got {shapes[0]}, {shapes[1]}, {shapes[2]}"
        )
    device = pts[0].device
    return torch.stack([t.to(device=device, dtype=torch.float64) for t in pts])
