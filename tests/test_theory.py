"""Tests of richviz.theory: the infinite-width metric of random two-layer networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from richviz.features import feature_map
from richviz.geometry import Slice, pullback_metric, pullback_metric_at
from richviz.theory import (
    ACTIVATIONS,
    infinite_width_field,
    infinite_width_metric,
    infinite_width_volume,
    metric_coefficients,
    random_two_layer_network,
)

F64 = torch.float64
R2 = np.array([0.0, 0.05, 0.5, 1.0, 2.0, 4.0, 9.0, 30.0, 100.0])


@pytest.mark.parametrize("s,z", [(1.0, 1.0), (0.7, 0.0), (2.0, 0.5)])
def test_erf_closed_form_matches_quadrature(s, z):
    a, da = metric_coefficients(R2, "erf", s, z, method="closed")
    aq, daq = metric_coefficients(R2, "erf", s, z, method="quadrature")
    np.testing.assert_allclose(aq, a, rtol=1e-9)
    np.testing.assert_allclose(daq, da, rtol=1e-7)
    # the erf closed form g = (2 s^2/pi) q^(-1/2) [I - 2 s^2 x x^T / q] of the metric itself
    x = torch.tensor([[0.3, -1.2], [2.0, 0.5], [0.0, 0.0]], dtype=F64)
    q = 1 + 2 * z**2 + 2 * s**2 * (x * x).sum(1)
    g = (
        (2 * s**2 / math.pi)
        * q[:, None, None] ** -0.5
        * (torch.eye(2, dtype=F64) - 2 * s**2 * x[:, :, None] * x[:, None, :] / q[:, None, None])
    )
    torch.testing.assert_close(infinite_width_metric(x, "erf", s, z), g)
    torch.testing.assert_close(
        infinite_width_metric(x, "erf", s, z, method="quadrature"), g, rtol=1e-7, atol=1e-12
    )
    vol = (2 * s**2 / math.pi) * (1 + 2 * z**2) ** 0.5 * q ** (-(2 + 2) / 4)
    torch.testing.assert_close(infinite_width_volume(x, "erf", s, z), vol)


def test_relu_is_flat_and_quadrature_agrees():
    a, da = metric_coefficients(R2, "relu", 1.5, 0.3)
    np.testing.assert_allclose(a, 1.5**2 / 2)
    np.testing.assert_allclose(da, 0.0)
    aq, daq = metric_coefficients(R2, "relu", 1.5, 0.3, method="quadrature")
    np.testing.assert_allclose(aq, a, rtol=1e-9)
    np.testing.assert_allclose(daq, 0.0, atol=1e-9)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_derivative_of_a_matches_finite_differences(activation):
    s, z, h = 1.3, 0.7, 1e-4
    r2 = np.array([0.0, 0.3, 1.0, 3.0, 8.0, 20.0])
    a, da = metric_coefficients(r2 + h, activation, s, z, method="quadrature")
    ap, _ = metric_coefficients(r2 + 2 * h, activation, s, z, method="quadrature")
    am, _ = metric_coefficients(r2, activation, s, z, method="quadrature")
    fd = (ap - am) / (2 * h)
    np.testing.assert_allclose(da, fd, rtol=1e-6, atol=1e-9 * np.abs(a).max())
    assert np.all(a > 0)


def per_neuron_terms(net, x: torch.Tensor) -> torch.Tensor:
    """T_j(x) = sigma'(w_j . x + b_j)^2 w_j w_j^T, (N, width, d, d): the empirical metric is
    their mean over neurons j. sigma' by autograd through the network's own module."""
    lin, act = net[0], net[1]
    pre = (x @ lin.weight.T + lin.bias).detach().requires_grad_(True)  # (N, width)
    (slope,) = torch.autograd.grad(act(pre).sum(), pre)
    w = lin.weight.detach()
    return (slope**2)[:, :, None, None] * w[None, :, :, None] * w[None, :, None, :]


def assert_within_standard_errors(empirical, theory, terms, k: float = 5.0):
    """|empirical - theory| <= k standard errors of the mean over neurons (entrywise), and the
    same for the volume element by the delta method (d sqrt det g = sqrt det g tr(g^-1 dg)/2)."""
    width = terms.shape[1]
    se = terms.std(dim=1) / math.sqrt(width)  # (N, d, d)
    assert bool(((empirical - theory).abs() <= k * se + 1e-12).all())
    vol = torch.linalg.det(empirical).sqrt()
    lin = torch.einsum("nij,nkji->nk", torch.linalg.inv(empirical), terms)  # tr(g^-1 T_j)
    se_vol = vol / 2 * lin.std(dim=1) / math.sqrt(width)
    vol_th = torch.linalg.det(theory).sqrt()
    assert bool(((vol - vol_th).abs() <= k * se_vol).all())
    return float(((vol - vol_th).abs() / se_vol).max())


@pytest.mark.parametrize(
    "activation,d",
    [("erf", 2), ("tanh", 2), ("relu", 3), ("sigmoid", 2), ("gelu", 3), ("softplus", 2),
     ("silu", 2)],
)  # fmt: skip
def test_theory_matches_a_very_wide_random_network(activation, d):
    """The width-20000 metric is a mean over neurons: it must sit within a few Monte Carlo
    standard errors of the infinite-width theory (a tolerance from the sample, not a guess)."""
    s, z, width = 1.0, 1.0, 20000
    net = random_two_layer_network(d, width, activation, s, z, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, d, generator=g, dtype=F64) * torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0])[:, None]
    empirical = pullback_metric_at(net, x)  # default feature map: sigma(W x + b), p = width
    terms = per_neuron_terms(net, x)
    torch.testing.assert_close(empirical, terms.mean(1), rtol=1e-10, atol=1e-14)
    theory = infinite_width_metric(x, activation, s, z)
    assert_within_standard_errors(empirical, theory, terms)
    torch.testing.assert_close(
        infinite_width_volume(x, activation, s, z), torch.linalg.det(theory).sqrt()
    )


def test_spherical_symmetry():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))  # a random rotation
    for act in ("erf", "tanh", "gelu"):
        gx = infinite_width_metric(x, act, 1.2, 0.4)
        grx = infinite_width_metric(x @ q.T, act, 1.2, 0.4)
        torch.testing.assert_close(grx, q @ gx @ q.T, rtol=1e-10, atol=1e-13)
        # the volume element depends on |x| only: same radius, different directions
        same_r = x / x.norm(dim=1, keepdim=True) * 1.7
        vol = infinite_width_volume(same_r, act, 1.2, 0.4)
        torch.testing.assert_close(vol, vol[:1].expand(6), rtol=1e-12, atol=0)
        torch.testing.assert_close(
            vol, torch.linalg.det(infinite_width_metric(same_r, act, 1.2, 0.4)).sqrt()
        )


def test_erf_volume_peaks_at_origin():
    x = torch.tensor([[r, 0.0] for r in np.linspace(0, 3, 7)], dtype=F64)
    vol = infinite_width_volume(x, "erf")
    assert bool((vol[1:] < vol[:-1]).all())


def test_infinite_width_field_on_slices():
    s = Slice.square(torch.tensor([0.5, -0.2], dtype=F64), 1.5)
    field = infinite_width_field(s, 5, "tanh", 1.0, 0.5)
    pts = field.points
    torch.testing.assert_close(
        field.metric.reshape(-1, 2, 2), infinite_width_metric(pts, "tanh", 1.0, 0.5)
    )
    torch.testing.assert_close(
        field.volume.reshape(-1), infinite_width_volume(pts, "tanh", 1.0, 0.5)
    )
    assert field.p == 0
    # a plane in R^4 (paper's non-orthonormal basis): G = E^T g E, sqrt det G
    g = torch.Generator().manual_seed(3)
    x0, x1, x2 = (torch.randn(4, generator=g, dtype=F64) for _ in range(3))
    for sl in (Slice.plane(x0, x1, x2), Slice.paper_plane(x0, x1, x2)):
        f = infinite_width_field(sl, 4, "erf")
        gfull = infinite_width_metric(f.points, "erf")
        e = sl.basis.reshape(2, 4)
        ref = e @ gfull @ e.T
        torch.testing.assert_close(f.metric.reshape(-1, 2, 2), ref)
        torch.testing.assert_close(f.volume.reshape(-1), torch.linalg.det(ref).sqrt())


def test_wide_network_field_matches_theory_field():
    """The same comparison through pullback_metric on a grid (the viewer's overlay path)."""
    net = random_two_layer_network(2, 20000, "erf", 1.0, 1.0, seed=4, dtype=F64)
    s = Slice.square(torch.zeros(2, dtype=F64), 2.0)
    emp = pullback_metric(net, s, resolution=4)
    th = infinite_width_field(s, 4, "erf")
    assert emp.p == 20000
    terms = per_neuron_terms(net, emp.points)  # square slice: E = I, G = g
    metric = emp.metric.reshape(-1, 2, 2)
    torch.testing.assert_close(metric, terms.mean(1), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(emp.volume.reshape(-1), torch.linalg.det(metric).sqrt())
    assert_within_standard_errors(metric, th.metric.reshape(-1, 2, 2), terms)


def test_random_network_statistics_and_feature_map():
    net = random_two_layer_network(3, 4000, "tanh", weight_std=2.0, bias_std=0.5, seed=0)
    w, b = net[0].weight.detach().double(), net[0].bias.detach().double()
    assert abs(float(w.std()) - 2.0) < 0.05 and abs(float(b.std()) - 0.5) < 0.02
    x = torch.randn(4, 3)
    torch.testing.assert_close(feature_map(net)(x), torch.tanh(x @ net[0].weight.T + net[0].bias))
    assert not net.training


def test_value_errors():
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="activation"):
        infinite_width_metric(x, "swish")
    with pytest.raises(ValueError, match="weight_std"):
        infinite_width_metric(x, "erf", weight_std=0.0)
    with pytest.raises(ValueError, match="bias_std"):
        infinite_width_metric(x, "erf", bias_std=-1.0)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        infinite_width_metric(torch.zeros(3), "erf")
    with pytest.raises(ValueError, match="non-finite"):
        infinite_width_volume(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="closed form"):
        metric_coefficients(R2, "tanh", method="closed")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus"])
def test_gauss_hermite_and_composite_rules_agree(activation):
    """Where both are accurate (1 < V <= 2), forced Gauss-Hermite matches the composite rule."""
    r2 = np.array([0.8, 1.2, 1.7])  # V = r2 + 0.25 in (1, 2]: the default is the composite rule
    a, da = metric_coefficients(r2, activation, 1.0, 0.5, method="quadrature")
    ag, dag = metric_coefficients(r2, activation, 1.0, 0.5, method="quadrature", order=180)
    np.testing.assert_allclose(ag, a, rtol=1e-8)
    np.testing.assert_allclose(dag, da, rtol=1e-7)


def test_menu_activations_are_registered_with_a_theory():
    from richviz import activations, live

    assert live.ACTIVATIONS == activations.MENU
    assert set(activations.MENU) <= set(activations.THEORY_ACTIVATIONS)
    for name in activations.MENU:
        assert activations.identify(activations.make(name)).name == name


def test_activation_jets_match_forward_mode_ad():
    from torch.func import jvp

    from richviz import activations

    h = torch.linspace(-3, 3, 61, dtype=F64)
    with_jet = [a for a in activations.REGISTRY.values() if a.jet is not None]
    assert {a.name for a in with_jet} >= {"tanh", "sigmoid", "relu"}
    for a in with_jet:
        y, d = a.jet(h.clone(), False)
        y_ad, d_ad = jvp(a.function, (h,), (torch.ones_like(h),))
        torch.testing.assert_close(y, y_ad)
        torch.testing.assert_close(d, d_ad)
        buf = h.clone()
        y_in, _ = a.jet(buf, True)
        torch.testing.assert_close(y_in, y_ad)
