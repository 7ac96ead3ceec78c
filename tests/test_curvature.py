"""Curvature of the pulled-back metric: closed forms, finite differences, Gauss equation, theory."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn
from torch.func import hessian, jacfwd, jacrev

from richviz.geometry import Slice, pullback_metric_at
from richviz.geometry.curvature import (
    CurvatureField,
    brioschi,
    gaussian_curvature_at,
    scalar_curvature,
    second_order_jets,
)
from richviz.theory import infinite_width_metric, random_two_layer_network

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def sphere(rho: float, pad: int = 0):
    """(theta, phi) -> rho * (sin t cos f, sin t sin f, cos t), plus ``pad`` zero features."""

    def phi(x: torch.Tensor) -> torch.Tensor:
        t, f = x[:, 0], x[:, 1]
        pts = [torch.sin(t) * torch.cos(f), torch.sin(t) * torch.sin(f), torch.cos(t)]
        out = rho * torch.stack(pts, 1)
        return torch.cat([out, torch.zeros(x.shape[0], pad, dtype=x.dtype)], 1)

    return phi


def away_from_poles(dtype=F64) -> Slice:
    # theta in [0.35, 2.75]: sin(theta) >= 0.34, well away from the poles 0 and pi
    return Slice.square(torch.tensor([1.55, 0.3], dtype=dtype), 1.2)


def tanh_mlp(seed: int = 0, d: int = 2, width: int = 24, p: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(d, width), nn.Tanh(), nn.Linear(width, p), nn.Tanh(), nn.Linear(p, 3)
    )
    return net.double().eval()


# ---------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(("rho", "pad"), [(1.0, 0), (1.7, 0), (0.4, 2)])
def test_sphere_has_constant_curvature_p_over_rho_squared(rho, pad):
    # g = J^T J / p is the round metric of radius rho / sqrt(p), so K = p / rho^2
    p = 3 + pad
    cf = scalar_curvature(sphere(rho, pad), away_from_poles(), resolution=17)
    assert isinstance(cf, CurvatureField) and cf.p == p
    exact = p / rho**2
    rel = (cf.gaussian / exact - 1).abs().max().item()
    assert rel < 1e-9  # the acceptance bar is 1e-3; float64 AD is exact to rounding
    assert torch.equal(cf.scalar, 2 * cf.gaussian)
    assert not cf.degenerate.any()


def test_sphere_float32_and_pointwise():
    exact = 3 / 1.3**2
    cf32 = scalar_curvature(sphere(1.3), away_from_poles(torch.float32), resolution=9)
    assert cf32.gaussian.dtype == F64
    assert (cf32.gaussian / exact - 1).abs().max().item() < 1e-4
    pts = torch.tensor([[0.5, 0.0], [1.0, 2.0], [2.5, -3.0]], dtype=F64)
    k = gaussian_curvature_at(sphere(1.3), pts)
    assert torch.allclose(k, torch.full((3,), exact, dtype=F64), rtol=1e-10, atol=0)


def test_graph_surface_closed_form_and_grid_convention():
    # f = (u, v, h(u, v)): K_euclid = (h_uu h_vv - h_uv^2) / (1 + h_u^2 + h_v^2)^2; K = 3 K_euclid
    def phi(x):
        u, v = x[:, 0], x[:, 1]
        return torch.stack([u, v, torch.sin(u) + 0.5 * v**2 + 0.3 * u * v], 1)

    s = Slice.square(torch.tensor([0.2, -0.1], dtype=F64), 1.5)
    cf = scalar_curvature(phi, s, resolution=13)
    vv, uu = torch.meshgrid(cf.v, cf.u, indexing="ij")  # [i, j] = (v[i], u[j])
    hu, hv = torch.cos(uu) + 0.3 * vv, vv + 0.3 * uu
    k = 3 * (-torch.sin(uu) * 1.0 - 0.09) / (1 + hu**2 + hv**2) ** 2
    assert torch.allclose(cf.gaussian, k, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(cf.gaussian, k.T, rtol=1e-3)  # the convention matters here
    # the metric returned alongside is G = (J E)^T (J E) / p
    g = torch.stack([1 + hu**2, hu * hv, hu * hv, 1 + hv**2], -1).reshape(13, 13, 2, 2) / 3
    assert torch.allclose(cf.metric, g, rtol=1e-12, atol=1e-14)


def test_linear_maps_and_cylinder_are_flat():
    torch.manual_seed(0)
    lin = nn.Linear(2, 7).double()
    s = Slice.square(torch.zeros(2, dtype=F64), 2.0)
    assert scalar_curvature(lin, s, resolution=9, layer="logits").gaussian.abs().max() < 1e-8
    w = torch.randn(5, 2, dtype=F64)
    assert scalar_curvature(lambda x: x @ w.T, s, resolution=9).gaussian.abs().max() < 1e-8

    def cylinder(x):
        u, v = x[:, 0], x[:, 1]
        return torch.stack([1.3 * torch.cos(u), 1.3 * torch.sin(u), v], 1)

    k = scalar_curvature(cylinder, s, resolution=15).gaussian
    assert k.abs().max() < 1e-8
    # a sheared, rescaled cylinder is still flat (F != 0 and E, G vary)
    a = torch.tensor([[1.0, 0.7], [-0.4, 2.0]], dtype=F64)
    k = scalar_curvature(lambda x: cylinder(x @ a.T), s, resolution=15).gaussian
    assert k.abs().max() < 1e-8


def test_plane_slice_of_higher_dimensional_input():
    # x (N, 1, 2, 2) -> A x in R^2 -> sphere: the slice's surface is a patch of the sphere
    torch.manual_seed(1)
    a = torch.randn(2, 4, dtype=F64) * 0.3
    sph = sphere(2.0)

    def phi(x):
        y = x.reshape(x.shape[0], -1) @ a.T + torch.tensor([1.5, 0.0], dtype=F64)
        return sph(y)

    x0, x1, x2 = torch.randn(3, 1, 2, 2, dtype=F64)
    s = Slice.plane(x0, x1, x2)
    cf = scalar_curvature(phi, s, resolution=7)
    assert (cf.gaussian / (3 / 4.0) - 1).abs().max() < 1e-8
    pts = s.to_input(torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=F64), dtype=F64)
    k = gaussian_curvature_at(phi, pts, basis=s.basis)
    assert torch.allclose(k, torch.full((2,), 0.75, dtype=F64), rtol=1e-8)


def test_degenerate_metric_gives_nan():
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    cf = scalar_curvature(lambda x: torch.stack([x[:, 0], 2 * x[:, 0]], 1), s, resolution=5)
    assert cf.degenerate.all() and torch.isnan(cf.scalar).all()
    # a rank-1 point only: phi = (u, v * u) is degenerate on u = 0
    cf = scalar_curvature(lambda x: torch.stack([x[:, 0], x[:, 1] * x[:, 0]], 1), s, 5)
    assert cf.degenerate[:, 2].all() and not cf.degenerate[:, [0, 1, 3, 4]].any()


# --------------------------------------------------------------------- independent methods


def gauss_equation_curvature(phi, x: torch.Tensor) -> float:
    """K at one 2-D point by the Gauss equation, from full reverse/forward Jacobians:
    K = (<N f_uu, N f_vv> - |N f_uv|^2) / det G, N = projector onto the normal space."""

    def f(y):
        return phi(y[None])[0]

    p = f(x).shape[0]
    j = jacrev(f)(x) / math.sqrt(p)  # (p, 2)
    h = hessian(f)(x) / math.sqrt(p)  # (p, 2, 2)
    q, _ = torch.linalg.qr(j)
    normal = torch.eye(p, dtype=x.dtype) - q @ q.T
    n11, n12, n22 = normal @ h[:, 0, 0], normal @ h[:, 0, 1], normal @ h[:, 1, 1]
    return float(((n11 @ n22 - n12 @ n12) / torch.linalg.det(j.T @ j)).detach())


def fd_brioschi(phi, x: torch.Tensor, h: float = 1e-3) -> float:
    """K at one 2-D point from the metric (the existing field code) on a 3x3 stencil."""
    offs = torch.tensor([[a, b] for b in (-h, 0, h) for a in (-h, 0, h)], dtype=F64)
    g = pullback_metric_at(phi, x[None] + offs)  # (9, 2, 2), index (b, a) row-major
    efg = torch.stack([g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]]).reshape(3, 3, 3)  # [k, v, u]
    c = efg[:, 1, 1]
    du = (efg[:, 1, 2] - efg[:, 1, 0]) / (2 * h)
    dv = (efg[:, 2, 1] - efg[:, 0, 1]) / (2 * h)
    duu = (efg[:, 1, 2] - 2 * c + efg[:, 1, 0]) / h**2
    dvv = (efg[:, 2, 1] - 2 * c + efg[:, 0, 1]) / h**2
    duv = (efg[:, 2, 2] - efg[:, 2, 0] - efg[:, 0, 2] + efg[:, 0, 0]) / (4 * h**2)
    s = -dvv[0] / 2 + duv[1] - duu[2] / 2
    k = brioschi(c[0], c[1], c[2], du[0], dv[0], du[1], dv[1], du[2], dv[2], s)
    return float(k)


def test_ad_matches_finite_differences_and_gauss_equation():
    net = tanh_mlp()
    s = Slice.square(torch.zeros(2, dtype=F64), 1.5)
    cf = scalar_curvature(net, s, resolution=5)
    assert cf.gaussian.abs().max() > 1e-2  # a genuinely curved metric
    scale = cf.gaussian.abs().max().item()
    uv = s.grid_uv(5)
    for k_ad, pt in zip(cf.gaussian.reshape(-1).tolist(), uv, strict=True):
        assert abs(fd_brioschi(net, pt) - k_ad) < 1e-5 * scale  # O(h^2) + O(eps / h^2)
        assert abs(gauss_equation_curvature(net[:4], pt) - k_ad) < 1e-9 * scale  # features


def test_jets_match_jacobian_and_hessian():
    net = tanh_mlp(seed=3)
    x = torch.randn(4, 2, dtype=F64)
    basis = torch.tensor([[0.6, 0.8], [-0.3, 1.1]], dtype=F64)  # not orthonormal
    first, second = second_order_jets(net[:4], x, basis)
    for n in range(4):
        j = jacfwd(lambda y: net[:4](y[None])[0])(x[n])
        h = hessian(lambda y: net[:4](y[None])[0])(x[n])
        assert torch.allclose(first[:, n], (j @ basis.T).T, atol=1e-13)
        hb = torch.einsum("pij,ai,bj->abp", h, basis, basis)
        want = torch.stack([hb[0, 0], hb[0, 1], hb[1, 1]])
        assert torch.allclose(second[:, n], want, atol=1e-12)


# ---------------------------------------------------------------------- infinite width


def erf_theory_curvature(x: torch.Tensor, s: float = 1.0, z: float = 1.0) -> torch.Tensor:
    """K of the closed-form erf metric g = (2 s^2/pi) q^{-1/2} (I - 2 s^2 x x^T / q),
    q = 1 + 2 z^2 + 2 s^2 |x|^2, by autograd on the formula and Brioschi."""

    def g(y):
        q = 1 + 2 * z**2 + 2 * s**2 * (y * y).sum()
        return (
            (2 * s**2 / math.pi)
            * q**-0.5
            * (torch.eye(2, dtype=y.dtype) - 2 * s**2 * torch.outer(y, y) / q)
        )

    def efg(y):
        m = g(y)
        return torch.stack([m[0, 0], m[0, 1], m[1, 1]])

    # the formula is the library's theory metric
    ref = infinite_width_metric(x, "erf", s, z)
    assert torch.allclose(torch.stack([g(y) for y in x]), ref, rtol=1e-12, atol=1e-15)
    out = []
    for y in x:
        (E, F, G), d1, d2 = efg(y), jacfwd(efg)(y), hessian(efg)(y)
        S = -d2[0, 1, 1] / 2 + d2[1, 0, 1] - d2[2, 0, 0] / 2
        out.append(brioschi(E, F, G, d1[0, 0], d1[0, 1], d1[1, 0], d1[1, 1], d1[2, 0], d1[2, 1], S))
    return torch.stack(out)


def test_wide_random_erf_net_approaches_theory_curvature():
    # At width p, g and its derivatives are means of p i.i.d. terms: K fluctuates by O(1/sqrt p).
    # Measured over 10 seeds at these points (error / max|K_theory|): mean 5.8/sqrt(p) at
    # p = 2000, 6.0/sqrt(p) at 20000, 5.7/sqrt(p) at 80000 (max over seeds < 19/sqrt(p)).
    pts = torch.tensor([[0.0, 0.0], [0.5, 0.2], [-1.0, 0.7], [1.5, -1.0], [0.3, -2.0]], dtype=F64)
    kt = erf_theory_curvature(pts)
    assert kt[0].abs() < 1e-12 and (kt[1:] < -0.1).all()  # K(0) = 0, negative elsewhere
    scale = kt.abs().max().item()

    def mean_error(width: int) -> float:
        errs = []
        for seed in range(4):
            net = random_two_layer_network(2, width, "erf", dtype=F64, seed=seed)
            errs.append((gaussian_curvature_at(net, pts) - kt).abs().max().item() / scale)
        return statistics.mean(errs)

    e_small, e_wide = mean_error(2000), mean_error(20000)
    assert e_wide < 12 / math.sqrt(20000)  # twice the measured mean constant: 8.5 %
    assert e_wide < e_small / 2  # converges (1/sqrt(p) predicts a factor 3.2)


# ---------------------------------------------------------------- API, modes, validation


def test_chunks_progress_dtype_copy_and_modes():
    net = tanh_mlp().float()
    net.train()
    net[1].eval()  # mixed flags must come back exactly
    s = Slice.square(torch.zeros(2), 1.0)
    calls = []
    full = scalar_curvature(net, s, resolution=7, dtype=F64)
    chunked = scalar_curvature(
        net, s, resolution=7, chunk_size=5, dtype=F64, progress=lambda d, t: calls.append((d, t))
    )
    assert torch.allclose(full.gaussian, chunked.gaussian, rtol=1e-12, atol=1e-12)
    assert calls[-1] == (49, 49) and len(calls) == 10
    assert net[0].weight.dtype == torch.float32  # the float64 copy left the model alone
    assert net.training and net[0].training and not net[1].training
    net64 = tanh_mlp()
    ref = scalar_curvature(net64, Slice.square(torch.zeros(2, dtype=F64), 1.0), resolution=7)
    assert torch.allclose(full.gaussian, ref.gaussian, rtol=1e-5)  # float32 weights, rounded
    f32 = scalar_curvature(net, s, resolution=7)  # computed in float32
    err = (f32.gaussian - ref.gaussian).abs().max() / ref.gaussian.abs().max()
    assert err < 1e-3


def test_validation_errors():
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="resolution"):
        scalar_curvature(sphere(1.0), s, resolution=1)
    with pytest.raises(ValueError, match="chunk_size"):
        scalar_curvature(sphere(1.0), s, resolution=3, chunk_size=0)
    with pytest.raises(ValueError, match="progress"):
        scalar_curvature(sphere(1.0), s, resolution=3, progress="yes")
    with pytest.raises(ValueError, match="non-finite"):
        gaussian_curvature_at(sphere(1.0), torch.tensor([[math.nan, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="basis is required"):
        gaussian_curvature_at(sphere(1.0), torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="basis must have shape"):
        gaussian_curvature_at(sphere(1.0), torch.zeros(2, 2, dtype=F64), basis=torch.eye(3))
    with pytest.raises(TypeError, match="phi"):
        scalar_curvature(42, s, resolution=3)
