"""Spectrum of a representation: eigenvalues, quality and utilisation curves, effective rank.

Pure functions of tensors; the min(n, p)^2 eigenproblem runs on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from richviz.metrics.centring import _Centred, _host, _labels, _prepare

__all__ = ["FeatureSpectrum", "feature_spectrum"]

_EIG_RTOL = 1e-10

_EIG_RTOL_FLOAT32 = 1e-5
"""Eigenvalues rho_k below ``_EIG_RTOL * rho_1`` (float64 work; ``_EIG_RTOL_FLOAT32`` for
float32) have numerically undefined eigenfunctions and are left out of the quality and
utilisation curves."""


def _effective_rank(rho: torch.Tensor) -> float:
    """exp(entropy of rho / sum rho) for nonnegative eigenvalues rho (nan if all zero)."""
    rho = rho.double()
    total = float(rho.sum())
    if not total > 0.0:
        return math.nan
    prob = rho / total
    prob = prob[prob > 0]
    return math.exp(float(-(prob * prob.log()).sum()))


@dataclass(frozen=True)
class FeatureSpectrum:
    """Eigendecomposition of the feature covariance; k = min(n, p) entries, descending.

    Attributes (CPU float64 tensors unless noted)
    ----------
    eigenvalues : (k,) rho_k of the covariance Phic^T Phic / n (clamped at 0).
    relative : (k,) rho_k / rho_1 (``nan`` if all rho are 0, i.e. constant features).
    quality : (k,) Pi*(k): fraction of the centred targets' energy captured by the first k
        eigenfunctions e_j = Phic v_j / sqrt(n rho_j); nondecreasing, in [0, 1].
    utilisation : (k,) Pi_hat(k): the same with the centred outputs Fc.
    effective_rank : float, exp(entropy of rho / sum rho), in [1, k] (``nan`` if all rho = 0).
    """

    eigenvalues: torch.Tensor
    relative: torch.Tensor
    quality: torch.Tensor
    utilisation: torch.Tensor
    effective_rank: float


def _spectrum(phi: _Centred, targets: _Centred | None, outputs: _Centred | None) -> FeatureSpectrum:
    """Spectrum of prepared features with the curves of prepared targets / outputs."""
    n, p = phi.c.shape
    k = min(n, p)
    nan = torch.full((k,), math.nan, dtype=torch.float64)
    if phi.constant:
        zeros = torch.zeros(k, dtype=torch.float64)
        curves = [nan if t is None or t.constant else zeros for t in (targets, outputs)]
        return FeatureSpectrum(zeros, nan, curves[0], curves[1], math.nan)
    # ascending; eigenvalues of unit^T unit / n; the min(n, p)^2 problem runs on the CPU
    lam, vec = torch.linalg.eigh(_host(phi.gram) / n)
    lam, vec = lam.flip(0).double().clamp_min(0.0), vec.flip(1).double()
    rtol = _EIG_RTOL if phi.unit.dtype == torch.float64 else _EIG_RTOL_FLOAT32
    good = (lam > rtol * lam[0]).unsqueeze(1)
    sing = (n * lam).sqrt().clamp_min(1e-300).unsqueeze(1)  # singular values of unit

    def curve(t: _Centred | None) -> torch.Tensor:
        if t is None or t.constant:
            return nan
        tc = t.c / t.scale
        if n >= p:  # <e_j, t> = v_j^T unit^T t / s_j; the (p, m) product on the device
            coef = vec.T @ _host((phi.c.T @ tc) / phi.scale) / sing
        else:  # eigenvectors of unit unit^T are the eigenfunctions themselves
            coef = vec.T @ _host(tc)
        coef = torch.where(good, coef, 0.0)
        total = float(tc.square().sum())
        return (coef.square().sum(dim=1).cumsum(0) / total).clamp(0.0, 1.0)

    rho = (lam * phi.scale**2).cpu()
    return FeatureSpectrum(
        eigenvalues=rho,
        relative=rho / rho[0],
        quality=curve(targets),
        utilisation=curve(outputs),
        effective_rank=_effective_rank(lam),
    )


def feature_spectrum(
    features: torch.Tensor, targets: torch.Tensor, outputs: torch.Tensor
) -> FeatureSpectrum:
    """Eigenvalues, quality Pi*(k), utilisation Pi_hat(k) and effective rank of the features.

    ``features`` Phi (n, p); ``targets`` (n,) integer labels (one-hot encoded with
    C = ``outputs.shape[1]`` columns), (n,) real values, or (n, m) real targets; ``outputs``
    (n, C). rho_k are the eigenvalues of Phic^T Phic / n (they sum to the trace of the
    covariance), e_k the unit eigenfunctions on the probe set, and

        Pi*(k) = sum_{j<=k} sum_c <e_j, yc_c>^2 / sum_c |yc_c|^2

    for the centred targets (quality: how much of the task the top-k features span), Pi_hat(k)
    the same for the centred outputs (utilisation). Cost: a min(n, p)^2 Gram and its ``eigh``,
    in the features' precision (as :func:`d_lr`); projections and sums in float64.
    Eigenfunctions with rho_j below 1e-10 rho_1 (float64 features; 1e-5 for float32, whose
    Gram carries ~1e-6 relative rounding) are numerically undefined and left out of the curves.

    Degenerate: constant features give zero eigenvalues, ``nan`` relative values and
    effective rank, and all-zero curves (no eigenfunction captures anything); constant
    targets or outputs (nothing to capture) give a ``nan`` curve for that side.
    Raises ``ValueError`` for wrong shapes / lengths, :class:`NonFiniteError` for NaN/inf.
    """
    phi = _prepare("features", features)
    n = phi.c.shape[0]
    f = _prepare("outputs", outputs, rows=n)
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if targets.ndim == 1 and not (targets.dtype.is_floating_point or targets.is_complex()):
        y = _labels(targets, n, f.c.shape[1], phi.c.device)
        targets = torch.nn.functional.one_hot(y, f.c.shape[1]).to(torch.float64)
    elif targets.ndim == 1:
        targets = targets.unsqueeze(1)
    t = _prepare("targets", targets.to(device=phi.c.device, dtype=torch.float64), rows=n)
    return _spectrum(phi, t, f)
