"""richviz.views: one pass over the grid gives what the two-pass geometry functions gave."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from richviz import views
from richviz.features import features_and_outputs, last_linear_name
from richviz.geometry import (
    Slice,
    boundary_magnification,
    decision_boundary_lines,
    decision_field,
    pullback_metric,
)
from richviz.metrics import NC_KEYS, neural_collapse, richness
from richviz.runs import Run


@pytest.fixture(scope="module")
def quickstart(tiny_run) -> Run:
    """The quick start's task (circles preset), a few steps."""
    return Run.open(tiny_run("circles", steps=20, seed=0, overrides={"checkpoints": 2}))


@pytest.fixture(scope="module")
def model64(quickstart: Run) -> nn.Module:
    return quickstart.load(quickstart.steps[-1], "cpu").double()


@pytest.fixture(scope="module")
def plane(quickstart: Run) -> Slice:
    x, _ = quickstart.probe(200)
    return Slice.covering(x.double(), margin=0.05)


class Wrapped(nn.Module):
    """The chain is nested: the frame runs the chain kernel inside one forward of the model."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.5 * self.inner(x) - 0.25


class Generic(nn.Module):
    """No chain at all: the frame takes the generic jvp path through the whole model."""

    def __init__(self, inner: nn.Sequential):
        super().__init__()
        self.body, self.head = inner[:-1], inner[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)) * 0.5)


MODELS = {"chain": lambda m: m, "nested": Wrapped, "jvp": Generic}


@pytest.mark.parametrize("kind", list(MODELS))
def test_one_pass_equals_two_passes_float64(model64, plane, kind):
    model = MODELS[kind](model64)
    frame = views.slice_frame(model, plane, resolution=24)
    field = pullback_metric(model, plane, resolution=24)
    dec = decision_field(model, plane, resolution=24)
    np.testing.assert_allclose(frame.log10_volume, field.log10_volume.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame.field.metric, field.metric, rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame.margin, dec.margin.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame.entropy, dec.entropy.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(frame.predicted, dec.predicted.numpy())
    np.testing.assert_array_equal(frame.u, field.u.numpy())
    np.testing.assert_array_equal(frame.v, field.v.numpy())
    old = boundary_magnification(field.log10_volume, dec.margin)
    assert abs(frame.boundary_magnification - old) <= 1e-12
    lines = decision_boundary_lines(dec.margin.numpy(), dec.predicted.numpy(), frame.u, frame.v)
    np.testing.assert_allclose(frame.boundary[0], lines[0], atol=1e-12)
    np.testing.assert_allclose(frame.boundary[1], lines[1], atol=1e-12)


@pytest.mark.parametrize("layer", ["logits", "1", "2"])
def test_one_pass_any_layer(model64, plane, layer):
    frame = views.slice_frame(model64, plane, resolution=12, layer=layer)
    field = pullback_metric(model64, plane, resolution=12, layer=layer)
    dec = decision_field(model64, plane, resolution=12)
    np.testing.assert_allclose(frame.log10_volume, field.log10_volume.numpy(), atol=1e-12)
    np.testing.assert_allclose(frame.margin, dec.margin.numpy(), atol=1e-12)


def test_one_pass_float32_to_rounding(quickstart, plane):
    model = quickstart.load(quickstart.steps[-1], "cpu")
    s32 = Slice.covering(quickstart.probe(200)[0], margin=0.05)
    for m in (model, Wrapped(model), Generic(model)):
        frame = views.slice_frame(m, s32, resolution=16)
        field = pullback_metric(m, s32, resolution=16)
        dec = decision_field(m, s32, resolution=16)
        np.testing.assert_allclose(frame.log10_volume, field.log10_volume.numpy(), atol=1e-5)
        np.testing.assert_allclose(frame.margin, dec.margin.numpy(), atol=1e-5)
    assert plane.dtype == torch.float64


def test_one_grid_pass_per_chunk(model64, plane):
    """Two passes (metric, then logits) would call the model twice per chunk."""
    model = Generic(model64)
    calls = []
    handle = model.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    try:
        views.slice_frame(model, plane, resolution=16, chunk_size=64)  # 4 chunks
        assert len(calls) == 4
        calls.clear()
        pullback_metric(model, plane, resolution=16, chunk_size=64)
        decision_field(model, plane, resolution=16, chunk_size=64)
        assert len(calls) == 8  # the old way, for contrast
    finally:
        handle.remove()


def test_chain_path_runs_the_chain_once_and_never_the_model(model64, plane, monkeypatch):
    from richviz.geometry import frame_pass

    kernel_calls = []
    real = frame_pass._run_chain

    def counting(*args):
        kernel_calls.append(1)
        return real(*args)

    monkeypatch.setattr(frame_pass, "_run_chain", counting)
    head_calls = []
    last = model64.get_submodule(last_linear_name(model64))
    handle = last.register_forward_pre_hook(lambda _m, _a: head_calls.append(1))
    forward_calls = []
    real_forward = nn.Sequential.forward

    def counting_forward(self, x):
        forward_calls.append(self is model64)
        return real_forward(self, x)

    monkeypatch.setattr(nn.Sequential, "forward", counting_forward)
    try:
        views.slice_frame(model64, plane, resolution=16, chunk_size=64)
    finally:
        handle.remove()
    assert len(kernel_calls) == 4 and len(head_calls) == 4 and not any(forward_calls)
    kernel_calls.clear()
    wrapped = Wrapped(model64)
    calls = []
    handle = wrapped.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    try:
        views.slice_frame(wrapped, plane, resolution=16, chunk_size=64)
    finally:
        handle.remove()
    assert len(kernel_calls) == 4 and len(calls) == 4  # nested: the chain inside one forward
    assert not any(forward_calls)  # the inner Sequential's own forward never ran
    assert "forward" not in vars(wrapped.inner)  # the shim is gone


def test_nested_chain_on_a_transformed_input_falls_back(model64, plane):
    class Shifted(Wrapped):
        def forward(self, x):
            return self.inner(x + 0.1)

    model = Shifted(model64)
    frame = views.slice_frame(model, plane, resolution=12)
    field = pullback_metric(model, plane, resolution=12)
    dec = decision_field(model, plane, resolution=12)
    np.testing.assert_allclose(frame.log10_volume, field.log10_volume.numpy(), atol=1e-12)
    np.testing.assert_allclose(frame.margin, dec.margin.numpy(), atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_modes_restored(model64, plane, quickstart, training):
    x, y = quickstart.probe(100)
    for m in (model64, Wrapped(model64), Generic(model64)):
        m.train(training)
        views.slice_frame(m, plane, resolution=8)
        views.probe_metrics(m, x.double(), y)
        views.full_space_volume(m, plane, resolution=4, k=2)
        views.curvature_values(m, plane, resolution=6)
        views.log10_volume_field(m, plane, resolution=4)
        assert all(sub.training == training for sub in m.modules())


def test_probe_metrics_equal_the_metrics_module(model64, quickstart):
    x, y = quickstart.probe(300)
    x = x.double()
    got = views.probe_metrics(model64, x, y)
    assert tuple(got) == views.PROBE_METRICS
    with torch.no_grad():
        out = model64(x)
        feats, lin = features_and_outputs(model64, x)
    assert got["loss"] == pytest.approx(float(nn.functional.cross_entropy(out, y)), abs=1e-12)
    assert got["acc"] == float((out.argmax(1) == y).double().mean())
    r = richness(feats, lin)
    assert (got["d_lr"], got["confinement"], got["isotropy"]) == (
        r.d_lr,
        r.confinement,
        r.isotropy,
    )
    last = model64.get_submodule(last_linear_name(model64))
    nc = neural_collapse(feats, y, last.weight, last.bias)
    assert {k: got[k] for k in NC_KEYS} == {k: float(nc[k]) for k in NC_KEYS}


def test_probe_metrics_undefined_are_nan(model64, quickstart):
    x, y = quickstart.probe(50)
    assert all(math.isnan(v) for v in views.probe_metrics(model64, x[:0].double(), y[:0]).values())
    one = views.probe_metrics(model64, x[:1].double(), y[:1])  # loss and accuracy of one point
    assert math.isfinite(one["loss"]) and one["acc"] in (0.0, 1.0)
    assert all(math.isnan(one[k]) for k in views.PROBE_METRICS if k not in ("loss", "acc"))
    one_class = y == y[0]
    got = views.probe_metrics(model64, x[one_class].double(), y[one_class])
    assert math.isfinite(got["loss"]) and all(math.isnan(got[k]) for k in NC_KEYS)


def test_frame_ellipses_split(model64, plane):
    frame = views.slice_frame(model64, plane, resolution=24)
    far, near = views.frame_ellipses(frame.field, frame.margin, density=6)
    count = int(np.isnan(far[0]).sum() + np.isnan(near[0]).sum())
    assert count == 36 and np.isnan(near[0]).sum() >= 1
    with pytest.raises(ValueError, match="band"):
        views.frame_ellipses(frame.field, frame.margin, band=1.5)


def test_run_color_limits():
    fields = [np.full((4, 4), 1.0), np.full((4, 4), 3.0)]
    assert views.run_color_limits(fields) == (1.0, 3.0)
    assert views.run_color_limits(fields, relative=True) == (-2.0, 2.0)
    assert views.run_color_limits(fields, theory=np.full((4, 4), 2.0)) == (-1.0, 1.0)


def test_theory_overlay(plane):
    values, note, used = views.theory_overlay(
        plane, 8, params={"activation": "erf", "weight_std": 1.0, "bias_std": 1.0}
    )
    assert values.shape == (8, 8) and note == "" and used["activation"] == "erf"
    values, note, used = views.theory_overlay(plane, 8, model=nn.Sequential(nn.Linear(2, 2)))
    assert values is None and note.startswith("no theory") and used is None


def test_views_is_headless():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(views))
    names = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [node])
    }
    assert not {n for n in names if n and n.split(".")[0] in ("ipywidgets", "bqplot")}
    assert not {n for n in names if n and n.startswith("richviz.widgets")}
