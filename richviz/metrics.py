"""Richness and collapse metrics of a representation: D_LR, NC1-NC4, CKA, norms, spectra.

Every function is a pure function of tensors. Notation: ``features`` Phi is
(n, p) (n probe inputs, p features), ``outputs`` F is (n, C) (the last Linear layer's own
output), ``labels`` is (n,) of class indices. The O(n p^2) work runs on the tensors' device;
the small dense factorisations (``eigh`` of the min(n, p)^2 Gram, ``svd`` of the (n, C)
outputs and of the (C, p) class means) run on the CPU, where they are faster than on a GPU
(reported from an H200: with ``eigh`` on the GPU, ``feature_spectrum`` cost 45x a forward pass).

Precision and cost: columns are centred in float64, and SVDs, class statistics, projections
and all reductions are float64. Only the O(n p^2) Gram products (and the p x p eigensolvers)
run in the features' own precision: float32 features give ~1e-6 relative rounding there
(measured |D_LR(float32) - D_LR(float64)| ~ 2e-8 at n = 2000, p = 512) for a ~4x faster
Gram on CPU; float64 features are float64 throughout. float32 matmuls run with TF32 off.
Nothing forms an n x n matrix when n >= p: Gram matrices are taken on the smaller side,
min(n, p) x min(n, p) (their nonzero spectra agree).

Degenerate inputs (see each docstring) either raise a one-line ``ValueError`` naming the
argument, or return ``nan`` with a documented meaning, so a metrics panel never crashes on
a checkpoint. Non-finite features raise :class:`NonFiniteError` (a ``ValueError``), which
:func:`checkpoint_metrics` turns into ``nan`` metrics for that checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from richviz import validation
from richviz.devices import module_device
from richviz.errors import NonFiniteError
from richviz.features import PENULTIMATE, features_and_outputs, last_linear_name

__all__ = [
    "NonFiniteError",
    "FeatureSpectrum",
    "Richness",
    "richness",
    "OUTPUTS",
    "RANK_RTOL",
    "d_lr",
    "neural_collapse",
    "linear_cka",
    "similarity_to_init",
    "parameter_norms",
    "feature_spectrum",
    "checkpoint_metrics",
    "METRIC_KEYS",
    "NC_KEYS",
]

RANK_RTOL = 1e-6
"""Singular values below ``RANK_RTOL`` times the largest are dropped (rank of the outputs for
D_LR, pseudo-inverse of the between-class covariance for NC1)."""

_CONST_RTOL = 1e-12
"""A matrix whose centred entries are below ``_CONST_RTOL`` times its entries is constant
(the variation is float64 rounding noise from the centring)."""

_EIG_RTOL = 1e-10

_DIVERGED = " (diverged checkpoint?)"
_EIG_RTOL_FLOAT32 = 1e-5
"""Eigenvalues rho_k below ``_EIG_RTOL * rho_1`` (float64 work; ``_EIG_RTOL_FLOAT32`` for
float32) have numerically undefined eigenfunctions and are left out of the quality and
utilisation curves."""

NC_KEYS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4")
"""Keys of :func:`neural_collapse`."""

METRIC_KEYS = (
    "d_lr",
    "confinement",
    "isotropy",
    *NC_KEYS,
    "cka_init",
    "param_norm_sq",
    "param_dist_sq",
    "effective_rank",
    "probe_acc",
)
"""Keys of :func:`checkpoint_metrics`, in display order."""

OUTPUTS = ("last_linear", "learned")
"""Choices of ``outputs`` in :func:`checkpoint_metrics`: the function D_LR is measured against."""


# --------------------------------------------------------------------------- input checks


def _tensor2d(
    name: str, x: torch.Tensor, rows: int | None = None, min_rows: int = 2
) -> torch.Tensor:
    """Validate the shape of a real 2-D matrix; return it detached (dtype and device kept)."""
    x = validation.as_tensor(x, name)
    validation.check_ndim(x, name, 2, "(n, dim)")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} has {x.shape[0]} rows but features has {rows} (one per sample)")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 column, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got {x.dtype}")
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
        raise ValueError(f"labels must be 1-D (n,) class indices, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries but features has {n} rows")
    labels = labels.to(device=device, dtype=torch.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (C = {num_classes} classes), "
            f"got values in {lo}..{hi}"
        )
    return labels


# --------------------------------------------------------------------------- building blocks


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
        raise ValueError(f"{name} are too large to sum in float64 (max |entry| ~ 1e308)")
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


def _effective_rank(rho: torch.Tensor) -> float:
    """exp(entropy of rho / sum rho) for nonnegative eigenvalues rho (nan if all zero)."""
    rho = rho.double()
    total = float(rho.sum())
    if not total > 0.0:
        return math.nan
    prob = rho / total
    prob = prob[prob > 0]
    return math.exp(float(-(prob * prob.log()).sum()))


# --------------------------------------------------------------------------- D_LR and CKA


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


# --------------------------------------------------------------------------- neural collapse


def _neural_collapse(
    h: _Centred,
    labels: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    center: str = "global",
) -> dict[str, float]:
    """NC1-NC4 from prepared features (n, p), int64 labels (n,), float64 weight (C, p).

    Works on the centred features (every statistic is translation invariant once the
    feature mean is folded into the bias) with two passes over them: class sums, and one
    product with [V | W^T | mu^T]; no (n, p) temporaries.
    """
    hc = h.c
    n, p = hc.shape
    c = num_classes
    onehot = torch.zeros(c, n, dtype=hc.dtype, device=hc.device)
    onehot[labels, torch.arange(n, device=hc.device)] = 1.0
    counts = onehot.sum(dim=1)
    mu = (onehot @ hc) / counts.unsqueeze(1)  # class means (centred coordinates), one GEMM
    # rows mu_c - mu_G: the global mean of all samples is 0 in centred coordinates
    m = mu if center == "global" else mu - mu.mean(dim=0, keepdim=True)
    out = dict.fromkeys(NC_KEYS, math.nan)

    flat = hc.reshape(-1)
    hc_sq = float(torch.dot(flat, flat))
    size = math.sqrt(hc_sq / n + float(h.mean.square().sum()))  # rms |feature vector|
    m_norm = float(torch.linalg.matrix_norm(m))
    means_coincide = m_norm <= _CONST_RTOL * size * math.sqrt(c)
    blocks, r = [], 0
    if not means_coincide:
        # NC1 = tr(Sigma_W Sigma_B^+) / C with Sigma_W = R^T R / n, Sigma_B = M^T M / C.
        # With M = U S V^T: Sigma_B^+ = C V S^-2 V^T, so NC1 = sum_k |R v_k|^2 / (n s_k^2),
        # R v_k = (H v_k) - (mu v_k)[labels].
        _, s, vh = torch.linalg.svd(_host(m), full_matrices=False)  # (C, p): small
        keep = s > RANK_RTOL * s[0]
        v, s = vh[keep].T.to(hc.device), s[keep].to(hc.device)
        blocks.append(v)
        r = v.shape[1]
    if weight is not None:
        blocks += [weight.T, mu.T]
    prod = hc @ torch.cat(blocks, dim=1) if blocks else None  # (n, r [+ 2C])

    if means_coincide:
        within_sq = max(hc_sq - float((counts * mu.square().sum(dim=1)).sum()), 0.0)
        out["nc1"] = math.inf if math.sqrt(within_sq / n) > _CONST_RTOL * size else math.nan
    else:
        proj = prod[:, :r] - (mu @ v)[labels]  # (n, r) = R V
        out["nc1"] = float((proj.square().sum(dim=0) / s.square()).sum() / n)
        norms = torch.linalg.vector_norm(m, dim=1)  # (C,)
        out["nc2_equinorm"] = float(norms.std(correction=0) / norms.mean())
        unit = m / norms.clamp_min(torch.finfo(hc.dtype).tiny).unsqueeze(1)
        unit[norms <= _CONST_RTOL * m_norm] = 0.0  # a mean at the centre: cosines count as 0
        cos = unit @ unit.T
        off = ~torch.eye(c, dtype=torch.bool, device=hc.device)
        out["nc2_equiangular"] = float((cos[off] + 1.0 / (c - 1)).abs().mean())

    if weight is not None:
        w_norm = float(torch.linalg.matrix_norm(weight))
        if w_norm > 0 and not means_coincide:
            out["nc3"] = float((weight / w_norm - m / m_norm).square().sum())
        offset = h.mean @ weight.T  # (1, C): the feature mean folded into the bias
        if bias is not None:
            offset = offset + bias
        net_pred = (prod[:, r : r + c] + offset).argmax(dim=1)
        # nearest class mean: argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 h . mu_c)
        ncc_pred = (mu.square().sum(dim=1) - 2.0 * prod[:, r + c :]).argmin(dim=1)
        out["nc4"] = float((net_pred != ncc_pred).double().mean())
    return out


def neural_collapse(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    center: Literal["global", "class_means"] = "global",
) -> dict[str, float]:
    """Neural-collapse statistics NC1-NC4 (Papyan, Han & Donoho 2020); all 0 at full collapse.

    ``features`` H (n, p), ``labels`` (n,) integers in 0..C-1, ``weight`` W (C, p) and
    ``bias`` b (C,) of the classifier; C = ``weight.shape[0]``. With class means mu_c and a
    centre mu_G, M = [mu_c - mu_G] (C, p), Sigma_W = within-class covariance (1/n),
    Sigma_B = M^T M / C. The centre is

    - ``center="global"`` (default, Papyan et al.): the global mean of all n samples,
      mu_G = (1/n) sum_i h_i = sum_c (n_c / n) mu_c;
    - ``center="class_means"``: the unweighted mean of the class means (1/C) sum_c mu_c,
      which keeps a simplex ETF of class means an ETF under class imbalance.

    Both agree when the classes are balanced. The statistics:

    - ``nc1`` = tr(Sigma_W Sigma_B^+) / C >= 0, where Sigma_B^+ keeps directions whose
      between-class singular value is at least ``RANK_RTOL`` of the largest.
      ``inf`` if all class means coincide while features vary, ``nan`` if all features are equal.
    - ``nc2_equinorm`` = Std_c |mu_c - mu_G| / Avg_c |mu_c - mu_G| (population std), >= 0.
    - ``nc2_equiangular`` = Avg_{c != c'} |cos(mu_c - mu_G, mu_c' - mu_G) + 1/(C-1)|, in
      [0, C/(C-1)]; a class mean sitting at the centre has cosine 0 with every other.
    - ``nc3`` = |W/|W|_F - M/|M|_F|_F^2, in [0, 4]; ``nan`` if W = 0.
    - ``nc4`` = fraction of samples where argmax(W h + b) differs from the nearest class mean
      prediction argmin_c |h - mu_c|, in [0, 1].

    NC2 and NC3 are ``nan`` when all class means coincide. Cost O(n p C), float64.
    ``ValueError`` for another ``center``.

    Raises ``ValueError`` (one line naming the argument) for fewer than 2 classes, fewer
    samples than classes, an empty class (labels must cover 0..C-1), labels out of range,
    wrong shapes or mismatched lengths; :class:`NonFiniteError` for NaN/inf.
    """
    h = _prepare("features", features)
    n, p = h.c.shape
    w = _matrix("weight", weight, min_rows=0).to(h.c.device)
    if w.shape[0] < 2:
        raise ValueError(f"weight must have at least 2 rows (classes), got C = {w.shape[0]}")
    if w.shape[1] != p:
        raise ValueError(
            f"weight must be (C, {p}) to match features (n, {p}), got {tuple(w.shape)}"
        )
    c = w.shape[0]
    b = None
    if bias is not None:
        b = torch.as_tensor(bias).detach().to(device=h.c.device, dtype=torch.float64)
        if b.shape != (c,):
            raise ValueError(f"bias must have shape ({c},) to match weight, got {tuple(b.shape)}")
        validation.check_finite(b, "bias", _DIVERGED)
    if center not in ("global", "class_means"):
        raise ValueError(f"center must be 'global' or 'class_means', got {center!r}")
    y = _check_classes(labels, n, c, h.c.device)
    return _neural_collapse(h, y, c, w, b, center)


def _check_classes(labels: torch.Tensor, n: int, c: int, device: torch.device) -> torch.Tensor:
    """Labels (n,) covering every class 0..c-1, c >= 2, n >= c; one-line ValueError otherwise."""
    if c < 2:
        raise ValueError(f"weight must have at least 2 rows (classes), got C = {c}")
    if n < c:
        raise ValueError(f"features has {n} samples, fewer than the C = {c} classes")
    y = _labels(labels, n, c, device)
    counts = torch.bincount(y, minlength=c)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"labels must cover every class 0..{c - 1}; class {int(empty[0])} has no samples "
            f"({len(empty)} empty class(es))"
        )
    return y


# --------------------------------------------------------------------------- parameters


def parameter_norms(
    state_dict: Mapping[str, torch.Tensor],
    init_state_dict: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Squared parameter norm |theta|^2 and squared distance from init |theta - theta_0|^2.

    Sums over the floating-point tensors of ``state_dict`` (non-floating entries, e.g.
    BatchNorm's ``num_batches_tracked``, and non-tensors are skipped; floating buffers such
    as running statistics count if present, so pass ``dict(model.named_parameters())`` for
    parameters only). Returns ``{"param_norm_sq", "param_dist_sq"}`` as floats (float64
    sums); ``param_dist_sq`` is ``nan`` without ``init_state_dict``. A diverged model gives
    ``inf``/``nan``, not an error.

    Raises ``ValueError`` naming the key when the two dicts have different floating keys or
    a shape differs.
    """
    cur = _floating(state_dict)
    total = sum((_sum_sq(t.detach()) for t in cur.values()), 0.0)
    dist = math.nan
    if init_state_dict is not None:
        init = _floating(init_state_dict)
        for key in sorted(set(cur) ^ set(init)):
            where = "init_state_dict" if key in cur else "state_dict"
            raise ValueError(f"parameter {key!r} is missing from {where} (dicts must match)")
        dist = 0.0
        for key, t in cur.items():
            t0 = init[key]
            if t.shape != t0.shape:
                raise ValueError(
                    f"parameter {key!r} has shape {tuple(t.shape)} but {tuple(t0.shape)} at init"
                )
            # the difference in the tensors' own precision is exact for nearby values (Sterbenz)
            dtype = torch.promote_types(t.dtype, t0.dtype)
            dist += _sum_sq(t.detach().to(dtype) - t0.detach().to(device=t.device, dtype=dtype))
    return {"param_norm_sq": total, "param_dist_sq": dist}


def _sum_sq(t: torch.Tensor) -> float:
    """sum(t^2) computed in float64."""
    return float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2


def _floating(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict must be a mapping of name -> tensor, got {type(state)}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


# --------------------------------------------------------------------------- spectrum


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


# --------------------------------------------------------------------------- one checkpoint


def _forward_all(
    model: nn.Module, x: torch.Tensor, layer: str | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Features (n, p), last-Linear outputs (n, C) and model outputs (n, ...) in batches."""
    device = module_device(model)
    feats, outs, model_outs = [], [], []
    captured: list = []
    handle = model.register_forward_hook(lambda _m, _a, o: captured.append(o))
    try:
        for chunk in torch.split(x, batch_size):
            captured.clear()
            f, o = features_and_outputs(model, chunk.to(device), layer)
            feats.append(f)
            outs.append(o)
            model_outs.append(captured[-1] if captured else None)
    finally:
        handle.remove()
    y_out = None
    if all(isinstance(m, torch.Tensor) for m in model_outs):
        y_out = torch.cat(model_outs)
    return torch.cat(feats), torch.cat(outs), y_out


def checkpoint_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    init_model: nn.Module | None = None,
    layer: str | None = None,
    batch_size: int = 1024,
    outputs: str = "last_linear",
) -> dict[str, float]:
    """All metrics-panel numbers for one checkpoint, from one forward pass over the probe set.

    ``model``: the network (evaluated in eval mode under ``torch.no_grad``; its train/eval mode
    is restored). ``x`` (n, *input_shape) probe inputs, ``y`` (n,) integer labels (or (n, C)
    one-hot / scores, reduced by argmax). ``init_model``: the same architecture at
    initialisation (for ``cka_init`` and ``param_dist_sq``). ``layer``: feature layer as in
    :func:`richviz.features.features_and_outputs` (default: input of the last ``nn.Linear``).
    The forward runs in chunks of ``batch_size`` on the model's device.

    ``outputs``: the function F that ``d_lr``, ``confinement`` and ``isotropy`` measure the
    features against. ``"last_linear"`` (default): the last ``nn.Linear``'s own output
    f = Phi W^T + b, always defined. For an alpha-scaled model
    (:class:`richviz.architectures.Centered`, output alpha * (f - f0)) this is the inner f,
    not the scaled difference: at large alpha f hardly moves, so D_LR stays at its value at
    initialisation (the lazy reading). ``"learned"``: the learned function, i.e. the model's
    own output alpha * (f - f0) for a ``Centered`` model, and f - f0 (model output minus
    ``init_model``'s, taken from the forward pass ``cka_init`` already needs) for a plain
    model, which then requires ``init_model``. It is identically zero at initialisation, so
    the three richness numbers are ``nan`` there (outputs without variation).

    Returns a dict with keys :data:`METRIC_KEYS`: ``d_lr``, ``confinement``, ``isotropy``
    (:func:`richness` of the features vs ``outputs``),
    ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` (classifier = the last
    ``nn.Linear``'s weight and bias; C = its rows), ``cka_init`` (:func:`similarity_to_init`),
    ``param_norm_sq``, ``param_dist_sq`` (over ``named_parameters``), ``effective_rank`` (of
    the feature spectrum) and ``probe_acc`` (accuracy of the model's own output on (x, y)).

    ``nan`` where undefined (never an exception for these): ``cka_init`` and
    ``param_dist_sq`` without ``init_model``; all ``nc*`` when the probe labels miss a class
    (NC needs every class mean; the other metrics stay valid); ``nc3``/``nc4`` when the
    features are not the classifier's input (their width differs) or the model has no
    ``nn.Linear``; ``probe_acc`` when the model output is not (n, C) scores; and every
    feature metric of a checkpoint whose features or outputs contain NaN/inf (diverged
    training). Labels outside 0..C-1 (data that does not fit the model), a model without an
    ``nn.Linear`` for the default layer, or malformed ``x`` / ``y`` raise ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if init_model is not None and not isinstance(init_model, nn.Module):
        raise ValueError(f"init_model must be a torch.nn.Module, got {type(init_model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ValueError("x must be a tensor (n, *input_shape) with at least 2 inputs")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs={outputs!r} must be one of {', '.join(OUTPUTS)}")
    centred = _is_centered(model)
    if outputs == "learned" and not centred and init_model is None:
        raise ValueError(
            "outputs='learned' needs init_model (f - f0) for a model that is not alpha-scaled "
            "(richviz.architectures.Centered)"
        )
    y = torch.as_tensor(y)
    if y.ndim == 2:
        y = y.argmax(dim=1)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be (n,) labels with n = {x.shape[0]}, got {tuple(y.shape)}")
    layer = PENULTIMATE if layer is None else layer
    try:
        classifier = model.get_submodule(last_linear_name(model))
    except ValueError:
        if layer == PENULTIMATE:
            raise  # the default feature layer needs a Linear; the message says what to pass
        classifier = None

    out = {k: math.nan for k in METRIC_KEYS}
    modes = {m: m.training for m in (model, init_model) if m is not None}
    try:
        with torch.no_grad():
            feats, lin_out, model_out = _forward_all(model, x, layer, batch_size)
            init_feats = init_out = None
            if init_model is not None:
                init_feats, _, init_out = _forward_all(init_model, x, layer, batch_size)
            if outputs == "learned":
                lin_out = _learned_outputs(model_out, None if centred else init_out)
            params = dict(model.named_parameters())
            init_params = None if init_model is None else dict(init_model.named_parameters())
            out.update(parameter_norms(params, init_params))
            _feature_metrics(out, feats, lin_out, model_out, y, init_feats, classifier)
    finally:
        for m, training in modes.items():
            m.train(training)
    return out


def _is_centered(model: nn.Module) -> bool:
    from richviz.architectures import Centered  # not at import time: keeps metrics light

    return isinstance(model, Centered)


def _learned_outputs(model_out: torch.Tensor | None, init_out: torch.Tensor | None) -> torch.Tensor:
    """The learned function: the model output (Centered) or model minus init output, (n, C)."""
    if not isinstance(model_out, torch.Tensor) or model_out.ndim != 2:
        raise ValueError("outputs='learned' needs a model whose output is an (n, C) tensor")
    if init_out is None:
        return model_out
    if not isinstance(init_out, torch.Tensor) or init_out.shape != model_out.shape:
        raise ValueError("outputs='learned': init_model's output must have the model's shape")
    return model_out.double() - init_out.to(model_out.device).double()


def _feature_metrics(
    out: dict[str, float],
    feats: torch.Tensor,
    lin_out: torch.Tensor,
    model_out: torch.Tensor | None,
    y: torch.Tensor,
    init_feats: torch.Tensor | None,
    classifier: nn.Module | None,
) -> None:
    """Fill ``out`` with the feature-based metrics, sharing the centring and the Gram."""
    n = feats.shape[0]
    c = classifier.out_features if classifier is not None else lin_out.shape[1]
    labels = _labels(y, n, c, feats.device)  # out of range: the data does not fit the model
    nc_defined = c >= 2 and bool((torch.bincount(labels, minlength=c) > 0).all())
    if model_out is not None and model_out.ndim == 2 and model_out.shape[1] == c:
        if bool(torch.isfinite(model_out).all()):
            out["probe_acc"] = float((model_out.argmax(dim=1) == labels).double().mean())
    try:
        phi = _prepare("features", feats)
        f = _prepare("outputs", lin_out, rows=n)
    except NonFiniteError:
        return  # diverged checkpoint: feature metrics stay nan
    rich = _richness_core(phi, f)
    out["d_lr"], out["confinement"], out["isotropy"] = rich.d_lr, rich.confinement, rich.isotropy
    if not phi.constant:
        rho = torch.linalg.eigvalsh(_host(phi.gram) / n).clamp_min(0.0)  # small: on the CPU
        out["effective_rank"] = _effective_rank(rho)

    w = b = None
    if classifier is not None and classifier.in_features == phi.c.shape[1]:
        w = classifier.weight.detach().to(device=phi.c.device, dtype=torch.float64)
        if classifier.bias is not None:
            b = classifier.bias.detach().to(device=phi.c.device, dtype=torch.float64)
        if not (bool(torch.isfinite(w).all()) and (b is None or bool(torch.isfinite(b).all()))):
            w = b = None
    if nc_defined:
        out.update(_neural_collapse(phi, labels, c, w, b))

    if init_feats is not None:
        try:
            phi0 = _prepare("init features", init_feats, rows=n)
        except NonFiniteError:
            return
        out["cka_init"] = _cka_core(phi, phi0)
