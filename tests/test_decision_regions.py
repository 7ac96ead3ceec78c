"""Boundary markers on a slice: softmax entropy (log base C) and predicted-class regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from richviz.geometry import Slice, boundary_mask, decision_field, softmax_entropy

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(2, 8),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e30]),
    seed=st.integers(0, 2**16),
)
def test_entropy_lies_in_unit_interval(c, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    for dt in (torch.float32, F64):
        z = (torch.randn(50, c, generator=gen, dtype=F64) * scale).to(dt)
        h = softmax_entropy(z)
        assert h.shape == (50,) and bool(torch.isfinite(h).all())
        assert float(h.min()) >= 0.0 and float(h.max()) <= 1.0


@pytest.mark.parametrize("c", [2, 3, 4, 5, 6, 10])
def test_entropy_is_one_exactly_where_all_logits_tie(c):
    # H = -sum p log p / log C with p = 1/C gives log_C(C) = 1, up to one rounding of the sum
    for dt in (torch.float32, F64):
        z = (torch.randn(200, 1, dtype=F64) * 10).to(dt).expand(200, c)
        h = softmax_entropy(z)
        assert (h - 1).abs().max() <= 4 * torch.finfo(dt).eps
    # any untied row has entropy < 1, and the closed form for the binary case
    z = torch.tensor([[0.0, 1e-3], [0.0, 2.0], [5.0, -1.0]], dtype=F64)
    s = torch.sigmoid(z[:, 1] - z[:, 0])
    want = -(s * torch.log(s) + (1 - s) * torch.log(1 - s)) / math.log(2)
    assert torch.allclose(softmax_entropy(z), want, rtol=1e-12)
    assert (softmax_entropy(z) < 1).all()


def sector_classifier(c: int, center: tuple[float, float] = (0.0, 0.0)) -> nn.Linear:
    """Logits ``<w_k, x - center>`` with unit ``w_k`` at angle ``2 pi k / C``: class k wins in
    the sector of half-angle ``pi / C`` around angle ``2 pi k / C`` (seen from ``center``)."""
    lin = nn.Linear(2, c).double()
    ang = 2 * math.pi * torch.arange(c, dtype=F64) / c
    w = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(-(w @ torch.tensor(center, dtype=F64)))
    return lin


@pytest.mark.parametrize("c", [3, 4, 5, 6])
def test_class_regions_of_a_linear_classifier_are_exact_sectors(c):
    center = (0.13, -0.21)
    lin = sector_classifier(c, center)
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    res = 41
    dec = decision_field(lin, s, resolution=res)
    assert dec.num_classes == c
    # the exact class from geometry alone: the nearest sector direction to the point's angle
    vv, uu = np.meshgrid(dec.v.numpy(), dec.u.numpy(), indexing="ij")
    theta = np.arctan2(vv - center[1], uu - center[0])
    width = 2 * np.pi / c
    sector = np.round(theta / width).astype(int) % c
    # skip cells on a sector edge (distance to an edge angle below 1e-9)
    edge = np.abs(theta / width - np.floor(theta / width) - 0.5) < 1e-9
    ok = ~edge
    assert ok.sum() > res * res - 3 * res
    assert np.array_equal(dec.predicted.numpy()[ok], sector[ok])
    assert set(np.unique(dec.predicted.numpy())) == set(range(c))  # every class has a region
    # the boundary mask marks exactly the cells with a neighbour in another sector
    assert torch.equal(dec.boundary, boundary_mask(torch.from_numpy(sector)))
    # entropy: highest near the centre, where all logits nearly tie; lowest far out
    h = dec.entropy.numpy()
    r = np.hypot(uu - center[0], vv - center[1])
    assert h[r == r.min()].min() > 0.99
    assert h[r > 0.8].max() < h[r < 0.1].min()
    assert (h >= 0).all() and (h <= 1).all()


def test_entropy_one_at_the_exact_tie_on_the_grid():
    # the origin is a grid point of an odd-resolution square, and all C logits are 0 there
    for c in (3, 5, 6):
        dec = decision_field(sector_classifier(c), Slice.square(torch.zeros(2, dtype=F64), 1.0), 9)
        assert abs(float(dec.entropy[4, 4]) - 1.0) <= 4 * torch.finfo(F64).eps
        assert float(dec.margin[4, 4]) == 0.0
        others = torch.ones(9, 9, dtype=torch.bool)
        others[4, 4] = False
        assert (dec.entropy[others] < 1 - 1e-6).all()


def test_boundary_magnification_is_the_documented_band_formula():
    # BM = mean(lv | k cells of smallest margin) - mean(lv | rest), k = max(1, round(band N))
    from richviz.geometry import boundary_magnification

    rng = np.random.default_rng(0)
    lv = rng.normal(size=(23, 23))
    margin = rng.exponential(size=(23, 23))
    lv[0, 0], margin[1, 1] = -np.inf, np.nan  # ignored cells
    ok = np.isfinite(lv) & np.isfinite(margin)
    for band in (0.05, 0.1, 0.2, 0.5):
        k = max(1, round(band * ok.sum()))
        order = np.argsort(margin[ok])
        want = lv[ok][order[:k]].mean() - lv[ok][order[k:]].mean()
        got = boundary_magnification(torch.from_numpy(lv), torch.from_numpy(margin), band=band)
        assert got == pytest.approx(want, rel=1e-12)
    # scale invariance of the quantile band
    assert boundary_magnification(lv, 1e3 * margin) == boundary_magnification(lv, margin)
