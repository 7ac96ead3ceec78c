"""Trainer, presets and architectures: determinism, lazy vs rich, grokking, centred model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import jvp

from richviz import architectures, datasets
from richviz.architectures import Centered, build, build_model
from richviz.checkpoints import Run
from richviz.errors import DataError
from richviz.features import features_and_outputs, last_linear_name
from richviz.metrics import d_lr
from richviz.train import PRESETS, Config, checkpoint_steps, evaluate, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)


def test_checkpoint_steps_log_spaced():
    s = checkpoint_steps(1000, 12)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 1000 and s == sorted(set(s))
    ratios = [b / a for a, b in zip(s[2:], s[3:], strict=False)]
    assert all(1.5 < r < 2.5 for r in ratios)  # geometric spacing (1000^(1/10) ~ 2)
    assert checkpoint_steps(3, 30) == [0, 1, 2, 3]
    assert checkpoint_steps(5, 2) == [0, 5]
    with pytest.raises(ValueError):
        checkpoint_steps(0, 5)


def test_centered_model():
    torch.manual_seed(0)
    net = architectures.mlp(2, [16, 16], 3)
    m = Centered(net, alpha=7.0)
    x = torch.randn(11, 2)
    # f - f0 vanishes at construction, with its input Jacobian
    assert torch.equal(m(x), torch.zeros(11, 3))
    _, tangent = jvp(m, (x,), (torch.randn_like(x),))
    torch.testing.assert_close(tangent, torch.zeros(11, 3))
    # the readout of the trainable net is the last nn.Linear; f0 holds no Linear and no params
    assert last_linear_name(m) == "net.5"
    assert not any(isinstance(mod, nn.Linear) for mod in m.f0.modules())
    assert {n for n, _ in m.named_parameters()} == {f"net.{n}" for n, _ in net.named_parameters()}
    feats, outs = features_and_outputs(m, x)
    torch.testing.assert_close(outs, net(x))
    torch.testing.assert_close(feats, net[:5](x))
    # after a change of the trainable weights the output is alpha * (f - f0)
    f0 = net(x).detach()
    with torch.no_grad():
        net[5].bias += 1.0
    torch.testing.assert_close(m(x), 7.0 * (net(x) - f0))
    # the state dict round-trips through the registry, f0 included
    spec = {"name": "mlp", "kwargs": {"in_features": 2, "hidden": [16, 16], "out_features": 3}}
    other = build_model({**spec, "alpha": 7.0})
    other.load_state_dict(m.state_dict())
    torch.testing.assert_close(other(x), m(x))
    with pytest.raises(ValueError, match="alpha"):
        Centered(net, alpha=0.0)


def test_effective_lr():
    cfg = PRESETS["digits"]
    assert dataclasses.replace(cfg, alpha=10.0).effective_lr == pytest.approx(0.05 / 100)
    adam = dataclasses.replace(cfg, optimizer="adamw", alpha=10.0)
    assert adam.effective_lr == pytest.approx(0.005)
    assert dataclasses.replace(cfg, alpha=None).effective_lr == 0.05
    with pytest.raises(ValueError, match="loss"):
        dataclasses.replace(cfg, loss="hinge")


def test_architectures():
    with pytest.raises(ValueError, match="not registered"):
        build("transformer")
    with pytest.raises(ValueError, match="bad keyword"):
        build("mlp", in_features=2)
    cnn = build("small_cnn")
    assert cnn(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    r = build("resnet18", num_classes=10)
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1)
    assert isinstance(r.maxpool, nn.Identity) and last_linear_name(r) == "fc"
    v = build("vgg16", num_classes=10)
    with torch.no_grad():
        assert r.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert v.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    torch.manual_seed(0)
    wide = build("mlp", in_features=2, hidden=[4000], out_features=1, init="normal")
    assert wide[1].weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert wide[3].weight.std().item() == pytest.approx(1.0, rel=0.1)
    assert isinstance(wide[4], architectures.Scale) and wide[4].factor == 4000**-0.5
    assert last_linear_name(wide) == "3"
    x = torch.randn(5, 2)
    torch.testing.assert_close(wide(x), wide[:4](x) / 4000**0.5)


TINY = Config(
    data="moons",
    data_kwargs={"n": 200},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [16], "out_features": 2},
    steps=150,
    lr=0.2,
    momentum=0.9,
    batch_size=50,
    checkpoints=5,
)


def test_training_learns_and_is_deterministic(tmp_path):
    seen = []
    a = train(TINY, tmp_path / "a", seed=5, progress=lambda d, t: seen.append((d, t)))
    b = train(TINY, tmp_path / "b", seed=5, progress=False)
    c = train(TINY, tmp_path / "c", seed=6, progress=False)
    assert seen[-1] == (150, 150)
    assert a.steps == b.steps == checkpoint_steps(150, 5)
    first, last = a.checkpoints[0].meta, a.checkpoints[-1].meta
    assert last["train_loss"] < 0.5 * first["train_loss"] and last["test_acc"] > 0.8
    for s in a.steps:
        sa, sb = a.load(s).state_dict(), b.load(s).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert a.checkpoint(s).meta["train_loss"] == b.checkpoint(s).meta["train_loss"]
    assert not torch.equal(a.load(150)[1].weight, c.load(150)[1].weight)
    assert a.manifest["hparams"]["effective_lr"] == 0.2


def test_missing_image_data_fails_before_writing(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        train("cifar10_resnet18", tmp_path / "r", data_root=str(tmp_path), progress=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="unknown"):
        train("imagenet", tmp_path / "r")


def _final_d_lr(run: Run, x: torch.Tensor) -> float:
    f, o = features_and_outputs(run.load(run.steps[-1]), x)
    return d_lr(f, o)


def _kernel_d_lr(model: nn.Module, x: torch.Tensor) -> float:
    """Independent D_LR: centred kernel alignment of H Phi Phi^T H with the projector onto the
    column space of H F (n x n, float64; F = the last Linear's output, Phi = its input)."""
    import numpy as np

    seen = {}
    last = model.get_submodule(last_linear_name(model))
    handle = last.register_forward_hook(lambda _m, a, o: seen.update(phi=a[0], f=o))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    phi = seen["phi"].reshape(len(x), -1).double().numpy()
    f = seen["f"].double().numpy()
    phi, f = phi - phi.mean(0), f - f.mean(0)
    u, sv, _ = np.linalg.svd(f, full_matrices=False)
    q = u[:, sv > 1e-6 * sv[0]]
    k = phi @ phi.T
    proj = q @ q.T
    return 1.0 - float(np.sum(k * proj) / (np.linalg.norm(k) * np.linalg.norm(proj)))


def test_lazy_run_has_higher_d_lr_than_rich(tmp_path, device):
    """Lazy vs rich on a smaller net: equal task, alpha=1000 stays at init D_LR, alpha=1 drops."""
    data = datasets.load("digits")
    cfg = dataclasses.replace(
        PRESETS["digits"],
        arch_kwargs={"in_features": 64, "hidden": [64, 64], "out_features": 10},
        steps=100,
        lr=0.2,
        checkpoints=3,
    )
    rich = train(cfg, tmp_path / "rich", alpha=1.0, progress=False, data=data, device=device)
    lazy = train(cfg, tmp_path / "lazy", alpha=1000.0, progress=False, data=data, device=device)
    x, _ = rich.probe(600)
    f0, o0 = features_and_outputs(rich.load(0), x)
    d0 = d_lr(f0, o0)
    d_rich, d_lazy = _final_d_lr(rich, x), _final_d_lr(lazy, x)
    assert d_rich == pytest.approx(_kernel_d_lr(rich.load(rich.steps[-1]), x), abs=1e-6)
    assert d_lazy == pytest.approx(_kernel_d_lr(lazy.load(lazy.steps[-1]), x), abs=1e-6)
    assert d_rich < d0  # rich: D_LR falls; lazy (features move O(1/alpha)): 10x less at least
    assert abs(d_lazy - d0) < 0.1 * (d0 - d_rich)
    for run in (rich, lazy):  # both actually learned the task
        assert run.checkpoints[-1].meta["test_acc"] > 0.8
    assert lazy.manifest["hparams"]["effective_lr"] == pytest.approx(0.2 / 1000**2)


def test_quick_grokking_preset_d_lr_falls(tmp_path):
    """Memorise first, generalise much later; D_LR falls as test accuracy jumps (Nam et al.)."""
    run = train("modular_addition_quick", tmp_path / "grok", seed=0, progress=False)
    rows = run.metrics(progress=False)
    assert all(r["error"] is None for r in rows)
    meta = [run.checkpoint(r["step"]).meta for r in rows]
    steps = [r["step"] for r in rows]
    dlr = [r["d_lr"] for r in rows]
    mem = next(i for i, m in enumerate(meta) if m["train_acc"] == 1.0)
    gen = next(i for i, m in enumerate(meta) if m["test_acc"] > 0.5)
    assert meta[mem]["test_acc"] < 0.1  # memorised, not generalised
    assert steps[gen] >= 5 * steps[mem]  # generalisation comes much later
    assert meta[-1]["test_acc"] > 0.9
    assert dlr[-1] < min(dlr[0], dlr[mem])  # D_LR falls with generalisation, not memorisation
    x, _ = run.probe()
    assert dlr[-1] == pytest.approx(_kernel_d_lr(run.load(steps[-1]), x), abs=1e-6)


def test_train_on_an_image_folder(tmp_path, device):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(("dark", "light")):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(6):
            arr = (torch.rand(8, 8, 3, generator=gen) * 100 + 150 * c).to(torch.uint8).numpy()
            Image.fromarray(arr).save(tmp_path / "img" / name / f"{i}.png")
    cfg = Config(
        data="image_folder",
        data_kwargs={"root": str(tmp_path / "img"), "test_fraction": 0.25},
        arch="small_cnn",
        arch_kwargs={"in_channels": 3, "num_classes": 2, "width": 4, "image_size": 8},
        steps=30,
        lr=0.05,
        momentum=0.9,
        checkpoints=3,
    )
    run = train(cfg, tmp_path / "run", progress=False, device=device)
    assert run.manifest["device"] == str(device)
    assert run.data().input_shape == (3, 8, 8) and run.steps == [0, 1, 30]
    assert run.checkpoints[-1].meta["train_acc"] == 1.0  # brightness separates the classes
    x, y = run.probe()  # CPU tensors
    model = run.load(30, device=device)
    out = model(x.to(device))
    assert out.shape == (len(x), 2) and out.device.type == device.type
    loss, acc = evaluate(model, x, y, "ce")  # evaluate moves the batch to the model's device
    assert acc == 1.0 and loss < run.checkpoints[0].meta["train_loss"]


# --------------------------------------------------------------------------- hardening (issue 10)

_TINY = Config(
    data="moons",
    data_kwargs={"n": 60},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [4], "out_features": 2},
    steps=4,
    lr=0.1,
    checkpoints=3,
)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"alpha": float("inf")}, "alpha=inf"),
        ({"alpha": 1e200}, "alpha=1e+200"),
        ({"alpha": 1e-9}, "alpha=1e-09"),
        ({"device": "mps"}, "device='mps'"),
        ({"device": "meta"}, "device='meta'"),
        ({"device": torch.device("meta")}, "device=device(type='meta')"),
        ({"seed": 2**64}, "seed="),
        ({"seed": 1.5}, "seed="),
        ({"steps": -3}, "steps=-3"),
        ({"overrides": {"seed": 1}}, "'seed' is not a Config field (use train's seed= argument)"),
        ({"overrides": {"widht": 8}}, "'widht' is not a Config field; fields: "),
        ({"overrides": [("width", 8)]}, "overrides must be a mapping of Config fields, got list"),
    ],
)
def test_train_refuses_bad_arguments_before_writing(tmp_path, kwargs, needle):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        train(_TINY, out, progress=False, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


def test_config_refuses_non_finite_lr():
    with pytest.raises(ValueError, match="lr=nan"):
        dataclasses.replace(_TINY, lr=float("nan"))


def test_failure_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    import richviz.train as train_mod

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(train_mod, "evaluate", broken)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="device lost"):
        train(_TINY, out, progress=False)
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        train(_TINY, existing, progress=False)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_complete_flag_false_while_training(tmp_path):
    out = tmp_path / "run"
    seen = []

    def progress(done, total):
        if done:
            seen.append(Run.open(out).complete)

    run = train(_TINY, out, progress=progress)
    assert seen and all(flag is False for flag in seen)
    assert run.complete is True
