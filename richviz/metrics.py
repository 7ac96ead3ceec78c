"""Richness and collapse metrics of a representation: D_LR, NC1-NC4, CKA, norms, spectra.

Every function is a pure function of tensors (DESIGN §4). Notation: ``features`` Phi is
(n, p) (n probe inputs, p features), ``outputs`` F is (n, C) (the last Linear layer's own
output), ``labels`` is (n,) of class indices. Columns are centred and the numbers are
computed in float64 on the tensors' device. Nothing forms an n x n matrix when n >= p: Gram
matrices are taken on the smaller side, min(n, p) x min(n, p) (their nonzero spectra agree).

Degenerate inputs (see each docstring) either raise a one-line ``ValueError`` naming the
argument, or return ``nan`` with a documented meaning, so a metrics panel never crashes on
a checkpoint. Non-finite features raise :class:`NonFiniteError` (a ``ValueError``), which
:func:`checkpoint_metrics` turns into ``nan`` metrics for that checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from richviz.devices import module_device
from richviz.errors import RichvizError
from richviz.features import PENULTIMATE, features_and_outputs, last_linear_name

__all__ = [
    "NonFiniteError",
    "FeatureSpectrum",
    "RANK_RTOL",
    "d_lr",
    "neural_collapse",
    "linear_cka",
    "similarity_to_init",
    "parameter_norms",
    "feature_spectrum",
    "checkpoint_metrics",
    "METRIC_KEYS",
]

RANK_RTOL = 1e-6
"""Singular values below ``RANK_RTOL`` times the largest are dropped (rank of the outputs for
D_LR, pseudo-inverse of the between-class covariance for NC1)."""

_CONST_RTOL = 1e-12
"""A centred matrix whose norm is below ``_CONST_RTOL`` times the uncentred norm is constant
(its variation is float64 rounding noise from the centring)."""

_EIG_RTOL = 1e-10
"""Eigenvalues rho_k below ``_EIG_RTOL * rho_1`` have numerically undefined eigenfunctions and
contribute nothing to the quality / utilisation curves."""

METRIC_KEYS = (
    "d_lr",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc3",
    "nc4",
    "cka_init",
    "param_norm_sq",
    "param_dist_sq",
    "effective_rank",
    "probe_acc",
)
"""Keys of :func:`checkpoint_metrics`, in display order."""


class NonFiniteError(RichvizError, ValueError):
    """Features or outputs contain NaN or inf (typically a diverged checkpoint)."""


# --------------------------------------------------------------------------- input checks


def _matrix(name: str, x: torch.Tensor, rows: int | None = None, min_rows: int = 2) -> torch.Tensor:
    """Validate a 2-D finite matrix and return it detached as float64 (same device)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a tensor, got {type(x).__name__}") from exc
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(x.shape)}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} has {x.shape[0]} rows but features has {rows} (one per sample)")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 column, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got {x.dtype}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{name} contain NaN/inf (diverged checkpoint?)")
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


def _centre(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Column-centred copy of a float64 (n, d) matrix, and whether it is constant."""
    xc = x - x.mean(dim=0, keepdim=True)
    scale = float(torch.linalg.matrix_norm(x))
    constant = float(torch.linalg.matrix_norm(xc)) <= _CONST_RTOL * scale
    return xc, constant


def _unit_scale(xc: torch.Tensor) -> torch.Tensor:
    """xc divided by its largest |entry| (for scale-invariant metrics: no under/overflow)."""
    top = xc.abs().max()
    return xc / top if float(top) > 0 else xc


def _gram(xc: torch.Tensor) -> torch.Tensor:
    """Gram matrix on the smaller side: xc^T xc (d, d) if n >= d else xc xc^T (n, n)."""
    return xc.T @ xc if xc.shape[0] >= xc.shape[1] else xc @ xc.T


def _cross_sq(ac: torch.Tensor, bc: torch.Tensor) -> float:
    """|ac^T bc|_F^2 = <ac ac^T, bc bc^T>_F, through the smaller intermediate."""
    n, p, q = ac.shape[0], ac.shape[1], bc.shape[1]
    if p * q <= n * n:
        return float((ac.T @ bc).square().sum())
    return float(((ac @ ac.T) * (bc @ bc.T)).sum())


def _d_lr_core(phic: torch.Tensor, gram_norm: float, fc: torch.Tensor) -> float:
    """D_LR from centred float64 features (n, p), |Phic^T Phic|_F and centred outputs (n, C)."""
    if not (0.0 < gram_norm < math.inf):
        return math.nan
    u, s, _ = torch.linalg.svd(fc, full_matrices=False)
    r = int((s > RANK_RTOL * s[0]).sum())
    if r == 0:
        return math.nan
    q = u[:, :r]
    aligned = float((q.T @ phic).square().sum())
    cka = aligned / (gram_norm * math.sqrt(r))
    return 1.0 - min(max(cka, 0.0), 1.0)


def _cka_core(ac: torch.Tensor, a_norm: float, bc: torch.Tensor, b_norm: float) -> float:
    """Linear CKA from centred float64 matrices and their Gram Frobenius norms."""
    denom = a_norm * b_norm
    if not (0.0 < denom < math.inf):
        return math.nan
    cka = _cross_sq(ac, bc) / denom
    return min(max(cka, 0.0), 1.0)


def _effective_rank(rho: torch.Tensor) -> float:
    """exp(entropy of rho / sum rho) for nonnegative eigenvalues rho (nan if all zero)."""
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
    learned functions. Cost O(n p min(n, p) + n p C), float64; no n x n matrix when n >= p.
    Invariant to rotations, scaling and translation of the features and to any invertible
    linear mixing of the outputs.

    Returns ``nan`` when either side has no variation over the probe set: outputs of rank 0
    (e.g. constant outputs) or constant features; D_LR is undefined there.
    Raises ``ValueError`` for wrong shapes / lengths or fewer than 2 samples, and
    :class:`NonFiniteError` for NaN/inf.
    """
    phi = _matrix("features", features)
    f = _matrix("outputs", outputs, rows=phi.shape[0])
    phic, phi_const = _centre(phi)
    fc, f_const = _centre(f)
    if phi_const or f_const:
        return math.nan
    phic, fc = _unit_scale(phic), _unit_scale(fc)
    return _d_lr_core(phic, float(torch.linalg.matrix_norm(_gram(phic))), fc)


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same n inputs, in [0, 1].

    ``a`` (n, p), ``b`` (n, q). CKA = |a_c^T b_c|_F^2 / (|a_c^T a_c|_F |b_c^T b_c|_F), which
    equals the kernel form <K_a, K_b>_F / (|K_a|_F |K_b|_F) of the centred Gram matrices
    without forming them: cost O(n (p + q) min(n, max(p, q))), float64. ``linear_cka(x, x)``
    is 1; invariant to rotations, isotropic scaling and translation of either argument.

    Returns ``nan`` when either representation is constant over the inputs (no variation).
    Raises ``ValueError`` for wrong shapes or lengths, :class:`NonFiniteError` for NaN/inf.
    """
    a64 = _matrix("a", a)
    b64 = _matrix("b", b, rows=a64.shape[0])
    ac, a_const = _centre(a64)
    bc, b_const = _centre(b64)
    if a_const or b_const:
        return math.nan
    ac, bc = _unit_scale(ac), _unit_scale(bc)
    a_norm = float(torch.linalg.matrix_norm(_gram(ac)))
    b_norm = float(torch.linalg.matrix_norm(_gram(bc)))
    return _cka_core(ac, a_norm, bc, b_norm)


def similarity_to_init(features: torch.Tensor, init_features: torch.Tensor) -> float:
    """S_init: linear CKA between features (n, p) now and at initialisation (n, p0), in [0, 1].

    Both must be computed on the same probe inputs in the same order. 1 = the kernel has not
    moved (lazy); small = the representation was rebuilt. Degenerate cases as
    :func:`linear_cka` (``nan`` for constant features).
    """
    return linear_cka(features, init_features)


# --------------------------------------------------------------------------- neural collapse


def _neural_collapse(
    h: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> dict[str, float]:
    """NC1-NC4 from validated float64 features (n, p), int64 labels (n,), weight (C, p)."""
    n, p = h.shape
    c = num_classes
    counts = torch.bincount(labels, minlength=c)
    sums = torch.zeros(c, p, dtype=h.dtype, device=h.device).index_add_(0, labels, h)
    mu = sums / counts.unsqueeze(1).to(h.dtype)
    mu_g = mu.mean(dim=0, keepdim=True)  # mean of class means (= global mean when balanced)
    m = mu - mu_g  # (C, p), rows mu_c - mu_G
    resid = h - mu[labels]  # (n, p) within-class deviations
    out = {k: math.nan for k in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4")}

    m_norm = float(torch.linalg.matrix_norm(m))
    scale = max(
        float(torch.linalg.matrix_norm(mu)), float(torch.linalg.matrix_norm(h)) * (c / n) ** 0.5
    )
    means_coincide = m_norm <= _CONST_RTOL * scale
    if means_coincide:
        varies = float(torch.linalg.matrix_norm(resid)) > _CONST_RTOL * float(
            torch.linalg.matrix_norm(h)
        )
        out["nc1"] = math.inf if varies else math.nan
    else:
        # NC1 = tr(Sigma_W Sigma_B^+) / C with Sigma_W = R^T R / n, Sigma_B = M^T M / C.
        # With M = U S V^T: Sigma_B^+ = C V S^-2 V^T, so NC1 = sum_k |R v_k|^2 / (n s_k^2).
        _, s, vh = torch.linalg.svd(m, full_matrices=False)
        keep = s > RANK_RTOL * s[0]
        proj = resid @ vh[keep].T  # (n, r)
        out["nc1"] = float((proj.square().sum(dim=0) / s[keep].square()).sum() / n)

        norms = torch.linalg.vector_norm(m, dim=1)  # (C,)
        out["nc2_equinorm"] = float(norms.std(correction=0) / norms.mean())
        unit = m / norms.clamp_min(torch.finfo(h.dtype).tiny).unsqueeze(1)
        unit[norms <= _CONST_RTOL * m_norm] = 0.0  # a mean at the centre: cosines count as 0
        cos = unit @ unit.T
        off = ~torch.eye(c, dtype=torch.bool, device=h.device)
        out["nc2_equiangular"] = float((cos[off] + 1.0 / (c - 1)).abs().mean())

    if weight is not None:
        w_norm = float(torch.linalg.matrix_norm(weight))
        if w_norm > 0 and not means_coincide:
            out["nc3"] = float((weight / w_norm - m / m_norm).square().sum())
        logits = h @ weight.T
        if bias is not None:
            logits = logits + bias
        net_pred = logits.argmax(dim=1)
        # nearest class mean: argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 h . mu_c)
        ncc_pred = (mu.square().sum(dim=1) - 2.0 * (h @ mu.T)).argmin(dim=1)
        out["nc4"] = float((net_pred != ncc_pred).double().mean())
    return out


def neural_collapse(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> dict[str, float]:
    """Neural-collapse statistics NC1-NC4 (Papyan, Han & Donoho 2020); all 0 at full collapse.

    ``features`` H (n, p), ``labels`` (n,) integers in 0..C-1, ``weight`` W (C, p) and
    ``bias`` b (C,) of the classifier; C = ``weight.shape[0]``. With class means mu_c, centre
    mu_G = the mean of the class means (the global mean when classes are balanced; this choice
    keeps an ETF an ETF under class imbalance), M = [mu_c - mu_G] (C, p),
    Sigma_W = within-class covariance (1/n), Sigma_B = M^T M / C:

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

    Raises ``ValueError`` (one line naming the argument) for fewer than 2 classes, fewer
    samples than classes, an empty class (labels must cover 0..C-1), labels out of range,
    wrong shapes or mismatched lengths; :class:`NonFiniteError` for NaN/inf.
    """
    h = _matrix("features", features)
    n, p = h.shape
    w = _matrix("weight", weight, min_rows=0)
    if w.shape[0] < 2:
        raise ValueError(f"weight must have at least 2 rows (classes), got C = {w.shape[0]}")
    if w.shape[1] != p:
        raise ValueError(
            f"weight must be (C, {p}) to match features (n, {p}), got {tuple(w.shape)}"
        )
    c = w.shape[0]
    b = None
    if bias is not None:
        b = torch.as_tensor(bias).detach().to(device=h.device, dtype=torch.float64)
        if b.shape != (c,):
            raise ValueError(f"bias must have shape ({c},) to match weight, got {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise NonFiniteError("bias contain NaN/inf (diverged checkpoint?)")
    y = _check_classes(labels, n, c, h.device)
    return _neural_collapse(h, y, c, w.to(h.device), b)


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
    total = sum((float(t.detach().double().square().sum()) for t in cur.values()), 0.0)
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
            diff = t.detach().double() - t0.detach().to(device=t.device, dtype=torch.float64)
            dist += float(diff.square().sum())
    return {"param_norm_sq": total, "param_dist_sq": dist}


def _floating(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict must be a mapping of name -> tensor, got {type(state)}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


# --------------------------------------------------------------------------- spectrum


@dataclass(frozen=True)
class FeatureSpectrum:
    """Eigendecomposition view of the features (DESIGN §4); k = min(n, p) entries, descending.

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


def _spectrum_from_centred(
    phic: torch.Tensor, targets_c: torch.Tensor | None, outputs_c: torch.Tensor | None
) -> FeatureSpectrum:
    """Spectrum of centred float64 features, with the curves of centred targets / outputs."""
    n, p = phic.shape
    if n >= p:
        rho, v = torch.linalg.eigh(phic.T @ phic / n)  # ascending, v (p, p)
        rho, v = rho.flip(0).clamp_min(0.0), v.flip(1)
        s = (n * rho).sqrt()
        good = rho > _EIG_RTOL * rho[0] if rho[0] > 0 else torch.zeros_like(rho, dtype=torch.bool)

        def coeffs(t: torch.Tensor) -> torch.Tensor:  # (k, m): <e_j, t_m> = v_j^T Phic^T t / s_j
            c = v.T @ (phic.T @ t)
            return torch.where(good.unsqueeze(1), c / s.clamp_min(1e-300).unsqueeze(1), 0.0)
    else:
        rho, u = torch.linalg.eigh(phic @ phic.T / n)  # e_j = u_j directly
        rho, u = rho.flip(0).clamp_min(0.0), u.flip(1)
        good = rho > _EIG_RTOL * rho[0] if rho[0] > 0 else torch.zeros_like(rho, dtype=torch.bool)

        def coeffs(t: torch.Tensor) -> torch.Tensor:
            return torch.where(good.unsqueeze(1), u.T @ t, 0.0)

    def curve(t: torch.Tensor | None) -> torch.Tensor:
        total = float(t.square().sum()) if t is not None else 0.0
        if t is None or not total > 0:
            return torch.full((len(rho),), math.nan, dtype=torch.float64)
        cum = coeffs(t).square().sum(dim=1).cumsum(0) / total
        return cum.clamp(0.0, 1.0).cpu()

    rho_cpu = rho.cpu()
    relative = rho_cpu / rho_cpu[0] if rho_cpu[0] > 0 else torch.full_like(rho_cpu, math.nan)
    return FeatureSpectrum(
        eigenvalues=rho_cpu,
        relative=relative,
        quality=curve(targets_c),
        utilisation=curve(outputs_c),
        effective_rank=_effective_rank(rho_cpu),
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
    the same for the centred outputs (utilisation). Eigenfunctions with rho_j < 1e-10 rho_1 are
    numerically undefined and left out. Cost: a min(n,p)^2 Gram and its ``eigh``, float64.

    Degenerate: constant features give zero eigenvalues, ``nan`` relative values and
    effective rank, and all-zero curves (no eigenfunction captures anything); constant
    targets or outputs (nothing to capture) give a ``nan`` curve for that side.
    Raises ``ValueError`` for wrong shapes / lengths, :class:`NonFiniteError` for NaN/inf.
    """
    phi = _matrix("features", features)
    n = phi.shape[0]
    f = _matrix("outputs", outputs, rows=n)
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if targets.ndim == 1 and not (targets.dtype.is_floating_point or targets.is_complex()):
        y = _labels(targets, n, f.shape[1], phi.device)
        t = torch.nn.functional.one_hot(y, f.shape[1]).to(torch.float64)
    elif targets.ndim == 1:
        t = _matrix("targets", targets.unsqueeze(1), rows=n)
    else:
        t = _matrix("targets", targets, rows=n)
    phic, phi_const = _centre(phi)
    if phi_const:
        phic = torch.zeros_like(phic)
    tc, t_const = _centre(t.to(phi.device))
    fc, f_const = _centre(f)
    return _spectrum_from_centred(phic, None if t_const else tc, None if f_const else fc)


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
) -> dict[str, float]:
    """All metrics-panel numbers for one checkpoint, from one forward pass over the probe set.

    ``model``: the network (evaluated in eval mode under ``torch.no_grad``; its train/eval mode
    is restored). ``x`` (n, *input_shape) probe inputs, ``y`` (n,) integer labels (or (n, C)
    one-hot / scores, reduced by argmax). ``init_model``: the same architecture at
    initialisation (for ``cka_init`` and ``param_dist_sq``). ``layer``: feature layer as in
    :func:`richviz.features.features_and_outputs` (default: input of the last ``nn.Linear``).
    The forward runs in chunks of ``batch_size`` on the model's device.

    Returns a dict with keys :data:`METRIC_KEYS`: ``d_lr`` (features vs last-Linear outputs),
    ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` (classifier = the last
    ``nn.Linear``'s weight and bias; C = its rows), ``cka_init`` (:func:`similarity_to_init`),
    ``param_norm_sq``, ``param_dist_sq`` (over ``named_parameters``), ``effective_rank`` (of
    the feature spectrum) and ``probe_acc`` (accuracy of the model's own output on (x, y)).

    ``nan`` where undefined: ``cka_init`` and ``param_dist_sq`` without ``init_model``;
    ``nc3``/``nc4`` when the features are not the classifier's input (their width differs)
    or the model has no ``nn.Linear``; ``probe_acc`` when the model output is not (n, C)
    scores; and every feature metric of a checkpoint whose features or outputs contain
    NaN/inf (diverged training) -- that case does not raise. Invalid labels (not covering
    0..C-1 etc.) raise ``ValueError`` as in :func:`neural_collapse`.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if init_model is not None and not isinstance(init_model, nn.Module):
        raise ValueError(f"init_model must be a torch.nn.Module, got {type(init_model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ValueError("x must be a tensor (n, *input_shape) with at least 2 inputs")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
            init_feats = None
            if init_model is not None:
                init_feats = _forward_all(init_model, x, layer, batch_size)[0]
            params = dict(model.named_parameters())
            init_params = None if init_model is None else dict(init_model.named_parameters())
            out.update(parameter_norms(params, init_params))
            _feature_metrics(out, feats, lin_out, model_out, y, init_feats, classifier)
    finally:
        for m, training in modes.items():
            m.train(training)
    return out


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
    labels = _check_classes(y, n, c, feats.device)
    if model_out is not None and model_out.ndim == 2 and model_out.shape[1] == c:
        if bool(torch.isfinite(model_out).all()):
            out["probe_acc"] = float((model_out.argmax(dim=1) == labels).double().mean())
    try:
        phi = _matrix("features", feats)
        f = _matrix("outputs", lin_out, rows=n)
    except NonFiniteError:
        return  # diverged checkpoint: feature metrics stay nan
    phic, phi_const = _centre(phi)
    fc, f_const = _centre(f)
    gram = _gram(phic)
    gram_norm = float(torch.linalg.matrix_norm(gram))
    if not (phi_const or f_const):
        out["d_lr"] = _d_lr_core(phic, gram_norm, fc)
    if not phi_const:
        rho = torch.linalg.eigvalsh(gram / n).clamp_min(0.0)
        out["effective_rank"] = _effective_rank(rho)

    w = b = None
    if classifier is not None and classifier.in_features == phi.shape[1]:
        w = classifier.weight.detach().to(device=phi.device, dtype=torch.float64)
        if classifier.bias is not None:
            b = classifier.bias.detach().to(device=phi.device, dtype=torch.float64)
        if not (bool(torch.isfinite(w).all()) and (b is None or bool(torch.isfinite(b).all()))):
            w = b = None
    out.update(_neural_collapse(phi, labels, c, w, b))

    if init_feats is not None and not phi_const:
        try:
            phi0 = _matrix("init features", init_feats, rows=n)
        except NonFiniteError:
            return
        phi0c, phi0_const = _centre(phi0)
        if not phi0_const:
            norm0 = float(torch.linalg.matrix_norm(_gram(phi0c)))
            out["cka_init"] = _cka_core(phic, gram_norm, phi0c, norm0)
