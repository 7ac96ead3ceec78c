"""Neural collapse NC1-NC4 (Papyan, Han & Donoho 2020) of features and a linear classifier.

Pure functions of tensors; float64, cost O(n p C).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from richviz import validation
from richviz.errors import ArgumentError
from richviz.metrics.centring import (
    _CONST_RTOL,
    _DIVERGED,
    RANK_RTOL,
    _Centred,
    _host,
    _labels,
    _matrix,
    _prepare,
)

__all__ = ["NC_KEYS", "neural_collapse"]

NC_KEYS = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4")
"""Keys of :func:`neural_collapse`."""


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

    Examples
    --------
    Every sample sits on its class mean, the means form a simplex and the classifier's rows
    are the centred means: full collapse, every statistic 0.

    >>> import torch
    >>> from richviz.metrics import neural_collapse
    >>> labels = torch.tensor([0, 1, 2, 0, 1, 2])
    >>> features = torch.eye(3, dtype=torch.float64)[labels]  # H (n, p) = (6, 3)
    >>> weight = torch.eye(3, dtype=torch.float64) - 1 / 3  # W (C, p) = (3, 3)
    >>> nc = neural_collapse(features, labels, weight)
    >>> sorted(nc)
    ['nc1', 'nc2_equiangular', 'nc2_equinorm', 'nc3', 'nc4']
    >>> all(abs(v) < 1e-12 for v in nc.values())
    True

    Noise around the class means shows up in NC1 (within-class spread):

    >>> g = torch.Generator().manual_seed(0)
    >>> noisy = features + 0.1 * torch.randn(6, 3, generator=g, dtype=torch.float64)
    >>> neural_collapse(noisy, labels, weight)["nc1"] > 0
    True
    """
    h = _prepare("features", features)
    n, p = h.c.shape
    w = _matrix("weight", weight, min_rows=0).to(h.c.device)
    if w.shape[0] < 2:
        raise ArgumentError(f"weight must have at least 2 rows (classes), got C = {w.shape[0]}")
    if w.shape[1] != p:
        raise ArgumentError(
            f"weight must be (C, {p}) to match features (n, {p}), got {tuple(w.shape)}"
        )
    c = w.shape[0]
    b = None
    if bias is not None:
        b = torch.as_tensor(bias).detach().to(device=h.c.device, dtype=torch.float64)
        if b.shape != (c,):
            raise ArgumentError(
                f"bias must have shape ({c},) to match weight, got {tuple(b.shape)}"
            )
        validation.check_finite(b, "bias", _DIVERGED)
    if center not in ("global", "class_means"):
        raise ArgumentError(f"center must be 'global' or 'class_means', got {center!r}")
    y = _check_classes(labels, n, c, h.c.device)
    return _neural_collapse(h, y, c, w, b, center)


def _check_classes(labels: torch.Tensor, n: int, c: int, device: torch.device) -> torch.Tensor:
    """Labels (n,) covering every class 0..c-1, c >= 2, n >= c; one-line ValueError otherwise."""
    if c < 2:
        raise ArgumentError(f"weight must have at least 2 rows (classes), got C = {c}")
    if n < c:
        raise ArgumentError(f"features has {n} samples, fewer than the C = {c} classes")
    y = _labels(labels, n, c, device)
    counts = torch.bincount(y, minlength=c)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        raise ArgumentError(
            f"labels must cover every class 0..{c - 1}; class {int(empty[0])} has no samples "
            f"({len(empty)} empty class(es))"
        )
    return y
