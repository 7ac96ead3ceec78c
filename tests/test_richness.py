"""D_LR's two factors: confinement x isotropy = 1 - D_LR, on constructed features with closed
forms, against an independent n x n kernel computation, invariances, and checkpoint_metrics's
``outputs`` option (the last Linear's output vs the learned function alpha * (f - f0))."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from richviz.architectures import Centered
from richviz.features import features_and_outputs
from richviz.metrics import METRIC_KEYS, Richness, checkpoint_metrics, d_lr, richness

F64 = torch.float64
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def centred_orthonormal(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """(n, k) orthonormal columns, each orthogonal to the all-ones vector (already centred)."""
    m = torch.cat([torch.ones(n, 1, dtype=F64), torch.randn(n, k, generator=g, dtype=F64)], 1)
    return torch.linalg.qr(m)[0][:, 1:]


def orthogonal(p: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


def ref_factors(phi: torch.Tensor, f: torch.Tensor) -> tuple[float, float, float]:
    """Independent n x n computation: (CKA, |P K P|_F / |K|_F, CKA / confinement)."""
    phi, f = np.asarray(phi, dtype=np.float64), np.asarray(f, dtype=np.float64)
    n = len(phi)
    h = np.eye(n) - np.ones((n, n)) / n
    k = h @ phi @ phi.T @ h
    lam, vec = np.linalg.eigh(h @ f @ f.T @ h)
    keep = lam > 1e-12 * lam.max()
    proj = vec[:, keep] @ vec[:, keep].T
    cka = float(np.sum(k * proj) / (np.linalg.norm(k) * np.linalg.norm(proj)))
    conf = float(np.linalg.norm(proj @ k @ proj) / np.linalg.norm(k))
    return cka, conf, cka / conf


# ------------------------------------------------------------- constructed features


def test_collapsed_simplex_is_fully_confined_and_isotropic():
    # every sample at its class mean, means a simplex ETF; outputs = an aligned classifier
    g = gen(0)
    c, p, per_class = 5, 12, 8
    basis = torch.linalg.qr(torch.randn(p, c, generator=g, dtype=F64))[0]
    etf = math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=F64) - 1.0 / c) @ basis.T  # (C, p)
    labels = torch.arange(c).repeat(per_class)
    h = torch.randn(p, generator=g, dtype=F64) + etf[labels]
    out = h @ (3.0 * etf).T + 0.7
    got = richness(h, out)
    assert isinstance(got, Richness) and got.rank == c - 1
    assert got.confinement == pytest.approx(1.0, abs=1e-12)
    assert got.isotropy == pytest.approx(1.0, abs=1e-12)
    assert got.d_lr == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("energies", [(4.0, 1.0, 1.0), (9.0, 4.0, 1.0, 0.25), (1.0, 1.0, 0.0)])
def test_anisotropic_features_inside_the_output_span(energies):
    # Phic = Q diag(s) R^T with Q spanning the outputs: A = diag(s^2), so confinement = 1 and
    # isotropy = sum s^2 / (sqrt(r) sqrt(sum s^4)) (closed form); sqrt(k / r) when the energy
    # spreads evenly over k of the r directions.
    g = gen(1)
    n, p = 60, 9
    e = torch.tensor(energies, dtype=F64)
    r = len(e)
    q = centred_orthonormal(n, r, g)
    rot = orthogonal(p, g)[:r]  # (r, p) orthonormal rows
    phi = q @ torch.diag(e.sqrt()) @ rot + 2.0
    out = q @ torch.randn(r, r, generator=g, dtype=F64) - 1.0  # invertible mixing, same span
    got = richness(phi, out)
    expected = float(e.sum() / (math.sqrt(r) * e.square().sum().sqrt()))
    assert got.rank == r
    assert got.confinement == pytest.approx(1.0, abs=1e-12)
    assert got.isotropy == pytest.approx(expected, abs=1e-12) and got.isotropy < 1.0
    assert got.d_lr == pytest.approx(1.0 - expected, abs=1e-12)
    if energies == (1.0, 1.0, 0.0):
        assert got.isotropy == pytest.approx(math.sqrt(2 / 3), abs=1e-12)


def test_partly_confined_features_closed_form():
    # K has eigenvalues a (inside span(Fc)) and b (orthogonal to it):
    # confinement = |a|_2 / sqrt(|a|^2 + |b|^2), isotropy = sum a / (sqrt(r) |a|_2)
    g = gen(2)
    n, p = 80, 10
    a = torch.tensor([3.0, 2.0], dtype=F64)
    b = torch.tensor([5.0, 1.0, 0.5], dtype=F64)
    q = centred_orthonormal(n, 5, g)
    q_in, q_out = q[:, :2], q[:, 2:]
    rot = orthogonal(p, g)
    phi = q_in @ torch.diag(a.sqrt()) @ rot[:2] + q_out @ torch.diag(b.sqrt()) @ rot[2:5]
    out = q_in @ torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=F64)
    got = richness(phi, out)
    conf = float(a.norm() / torch.cat([a, b]).norm())
    iso = float(a.sum() / (math.sqrt(2) * a.norm()))
    assert got.confinement == pytest.approx(conf, abs=1e-12)
    assert got.isotropy == pytest.approx(iso, abs=1e-12)
    assert got.d_lr == pytest.approx(1.0 - conf * iso, abs=1e-12)
    assert got.d_lr == pytest.approx(d_lr(phi, out), abs=0.0)


def test_features_orthogonal_to_the_outputs():
    g = gen(3)
    q = centred_orthonormal(50, 7, g)
    phi = q[:, :4] @ torch.randn(4, 6, generator=g, dtype=F64)
    out = q[:, 4:] @ torch.randn(3, 3, generator=g, dtype=F64)
    got = richness(phi, out)
    assert got.confinement == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(got.isotropy)  # nothing inside the span to spread
    assert got.d_lr == pytest.approx(1.0, abs=1e-12)


def test_degenerate_richness_is_nan():
    g = gen(4)
    phi = torch.randn(20, 5, generator=g, dtype=F64)
    got = richness(phi, torch.full((20, 3), 0.7))
    assert math.isnan(got.d_lr) and math.isnan(got.confinement) and math.isnan(got.isotropy)
    assert got.rank == 0
    with pytest.raises(ValueError, match="outputs has 19 rows"):
        richness(phi, phi[:19])


# ------------------------------------------------------------- identity and references


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(6, 40),
    p=st.integers(1, 30),
    c=st.integers(1, 8),
)
def test_product_identity_and_n_by_n_reference(seed, n, p, c):
    g = gen(seed)
    phi = torch.randn(n, p, generator=g, dtype=F64) * torch.rand(p, generator=g, dtype=F64)
    f = phi @ torch.randn(p, c, generator=g, dtype=F64) + torch.randn(n, c, generator=g, dtype=F64)
    got = richness(phi, f)
    assert got.d_lr == d_lr(phi, f)  # d_lr unchanged, bit for bit
    assert 1.0 - got.d_lr == pytest.approx(got.confinement * got.isotropy, abs=1e-12)
    assert 0.0 <= got.confinement <= 1.0 and 0.0 <= got.isotropy <= 1.0
    cka, conf, iso = ref_factors(phi, f)
    assert got.d_lr == pytest.approx(1.0 - cka, abs=1e-10)
    assert got.confinement == pytest.approx(conf, abs=1e-10)
    assert got.isotropy == pytest.approx(iso, abs=1e-10)


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-10, 10),
)
def test_factor_invariances(seed, scale, shift):
    g = gen(seed)
    n, p, c = 30, 8, 4
    phi = torch.randn(n, p, generator=g, dtype=F64) * torch.linspace(0.2, 2.0, p, dtype=F64)
    f = phi[:, :3] @ torch.randn(3, c, generator=g, dtype=F64) + 0.5 * torch.randn(
        n, c, generator=g, dtype=F64
    )
    base = richness(phi, f)
    mix = torch.randn(c, c, generator=g, dtype=F64) + 3 * torch.eye(c, dtype=F64)
    for other in (
        richness(phi @ orthogonal(p, g), f),
        richness(scale * phi + shift, f),
        richness(phi, scale * f @ mix + shift),
    ):
        assert other.confinement == pytest.approx(base.confinement, abs=1e-9)
        assert other.isotropy == pytest.approx(base.isotropy, abs=1e-9)
        assert other.rank == base.rank


def test_float32_features_agree_with_float64():
    g = gen(5)
    phi = torch.randn(300, 40, generator=g, dtype=F64)
    f = phi @ torch.randn(40, 10, generator=g, dtype=F64)
    f = f + torch.randn(300, 10, generator=g, dtype=F64)
    a, b = richness(phi, f), richness(phi.float(), f.float())
    assert b.confinement == pytest.approx(a.confinement, abs=1e-5)
    assert b.isotropy == pytest.approx(a.isotropy, abs=1e-5)
    assert 1.0 - b.d_lr == pytest.approx(b.confinement * b.isotropy, abs=1e-12)


# ------------------------------------------------------------- checkpoint_metrics


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


def nudge(model: nn.Module, seed: int = 0) -> None:
    """Move every parameter a little (a stand-in for training steps)."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_checkpoint_metrics_has_both_factors(probe):
    x, y = probe
    model = mlp(1)
    got = checkpoint_metrics(model, x, y)
    assert METRIC_KEYS[:3] == ("d_lr", "confinement", "isotropy")
    with torch.no_grad():
        feats, out = features_and_outputs(model, x)
    ref = richness(feats, out)
    assert got["d_lr"] == pytest.approx(ref.d_lr, abs=1e-12)
    assert got["confinement"] == pytest.approx(ref.confinement, abs=1e-12)
    assert got["isotropy"] == pytest.approx(ref.isotropy, abs=1e-12)


def test_learned_outputs_of_a_centered_model(probe):
    x, y = probe
    alpha = 50.0
    model = Centered(mlp(2), alpha)
    init = copy.deepcopy(model)
    at_init = checkpoint_metrics(model, x, y, init_model=init, outputs="learned")
    for key in ("d_lr", "confinement", "isotropy"):
        assert math.isnan(at_init[key]), key  # alpha * (f - f0) = 0 at step 0
    assert math.isfinite(at_init["nc1"]) and at_init["cka_init"] == pytest.approx(1.0)

    nudge(model.net)
    inner = checkpoint_metrics(model, x, y, init_model=init)
    learned = checkpoint_metrics(model, x, y, init_model=init, outputs="learned")
    with torch.no_grad():
        feats, f = features_and_outputs(model, x)
        g = model(x)
        f0 = init.net(x)
    assert torch.allclose(g, alpha * (f - f0), atol=1e-4)
    ref_inner, ref_learned = richness(feats, f), richness(feats, g)
    assert inner["d_lr"] == pytest.approx(ref_inner.d_lr, abs=1e-9)
    assert learned["d_lr"] == pytest.approx(ref_learned.d_lr, abs=1e-9)
    assert learned["confinement"] == pytest.approx(ref_learned.confinement, abs=1e-9)
    assert learned["isotropy"] == pytest.approx(ref_learned.isotropy, abs=1e-9)
    assert abs(learned["d_lr"] - inner["d_lr"]) > 1e-3  # a different function
    # everything else does not depend on the choice
    for key in METRIC_KEYS[3:]:
        assert learned[key] == pytest.approx(inner[key], nan_ok=True), key


def test_learned_outputs_of_a_plain_model_need_init(probe):
    x, y = probe
    model, init = mlp(3), mlp(3)
    same = checkpoint_metrics(model, x, y, init_model=init, outputs="learned")
    assert math.isnan(same["d_lr"])  # f - f0 = 0 at initialisation
    nudge(model, seed=1)
    got = checkpoint_metrics(model, x, y, init_model=init, outputs="learned")
    with torch.no_grad():
        feats, _ = features_and_outputs(model, x)
        diff = model(x).double() - init(x).double()
    assert got["d_lr"] == pytest.approx(richness(feats, diff).d_lr, abs=1e-9)
    with pytest.raises(ValueError, match="needs init_model"):
        checkpoint_metrics(model, x, y, outputs="learned")
    with pytest.raises(ValueError, match="outputs='last'"):
        checkpoint_metrics(model, x, y, outputs="last")
