"""Validated, column-centred matrices: the shared first step of every representation metric.

``_prepare(name, x)`` checks a real 2-D matrix (n, d) (one-line errors naming the argument,
:class:`~richviz.errors.NonFiniteError` for NaN/inf) and centres its columns in float64 once;
the resulting :class:`_Centred` caches its scale, whether it is constant, a unit-scaled copy in
the work dtype and its Gram on the smaller side, so the metrics that share an input share this
work. Small dense factorisations run on the CPU (:func:`_host`); float32 matmuls run with TF32
off (:class:`_full_precision`).
"""

from __future__ import annotations

import torch

from richviz import validation
from richviz.errors import ArgumentError

__all__ = ["RANK_RTOL"]

RANK_RTOL = 1e-6
"""Singular values below ``RANK_RTOL`` times the largest are dropped (rank of the outputs for
D_LR, pseudo-inverse of the between-class covariance for NC1)."""

_CONST_RTOL = 1e-12
"""A matrix whose centred entries are below ``_CONST_RTOL`` times its entries is constant
(the variation is float64 rounding noise from the centring)."""

_DIVERGED = " (diverged checkpoint?)"


def _tensor2d(
    name: str, x: torch.Tensor, rows: int | None = None, min_rows: int = 2
) -> torch.Tensor:
    """Validate the shape of a real 2-D matrix; return it detached (dtype and device kept)."""
    x = validation.as_tensor(x, name)
    validation.check_ndim(x, name, 2, "(n, dim)")
    if rows is not None and x.shape[0] != rows:
        raise ArgumentError(
            f"{name} has {x.shape[0]} rows but features has {rows} (one per sample)"
        )
    if x.shape[0] < min_rows:
        raise ArgumentError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ArgumentError(f"{name} needs at least 1 column, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ArgumentError(f"{name} must be real, got {x.dtype}")
    return x.detach()


def _matrix(name: str, x: torch.Tensor, rows: int | None = None, min_rows: int = 2) -> torch.Tensor:
    """Validate a finite real 2-D matrix and return it detached as float64 (same device)."""
    x = _tensor2d(name, x, rows, min_rows).to(torch.float64)
    validation.check_finite(x, name, _DIVERGED)
    return x


def _labels(labels: torch.Tensor, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Validate class indices (n,) in 0..num_classes-1 and return them as int64."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ArgumentError(
            f"labels must be 1-D (n,) class indices, got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.is_complex() or labels.dtype == torch.bool:
        raise ArgumentError(
            f"labels must be an integer tensor of class indices, got {labels.dtype}"
        )
    if labels.shape[0] != n:
        raise ArgumentError(f"labels has {labels.shape[0]} entries but features has {n} rows")
    labels = labels.to(device=device, dtype=torch.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ArgumentError(
            f"labels must lie in 0..{num_classes - 1} (C = {num_classes} classes), "
            f"got values in {lo}..{hi}"
        )
    return labels


class _Centred:
    """A validated matrix (n, d) prepared once for every metric that uses it.

    ``c``: float64 column-centred copy; ``mean``: float64 column means (1, d). Computed on
    first use and cached: ``scale`` = max |c|; ``constant`` (no variation over the rows);
    ``unit`` = c / scale in the work dtype (float64 for float64 input, else float32), the
    operand of the O(n d^2) products; ``gram`` of ``unit`` on the smaller side.
    """

    def __init__(self, c: torch.Tensor, mean: torch.Tensor, work: torch.dtype):
        self.c, self.mean, self.work = c, mean, work
        self._scale: float | None = None
        self._unit: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None

    @property
    def scale(self) -> float:
        if self._scale is None:
            lo, hi = torch.aminmax(self.c)  # one pass, no |c| temporary
            self._scale = max(-float(lo), float(hi))
        return self._scale

    @property
    def constant(self) -> bool:
        return self.scale <= _CONST_RTOL * (float(self.mean.abs().max()) + self.scale)

    @property
    def unit(self) -> torch.Tensor:
        if self._unit is None:
            inv = 1.0 / self.scale if not self.constant else 0.0
            if self.work == torch.float64:
                self._unit = self.c * inv
            else:
                self._unit = self.c.to(self.work).mul_(inv)
        return self._unit

    @property
    def gram(self) -> torch.Tensor:
        """Gram of ``unit`` on the smaller side, (d, d) if n >= d else (n, n); cached."""
        if self._gram is None:
            u = self.unit
            with _full_precision():
                self._gram = u.T @ u if u.shape[0] >= u.shape[1] else u @ u.T
        return self._gram

    @property
    def gram_norm(self) -> float:
        """|unit^T unit|_F (= |c^T c|_F / scale^2), in float64."""
        return float(torch.linalg.matrix_norm(self.gram.double()))


def _prepare(name: str, x: torch.Tensor, rows: int | None = None) -> _Centred:
    """Validate a real 2-D matrix (NaN/inf -> NonFiniteError) and centre it in float64."""
    x = _tensor2d(name, x, rows)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = x.to(torch.float64, copy=True)  # our own copy: centred in place below
    mean = c.mean(dim=0, keepdim=True)
    if not bool(torch.isfinite(mean).all()):  # any NaN/inf entry reaches the column mean
        validation.check_finite(c, name, _DIVERGED)
        raise ArgumentError(f"{name} are too large to sum in float64 (max |entry| ~ 1e308)")
    return _Centred(c.sub_(mean), mean, work)


class _full_precision:
    """Context: float32 matmuls in full precision (no TF32 / bf16), restoring the setting."""

    def __enter__(self) -> None:
        self.old = torch.get_float32_matmul_precision()
        if self.old != "highest":
            torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc: object) -> None:
        if self.old != "highest":
            torch.set_float32_matmul_precision(self.old)


def _host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU: small dense factorisations (``eigh``/``svd`` of a p x p Gram or an
    n x C matrix) are faster there than on a GPU, where they are latency-bound, and give the
    same numbers on every device."""
    return t.cpu()
