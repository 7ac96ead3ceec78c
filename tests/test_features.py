import pytest
import torch
import torchvision
from torch import nn
from torch.func import jvp

from richviz.devices import best_device
from richviz.features import feature_map, features_and_outputs, last_linear_name, layer_names


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))


def test_default_is_input_of_last_linear():
    m = mlp()
    x = torch.randn(5, 2)
    assert last_linear_name(m) == "4"
    torch.testing.assert_close(feature_map(m)(x), m[:4](x))


def test_named_layer_and_logits():
    m = mlp()
    x = torch.randn(5, 2)
    torch.testing.assert_close(feature_map(m, "1")(x), m[:2](x))
    torch.testing.assert_close(feature_map(m, "logits")(x), m(x))
    assert layer_names(m)[0] == "penultimate" and layer_names(m)[-1] == "logits"


def test_unknown_layer_and_no_linear_are_value_errors():
    with pytest.raises(ValueError, match="layer='nope'"):
        feature_map(mlp(), "nope")
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear"):
        feature_map(conv)
    with pytest.raises(ValueError, match="no nn.Linear"):
        features_and_outputs(conv, torch.randn(2, 1, 5, 5))
    # the logits of such a model are still available, and are then also its outputs
    assert feature_map(conv, "logits")(torch.randn(2, 1, 5, 5)).shape == (2, 18)
    feats, outs = features_and_outputs(conv, torch.randn(2, 1, 5, 5), layer="logits")
    torch.testing.assert_close(feats, outs)


def test_features_and_outputs_use_last_linear_output():
    class Centred(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):  # a wrapper whose output is zero, like alpha * (f - f0) at init
            return 0.0 * self.net(x)

    m = Centred()
    x = torch.randn(7, 2)
    feats, outs = features_and_outputs(m, x)
    torch.testing.assert_close(feats, m.net[:4](x))
    torch.testing.assert_close(outs, m.net(x))
    assert outs.abs().sum() > 0


def test_feature_map_composes_with_jvp_on_resnet_with_batchnorm():
    torch.manual_seed(0)
    r = torchvision.models.resnet18(num_classes=10).double()
    phi = feature_map(r)
    assert not r.training  # eval mode: BatchNorm uses running statistics
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    t = torch.randn_like(x)
    out, tangent = jvp(phi, (x,), (t,))
    assert out.shape == tangent.shape == (2, 512)
    # finite-difference check of the directional derivative (eval-mode BN is per-sample)
    eps = 1e-6
    fd = (phi(x + eps * t) - phi(x - eps * t)) / (2 * eps)
    torch.testing.assert_close(fd, tangent, rtol=1e-4, atol=1e-6)


def test_best_device(monkeypatch):
    monkeypatch.delenv("RICHVIZ_DEVICE", raising=False)
    assert best_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert best_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device="):
        best_device("not-a-device")
    # the process-wide default: $RICHVIZ_DEVICE, an explicit argument still wins
    monkeypatch.setenv("RICHVIZ_DEVICE", "cpu")
    assert best_device() == torch.device("cpu")
    monkeypatch.setenv("RICHVIZ_DEVICE", "auto")
    assert best_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("RICHVIZ_DEVICE", "warp-drive")
    with pytest.raises(ValueError, match="RICHVIZ_DEVICE="):
        best_device()
    assert best_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            best_device("cuda")


def test_vgg16_plane_slice_matches_finite_differences():
    """Torchvision VGG16 (BatchNorm variant adapted to 32x32): default feature map + metric."""
    from richviz.architectures import build
    from richviz.geometry import Slice, pullback_metric

    torch.manual_seed(0)
    vgg = build("vgg16", num_classes=10).double().eval()
    phi = feature_map(vgg)
    assert phi.layer == "penultimate" and last_linear_name(vgg).startswith("classifier")
    x0, x1, x2 = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    s = Slice.plane(x0, x1, x2)
    field = pullback_metric(vgg, s, resolution=2)
    assert field.metric.shape == (2, 2, 2, 2)
    assert torch.isfinite(field.volume).all() and (field.volume > 0).all()
    # second method: central differences of phi along the slice basis at grid point (0, 0)
    point = s.to_input(s.grid_uv(2)[:1], dtype=torch.float64)
    eps = 1e-5
    cols = []
    for e in s.basis:
        e = e.unsqueeze(0).to(torch.float64)
        cols.append((phi(point + eps * e) - phi(point - eps * e)) / (2 * eps))
    je = torch.stack([c[0] for c in cols], dim=1)  # (p, 2)
    expected = je.T @ je / je.shape[0]
    torch.testing.assert_close(field.metric[0, 0], expected, rtol=1e-5, atol=1e-12)


class _Hold(nn.Module):
    """Holds a batch of 4 here (after its thread's hook is on the next module) until ``go``."""

    def __init__(self, inside, go):
        super().__init__()
        self.inside, self.go = inside, go

    def forward(self, x):
        if x.shape[0] == 4:
            self.inside.set()
            assert self.go.wait(timeout=30)
        return x


@pytest.mark.parametrize("with_logits", [False, True])
def test_one_model_in_two_threads_at_once(with_logits):
    """Two threads through one (cached, shared) model at the same time: each gets its own
    features. The hooks sit on the shared module, so the second thread's forward meets the
    first thread's hook (registered before its own, still there while the first thread is
    held): that hook must pass it by."""
    import threading

    torch.manual_seed(0)
    inside, go = threading.Event(), threading.Event()
    model = nn.Sequential(_Hold(inside, go), nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    phi = feature_map(model)
    xs = [torch.randn(4, 2), torch.randn(6, 2)]
    out: dict[int, object] = {}

    def work(i):
        try:
            out[i] = phi.with_logits(xs[i])[0] if with_logits else phi(xs[i])
        except Exception as exc:  # noqa: BLE001 - reported below
            out[i] = exc

    first = threading.Thread(target=work, args=(0,))
    first.start()
    assert inside.wait(30)  # the first thread's hook is registered, its forward held
    work(1)  # the second forward passes the first thread's hook
    go.set()
    first.join(60)
    for i, x in enumerate(xs):
        assert isinstance(out[i], torch.Tensor), out[i]
        torch.testing.assert_close(out[i], torch.tanh(model[1](x)))
