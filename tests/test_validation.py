"""One validation family: NaN input gives the same error type everywhere, naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from richviz import datasets, features, geometry, metrics, probe, theory, validation
from richviz.errors import DataError, NonFiniteDataError, NonFiniteError, RichvizError
from richviz.geometry import curvature

NAN = math.nan


def _nan(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    x.view(-1)[1] = NAN
    return x


def _ok(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()


LABELS = torch.arange(12) % 3
W = _ok(3, 4)

# (call with one NaN argument, the argument's name)
CASES = {
    "metrics.d_lr": (lambda: metrics.d_lr(_nan(12, 4), _ok(12, 3)), "features"),
    "metrics.d_lr outputs": (lambda: metrics.d_lr(_ok(12, 4), _nan(12, 3)), "outputs"),
    "metrics.richness": (lambda: metrics.richness(_nan(12, 4), _ok(12, 3)), "features"),
    "metrics.linear_cka": (lambda: metrics.linear_cka(_ok(12, 4), _nan(12, 3)), "b"),
    "metrics.similarity_to_init": (
        lambda: metrics.similarity_to_init(_ok(12, 4), _nan(12, 4)),
        "init_features",
    ),
    "metrics.neural_collapse": (
        lambda: metrics.neural_collapse(_nan(12, 4), LABELS, W),
        "features",
    ),
    "metrics.neural_collapse weight": (
        lambda: metrics.neural_collapse(_ok(12, 4), LABELS, _nan(3, 4)),
        "weight",
    ),
    "metrics.neural_collapse bias": (
        lambda: metrics.neural_collapse(_ok(12, 4), LABELS, W, _nan(3)),
        "bias",
    ),
    "metrics.feature_spectrum": (
        lambda: metrics.feature_spectrum(_nan(12, 4), LABELS, _ok(12, 3)),
        "features",
    ),
    "metrics.checkpoint_metrics": (
        lambda: metrics.checkpoint_metrics(_net(), _nan(12, 2), LABELS),
        "x",
    ),
    "theory.metric_coefficients": (
        lambda: theory.metric_coefficients(np.array([0.5, NAN])),
        "r2",
    ),
    "theory.metric_coefficients weight_std": (
        lambda: theory.metric_coefficients(np.array([0.5]), weight_std=NAN),
        "weight_std",
    ),
    "theory.infinite_width_metric": (lambda: theory.infinite_width_metric(_nan(4, 2)), "x"),
    "theory.infinite_width_volume": (lambda: theory.infinite_width_volume(_nan(4, 2)), "x"),
    "theory.random_two_layer_network": (
        lambda: theory.random_two_layer_network(2, 8, bias_std=NAN),
        "bias_std",
    ),
    "features.model_output": (lambda: features.model_output(_net(), _nan(4, 2)), "x"),
    "features.features_and_outputs": (
        lambda: features.features_and_outputs(_net(), _nan(4, 2)),
        "x",
    ),
    "curvature.gaussian_curvature_at": (
        lambda: curvature.gaussian_curvature_at(_net(), _nan(4, 2)),
        "points",
    ),
    "curvature.second_order_jets": (
        lambda: curvature.second_order_jets(_net(), _nan(4, 2), torch.eye(2, dtype=torch.float64)),
        "x",
    ),
    "curvature.brioschi": (
        lambda: curvature.brioschi(*([_ok(3)] * 4), _nan(3), *([_ok(3)] * 5)),
        "E_v",
    ),
    "geometry.Slice.square": (lambda: geometry.Slice.square(_nan(2), 1.0), "center"),
    "geometry.Slice.covering": (lambda: geometry.Slice.covering(_nan(5, 2)), "points"),
    "geometry.Slice.plane": (lambda: geometry.Slice.plane(_ok(3), _nan(3), _ok(3)), "x1"),
    "geometry.Slice.paper_plane": (
        lambda: geometry.Slice.paper_plane(_ok(3), _ok(3), _nan(3)),
        "x2",
    ),
    "geometry.pullback_metric_at": (
        lambda: geometry.pullback_metric_at(_net(), _nan(4, 2)),
        "x",
    ),
    "geometry.effective_volume": (
        lambda: geometry.effective_volume(_net(), _nan(4, 2), k=2),
        "points",
    ),
    "datasets.check_arrays": (lambda: datasets.check_arrays(_nan(4, 2).numpy(), [0, 1, 0, 1]), "x"),
    "datasets.load(arrays)": (
        lambda: datasets.load("arrays", x=_nan(8, 2).numpy(), y=[0, 1] * 4),
        "x",
    ),
    "probe.LinearProbe.fit": (lambda: probe.LinearProbe.fit(_nan(12, 4), LABELS), "features"),
    "probe.LinearProbe.predict": (
        lambda: probe.LinearProbe.fit(_ok(12, 4), LABELS).predict(_nan(5, 4)),
        "features",
    ),
    "probe.probe_classifier": (
        lambda: probe.probe_classifier(_net(), _nan(12, 2), LABELS),
        "x",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nan_input_raises_nonfinite_error_naming_the_argument(case):
    call, name = CASES[case]
    with pytest.raises(NonFiniteError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.split()[0] == name or f"{name} " in message, message


def test_nonfinite_error_is_in_the_hierarchy_and_reexported():
    assert issubclass(NonFiniteError, RichvizError) and issubclass(NonFiniteError, ValueError)
    # data sets keep their own family too: a caller catching DataError still sees NaN data
    assert issubclass(NonFiniteDataError, NonFiniteError)
    assert issubclass(NonFiniteDataError, DataError)
    assert metrics.NonFiniteError is NonFiniteError


def test_inf_counts_as_non_finite_and_integers_pass():
    with pytest.raises(NonFiniteError, match="^x contains non-finite"):
        validation.check_finite(torch.tensor([1.0, math.inf]), "x")
    validation.check_finite(torch.arange(3), "x")
    validation.check_finite(np.arange(3), "x")
    with pytest.raises(NonFiniteError, match="^a contains"):
        validation.check_finite(np.array([NAN]), "a")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "chunk_size must be >= 1"),
        (2.5, "chunk_size must be a positive integer or None"),
        (True, "chunk_size must be a positive integer or None"),
    ],
)
def test_chunk_size(value, message):
    assert validation.chunk_size(None, 7) == 7
    assert validation.chunk_size(np.int64(3), 7) == 3
    with pytest.raises(ValueError, match=message):
        validation.chunk_size(value, 7)


def test_ranges_and_shapes():
    assert validation.resolution(2) == 2
    with pytest.raises(ValueError, match="resolution must be >= 2, got 1"):
        validation.resolution(1)
    with pytest.raises(ValueError, match="width must be > 0"):
        validation.finite_float(0.0, "width", low=0.0, low_open=True)
    with pytest.raises(ValueError, match="lr must be <= 1"):
        validation.finite_float(2, "lr", high=1)
    with pytest.raises(NonFiniteError, match="lr must be finite"):
        validation.finite_float(math.inf, "lr")
    with pytest.raises(ValueError, match="x must be 2-D"):
        validation.as_float_tensor(torch.zeros(3), "x", ndim=2)
    with pytest.raises(ValueError, match="x must be real-valued"):
        validation.as_float_tensor(torch.zeros(3, dtype=torch.complex64), "x")
    with pytest.raises(ValueError, match="x is empty"):
        validation.as_float_tensor([], "x")
    with pytest.raises(ValueError, match="x must be a tensor or array of numbers"):
        validation.as_float_tensor(object(), "x")
    with pytest.raises(ValueError, match="method must be one of"):
        validation.check_choice("fast", "method", ("auto",))
    assert validation.as_float_tensor([1, 2], "x").dtype == torch.get_default_dtype()
