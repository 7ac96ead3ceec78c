"""Tests of richviz.metrics: closed forms, constructed (non-)collapsed features, an independent
n x n kernel implementation, invariances (property-based) and degenerate inputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from richviz.features import features_and_outputs
from richviz.metrics import (
    METRIC_KEYS,
    FeatureSpectrum,
    NonFiniteError,
    checkpoint_metrics,
    d_lr,
    feature_spectrum,
    linear_cka,
    neural_collapse,
    parameter_norms,
    similarity_to_init,
)

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**31 - 1)
F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def orthogonal(p: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(randn(p, p, g=g))
    return q * torch.sign(torch.diagonal(r))


# ------------------------------------------------------------- independent n x n references


def ref_d_lr(phi: torch.Tensor, f: torch.Tensor) -> float:
    """Kernel form: CKA between H Phi Phi^T H and the projector onto range(H F F^T H)."""
    phi, f = np.asarray(phi, dtype=np.float64), np.asarray(f, dtype=np.float64)
    n = len(phi)
    h = np.eye(n) - np.ones((n, n)) / n
    k = h @ phi @ phi.T @ h
    lam, vec = np.linalg.eigh(h @ f @ f.T @ h)
    keep = lam > 1e-12 * lam.max()  # singular values of Fc above 1e-6 of the largest
    proj = vec[:, keep] @ vec[:, keep].T
    return 1.0 - float(np.sum(k * proj) / (np.linalg.norm(k) * np.linalg.norm(proj)))


def ref_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """HSIC form <H Ka H, H Kb H> / (|H Ka H| |H Kb H|) with n x n kernels."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    ka, kb = h @ a @ a.T @ h, h @ b @ b.T @ h
    return float(np.sum(ka * kb) / (np.linalg.norm(ka) * np.linalg.norm(kb)))


# ------------------------------------------------------------- constructed features


def etf_features(num_classes: int, p: int, per_class: int, seed: int, noise: float = 0.0):
    """Perfectly collapsed features: class means a simplex ETF (rotated into R^p, shifted),
    every sample at its class mean (plus optional noise); classifier aligned with the means."""
    g = gen(seed)
    c = num_classes
    basis = torch.linalg.qr(randn(p, c, g=g))[0]  # (p, C) orthonormal columns
    etf = math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=F64) - 1.0 / c) @ basis.T  # (C, p)
    centre = randn(p, g=g)
    labels = torch.arange(c).repeat(per_class)
    h = centre + etf[labels] + noise * randn(len(labels), p, g=g)
    weight = 3.0 * etf
    bias = -weight @ centre
    return h, labels, weight, bias


def test_collapsed_features_give_zero_everything():
    h, y, w, b = etf_features(num_classes=5, p=12, per_class=8, seed=1)
    outputs = h @ w.T + b
    assert d_lr(h, outputs) == pytest.approx(0.0, abs=1e-12)
    nc = neural_collapse(h, y, w, b)
    assert set(nc) == {"nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4"}
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3"):
        assert nc[key] == pytest.approx(0.0, abs=1e-12), key
    assert nc["nc4"] == 0.0
    # also from float32 features (what a network produces): zero up to float32 rounding
    nc32 = neural_collapse(h.float(), y, w.float(), b.float())
    assert max(nc32[k] for k in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3")) < 1e-5
    assert d_lr(h.float(), outputs.float()) < 1e-6


def test_noise_breaks_collapse_monotonically():
    values = []
    for noise in (0.01, 0.1, 0.5):
        h, y, w, b = etf_features(num_classes=4, p=10, per_class=30, seed=2, noise=noise)
        values.append((d_lr(h, h @ w.T + b), neural_collapse(h, y, w, b)["nc1"]))
    dl, nc1 = zip(*values, strict=True)
    assert 0 < dl[0] < dl[1] < dl[2] and 0 < nc1[0] < nc1[1] < nc1[2]


def test_random_wide_features_random_readout_are_lazy():
    g = gen(3)
    n, p, c = 200, 1000, 10
    phi = randn(n, p, g=g)
    out = phi @ randn(p, c, g=g)
    # readout directions q ~ Phic w: E[q^T K q] = tr(G^2)/tr(G), so CKA ~ sqrt(c tr(G^2))/tr(G)
    # for G = Phic^T Phic; Marchenko-Pastur (tr G^2 ~ (n-1) p^2 (1 + n/p), tr G ~ (n-1) p):
    # D_LR ~ 1 - sqrt(c (1 + n/p) / (n - 1)) = 0.754 here
    value = d_lr(phi, out)
    assert value > 0.7
    assert value == pytest.approx(1 - math.sqrt(c * (1 + n / p) / (n - 1)), abs=0.015)


@pytest.mark.parametrize("n,p,c", [(30, 5, 3), (12, 40, 4), (25, 8, 25), (9, 9, 1)])
def test_d_lr_and_cka_match_kernel_reference(n, p, c):
    g = gen(n * 1000 + p)
    phi = randn(n, p, g=g) + 2.0
    f = phi[:, : min(p, 3)] @ randn(min(p, 3), c, g=g) + 0.5 * randn(n, c, g=g)
    assert d_lr(phi, f) == pytest.approx(ref_d_lr(phi, f), abs=1e-10)
    b = torch.tanh(phi @ randn(p, 7, g=g))
    assert linear_cka(phi, b) == pytest.approx(ref_cka(phi, b), abs=1e-10)
    assert linear_cka(b, phi) == pytest.approx(ref_cka(phi, b), abs=1e-10)


def test_d_lr_reference_with_rank_deficient_outputs():
    g = gen(4)
    phi = randn(40, 6, g=g)
    f = randn(40, 2, g=g) @ randn(2, 5, g=g)  # 5 outputs of rank 2
    assert d_lr(phi, f) == pytest.approx(ref_d_lr(phi, f), abs=1e-10)


@PROPERTY
@given(seed=SEEDS, n=st.integers(4, 30), p=st.integers(1, 20), c=st.integers(1, 5))
def test_d_lr_property_matches_reference(seed, n, p, c):
    g = gen(seed)
    phi, f = randn(n, p, g=g), randn(n, c, g=g)
    assert d_lr(phi, f) == pytest.approx(ref_d_lr(phi, f), abs=1e-8)
    assert linear_cka(phi, f) == pytest.approx(ref_cka(phi, f), abs=1e-8)


@PROPERTY
@given(
    seed=SEEDS,
    n=st.integers(3, 30),
    p=st.integers(1, 16),
    c=st.integers(1, 5),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-50, 50),
)
def test_d_lr_and_cka_invariances(seed, n, p, c, scale, shift):
    g = gen(seed)
    phi = randn(n, p, g=g)
    f = phi @ randn(p, c, g=g) + randn(n, c, g=g)
    base = d_lr(phi, f)
    rot = orthogonal(p, g)
    assert d_lr(phi @ rot, f) == pytest.approx(base, abs=1e-9)
    assert d_lr(scale * phi + shift, f) == pytest.approx(base, abs=1e-9)
    # outputs: any well-conditioned invertible mixing, scaling and shift span the same space
    mix = orthogonal(c, g) @ torch.diag(torch.linspace(0.5, 2.0, c, dtype=F64))
    assert d_lr(phi, scale * f @ mix + shift) == pytest.approx(base, abs=1e-9)
    b = torch.tanh(phi @ randn(p, 4, g=g))
    cka = linear_cka(phi, b)
    assert linear_cka(phi @ rot * scale + shift, b) == pytest.approx(cka, abs=1e-9)
    assert linear_cka(phi, b * scale) == pytest.approx(cka, abs=1e-9)
    assert linear_cka(phi, phi) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(phi, phi @ rot * scale + shift) == pytest.approx(1.0, abs=1e-9)


def finite_matrix(rows: int, cols: int):
    return arrays(
        np.float64,
        (rows, cols),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
    )


@PROPERTY
@given(data=st.data(), n=st.integers(2, 12), p=st.integers(1, 6), c=st.integers(1, 4))
def test_ranges_on_arbitrary_finite_input(data, n, p, c):
    phi = torch.from_numpy(data.draw(finite_matrix(n, p)))
    f = torch.from_numpy(data.draw(finite_matrix(n, c)))
    for value in (d_lr(phi, f), linear_cka(phi, f)):
        assert math.isnan(value) or 0.0 <= value <= 1.0
        # nan only in the documented degenerate case: one side (numerically) constant
        if math.isnan(value):
            assert nearly_constant(phi) or nearly_constant(f)


def nearly_constant(t: torch.Tensor) -> bool:
    spread = float((t.max(0).values - t.min(0).values).max())
    return spread <= 1e-10 * float(t.abs().max())


def test_float32_features_match_float64_within_documented_precision():
    # float32 input: Gram products in float32 after float64 centring (~1e-6 relative)
    g = gen(15)
    n, p = 500, 64
    phi = torch.relu(randn(n, p, g=g) @ randn(p, p, g=g) + 3.0)  # large mean: centring matters
    out = phi @ randn(p, 5, g=g) / p + randn(n, 5, g=g)
    other = torch.tanh(phi @ randn(p, 32, g=g) / 8)
    y = torch.arange(n) % 5
    assert d_lr(phi.float(), out.float()) == pytest.approx(d_lr(phi, out), abs=1e-5)
    assert linear_cka(phi.float(), other.float()) == pytest.approx(linear_cka(phi, other), abs=1e-5)
    s32, s64 = feature_spectrum(phi.float(), y, out.float()), feature_spectrum(phi, y, out)
    assert s32.effective_rank == pytest.approx(s64.effective_rank, rel=1e-4)
    torch.testing.assert_close(s32.eigenvalues[:10], s64.eigenvalues[:10], rtol=1e-4, atol=0)
    torch.testing.assert_close(s32.quality, s64.quality, atol=1e-4, rtol=0)


def test_cka_identity_and_similarity_to_init():
    g = gen(5)
    x = randn(50, 8, g=g)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-14)
    assert similarity_to_init(x, x.float()) == pytest.approx(1.0, abs=1e-6)
    independent = randn(50, 8, g=g)
    assert similarity_to_init(x, independent) == pytest.approx(ref_cka(x, independent), abs=1e-10)
    assert similarity_to_init(x, independent) < 0.5


# ------------------------------- D_LR = 0 on balanced one-hot targets implies NC1 = NC2 = 0


def kernel_aligned_features(counts: list[int], p: int, seed: int):
    """The general features with D_LR(Phi, Y) = 0 for one-hot Y: Phic Phic^T = s P_Y, i.e.
    Phic = sqrt(s) U O with U an orthonormal basis of span(Yc), O (C-1, p) orthonormal rows.
    Built from the kernel condition alone, without assuming any class-mean structure."""
    g = gen(seed)
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    labels = labels[torch.randperm(len(labels), generator=g)]
    y = torch.nn.functional.one_hot(labels).to(F64)
    yc = y - y.mean(0)
    u, s, _ = torch.linalg.svd(yc, full_matrices=False)
    u = u[:, s > 1e-9 * s[0]]  # (n, C-1)
    rows = torch.linalg.qr(randn(p, u.shape[1], g=g))[0].T  # (C-1, p) orthonormal rows
    phi = 2.5 * u @ rows + randn(p, g=g)  # plus an arbitrary translation
    return phi, labels, y


@PROPERTY
@given(seed=SEEDS, c=st.integers(2, 6), per_class=st.integers(2, 6), extra=st.integers(0, 5))
def test_design_claim_d_lr_zero_on_balanced_one_hot_implies_nc1_nc2(seed, c, per_class, extra):
    phi, labels, y = kernel_aligned_features([per_class] * c, p=c - 1 + extra, seed=seed)
    assert d_lr(phi, y) == pytest.approx(0.0, abs=1e-10)
    w = randn(c, phi.shape[1], g=gen(seed + 1))  # any classifier: NC1/NC2 do not use it
    nc = neural_collapse(phi, labels, w)
    assert nc["nc1"] == pytest.approx(0.0, abs=1e-10)
    assert nc["nc2_equinorm"] == pytest.approx(0.0, abs=1e-8)
    assert nc["nc2_equiangular"] == pytest.approx(0.0, abs=1e-8)


def test_design_claim_needs_balance():
    # same kernel condition with unbalanced classes: still NC1 = 0, but the means are no ETF
    phi, labels, y = kernel_aligned_features([3, 6, 12], p=4, seed=6)
    assert d_lr(phi, y) == pytest.approx(0.0, abs=1e-10)
    nc = neural_collapse(phi, labels, randn(3, 4, g=gen(7)))
    assert nc["nc1"] == pytest.approx(0.0, abs=1e-10)
    assert nc["nc2_equinorm"] > 0.1


# ------------------------------------------------------------- NC closed forms


def test_nc1_hand_computation():
    # class 0: (-2, 1), (-2, -1); class 1: (1, 0), (3, 0). mu_0 = (-2, 0), mu_1 = (2, 0), mu_G = 0
    # Sigma_B = diag(4, 0), Sigma_W = diag(2, 2) / 4, Sigma_B^+ = diag(1/4, 0)
    # tr(Sigma_W Sigma_B^+) = 0.5 / 4 = 0.125, NC1 = 0.125 / C = 0.0625
    h = torch.tensor([[-2.0, 1.0], [-2.0, -1.0], [1.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    nc = neural_collapse(h, y, w)
    assert nc["nc1"] == pytest.approx(0.0625, abs=1e-14)
    assert nc["nc3"] == pytest.approx(0.0, abs=1e-14)  # W / |W| = M / |M|
    assert neural_collapse(h, y, -w)["nc3"] == pytest.approx(4.0, abs=1e-14)


def test_nc1_matches_explicit_pinv_formula():
    g = gen(8)
    c, p, n = 4, 7, 60
    y = torch.arange(n) % c
    h = randn(n, p, g=g) + 3 * randn(c, p, g=g)[y]
    mu = torch.stack([h[y == k].mean(0) for k in range(c)])
    m = mu - mu.mean(0)
    sw = sum(torch.outer(v, v) for v in h - mu[y]) / n
    sb = m.T @ m / c
    expected = torch.trace(sw @ torch.linalg.pinv(sb, rtol=1e-10)) / c
    assert neural_collapse(h, y, randn(c, p, g=g))["nc1"] == pytest.approx(float(expected))


def _nc_reference(h: np.ndarray, y: np.ndarray, w: np.ndarray, global_mean: bool) -> dict:
    """NC1-NC3 written out directly in numpy from their definitions (Papyan et al. 2020)."""
    c = w.shape[0]
    mu = np.stack([h[y == k].mean(0) for k in range(c)])
    mu_g = h.mean(0) if global_mean else mu.mean(0)
    m = mu - mu_g
    r = h - mu[y]
    sigma_w = r.T @ r / len(h)
    sigma_b = m.T @ m / c
    norms = np.linalg.norm(m, axis=1)
    cos = (m @ m.T) / np.outer(norms, norms)
    off = ~np.eye(c, dtype=bool)
    return {
        "nc1": float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / c),
        "nc2_equinorm": float(norms.std() / norms.mean()),
        "nc2_equiangular": float(np.abs(cos[off] + 1 / (c - 1)).mean()),
        "nc3": float(np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)),
    }


@pytest.mark.parametrize("p", [2, 6])
def test_nc_uses_the_global_mean_on_unbalanced_classes(p):
    """Classes of 10, 40 and 100 samples: the global mean of all samples (Papyan et al.) and
    the mean of the class means differ; each option matches its direct computation."""
    g = gen(18)
    counts = [10, 40, 100]
    y = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    h = randn(150, p, g=g) + 2.5 * randn(3, p, g=g)[y]
    w = randn(3, p, g=g)
    hn, yn, wn = h.numpy(), y.numpy(), w.numpy()
    glob, cls = _nc_reference(hn, yn, wn, True), _nc_reference(hn, yn, wn, False)
    got = neural_collapse(h, y, w)
    got_cls = neural_collapse(h, y, w, center="class_means")
    for key in glob:
        assert got[key] == pytest.approx(glob[key], rel=1e-9, abs=1e-12), key
        assert got_cls[key] == pytest.approx(cls[key], rel=1e-9, abs=1e-12), key
    assert abs(glob["nc1"] - cls["nc1"]) > 0.01 * glob["nc1"]  # the choice matters here
    # balanced classes: both centres are the same point
    yb = torch.arange(150) % 3
    hb = randn(150, p, g=g) + 2.5 * randn(3, p, g=g)[yb]
    a, b = neural_collapse(hb, yb, w), neural_collapse(hb, yb, w, center="class_means")
    assert a == pytest.approx(b, rel=1e-12)
    with pytest.raises(ValueError, match="center"):
        neural_collapse(h, y, w, center="median")


def test_nc2_hand_computation():
    # class means (3, 0), (0, 3), (0, 0): mu_G = (1, 1); M rows (2, -1), (-1, 2), (-1, -1)
    mu = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    h = torch.cat([mu + 0.1, mu - 0.1])  # symmetric noise keeps the means
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    nc = neural_collapse(h, y, torch.eye(3, 2))
    norms = torch.tensor([math.sqrt(5), math.sqrt(5), math.sqrt(2)], dtype=F64)
    assert nc["nc2_equinorm"] == pytest.approx(float(norms.std(correction=0) / norms.mean()))
    # cos: (m0, m1) = -4/5, (m0, m2) = (m1, m2) = -1/sqrt(10); + 1/(C-1) = + 1/2
    expected = (abs(-0.8 + 0.5) + 2 * abs(-1 / math.sqrt(10) + 0.5)) / 3
    assert nc["nc2_equiangular"] == pytest.approx(expected)


def test_nc4_hand_computation():
    # 1-D features; nearest-class-mean boundary at 0.5, the classifier's at 1.5:
    # only h = 1 is classified differently -> NC4 = 1/4
    h = torch.tensor([[-2.0], [-1.0], [1.0], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([[-1.0], [1.0]])
    assert neural_collapse(h, y, w, torch.tensor([1.5, -1.5]))["nc4"] == 0.25
    assert neural_collapse(h, y, w, torch.tensor([-0.5, 0.5]))["nc4"] == 0.0
    assert neural_collapse(h, y, w)["nc4"] == 0.0  # no bias: boundary at 0, same split


@PROPERTY
@given(seed=SEEDS, c=st.integers(2, 6), p=st.integers(1, 10), scale=st.floats(1e-2, 1e2))
def test_nc_ranges_and_invariances(seed, c, p, scale):
    g = gen(seed)
    n = 4 * c
    y = torch.arange(n) % c
    h = randn(n, p, g=g) + randn(c, p, g=g)[y]
    w, b = randn(c, p, g=g), randn(c, g=g)
    nc = neural_collapse(h, y, w, b)
    assert nc["nc1"] >= 0 and nc["nc2_equinorm"] >= 0
    assert 0 <= nc["nc2_equiangular"] <= c / (c - 1) + 1e-12
    assert 0 <= nc["nc3"] <= 4 + 1e-12 and 0 <= nc["nc4"] <= 1
    rot, shift = orthogonal(p, g), randn(p, g=g)
    moved = neural_collapse(scale * h @ rot + shift, y, w @ rot, b)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3"):
        assert moved[key] == pytest.approx(nc[key], rel=1e-7, abs=1e-9), key
    rotated = neural_collapse(h @ rot, y, w @ rot, b)
    assert rotated["nc4"] == nc["nc4"]


# ------------------------------------------------------------- feature spectrum


def spectrum_reference(phi, t):
    """Quality curve from the thin SVD of Phic (eigenfunctions = left singular vectors)."""
    phic = phi - phi.mean(0)
    u, s, _ = torch.linalg.svd(phic, full_matrices=False)
    u = u[:, s > 1e-5 * s[0]]
    tc = t - t.mean(0)
    return (u.T @ tc).square().sum(1).cumsum(0) / tc.square().sum()


@pytest.mark.parametrize("n,p", [(80, 6), (10, 30)])
def test_feature_spectrum_against_covariance_and_svd(n, p):
    g = gen(n + p)
    phi = randn(n, p, g=g) @ torch.diag(torch.logspace(0, -1, p, dtype=F64)) + 1.0
    labels = torch.arange(n) % 3
    outputs = phi @ randn(p, 3, g=g)
    spec = feature_spectrum(phi, labels, outputs)
    assert isinstance(spec, FeatureSpectrum)
    k = min(n, p)
    assert spec.eigenvalues.shape == spec.quality.shape == spec.utilisation.shape == (k,)
    cov = torch.cov(phi.T, correction=0)
    assert float(spec.eigenvalues.sum()) == pytest.approx(float(torch.trace(cov)), rel=1e-12)
    ref = torch.linalg.eigvalsh(cov).flip(0)[:k].clamp_min(0)
    torch.testing.assert_close(spec.eigenvalues, ref, atol=1e-12, rtol=1e-9)
    assert spec.relative[0] == 1.0 and bool((spec.relative.diff() <= 1e-15).all())
    onehot = torch.nn.functional.one_hot(labels, 3).to(F64)
    r = spectrum_reference(phi, onehot)
    torch.testing.assert_close(spec.quality[: len(r)], r, atol=1e-9, rtol=0)
    assert bool((spec.quality.diff() >= -1e-15).all()) and float(spec.quality[-1]) <= 1.0
    # outputs are linear in the features, so they lie in the span: utilisation reaches 1
    assert float(spec.utilisation[-1]) == pytest.approx(1.0, abs=1e-10)


def test_quality_reaches_one_when_targets_in_feature_span():
    g = gen(9)
    labels = torch.arange(60) % 4
    onehot = torch.nn.functional.one_hot(labels, 4).to(F64)
    phi = torch.cat([onehot @ randn(4, 3, g=g), randn(60, 5, g=g)], dim=1)  # classes in span
    spec = feature_spectrum(phi, labels, randn(60, 4, g=g))
    assert float(spec.quality[-1]) == pytest.approx(1.0, abs=1e-10)
    # real-valued targets (n,) and (n, m) in the span
    t = phi @ randn(8, 2, g=g)
    assert float(feature_spectrum(phi, t, t).quality[-1]) == pytest.approx(1.0, abs=1e-10)
    assert float(feature_spectrum(phi, t[:, 0], t).quality[-1]) == pytest.approx(1.0, abs=1e-10)
    # targets orthogonal to the features (after centring) are not captured at all
    noise = randn(60, 1, g=g)
    phic = phi - phi.mean(0)
    resid = noise - phic @ torch.linalg.lstsq(phic, noise - noise.mean(0)).solution
    assert float(feature_spectrum(phi, resid, t).quality[-1]) == pytest.approx(0.0, abs=1e-10)


def test_effective_rank_of_isotropic_features():
    g = gen(10)
    n, p = 400, 16
    z = randn(n, p, g=g)
    q = torch.linalg.qr(z - z.mean(0))[0] * math.sqrt(n)  # centred orthonormal: covariance = I
    spec = feature_spectrum(q + 5.0, torch.arange(n) % 2, randn(n, 2, g=g))
    torch.testing.assert_close(spec.eigenvalues, torch.ones(p, dtype=F64))
    assert spec.effective_rank == pytest.approx(p, rel=1e-10)
    gauss = feature_spectrum(randn(20000, p, g=g), torch.arange(20000) % 2, randn(20000, 2, g=g))
    assert gauss.effective_rank == pytest.approx(p, rel=0.01)
    rank2 = randn(300, 2, g=g) @ randn(2, p, g=g)
    assert feature_spectrum(rank2, torch.arange(300) % 2, rank2[:, :2]).effective_rank <= 2.0


# ------------------------------------------------------------- degenerate input


def test_degenerate_d_lr_and_cka():
    g = gen(11)
    phi = randn(20, 5, g=g)
    assert math.isnan(d_lr(phi, torch.full((20, 3), 0.7)))  # outputs of rank 0
    assert math.isnan(d_lr(torch.full((20, 5), 1.3), randn(20, 3, g=g)))  # constant features
    assert math.isnan(linear_cka(phi, torch.ones(20, 2)))
    nonfinite = "features contains non-finite values \\(NaN or inf\\) \\(diverged checkpoint\\?\\)"
    with pytest.raises(ValueError, match=nonfinite):
        bad = phi.clone()
        bad[3, 1] = math.nan
        d_lr(bad, phi)
    with pytest.raises(NonFiniteError, match="outputs contains non-finite values"):
        d_lr(phi, torch.full((20, 2), math.inf))
    with pytest.raises(ValueError, match="outputs has 19 rows but features has 20"):
        d_lr(phi, phi[:19])
    with pytest.raises(ValueError, match="features must be 2-D"):
        d_lr(phi[:, 0], phi)
    with pytest.raises(ValueError, match="at least 2 rows"):
        d_lr(phi[:1], phi[:1])
    with pytest.raises(ValueError, match="b has 10 rows"):
        linear_cka(phi, phi[:10])


def test_degenerate_neural_collapse():
    g = gen(12)
    h, y, w, b = etf_features(num_classes=3, p=4, per_class=4, seed=12)
    with pytest.raises(ValueError, match="weight must have at least 2 rows"):
        neural_collapse(h, torch.zeros(12, dtype=torch.long), w[:1])
    with pytest.raises(ValueError, match="class 1 has no samples"):
        neural_collapse(h, torch.where(y == 1, 0, y), w)
    with pytest.raises(ValueError, match="fewer than the C = 3 classes"):
        neural_collapse(h[:2], y[:2], w)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        neural_collapse(h, y + 1, w)
    with pytest.raises(ValueError, match="labels must be an integer"):
        neural_collapse(h, y.double(), w)
    with pytest.raises(ValueError, match="labels has 11 entries"):
        neural_collapse(h, y[:11], w)
    with pytest.raises(ValueError, match="weight must be \\(C, 4\\)"):
        neural_collapse(h, y, w[:, :3])
    with pytest.raises(ValueError, match="bias must have shape \\(3,\\)"):
        neural_collapse(h, y, w, b[:2])
    with pytest.raises(NonFiniteError, match="features contains non-finite values"):
        neural_collapse(h * math.inf, y, w)
    # all class means equal: NC1 = inf (within-class spread, no between-class spread)
    same = randn(12, 4, g=g)
    same = same - torch.stack([same[y == k].mean(0) for k in range(3)])[y]
    nc = neural_collapse(same, y, w)
    assert nc["nc1"] == math.inf and math.isnan(nc["nc2_equinorm"]) and math.isnan(nc["nc3"])
    assert math.isnan(neural_collapse(torch.ones(12, 4), y, w)["nc1"])  # nothing varies


def test_degenerate_feature_spectrum():
    g = gen(13)
    spec = feature_spectrum(torch.ones(10, 3), torch.arange(10) % 2, randn(10, 2, g=g))
    assert bool((spec.eigenvalues == 0).all()) and math.isnan(spec.effective_rank)
    assert bool(spec.relative.isnan().all()) and bool((spec.quality == 0).all())
    phi = randn(10, 3, g=g)
    assert bool(
        feature_spectrum(phi, torch.arange(10) % 2, torch.ones(10, 2)).utilisation.isnan().all()
    )
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        feature_spectrum(phi, torch.arange(10) % 3, randn(10, 2, g=g))
    with pytest.raises(ValueError, match="targets has 9 rows"):
        feature_spectrum(phi, randn(9, 2, g=g), randn(10, 2, g=g))


# ------------------------------------------------------------- parameter norms


def test_parameter_norms_closed_form_and_errors():
    sd = {"a": torch.tensor([3.0, 4.0]), "b": torch.ones(2, 2), "steps": torch.tensor(7)}
    sd0 = {"a": torch.tensor([0.0, 4.0]), "b": torch.zeros(2, 2), "steps": torch.tensor(0)}
    assert parameter_norms(sd, sd0) == {"param_norm_sq": 29.0, "param_dist_sq": 13.0}
    assert math.isnan(parameter_norms(sd)["param_dist_sq"])
    with pytest.raises(ValueError, match="'b' is missing from init_state_dict"):
        parameter_norms(sd, {"a": sd0["a"]})
    with pytest.raises(ValueError, match="'c' is missing from state_dict"):
        parameter_norms(sd, {**sd0, "c": torch.ones(1)})
    with pytest.raises(ValueError, match="'b' has shape \\(2, 2\\) but \\(4,\\) at init"):
        parameter_norms(sd, {**sd0, "b": torch.zeros(4)})
    model = nn.Linear(3, 2)
    expected = float(sum(p.detach().double().square().sum() for p in model.parameters()))
    assert parameter_norms(model.state_dict())["param_norm_sq"] == pytest.approx(expected)


# ------------------------------------------------------------- one checkpoint


class Centred(nn.Module):
    """alpha * (f(x) - f0(x)): outputs exactly zero at init (the lazy-training wrapper).

    f0 is kept outside the module tree (as richviz.architectures keeps it in buffers), so the
    last registered nn.Linear is the trained network's own."""

    def __init__(self, net: nn.Module, alpha: float):
        super().__init__()
        self.net, self.alpha = net, alpha
        self._f0 = [copy.deepcopy(net).requires_grad_(False)]

    def forward(self, x):
        return self.alpha * (self.net(x) - self._f0[0](x))


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 3)
    )


@pytest.fixture(scope="module")
def probe():
    g = gen(14)
    y = torch.arange(90) % 3
    x = torch.randn(90, 6, generator=g) + 1.5 * torch.randn(3, 6, generator=g)[y]
    return x, y


def test_checkpoint_metrics_agree_with_pure_functions(probe):
    x, y = probe
    model, init = mlp(1), mlp(2).eval()
    model.train()
    got = checkpoint_metrics(model, x, y, init_model=init)
    assert tuple(got) == METRIC_KEYS and all(isinstance(v, float) for v in got.values())
    assert model.training and not init.training  # modes restored
    with torch.no_grad():
        feats, out = features_and_outputs(model, x)
        feats0, _ = features_and_outputs(init, x)
        logits = model(x)
    assert got["d_lr"] == pytest.approx(d_lr(feats, out), abs=1e-9)
    nc = neural_collapse(feats, y, model[4].weight, model[4].bias)
    for key, value in nc.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["cka_init"] == pytest.approx(similarity_to_init(feats, feats0), abs=1e-9)
    norms = parameter_norms(model.state_dict(), init.state_dict())
    assert got["param_norm_sq"] == pytest.approx(norms["param_norm_sq"])
    assert got["param_dist_sq"] == pytest.approx(norms["param_dist_sq"])
    eff = feature_spectrum(feats, y, out).effective_rank
    assert got["effective_rank"] == pytest.approx(eff, rel=1e-5)  # float32 eigensolvers
    assert got["probe_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    # batched forward: same numbers
    batched = checkpoint_metrics(model, x, y, init_model=init, batch_size=7)
    for key in METRIC_KEYS:
        assert batched[key] == pytest.approx(got[key], rel=1e-5, abs=1e-6), key


def test_checkpoint_metrics_init_and_wrappers(probe):
    x, y = probe
    model = mlp(3)
    alone = checkpoint_metrics(model, x, y)
    assert math.isnan(alone["cka_init"]) and math.isnan(alone["param_dist_sq"])
    same = checkpoint_metrics(model, x, y, init_model=copy.deepcopy(model))
    assert same["cka_init"] == pytest.approx(1.0, abs=1e-12) and same["param_dist_sq"] == 0.0
    # centred lazy model: output 0 at init, but D_LR uses the last Linear's own output
    lazy = checkpoint_metrics(Centred(mlp(3), alpha=100.0), x, y)
    assert lazy["d_lr"] == pytest.approx(alone["d_lr"], abs=1e-9)
    assert lazy["probe_acc"] == pytest.approx(float((y == 0).float().mean()))  # argmax of zeros
    # features of a hidden layer (width 24 != classifier input 16): NC3/NC4 undefined
    hidden = checkpoint_metrics(model, x, y, layer="1")
    assert math.isnan(hidden["nc3"]) and math.isnan(hidden["nc4"]) and hidden["nc1"] > 0
    with torch.no_grad():
        f1 = model[:2](x)
    assert hidden["d_lr"] == pytest.approx(d_lr(f1, model(x)), abs=1e-9)


def test_checkpoint_metrics_diverged_and_bad_input(probe):
    x, y = probe
    model = mlp(4)
    with torch.no_grad():
        model[2].weight.fill_(math.nan)
    got = checkpoint_metrics(model, x, y, init_model=mlp(4))  # must not raise
    for key in ("d_lr", "nc1", "nc2_equinorm", "nc3", "nc4", "cka_init", "effective_rank"):
        assert math.isnan(got[key]), key
    assert math.isnan(got["param_norm_sq"]) and math.isnan(got["probe_acc"])
    # a probe set missing a class: NC undefined (nan), everything else still computed
    partial = checkpoint_metrics(mlp(4), x, y % 2)
    assert all(math.isnan(partial[k]) for k in ("nc1", "nc2_equinorm", "nc3", "nc4"))
    assert 0 < partial["d_lr"] < 1 and partial["effective_rank"] > 1
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        checkpoint_metrics(mlp(4), x, y + 1)
    with pytest.raises(ValueError, match="y must be \\(n,\\) labels"):
        checkpoint_metrics(mlp(4), x, y[:5])
    with pytest.raises(ValueError, match="no nn.Linear"):
        checkpoint_metrics(nn.Sequential(nn.Flatten()), x, y)


def test_matmul_precision_setting_is_restored():
    # float32 Gram products run with TF32/bf16 off, and the user's setting comes back
    g = gen(16)
    a, b = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        value = linear_cka(a, b)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)
    assert value == pytest.approx(ref_cka(a, b), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(probe):
    x, y = probe
    model, init = mlp(5), mlp(6)
    cpu = checkpoint_metrics(model, x, y, init_model=init)
    gpu = checkpoint_metrics(model.cuda(), x, y, init_model=init.cuda())
    for key in METRIC_KEYS:
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4, abs=1e-5), key


def test_lazy_and_rich_training_separate_at_equal_accuracy():
    # lazy vs rich in miniature: the output scale alpha of Chizat et al. (lr / alpha^2) on digits.
    # Rich (alpha = 1) training lowers D_LR and NC1 and moves the kernel; lazy (alpha = 100)
    # reaches the same accuracy with D_LR and the kernel unchanged.
    from sklearn.datasets import load_digits

    xs, ys = load_digits(return_X_y=True)
    x, y = torch.tensor(xs[:400] / 16.0, dtype=torch.float32), torch.tensor(ys[:400])
    target = torch.nn.functional.one_hot(y, 10).float()
    result = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 800 tiny full-batch steps: threading only adds overhead
    try:
        for alpha in (1.0, 100.0):
            result[alpha] = train_centred(x, y, target, alpha)
    finally:
        torch.set_num_threads(threads)
    (rich0, rich, rich_ref), (lazy0, lazy, lazy_ref) = result[1.0], result[100.0]

    assert rich["probe_acc"] > 0.9 and lazy["probe_acc"] > 0.9
    # the values: an independent n x n kernel D_LR of an explicit forward pass
    for got, ref in (
        (rich0, rich_ref[0]),
        (rich, rich_ref[1]),
        (lazy0, lazy_ref[0]),
        (lazy, lazy_ref[1]),
    ):
        assert got["d_lr"] == pytest.approx(ref, abs=1e-6)
    assert rich0["d_lr"] == pytest.approx(lazy0["d_lr"])  # same network at init
    # the claims, relative to each other (no thresholds read off this code's output): rich
    # training lowers D_LR and NC1 and moves the kernel; lazy training (features move
    # O(1/alpha)) changes them at least 10x less
    assert rich["d_lr"] < rich0["d_lr"] and rich["nc1"] < rich0["nc1"]
    assert abs(lazy["d_lr"] - lazy0["d_lr"]) < 0.1 * (rich0["d_lr"] - rich["d_lr"])
    assert abs(lazy["nc1"] / lazy0["nc1"] - 1) < 0.1 * (1 - rich["nc1"] / rich0["nc1"])
    assert 1 - lazy["cka_init"] < 0.1 * (1 - rich["cka_init"])
    assert rich["param_dist_sq"] > 0 and lazy["param_dist_sq"] > 0


def train_centred(x, y, target, alpha: float, steps: int = 400):
    """Full-batch SGD (MSE, lr 0.05 / alpha^2) of a centred tanh MLP; metrics before/after and
    the reference D_LR (n x n kernel form) of features net[:4](x), outputs net(x) before/after."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )
    model = Centred(net, alpha)
    init = copy.deepcopy(model)
    before = checkpoint_metrics(model, x, y, init_model=init)
    with torch.no_grad():
        ref_before = ref_d_lr(net[:4](x), net(x))
    opt = torch.optim.SGD(net.parameters(), lr=0.05 / alpha**2)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - target) ** 2).sum(1).mean().backward()
        opt.step()
    with torch.no_grad():
        ref_after = ref_d_lr(net[:4](x), net(x))
    return before, checkpoint_metrics(model, x, y, init_model=init), (ref_before, ref_after)


def test_checkpoint_metrics_integer_inputs_and_batchnorm():
    # modular-addition style model: token pairs -> embedding -> MLP; BatchNorm in train mode
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Embedding(11, 8),
        nn.Flatten(),
        nn.Linear(16, 24),
        nn.BatchNorm1d(24),
        nn.ReLU(),
        nn.Linear(24, 11),
    )
    x = torch.stack(torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij"), -1)
    x = x.reshape(-1, 2)
    y = x.sum(1) % 11
    got = checkpoint_metrics(model, x, y, init_model=copy.deepcopy(model), batch_size=50)
    assert model.training  # restored after the eval-mode forward
    with torch.no_grad():
        model.eval()
        feats, out = features_and_outputs(model, x)
    assert got["d_lr"] == pytest.approx(d_lr(feats, out), abs=1e-9)
    assert got["cka_init"] == pytest.approx(1.0, abs=1e-9) and got["param_dist_sq"] == 0.0
    assert all(math.isfinite(got[k]) for k in METRIC_KEYS)
