"""Volume element and curvature against exact closed forms (float64), no published code involved.

Each check would fail if richviz's value were off by any constant factor: the tolerances are
1e-8 relative or tighter, the points have K (or the volume) well away from zero, and every test
also asserts that the closed form times 1/3, 1/2, 2 or 3 is rejected by the same tolerance.

* graph surface ``phi(u, v) = (u, v, f(u, v))``: Euclidean Gaussian curvature
  ``(f_uu f_vv - f_uv^2) / (1 + f_u^2 + f_v^2)^2``; with ``g = J^T J / p`` richviz's K is
  ``p`` times it (p = 3, or more with zero features appended);
* one hidden layer ``phi(x) = sigma(W x + b)``, 2-D input: Cauchy-Binet,
  ``det(J^T J) = sum_{i<j} sigma'_i^2 sigma'_j^2 (W_i1 W_j2 - W_i2 W_j1)^2``;
* one hidden layer: ``T_abc = d_a g_bc = (2/p) sum_i sigma'_i sigma''_i W_ia W_ib W_ic`` is
  totally symmetric, the second derivatives of g drop out of R, and
  ``R = 2 K = (|T|^2 - |tau|^2) / 4`` with ``tau_a = g^{bc} T_abc`` (indices raised with g);
* Gauss equation ``K = (<N f_uu, N f_vv> - |N f_uv|^2) / det G`` with N the projector onto the
  normal space, from ``torch.autograd.functional`` Jacobians and Hessians.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian

from richviz.geometry import Slice, pullback_metric
from richviz.geometry.curvature import gaussian_curvature_at, scalar_curvature

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
WRONG_FACTORS = (1 / 3, 1 / 2, 2.0, 3.0)


def assert_exact_and_factor_sensitive(got: torch.Tensor, want: torch.Tensor, rtol: float):
    """``got == want`` to ``rtol`` (relative, elementwise), and no constant factor would pass."""
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    err = ((got - want).abs() / want.abs()).max().item()
    assert err < rtol, err
    for c in WRONG_FACTORS:
        assert ((c * want - want).abs() / want.abs()).min().item() > 1e3 * rtol
        assert not torch.allclose(got, c * want, rtol=rtol, atol=0)


# ------------------------------------------------------------------------- graph surface


def f_graph(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return 0.7 * torch.sin(1.3 * u) * torch.cos(0.8 * v) + 0.2 * u**2 * v


def graph_euclidean_k(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(f_uu f_vv - f_uv^2) / (1 + f_u^2 + f_v^2)^2 with the derivatives written out."""
    su, cu, sv, cv = torch.sin(1.3 * u), torch.cos(1.3 * u), torch.sin(0.8 * v), torch.cos(0.8 * v)
    fu = 0.7 * 1.3 * cu * cv + 0.4 * u * v
    fv = -0.7 * 0.8 * su * sv + 0.2 * u**2
    fuu = -0.7 * 1.69 * su * cv + 0.4 * v
    fvv = -0.7 * 0.64 * su * cv
    fuv = -0.7 * 1.04 * cu * sv + 0.4 * u
    return (fuu * fvv - fuv**2) / (1 + fu**2 + fv**2) ** 2


def graph_map(pad: int = 0):
    def phi(x: torch.Tensor) -> torch.Tensor:
        u, v = x[:, 0], x[:, 1]
        out = torch.stack([u, v, f_graph(u, v)], 1)
        return torch.cat([out, torch.zeros(x.shape[0], pad, dtype=x.dtype)], 1)

    return phi


GRAPH_POINTS = torch.tensor(
    [[1.0, 0.3], [-0.5, 0.8], [0.2, -1.1], [1.4, 1.2], [-1.2, -0.4]], dtype=F64
)


@pytest.mark.parametrize("pad", [0, 2])
def test_graph_surface_gaussian_curvature_is_p_times_the_euclidean_one(pad):
    p = 3 + pad
    u, v = GRAPH_POINTS[:, 0], GRAPH_POINTS[:, 1]
    k_euclid = graph_euclidean_k(u, v)
    assert (k_euclid.abs() > 0.05).all()  # curved at every point, both signs
    assert (k_euclid > 0).any() and (k_euclid < 0).any()
    k = gaussian_curvature_at(graph_map(pad), GRAPH_POINTS)
    # g = J^T J / p is the induced metric scaled by 1/p, so K = p K_euclid
    assert_exact_and_factor_sensitive(k, p * k_euclid, rtol=1e-8)
    # at (1.0, 0.3): K_euclid = 0.22532, so R = 2 K = 2 p K_euclid (1.3519 at p = 3)
    assert abs(k_euclid[0].item() - 0.225319) < 1e-6


def test_graph_surface_on_a_grid_and_scalar_is_twice_gaussian():
    s = Slice.square(torch.tensor([0.3, 0.1], dtype=F64), 1.2)
    cf = scalar_curvature(graph_map(), s, resolution=9)
    assert cf.p == 3
    vv, uu = torch.meshgrid(cf.v, cf.u, indexing="ij")  # [i, j] = (v[i], u[j])
    want = 3 * graph_euclidean_k(uu, vv)
    keep = want.abs() > 1e-2  # the relative error needs K away from its zero lines
    assert keep.sum() > 50
    assert_exact_and_factor_sensitive(cf.gaussian[keep], want[keep], rtol=1e-8)
    assert_exact_and_factor_sensitive(cf.scalar[keep], 2 * want[keep], rtol=1e-8)


# ---------------------------------------------------------------- one hidden layer nets


ACTIVATIONS = {
    # name: (module, sigma', sigma'') as closed forms of the pre-activation z
    "sigmoid": (
        nn.Sigmoid,
        lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
        lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)) * (1 - 2 * torch.sigmoid(z)),
    ),
    "tanh": (
        nn.Tanh,
        lambda z: 1 - torch.tanh(z) ** 2,
        lambda z: -2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2),
    ),
    "softplus": (
        nn.Softplus,
        torch.sigmoid,
        lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
    ),
}


def one_hidden_layer(width: int, act: str, seed: int) -> nn.Sequential:
    """2 -> width -> 1; richviz's default feature map is sigma(W x + b), p = width."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, width), ACTIVATIONS[act][0](), nn.Linear(width, 1))
    net = net.double().eval()
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # pre-activations of order 1 on the window: curved
    return net


def cauchy_binet_volume(net: nn.Sequential, act: str, x: torch.Tensor) -> torch.Tensor:
    """sqrt(det(J^T J / p)) = sqrt(sum_{i<j} s_i^2 s_j^2 m_ij^2) / p, s = sigma'(W x + b)."""
    w, b = net[0].weight.detach(), net[0].bias.detach()
    p = w.shape[0]
    s2 = ACTIVATIONS[act][1](x @ w.T + b) ** 2  # (N, p)
    m = w[:, 0, None] * w[None, :, 1] - w[:, 1, None] * w[None, :, 0]  # (p, p) 2x2 minors
    upper = torch.triu(torch.ones(p, p, dtype=torch.bool), diagonal=1)
    det = torch.einsum("ni,nj,ij->n", s2, s2, torch.where(upper, m**2, 0.0))
    return det.sqrt() / p


@pytest.mark.parametrize(
    ("width", "act", "seed"),
    [(3, "sigmoid", 0), (10, "sigmoid", 1), (64, "tanh", 2), (17, "softplus", 3)],
)
@pytest.mark.parametrize("method", ["auto", "jvp"])
def test_volume_element_is_the_cauchy_binet_sum(width, act, seed, method):
    net = one_hidden_layer(width, act, seed)
    s = Slice.square(torch.tensor([0.2, -0.1], dtype=F64), 1.5)
    field = pullback_metric(net, s, resolution=11, method=method)
    assert field.p == width
    want = cauchy_binet_volume(net, act, s.grid_uv(11)).reshape(11, 11)
    assert want.min() > 1e-3
    assert_exact_and_factor_sensitive(field.volume, want, rtol=1e-12)
    assert_exact_and_factor_sensitive(field.det, want**2, rtol=1e-12)
    # and the metric itself: G = (1/p) sum_i sigma'_i^2 w_i w_i^T
    w, b = net[0].weight.detach(), net[0].bias.detach()
    s2 = ACTIVATIONS[act][1](s.grid_uv(11) @ w.T + b) ** 2
    g = torch.einsum("ni,ia,ib->nab", s2, w, w).reshape(11, 11, 2, 2) / width
    assert torch.allclose(field.metric, g, rtol=1e-12, atol=0)


def test_cauchy_binet_with_parallel_rows_is_zero():
    # all rows of W parallel: every 2x2 minor vanishes, J has rank 1, the volume is 0
    net = one_hidden_layer(5, "tanh", 4)
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1.0, 6.0, dtype=F64)[:, None] * torch.tensor([0.6, 0.8]))
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    field = pullback_metric(net, s, resolution=5)
    assert cauchy_binet_volume(net, "tanh", s.grid_uv(5)).abs().max() == 0
    assert field.volume.abs().max() < 1e-7 * field.metric[..., 0, 0].max()


def one_hidden_layer_scalar_curvature(net: nn.Sequential, act: str, x: torch.Tensor):
    """R = (|T|^2 - |tau|^2) / 4 from T_abc = d_a g_bc = (2/p) sum_i s_i s'_i W_ia W_ib W_ic.

    Derivation: T is totally symmetric, so Gamma^a_bc = T^a_bc / 2 and the second derivatives
    of g cancel in R; the derivative terms of the Ricci tensor give (|T|^2 - |tau|^2) / 2 and
    the Gamma Gamma terms -(|T|^2 - |tau|^2) / 4.
    """
    w, b = net[0].weight.detach(), net[0].bias.detach()
    p = w.shape[0]
    z = x @ w.T + b
    d1, d2 = ACTIVATIONS[act][1](z), ACTIVATIONS[act][2](z)
    g = torch.einsum("ni,ia,ib->nab", d1**2, w, w) / p
    t = 2 * torch.einsum("ni,ia,ib,ic->nabc", d1 * d2, w, w, w) / p
    gi = torch.linalg.inv(g)
    t_up = torch.einsum("nad,nbe,ncf,ndef->nabc", gi, gi, gi, t)
    tau = torch.einsum("nbc,nabc->na", gi, t)
    norm_t = torch.einsum("nabc,nabc->n", t, t_up)
    norm_tau = torch.einsum("na,nab,nb->n", tau, gi, tau)
    return (norm_t - norm_tau) / 4


@pytest.mark.parametrize(
    ("width", "act", "seed"),
    [(3, "sigmoid", 10), (10, "sigmoid", 11), (50, "sigmoid", 12), (20, "tanh", 5)],
)
def test_one_hidden_layer_curvature_closed_form(width, act, seed):
    net = one_hidden_layer(width, act, seed)
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.7, 0.9], [0.1, 1.4], [-1.1, -0.6]], dtype=F64)
    want = one_hidden_layer_scalar_curvature(net, act, x)
    keep = want.abs() > 1e-2 * want.abs().max()  # relative error needs R away from 0
    assert keep.sum() >= 3 and want.abs().max() > 0.1
    r = 2 * gaussian_curvature_at(net, x)
    assert_exact_and_factor_sensitive(r[keep], want[keep], rtol=1e-8)


# --------------------------------------------------------------------- Gauss equation


def gauss_equation_k(phi, x: torch.Tensor) -> torch.Tensor:
    """K at each 2-D point x[n] from J and the Hessian (torch.autograd.functional, float64).

    With f = phi / sqrt(p): G = f_*^T f_*, II_ab = N f_ab (N = I - f_* G^{-1} f_*^T, the normal
    projector) and K = (<II_11, II_22> - |II_12|^2) / det G.
    """
    out = []
    for pt in x:

        def f(y: torch.Tensor) -> torch.Tensor:
            return phi(y[None])[0]

        p = f(pt).shape[0]
        j = jacobian(f, pt) / math.sqrt(p)  # (p, 2)
        hs = torch.stack([hessian(lambda y, i=i: f(y)[i], pt) for i in range(p)])
        hs = hs / math.sqrt(p)  # (p, 2, 2): per-feature Hessians
        g = j.T @ j
        normal = torch.eye(p, dtype=F64) - j @ torch.linalg.solve(g, j.T)
        ii11, ii12, ii22 = normal @ hs[:, 0, 0], normal @ hs[:, 0, 1], normal @ hs[:, 1, 1]
        out.append((ii11 @ ii22 - ii12 @ ii12) / torch.linalg.det(g))
    return torch.stack(out)


@pytest.mark.parametrize(
    ("act", "hidden", "seed"),
    [(nn.Sigmoid, (12,), 0), (nn.Tanh, (8,), 1), (nn.Tanh, (10, 7), 2), (nn.Sigmoid, (6, 9), 3)],
)
def test_gauss_equation_route(act, hidden, seed):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d = 2
    for width in hidden:
        layers += [nn.Linear(d, width), act()]
        d = width
    net = nn.Sequential(*layers, nn.Linear(d, 2)).double().eval()
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    features = net[:-1]
    x = torch.tensor([[0.4, -0.3], [-0.9, 0.6], [1.2, 1.1], [0.0, -1.3]], dtype=F64)
    want = gauss_equation_k(features, x)
    keep = want.abs() > 1e-2 * want.abs().max()
    assert keep.sum() >= 3
    k = gaussian_curvature_at(net, x)  # default feature map: the input of the last Linear
    assert_exact_and_factor_sensitive(k[keep], want[keep], rtol=1e-8)
    # the grid path gives the same numbers as the pointwise one
    s = Slice.square(torch.tensor([0.15, -0.1], dtype=F64), 1.05)
    cf = scalar_curvature(net, s, resolution=3)
    grid_want = gauss_equation_k(features, s.grid_uv(3)).reshape(3, 3)
    keep = grid_want.abs() > 1e-2 * grid_want.abs().max()
    assert_exact_and_factor_sensitive(cf.gaussian[keep], grid_want[keep], rtol=1e-8)
