"""Tests of richviz.geometry: slices, the forward-mode metric field, ellipses, decision field."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

from richviz.geometry import (
    OUTPUT_BYTES_PER_POINT,
    OUTPUT_MEMORY_FRACTION,
    MetricField,
    Slice,
    available_memory,
    boundary_magnification,
    check_output_bytes,
    decision_field,
    decision_margin,
    effective_volume,
    metric_ellipses,
    pullback_metric,
    pullback_metric_at,
    softmax_entropy,
)

F64 = torch.float64


def tanh_mlp(d: int = 2, width: int = 12, out: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, out)
    ).to(F64)


def small_convnet(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16, 7),
        nn.Tanh(),
        nn.Linear(7, 3),
    ).to(F64)


def jacrev_slice_metric(phi, points: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Reference: full Jacobian by reverse mode, then E^T J^T J E / p. (N, 2, 2)."""
    jac = vmap(jacrev(lambda x: phi(x[None])[0]))(points)  # (N, p, *in)
    p = jac.shape[1]
    je = torch.einsum("npd,kd->npk", jac.reshape(*jac.shape[:2], -1), basis.reshape(2, -1))
    return torch.einsum("npk,npl->nkl", je, je) / p


# ---- slices ------------------------------------------------------------------------------


def test_square_slice_is_the_input_plane():
    s = Slice.square([0.5, -1.0], 2.0)
    assert s.u_range == (-1.5, 2.5) and s.v_range == (-3.0, 1.0)
    torch.testing.assert_close(s.basis, torch.eye(2, dtype=F64))
    u, v = s.grid(5)
    uv = s.grid_uv(5)
    # row-major: point i*res + j is (u[j], v[i]); to_input is the identity on 2-D inputs
    assert torch.equal(uv[1 * 5 + 3], torch.stack([u[3], v[1]]))
    torch.testing.assert_close(s.to_input(uv, dtype=F64), uv)
    assert s.to_input(uv).dtype == torch.float32  # the input dtype


def test_plane_contains_anchors_and_is_orthonormal():
    g = torch.Generator().manual_seed(1)
    x0, x1, x2 = (torch.randn(3, 8, 8, generator=g) for _ in range(3))
    s = Slice.plane(x0, x1, x2, margin=0.25)
    assert s.input_shape == (3, 8, 8) and s.orthonormal
    flat = s.basis.reshape(2, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(2, dtype=F64), atol=1e-14, rtol=0)
    torch.testing.assert_close(
        s.to_input(s.anchors, dtype=F64), torch.stack([x0, x1, x2]).double(), atol=1e-12, rtol=0
    )
    # the window covers the anchors with a margin, and is square
    (ulo, uhi), (vlo, vhi) = s.u_range, s.v_range
    assert math.isclose(uhi - ulo, vhi - vlo)
    assert (s.anchors[:, 0] > ulo).all() and (s.anchors[:, 0] < uhi).all()
    assert (s.anchors[:, 1] > vlo).all() and (s.anchors[:, 1] < vhi).all()
    # distances between anchors are input-space distances
    assert math.isclose(
        float((s.anchors[0] - s.anchors[1]).norm()),
        float((x0.double() - x1.double()).norm()),
        rel_tol=1e-12,
    )
    torch.testing.assert_close(s.to_uv(s.anchor_points), s.anchors, atol=1e-12, rtol=0)


def test_paper_plane_coordinates():
    g = torch.Generator().manual_seed(2)
    x0, x1, x2 = (torch.randn(1, 4, 4, generator=g, dtype=F64) for _ in range(3))
    s = Slice.paper_plane(x0, x1, x2)
    assert s.u_range == (-1.0, 1.0) and s.v_range == (-1.0, 1.0) and not s.orthonormal
    expected = torch.tensor(
        [[0.0, -1 / math.sqrt(3)], [-0.5, 0.5 / math.sqrt(3)], [0.5, 0.5 / math.sqrt(3)]],
        dtype=F64,
    )
    torch.testing.assert_close(s.anchors, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(s.to_input(s.anchors), torch.stack([x0, x1, x2]), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.basis[0], x2 - x1)
    centroid = (x0 + x1 + x2) / 3
    torch.testing.assert_close(s.basis[1], 2 * math.sqrt(3) * ((x1 + x2) / 2 - centroid))


def test_slice_value_errors():
    a = torch.zeros(4)
    b = torch.tensor([1.0, 0, 0, 0])
    c = torch.tensor([0.0, 1, 0, 0])
    with pytest.raises(ValueError, match="same shape"):
        Slice.plane(a, b, torch.zeros(5))
    with pytest.raises(ValueError, match="collinear"):
        Slice.plane(a, b, 3 * b)
    with pytest.raises(ValueError, match="coincide"):
        Slice.plane(a, a, c)
    with pytest.raises(ValueError, match="coincide"):
        Slice.plane(a, a, a)
    with pytest.raises(ValueError, match="collinear"):
        Slice.paper_plane(a, b, -b)
    with pytest.raises(ValueError, match="collinear"):
        Slice.paper_plane(a, b, 3 * b)
    with pytest.raises(ValueError, match="coincide"):
        Slice.paper_plane(a, b, b)
    with pytest.raises(ValueError, match="non-finite"):
        Slice.plane(a, b, torch.tensor([float("nan"), 1, 0, 0]))
    with pytest.raises(ValueError, match="non-finite"):
        Slice.square([0.0, float("inf")], 1.0)
    with pytest.raises(ValueError, match="half_width"):
        Slice.square([0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="half_width"):
        Slice.square([0.0, 0.0], -1.0)
    with pytest.raises(ValueError, match="2-D input"):
        Slice.square([0.0, 0.0, 0.0], 1.0)
    s = Slice.plane(a, b, c)
    with pytest.raises(ValueError, match="resolution"):
        s.grid(1)
    with pytest.raises(ValueError, match="resolution"):
        pullback_metric(tanh_mlp(d=4), s, resolution=1)


# ---- metric field --------------------------------------------------------------------------


def test_linear_map_metric_is_constant_closed_form():
    """phi(x) = W x has g = W^T W / p everywhere, so G = E^T W^T W E / p on any slice."""
    g = torch.Generator().manual_seed(3)
    d, p = 5, 7
    w = torch.randn(p, d, generator=g, dtype=F64)
    phi = nn.Linear(d, p, bias=True).to(F64)
    with torch.no_grad():
        phi.weight.copy_(w)
    x0, x1, x2 = (torch.randn(d, generator=g, dtype=F64) for _ in range(3))
    for s in (Slice.plane(x0, x1, x2), Slice.paper_plane(x0, x1, x2)):
        field = pullback_metric(phi, s, resolution=6, layer="logits")
        e = s.basis.reshape(2, d)
        expected = e @ w.T @ w @ e.T / p
        assert field.p == p
        torch.testing.assert_close(field.metric, expected.expand(6, 6, 2, 2), atol=1e-12, rtol=0)
        vol = torch.sqrt(torch.linalg.det(expected))
        torch.testing.assert_close(field.volume, vol.expand(6, 6), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(field.log10_volume, torch.log10(field.volume))


def test_forward_mode_matches_jacrev_for_tanh_mlp():
    model = tanh_mlp()
    s = Slice.square(torch.tensor([0.2, -0.1], dtype=F64), 1.5)
    field = pullback_metric(model, s, resolution=7)
    phi = nn.Sequential(*list(model)[:4])  # input of the last Linear
    ref = jacrev_slice_metric(phi, field.points, s.basis.to(F64))
    rel = (field.metric.reshape(-1, 2, 2) - ref).norm() / ref.norm()
    assert rel < 1e-10  # float64: far below the 1e-5 acceptance bound
    assert field.metric.shape == (7, 7, 2, 2) and field.volume.shape == (7, 7)
    torch.testing.assert_close(
        field.volume.reshape(-1), torch.linalg.det(ref).sqrt(), rtol=1e-9, atol=0
    )


def test_forward_mode_matches_jacrev_on_image_plane():
    model = small_convnet()
    g = torch.Generator().manual_seed(4)
    x0, x1, x2 = (torch.randn(1, 4, 4, generator=g, dtype=F64) for _ in range(3))
    for s in (Slice.plane(x0, x1, x2), Slice.paper_plane(x0, x1, x2)):
        field = pullback_metric(model, s, resolution=5)
        assert field.points.shape == (25, 1, 4, 4)
        phi = nn.Sequential(*list(model)[:7])
        ref = jacrev_slice_metric(phi, field.points, s.basis)
        rel = (field.metric.reshape(-1, 2, 2) - ref).norm() / ref.norm()
        assert rel < 1e-10
        assert field.p == 7


def test_float32_model_close_to_float64():
    model = tanh_mlp()
    s = Slice.square([0.0, 0.0], 1.0)
    f64 = pullback_metric(model, s, resolution=6)
    f32 = pullback_metric(model.float(), s, resolution=6)
    assert f32.metric.dtype == F64  # results are float64 on CPU, computed in the model dtype
    rel = (f32.metric - f64.metric).norm() / f64.metric.norm()
    assert rel < 1e-5


@pytest.mark.parametrize("chunk_size", [1, 7, 10, 13, 49, 50, 1000])
def test_chunked_equals_unchunked(chunk_size):
    model = tanh_mlp()
    s = Slice.square([0.0, 0.0], 2.0)
    whole = pullback_metric(model, s, resolution=7, chunk_size=49)
    part = pullback_metric(model, s, resolution=7, chunk_size=chunk_size)
    torch.testing.assert_close(part.metric, whole.metric, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(part.volume, whole.volume, atol=1e-14, rtol=1e-12)


def test_progress_callback_and_validation():
    calls = []
    pullback_metric(
        tanh_mlp(),
        Slice.square([0, 0], 1),
        5,
        chunk_size=10,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(10, 25), (20, 25), (25, 25)]
    with pytest.raises(ValueError, match="chunk_size"):
        pullback_metric(tanh_mlp(), Slice.square([0, 0], 1), 5, chunk_size=0)
    with pytest.raises(ValueError, match="progress"):
        pullback_metric(tanh_mlp(), Slice.square([0, 0], 1), 5, progress="yes")


def test_volume_is_stable_for_nearly_parallel_directions():
    """A rank-deficient-ish map: J e1 and J e2 nearly parallel; det must not cancel to 0 or < 0."""
    eps = 1e-7
    w = torch.tensor([[1.0, 1.0], [1.0, 1.0 + eps], [2.0, 2.0]], dtype=F64)
    field = pullback_metric(
        lambda x: x @ w.T, Slice.square(torch.zeros(2, dtype=F64), 1.0), resolution=3
    )
    g = w.T @ w / 3
    # exact: det(W^T W) = sum of squared 2x2 minors (Cauchy-Binet) = eps^2 + (2 eps)^2 * 0 + ...
    minors = [torch.linalg.det(w[[i, j]]) for i in range(3) for j in range(i + 1, 3)]
    exact = math.sqrt(sum(float(m) ** 2 for m in minors)) / 3
    assert torch.allclose(field.volume, torch.full((3, 3), exact, dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(field.metric[0, 0], g)


def test_model_without_linear_needs_a_layer():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten()).to(F64)
    g = torch.Generator().manual_seed(5)
    s = Slice.plane(*torch.randn(3, 1, 5, 5, generator=g, dtype=F64))
    with pytest.raises(ValueError, match="no nn.Linear"):
        pullback_metric(conv, s, resolution=2)
    field = pullback_metric(conv, s, resolution=3, layer="logits")
    assert field.p == 18
    ref = jacrev_slice_metric(conv, field.points, s.basis)
    torch.testing.assert_close(field.metric.reshape(-1, 2, 2), ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(
        field.volume.reshape(-1), torch.linalg.det(ref).sqrt(), rtol=1e-8, atol=1e-14
    )


def test_callable_feature_map_and_points_lazy():
    w = torch.randn(4, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    field = pullback_metric(
        lambda x: torch.tanh(x @ w.T), Slice.square(torch.zeros(2, dtype=F64), 1.0), 4
    )
    pts = field.points
    assert pts.shape == (16, 2)
    ref = jacrev_slice_metric(lambda x: torch.tanh(x @ w.T), pts.double(), torch.eye(2, dtype=F64))
    torch.testing.assert_close(field.metric.reshape(-1, 2, 2), ref.to(F64), rtol=1e-5, atol=1e-7)


def test_pullback_metric_at_full_metric():
    model = tanh_mlp(d=3)
    x = torch.randn(4, 3, dtype=F64)
    g = pullback_metric_at(model, x)
    phi = nn.Sequential(*list(model)[:4])
    jac = vmap(jacrev(lambda z: phi(z[None])[0]))(x)
    torch.testing.assert_close(g, jac.transpose(1, 2) @ jac / jac.shape[1])


def test_resnet18_plane_slice_runs_on_cpu():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x0, x1, x2 = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    s = Slice.plane(x0, x1, x2)
    field = pullback_metric(model, s, resolution=3)  # one chunk of 9 points
    assert field.p == 512
    # reference: central finite differences of the float64 features along e1, e2
    ref_model = copy.deepcopy(model).double()
    phi = nn.Sequential(*list(ref_model.children())[:-1], nn.Flatten())  # input of model.fc
    pts = field.points.double()
    h = 1e-5
    e = s.basis.to(F64)
    with torch.no_grad():
        je = torch.stack(
            [(phi(pts + h * e[k]) - phi(pts - h * e[k])) / (2 * h) for k in range(2)], -1
        )  # (9, 512, 2)
    ref = je.transpose(1, 2) @ je / 512
    torch.testing.assert_close(field.metric.reshape(-1, 2, 2), ref, rtol=2e-3, atol=1e-7)
    dec = decision_field(model, s, resolution=3)
    with torch.no_grad():
        logits = model(field.points.float())
    torch.testing.assert_close(dec.logits.reshape(9, 10), logits, rtol=1e-5, atol=1e-5)
    top2 = logits.double().topk(2, dim=1).values
    torch.testing.assert_close(dec.margin.reshape(-1), top2[:, 0] - top2[:, 1])
    assert dec.num_classes == 10


# ---- ellipses ------------------------------------------------------------------------------


def _axes_of_polyline(xs: np.ndarray, ys: np.ndarray, m: int) -> list[tuple[float, float]]:
    """(major, minor) half-axes of each closed polyline: max/min distance to its centroid."""
    out = []
    for k in range(len(xs) // (m + 2)):
        px = xs[k * (m + 2) : k * (m + 2) + m]
        py = ys[k * (m + 2) : k * (m + 2) + m]
        r = np.hypot(px - px.mean(), py - py.mean())
        out.append((r.max(), r.min()))
    return out


@pytest.mark.parametrize("mode", ["stretch", "unit_ball"])
def test_ellipse_axes_follow_eigenvalues(mode):
    w = torch.tensor([[3.0, 1.0], [0.0, 1.0], [1.0, -1.0]], dtype=F64)
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    field = pullback_metric(lambda x: x @ w.T, s, resolution=16)
    m = 720  # dense sampling so max/min radius equals the half-axes to ~1e-5
    ell = metric_ellipses(field, density=4, mode=mode, points_per_ellipse=m)
    xs, ys = ell.xs, ell.ys
    assert ell.count == 16 and ell.centers.shape == (16, 2)
    assert xs.shape == ys.shape == (16 * (m + 2),)
    assert int(np.isnan(xs).sum()) == 16 and int(np.isnan(ys).sum()) == 16
    lam = np.linalg.eigvalsh((w.T @ w / 3).numpy())
    ratio = math.sqrt(lam[1] / lam[0])
    cell = 2.0 / 4
    for major, minor in _axes_of_polyline(xs, ys, m):
        assert major / minor == pytest.approx(ratio, rel=1e-4)
        assert major == pytest.approx(0.9 * cell / 2, rel=1e-4)  # largest fits its cell
    # orientation: for "stretch" the major axis is along the top eigenvector of G
    vec = np.linalg.eigh((w.T @ w / 3).numpy())[1][:, 1 if mode == "stretch" else 0]
    px, py = xs[: m + 1], ys[: m + 1]
    k = np.argmax(np.hypot(px - px[:-1].mean(), py - py[:-1].mean()))
    d = np.array([px[k] - px[:-1].mean(), py[k] - py[:-1].mean()])
    assert abs(abs(d @ vec) / np.linalg.norm(d) - 1) < 1e-4


def test_ellipse_weights_and_global_scale():
    # phi(x) = |x|^2 / 2 * e-ish: metric grows with |x|, so sizes must differ by ellipse
    w = torch.randn(6, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    field = pullback_metric(
        lambda x: torch.tanh(x @ w.T), Slice.square(torch.zeros(2, dtype=F64), 2.0), 12
    )
    ell = metric_ellipses(field, density=3)
    centers = ell.centers
    assert centers.shape == (9, 2)
    torch.testing.assert_close(
        torch.from_numpy(centers[4]), torch.stack([field.u[6], field.v[6]]).double()
    )
    weights = np.zeros(9)
    weights[4] = 1.0
    xs_w = metric_ellipses(field, density=3, weights=weights).xs
    seg = xs_w.reshape(9, -1)[:, :-1]
    assert np.allclose(seg[[0, 1, 2, 3, 5, 6, 7, 8]], centers[[0, 1, 2, 3, 5, 6, 7, 8], :1])
    assert np.ptp(seg[4]) > 0
    with pytest.raises(ValueError, match="weights"):
        metric_ellipses(field, density=3, weights=np.ones(4))
    with pytest.raises(ValueError, match="mode"):
        metric_ellipses(field, mode="disk")


# ---- decision field and boundary magnification ---------------------------------------------


def test_margin_and_entropy_helpers():
    logits = torch.tensor([[2.0, 0.5, -1.0], [1.0, 1.0, 1.0], [0.0, 3.0, 3.0]])
    torch.testing.assert_close(decision_margin(logits), torch.tensor([1.5, 0.0, 0.0]))
    h = softmax_entropy(logits)
    assert h[1] == pytest.approx(1.0) and 0 < h[0] < 1
    p = torch.softmax(logits[0], 0)
    assert h[0] == pytest.approx(float(-(p * p.log()).sum() / math.log(3)), rel=1e-6)
    # one binary logit z behaves like logits (0, z)
    torch.testing.assert_close(
        decision_margin(torch.tensor([[-2.0], [0.5]])), torch.tensor([2.0, 0.5])
    )


def test_decision_boundary_of_linear_classifier():
    """Logits (0, x1 - 0.3): the boundary is the vertical line u = 0.3."""
    clf = nn.Linear(2, 2).to(F64)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64))
        clf.bias.copy_(torch.tensor([0.0, -0.3], dtype=F64))
    s = Slice.square([0.0, 0.0], 1.0)
    dec = decision_field(clf, s, resolution=41)
    u = dec.u.numpy()
    torch.testing.assert_close(dec.margin, torch.from_numpy(np.abs(u - 0.3)).expand(41, 41))
    assert bool((dec.predicted == torch.from_numpy((u > 0.3).astype(np.int64))).all())
    # zero crossing of the signed logit difference, by linear interpolation along each row
    diff = (dec.logits[..., 1] - dec.logits[..., 0]).numpy()
    j = int(np.flatnonzero(np.diff(np.sign(diff[0])))[0])
    crossing = u[j] - diff[0, j] * (u[j + 1] - u[j]) / (diff[0, j + 1] - diff[0, j])
    assert crossing == pytest.approx(0.3, abs=1e-12)
    assert (
        dec.boundary[:, j].all() and dec.boundary[:, j + 1].all() and not dec.boundary[:, 0].any()
    )
    assert float(dec.entropy.max()) <= 1.0 and float(dec.entropy.min()) >= 0.0


def test_boundary_magnification():
    g = np.random.default_rng(0)
    margin = np.abs(np.linspace(-1, 1, 50))[None, :].repeat(50, 0)
    constant = np.full((50, 50), -1.3)
    assert boundary_magnification(constant, margin) == pytest.approx(0.0, abs=1e-12)
    larger_near = 2.0 - margin + 0.01 * g.standard_normal((50, 50))
    bm = boundary_magnification(larger_near, margin)
    assert bm > 0.5
    # NaN/-inf entries are ignored, not propagated
    with_nan = larger_near.copy()
    with_nan[0, :5] = np.nan
    with_nan[1, :5] = -np.inf
    assert np.isfinite(boundary_magnification(with_nan, margin))
    # absolute threshold variant: near = margin < 0.1
    expected = larger_near[margin < 0.1].mean() - larger_near[margin >= 0.1].mean()
    assert boundary_magnification(larger_near, margin, threshold=0.1) == pytest.approx(expected)
    # torch inputs accepted
    assert boundary_magnification(torch.from_numpy(larger_near), torch.from_numpy(margin)) == bm
    with pytest.raises(ValueError, match="same shape"):
        boundary_magnification(constant, margin[:, :10])
    with pytest.raises(ValueError, match="band"):
        boundary_magnification(constant, margin, band=1.5)
    assert math.isnan(boundary_magnification(np.full((3, 3), np.nan), np.zeros((3, 3))))


def test_metric_field_is_frozen_dataclass():
    field = pullback_metric(tanh_mlp(), Slice.square([0.0, 0.0], 1.0), 3)
    assert isinstance(field, MetricField)
    assert field.extent == (-1.0, 1.0, -1.0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        field.p = 1
    # det from the 2x2 metric itself (the volume is formed separately, cancellation-free)
    torch.testing.assert_close(field.det, torch.linalg.det(field.metric), rtol=1e-10, atol=0)


@pytest.mark.parametrize("fn", ["pullback_metric", "decision_field", "effective_volume", "at"])
def test_model_train_eval_modes_are_restored(fn):
    """Dropout in train mode; one submodule left in eval mode: both come back as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)
    ).to(F64)
    model.train()
    model[1].eval()
    before = [m.training for m in model.modules()]
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    if fn == "pullback_metric":
        out = pullback_metric(model, s, resolution=4).metric.reshape(-1, 2, 2)
        ref_points = s.to_input(s.grid_uv(4), dtype=F64)
    elif fn == "decision_field":
        out = decision_field(model, s, resolution=4).logits.reshape(16, 3)
    elif fn == "effective_volume":
        out = effective_volume(model, torch.zeros(2, 2, dtype=F64), k=2)[0]
    else:
        ref_points = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
        out = pullback_metric_at(model, ref_points)
    assert [m.training for m in model.modules()] == before
    # and the computation itself ran in eval mode (dropout off): deterministic reference
    model.eval()
    if fn == "pullback_metric":
        ref = jacrev_slice_metric(nn.Sequential(*list(model)[:5]), ref_points, s.basis)
        torch.testing.assert_close(out, ref)
    elif fn == "decision_field":
        with torch.no_grad():
            torch.testing.assert_close(out, model(s.to_input(s.grid_uv(4), dtype=F64)))
    elif fn == "at":
        jac = vmap(jacrev(lambda z: nn.Sequential(*list(model)[:5])(z[None])[0]))(ref_points)
        torch.testing.assert_close(out, jac.transpose(1, 2) @ jac / 8)


def test_output_bytes_are_checked_before_allocating():
    s = Slice.square([0.0, 0.0], 1.0)
    budget = OUTPUT_BYTES_PER_POINT * 50 * 50 + 10  # 50 fits, 51 does not
    with pytest.raises(MemoryError, match="largest resolution that fits is 50"):
        pullback_metric(tanh_mlp(), s, resolution=51, max_output_bytes=budget)
    assert pullback_metric(tanh_mlp(), s, resolution=50, max_output_bytes=budget).resolution == 50
    # default budget: a fraction of the available memory; 10000 x 10000 needs 5.6 GB
    avail = available_memory()
    assert avail is None or avail > 0
    if avail is not None and 56 * 10**8 > OUTPUT_MEMORY_FRACTION * avail:
        with pytest.raises(MemoryError, match="resolution=10000 needs 5341 MiB") as info:
            pullback_metric(tanh_mlp(), s, resolution=10000)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="max_output_bytes"):
        check_output_bytes(10, max_output_bytes="lots")


# ---- effective volume ----------------------------------------------------------------------


def test_effective_volume_matches_full_svd():
    model = small_convnet()
    phi = nn.Sequential(*list(model)[:7])  # p = 7 features of a 16-dim input
    x = torch.randn(3, 1, 4, 4, dtype=F64)
    sig, logvol = effective_volume(model, x, k=4, oversample=3, iters=2)
    jac = vmap(jacrev(lambda z: phi(z[None])[0]))(x).reshape(3, 7, 16)
    ref = torch.linalg.svdvals(jac / math.sqrt(7))[:, :4]
    torch.testing.assert_close(sig, ref, rtol=1e-8, atol=0)
    torch.testing.assert_close(logvol, torch.log10(ref).sum(1))
    with pytest.raises(ValueError, match="k="):
        effective_volume(model, x, k=8)


@pytest.mark.parametrize("d,p", [(100, 32), (3, 20)])
def test_effective_volume_is_exact_when_the_krylov_space_would_fill_the_space(d, p):
    """l (iters + 1) >= min(d, p) (k = 6: l = 14, 4 blocks = 56 >= 32): all directions are
    taken and the values equal the full SVD (a truncated 2-block space was up to 0.2 % low
    at p = 32, d = 100), rows of J for p <= d, columns for d < p."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(d, p), nn.Tanh(), nn.Linear(p, p), nn.Tanh(), nn.Linear(p, 2))
    model = model.to(F64)
    phi = nn.Sequential(*list(model)[:4])
    x = torch.randn(4, d, dtype=F64)
    jac = vmap(jacrev(lambda z: phi(z[None])[0]))(x)
    k = min(6, d)
    ref = torch.linalg.svdvals(jac / math.sqrt(p))[:, :k]
    sig, logvol = effective_volume(model, x, k=k)
    torch.testing.assert_close(sig, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(logvol, torch.log10(ref).sum(1))


def test_effective_volume_randomized_when_subspace_is_smaller():
    """l (iters + 1) < min(d, p): the block Krylov space must still find the top k."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Linear(100, 120), nn.Tanh(), nn.Linear(120, 120), nn.Tanh(), nn.Linear(120, 2)
    ).to(F64)
    phi = nn.Sequential(*list(model)[:4])
    x = torch.randn(3, 100, dtype=F64)
    jac = vmap(jacrev(lambda z: phi(z[None])[0]))(x)
    ref = torch.linalg.svdvals(jac / math.sqrt(120))
    sig, logvol = effective_volume(model, x, k=6)  # l = 14, 4 blocks: 56 of 100 directions
    torch.testing.assert_close(sig, ref[:, :6], rtol=1e-3, atol=0)
    torch.testing.assert_close(logvol, torch.log10(sig).sum(1))
    with torch.no_grad():  # a decaying spectrum, as in trained networks: few iterations suffice
        model[0].weight.mul_(torch.logspace(0, -2, 100, dtype=F64))
    jac = vmap(jacrev(lambda z: phi(z[None])[0]))(x)
    ref = torch.linalg.svdvals(jac / math.sqrt(120))
    sig, _ = effective_volume(model, x, k=6, iters=2)
    torch.testing.assert_close(sig, ref[:, :6], rtol=1e-3, atol=0)


# ---- the hand-written forward mode for Linear/elementwise chains ----------------------------


class Wrapped(nn.Module):
    """A model whose MLP is nested (like architectures.Centered); ``shift`` changes its input."""

    def __init__(self, net: nn.Module, shift: float = 0.0):
        super().__init__()
        self.net = net
        self.shift = shift

    def forward(self, x):
        return 3.0 * self.net(x + self.shift)


ACTS = [nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Softplus(), nn.LeakyReLU(0.1)]


@pytest.mark.parametrize("act", ACTS, ids=lambda a: type(a).__name__)
def test_chain_fast_path_equals_jvp(act):
    from richviz.activations import Erf
    from richviz.features import feature_map
    from richviz.geometry import chain_modules

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(2, 9), act, nn.Dropout(0.5), nn.Linear(9, 8), Erf(), nn.Linear(8, 3)
    ).to(F64)
    s = Slice.square(torch.tensor([0.1, -0.2], dtype=F64), 1.5)
    for layer in (None, "2", "logits"):
        assert chain_modules(feature_map(net, layer)) is not None
        fast = pullback_metric(net, s, resolution=6, chunk_size=10, layer=layer)
        ref = pullback_metric(net, s, resolution=6, chunk_size=10, layer=layer, method="jvp")
        torch.testing.assert_close(fast.metric, ref.metric, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(fast.volume, ref.volume, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ReLU], ids=lambda a: a.__name__)
def test_chain_fused_push_of_later_activations_equals_jvp(act):
    # from the second nonlinearity on the tangents depend on the point and tanh, sigmoid and
    # ReLU update the stacked jet by their fused push (sigma' from the output)
    from richviz import activations
    from richviz.features import feature_map
    from richviz.geometry import chain_modules

    assert activations.identify(act()).push is not None
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Linear(2, 9), act(), nn.Linear(9, 8), act(), nn.Linear(8, 7), act(), nn.Linear(7, 3)
    ).to(F64)
    s = Slice.square(torch.tensor([0.2, 0.1], dtype=F64), 2.0)
    for layer in (None, "3"):
        assert chain_modules(feature_map(net, layer)) is not None
        fast = pullback_metric(net, s, resolution=7, chunk_size=12, layer=layer)
        ref = pullback_metric(net, s, resolution=7, chunk_size=12, layer=layer, method="jvp")
        torch.testing.assert_close(fast.metric, ref.metric, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(fast.volume, ref.volume, rtol=1e-12, atol=1e-15)


def test_chain_fast_path_nested_model_is_checked():
    from richviz.features import feature_map
    from richviz.geometry import chain_modules

    net = tanh_mlp()
    s = Slice.square(torch.tensor([0.3, 0.1], dtype=F64), 1.0)
    plain = pullback_metric(net, s, resolution=5, method="jvp")
    for shift, expect_same in ((0.0, True), (0.7, False)):
        model = Wrapped(net, shift)
        assert chain_modules(feature_map(model)) == (list(net)[:4], True)
        fast = pullback_metric(model, s, resolution=5)
        ref = pullback_metric(model, s, resolution=5, method="jvp")
        # a nested chain is used only when its features equal the model's; else jvp is used
        torch.testing.assert_close(fast.metric, ref.metric, rtol=1e-12, atol=1e-15)
        assert torch.allclose(fast.metric, plain.metric) == expect_same


def test_chain_fast_path_on_flattened_images_and_unsupported_layers():
    from richviz.features import feature_map
    from richviz.geometry import chain_modules

    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.Tanh(), nn.Linear(6, 2)).to(F64)
    x0, x1, x2 = torch.randn(3, 1, 3, 3, dtype=F64)
    s = Slice.plane(x0, x1, x2)
    fast = pullback_metric(mlp, s, resolution=4)
    phi = nn.Sequential(*list(mlp)[:3])
    ref = jacrev_slice_metric(phi, fast.points, s.basis)
    torch.testing.assert_close(fast.metric.reshape(-1, 2, 2), ref, rtol=1e-12, atol=1e-15)
    assert chain_modules(feature_map(small_convnet())) is None  # convolutions: jvp path
    hooked = tanh_mlp()
    hooked[1].register_forward_hook(lambda m, a, o: o * 2)
    assert chain_modules(feature_map(hooked)) is None  # hooks change the map: jvp path
    with pytest.raises(ValueError, match="method"):
        pullback_metric(mlp, s, resolution=2, method="fast")


def test_nested_chain_with_other_input_falls_back_to_jvp():
    """A Sequential head fed by another layer (not the model input) must not be used as phi."""

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 5)
            self.head = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))

        def forward(self, x):
            return self.head(torch.sin(self.body(x)))

    torch.manual_seed(2)
    model = Head().to(F64)
    s = Slice.square(torch.zeros(2, dtype=F64), 1.0)
    field = pullback_metric(model, s, resolution=4)
    phi = lambda x: model.head[:2](torch.sin(model.body(x)))  # noqa: E731
    ref = jacrev_slice_metric(phi, field.points, s.basis)
    torch.testing.assert_close(field.metric.reshape(-1, 2, 2), ref, rtol=1e-12, atol=1e-15)


def test_covering_window_and_projection():
    g = torch.Generator().manual_seed(6)
    pts = torch.randn(50, 2, generator=g) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -3.0])
    s = Slice.covering(pts, margin=0.1)
    assert s.dtype == torch.float32 and s.kind == "square"
    (ulo, uhi), (vlo, vhi) = s.u_range, s.v_range
    assert math.isclose(uhi - ulo, vhi - vlo)  # square
    span = float((pts.max(0).values - pts.min(0).values).max())
    assert math.isclose(uhi - ulo, 1.2 * span, rel_tol=1e-6)
    assert bool((pts[:, 0] > ulo).all() and (pts[:, 0] < uhi).all())
    assert bool((pts[:, 1] > vlo).all() and (pts[:, 1] < vhi).all())
    torch.testing.assert_close(s.to_uv(pts), pts.double())  # the input plane itself
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        Slice.covering(torch.zeros(5, 3))
    # paper plane: to_uv of a point on the plane recovers its (a, b)
    x0, x1, x2 = torch.randn(3, 6, generator=g, dtype=F64)
    pp = Slice.paper_plane(x0, x1, x2)
    ab = torch.tensor([[0.3, -0.7], [-0.9, 0.2]], dtype=F64)
    torch.testing.assert_close(pp.to_uv(pp.to_input(ab)), ab)
    # a point off the plane projects orthogonally: the residual is orthogonal to the basis
    off = torch.randn(1, 6, generator=g, dtype=F64)
    resid = off - pp.to_input(pp.to_uv(off))
    torch.testing.assert_close(pp.basis @ resid[0], torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)


def test_iter_metric_chunks_yields_dataclasses_that_tile_the_field():
    from richviz.geometry import MetricChunk, iter_metric_chunks

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    s = Slice.square(torch.zeros(2, dtype=torch.float64), 1.0)
    full = pullback_metric(net, s, 6, layer="logits")
    chunks = list(iter_metric_chunks(net, s, 6, chunk_size=10, layer="logits"))
    assert all(isinstance(c, MetricChunk) for c in chunks)
    assert [c.start for c in chunks] == list(range(0, 36, 10))
    assert chunks[-1].stop == 36 and {c.p for c in chunks} == {3}
    torch.testing.assert_close(torch.cat([c.volume for c in chunks]), full.volume.reshape(-1))
    torch.testing.assert_close(torch.cat([c.metric for c in chunks]), full.metric.reshape(-1, 2, 2))
