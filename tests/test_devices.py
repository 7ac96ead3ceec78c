"""Device consistency: every public path on the test device, and CUDA against CPU (fp32).

``device`` is the test device (``--device`` / ``RICHVIZ_TEST_DEVICE``, default CUDA when
available); the ``cuda`` fixture skips, with a reason, where CUDA is absent.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from richviz import architectures
from richviz.devices import module_device
from richviz.features import features_and_outputs
from richviz.geometry import (
    Slice,
    decision_field,
    effective_volume,
    pullback_metric,
    pullback_metric_at,
)
from richviz.metrics import checkpoint_metrics, d_lr, neural_collapse
from richviz.train import _loss, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def mlp(seed: int = 0, d: int = 2, width: int = 32, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
        nn.Linear(width, classes),
    ).eval()  # fmt: skip


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return architectures.build(
        "small_cnn", in_channels=3, num_classes=4, width=4, image_size=8
    ).eval()


def probe(n: int = 120, d: int = 2, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.arange(n) % classes
    return x, y


# ----------------------------------------------------------------- every path on the test device


def test_field_and_decision_on_the_model_device_come_back_on_cpu(device):
    model = mlp().to(device)
    s = Slice.square(torch.zeros(2), 2.0)  # a CPU slice
    for method in ("auto", "jvp"):
        field = pullback_metric(model, s, 12, method=method)
        assert field.metric.device == CPU and field.volume.device == CPU
        assert field.metric.dtype == torch.float64 and bool(torch.isfinite(field.volume).all())
    dec = decision_field(model, s, 12)
    assert dec.logits.device == CPU and dec.margin.device == CPU
    cnn = small_cnn().to(device)
    x0, x1, x2 = torch.randn(3, 3, 8, 8)
    plane = Slice.plane(x0, x1, x2)
    field = pullback_metric(cnn, plane, 6)
    assert field.volume.device == CPU and bool((field.volume > 0).all())


def test_points_given_on_cpu_move_to_the_model(device):
    model = mlp().to(device)
    x, y = probe(40)
    g = pullback_metric_at(model, x)
    assert g.device == CPU and g.shape == (40, 2, 2)
    sigma, vol = effective_volume(model, x[:5], k=2, oversample=0, iters=1)
    assert sigma.device == CPU and vol.shape == (5,)
    f, o = features_and_outputs(model, x)
    assert f.device == module_device(model) and o.shape == (40, 3)
    loss, acc = evaluate(model, x, y, "ce")
    assert 0 <= acc <= 1 and loss > 0
    row = checkpoint_metrics(model, x, y, init_model=mlp(1).to(device))
    assert 0 <= row["d_lr"] <= 1 and row["param_dist_sq"] > 0


# ----------------------------------------------------------------- CUDA against CPU


def test_field_cuda_matches_cpu(cuda):
    model = mlp()
    s = Slice.square(torch.zeros(2), 2.0)
    ref = pullback_metric(model, s, 24)
    for method in ("auto", "jvp"):
        got = pullback_metric(copy.deepcopy(model).to(cuda), s, 24, method=method)
        torch.testing.assert_close(got.metric, ref.metric, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got.volume, ref.volume, rtol=1e-4, atol=1e-7)
    cnn = small_cnn()
    x0, x1, x2 = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    plane = Slice.plane(x0, x1, x2)
    ref = pullback_metric(cnn, plane, 8)
    got = pullback_metric(copy.deepcopy(cnn).to(cuda), plane, 8)
    torch.testing.assert_close(got.volume, ref.volume, rtol=1e-3, atol=1e-8)


def test_effective_volume_cuda_matches_cpu(cuda):
    cnn = small_cnn()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    s_cpu, v_cpu = effective_volume(cnn, x, k=4)
    s_gpu, v_gpu = effective_volume(copy.deepcopy(cnn).to(cuda), x, k=4)
    torch.testing.assert_close(s_gpu, s_cpu, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(v_gpu, v_cpu, rtol=1e-4, atol=1e-6)


def test_d_lr_and_neural_collapse_cuda_match_cpu(cuda):
    model = mlp(width=64, classes=3)
    x, y = probe(300)
    f, o = features_and_outputs(model, x)
    last = model[4]
    ref_d = d_lr(f, o)
    ref_nc = neural_collapse(f, y, last.weight, last.bias)
    gpu = copy.deepcopy(model).to(cuda)
    fg, og = features_and_outputs(gpu, x.to(cuda))
    assert d_lr(fg, og) == pytest.approx(ref_d, rel=1e-4, abs=1e-6)
    nc = neural_collapse(fg, y.to(cuda), gpu[4].weight, gpu[4].bias)
    for key, value in ref_nc.items():
        assert nc[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_one_training_step_cuda_matches_cpu(cuda):
    x, y = probe(64)
    cpu_model = mlp().train()
    gpu_model = copy.deepcopy(cpu_model).to(cuda).train()
    for model, dev in ((cpu_model, CPU), (gpu_model, cuda)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad()
        _loss("ce", model(x.to(dev)), y.to(dev)).backward()
        opt.step()
    for (name, a), b in zip(cpu_model.named_parameters(), gpu_model.parameters(), strict=True):
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=1e-5, atol=1e-6, msg=name)
