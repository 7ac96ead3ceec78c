"""Kernel alignment of a representation: D_LR with its two factors, linear CKA, S_init.

Notation: ``features`` Phi (n, p), ``outputs`` F (n, C) (e.g. the last Linear layer's own
output); columns are centred in float64 (:mod:`richviz.metrics.centring`). Pure functions of
tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from richviz.metrics.centring import (
    _CONST_RTOL,
    RANK_RTOL,
    _Centred,
    _full_precision,
    _host,
    _prepare,
)

__all__ = ["Richness", "d_lr", "linear_cka", "richness", "similarity_to_init"]


def _cross_sq(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a^T b|_F^2 = <a a^T, b b^T>_F for (n, p), (n, q), through the smaller intermediate."""
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    with _full_precision():
        if p * q <= n * n:
            return float((a.T @ b).double().square().sum())
        return float(((a @ a.T).double() * (b @ b.T).double()).sum())


@dataclass(frozen=True)
class Richness:
    """D_LR and its two factors (see :func:`richness`); ``1 - d_lr = confinement * isotropy``.

    Attributes
    ----------
    d_lr : float in [0, 1], exactly :func:`d_lr`.
    confinement : float in [0, 1], |P K P|_F / |K|_F (share of the feature kernel inside the
        span of the outputs).
    isotropy : float in [0, 1], tr A / (sqrt(r) |A|_F) (evenness over the r output directions).
    rank : int, r = rank of the centred outputs (0 when undefined).
    """

    d_lr: float
    confinement: float
    isotropy: float
    rank: int


_NAN_RICHNESS = Richness(math.nan, math.nan, math.nan, 0)


def _richness_core(phi: _Centred, f: _Centred) -> Richness:
    """D_LR, confinement and isotropy from prepared features (n, p) and outputs (n, C)."""
    if phi.constant or f.constant:
        return _NAN_RICHNESS
    gram_norm = phi.gram_norm
    if not (0.0 < gram_norm < math.inf):
        return _NAN_RICHNESS
    u, s, _ = torch.linalg.svd(_host(f.c / f.scale), full_matrices=False)  # (n, C): small
    r = int((s > RANK_RTOL * s[0]).sum())
    if r == 0:
        return _NAN_RICHNESS
    u = u.to(phi.c.device)
    b = (u[:, :r].T @ phi.c) / phi.scale  # Q^T Phic (r, p), float64, in units of the Gram
    gram_b = b @ b.T if b.shape[0] <= b.shape[1] else b.T @ b  # same Frobenius norm as A
    aligned = float(b.square().sum())  # tr A = |Q^T Phic|_F^2
    a_norm = float(torch.linalg.matrix_norm(gram_b))  # |A|_F = |Phic^T Q Q^T Phic|_F
    cka = aligned / (gram_norm * math.sqrt(r))
    confinement = min(max(a_norm / gram_norm, 0.0), 1.0)
    isotropy = math.nan  # A = 0 up to rounding: no feature energy inside the span to spread
    if a_norm > _CONST_RTOL * gram_norm:
        isotropy = min(max(aligned / (math.sqrt(r) * a_norm), 0.0), 1.0)
    return Richness(1.0 - min(max(cka, 0.0), 1.0), confinement, isotropy, r)


def _d_lr_core(phi: _Centred, f: _Centred) -> float:
    """D_LR from prepared features (n, p) and outputs (n, C); nan if either is constant."""
    return _richness_core(phi, f).d_lr


def _cka_core(a: _Centred, b: _Centred) -> float:
    """Linear CKA of prepared matrices; nan if either is constant."""
    if a.constant or b.constant:
        return math.nan
    denom = a.gram_norm * b.gram_norm
    if not (0.0 < denom < math.inf):
        return math.nan
    cka = _cross_sq(a.unit, b.unit) / denom
    return min(max(cka, 0.0), 1.0)


def d_lr(features: torch.Tensor, outputs: torch.Tensor) -> float:
    """Low-rank richness measure D_LR in [0, 1] (0 = maximally rich, 1 = maximally lazy).

    ``features`` Phi (n, p), ``outputs`` F (n, C), e.g. the last Linear layer's output.
    With Phic, Fc the column-centred matrices and Q an orthonormal basis (n, r) of the
    column space of Fc (singular values below ``RANK_RTOL`` = 1e-6 of the largest dropped)::

        CKA = |Q^T Phic|_F^2 / (|Phic^T Phic|_F sqrt(r)),   D_LR = 1 - CKA

    i.e. one minus the centred kernel alignment between Phi Phi^T and the projector onto the
    learned functions. Cost O(n p min(n, p) + n p C); no n x n matrix when n >= p.
    Precision: centring, the SVD of Fc and all reductions in float64; the Gram Phic^T Phic in
    the features' precision (float32 features: ~1e-6 relative error, ~4x faster on CPU; pass
    float64 features for float64 throughout). Invariant to rotations, scaling and translation
    of the features and to any invertible linear mixing of the outputs.

    Returns ``nan`` when either side has no variation over the probe set: outputs of rank 0
    (e.g. constant outputs) or constant features; D_LR is undefined there.
    Raises ``ValueError`` for wrong shapes / lengths or fewer than 2 samples, and
    :class:`NonFiniteError` for NaN/inf.

    Examples
    --------
    Features unrelated to the outputs (a random kernel, as at a lazy initialisation) are
    far from them; features that are the outputs themselves are as rich as can be:

    >>> import torch
    >>> from richviz.metrics import d_lr
    >>> g = torch.Generator().manual_seed(0)
    >>> outputs = torch.randn(200, 2, generator=g)  # F (n, C)
    >>> random_features = torch.randn(200, 256, generator=g)  # Phi (n, p)
    >>> round(d_lr(random_features, outputs), 2)
    0.93
    >>> round(d_lr(outputs, outputs), 2)
    0.02
    """
    phi = _prepare("features", features)
    return _d_lr_core(phi, _prepare("outputs", outputs, rows=phi.c.shape[0]))


def richness(features: torch.Tensor, outputs: torch.Tensor) -> Richness:
    """D_LR with its two factors, confinement and isotropy: ``1 - D_LR = confinement * isotropy``.

    ``features`` Phi (n, p), ``outputs`` F (n, C), as in :func:`d_lr` (same centring, rank
    rule and precision; one SVD of Fc and one Gram of Phic, nothing extra). With Q (n, r) an
    orthonormal basis of the columns of Fc, P = Q Q^T, the feature kernel K = Phic Phic^T and
    the r x r matrix A = (Q^T Phic)(Q^T Phic)^T = Q^T K Q:

    - |Q^T Phic|_F^2 = tr A, and |Phic^T Phic|_F = |K|_F, so CKA = tr A / (|K|_F sqrt(r));
    - |P K P|_F = |Q A Q^T|_F = |A|_F, hence the exact factorisation

          1 - D_LR = CKA = (|A|_F / |K|_F) * (tr A / (sqrt(r) |A|_F))
                         =   confinement   *      isotropy.

    **confinement** = |P K P|_F / |K|_F in [0, 1] (P K P <= K in the PSD order, so its
    eigenvalues, and its Frobenius norm, are at most K's): the share of the feature kernel
    that lies inside the span of the outputs; its square is the share of |K|_F^2. It is 1 when
    every feature direction is a direction the outputs use, 0 when the features are orthogonal
    to the outputs. It stays low when the features carry much variance the outputs ignore,
    which is what a lazy run looks like: its kernel is still the random one at initialisation.

    **isotropy** = tr A / (sqrt(r) |A|_F) = sqrt(PR(A) / r) in [0, 1], with PR(A) =
    (tr A)^2 / |A|_F^2 the participation ratio of A's eigenvalues a_1..a_r (Cauchy-Schwarz).
    It is 1 when the kernel inside the output span is isotropic (A a multiple of I_r), and
    sqrt(k / r) when it spreads evenly over only k of the r directions. It is low when the
    features are more compressed than the outputs (effective rank below r, e.g. below C - 1
    class directions) even if the features are fully confined.

    Both factors are invariant to rotations, isotropic scaling and translation of the
    features, and to invertible linear mixing of the outputs (they depend on span(Fc) only).
    D_LR is low (rich) only when both are near 1; a rising D_LR tells which one fell.

    Returns a :class:`Richness` (``d_lr``, ``confinement``, ``isotropy``, ``rank`` r). All
    ``nan`` (rank 0) when :func:`d_lr` is ``nan``; ``isotropy`` is ``nan`` when A = 0 (the
    features are orthogonal to the outputs, confinement below 1e-12: D_LR 1; nothing to
    spread). The
    identity holds to rounding (~1e-15 for float64 features) whenever isotropy is defined.
    Raises as :func:`d_lr`.
    """
    phi = _prepare("features", features)
    return _richness_core(phi, _prepare("outputs", outputs, rows=phi.c.shape[0]))


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same n inputs, in [0, 1].

    ``a`` (n, p), ``b`` (n, q). CKA = |a_c^T b_c|_F^2 / (|a_c^T a_c|_F |b_c^T b_c|_F), which
    equals the kernel form <K_a, K_b>_F / (|K_a|_F |K_b|_F) of the centred Gram matrices
    without forming them: cost O(n (p + q) min(n, max(p, q))). Same precision rule as
    :func:`d_lr`. ``linear_cka(x, x)`` is 1; invariant to rotations, isotropic scaling and
    translation of either argument.

    Returns ``nan`` when either representation is constant over the inputs (no variation).
    Raises ``ValueError`` for wrong shapes or lengths, :class:`NonFiniteError` for NaN/inf.
    """
    pa = _prepare("a", a)
    return _cka_core(pa, _prepare("b", b, rows=pa.c.shape[0]))


def similarity_to_init(features: torch.Tensor, init_features: torch.Tensor) -> float:
    """S_init: linear CKA between features (n, p) now and at initialisation (n, p0), in [0, 1].

    Both must be computed on the same probe inputs in the same order. 1 = the kernel has not
    moved (lazy); small = the representation was rebuilt. Degenerate cases as
    :func:`linear_cka` (``nan`` for constant features).
    """
    phi = _prepare("features", features)
    return _cka_core(phi, _prepare("init_features", init_features, rows=phi.c.shape[0]))
