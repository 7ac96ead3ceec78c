"""Presets for the richness comparisons (BatchNorm, learning rate, data size, label noise) and
the stability check of alpha-scaled SGD (sharpness, catapult warning, cap)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from richviz import cli
from richviz.architectures import build
from richviz.train import (
    PRESETS,
    CatapultWarning,
    Config,
    flip_labels,
    sharpness,
    train,
    train_subset,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

TOY = Config(
    data="moons",
    data_kwargs={"n": 200},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [16], "out_features": 2},
    steps=3,
    lr=0.2,
    checkpoints=2,
    eval_limit=None,
)


def test_flip_labels_exact_count_other_class_and_seeded():
    y = torch.arange(200) % 7
    a = flip_labels(y, 0.25, 7, seed=3)
    changed = a != y
    assert int(changed.sum()) == 50  # exactly round(0.25 * 200), each to another class
    assert bool(((a >= 0) & (a < 7)).all()) and torch.equal(y, torch.arange(200) % 7)
    assert torch.equal(a, flip_labels(y, 0.25, 7, seed=3))
    assert not torch.equal(a, flip_labels(y, 0.25, 7, seed=4))
    assert torch.equal(flip_labels(y, 0.0, 7, seed=3), y)
    with pytest.raises(ValueError, match="label_noise"):
        flip_labels(y, 1.0, 7, seed=0)


def test_train_subset_size_and_seed():
    idx = train_subset(1000, 0.1, seed=2)
    assert len(idx) == 100 and torch.equal(idx, idx.unique())  # sorted, distinct
    assert torch.equal(idx, train_subset(1000, 0.1, seed=2))
    assert not torch.equal(idx, train_subset(1000, 0.1, seed=3))
    assert torch.equal(train_subset(10, 1.0, seed=0), torch.arange(10))
    with pytest.raises(ValueError, match="train_fraction"):
        Config(data="moons", arch="mlp", arch_kwargs={}, steps=1, lr=0.1, train_fraction=0.0)


def test_comparison_presets():
    base = PRESETS["digits_cnn"]
    for name, field, value in [
        ("digits_cnn_bn", "arch_kwargs", {**base.arch_kwargs, "batch_norm": True}),
        ("digits_cnn_lr_low", "lr", 0.005),
        ("digits_cnn_lr_high", "lr", 0.2),
        ("digits_cnn_small_data", "train_fraction", 0.1),
        ("digits_cnn_label_noise", "label_noise", 0.2),
    ]:
        cfg = PRESETS[name]
        assert getattr(cfg, field) == value, name
        # everything else as the base preset: a controlled comparison
        assert dataclasses.replace(cfg, **{field: getattr(base, field)}, description="") == (
            dataclasses.replace(base, description="")
        ), name


def test_small_cnn_batch_norm_is_identity_at_init():
    kw = PRESETS["digits_cnn"].arch_kwargs
    torch.manual_seed(0)
    plain = build("small_cnn", **kw)
    torch.manual_seed(0)
    bn = build("small_cnn", **kw, batch_norm=True)
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in bn.modules()) == 3
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules()) == 0
    # unchanged layout without BatchNorm (old checkpoints keep loading)
    assert list(plain.state_dict()) == [
        f"{i}.{p}" for i in (0, 2, 6, 8) for p in ("weight", "bias")
    ]
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():  # eval-mode BatchNorm at init: mean 0, var 1, gamma 1, beta 0
        assert torch.allclose(bn.eval()(x), plain.eval()(x), atol=1e-5)


def test_train_fraction_and_label_noise_are_applied(tmp_path):
    from richviz import datasets

    cfg = dataclasses.replace(TOY, train_fraction=0.5, label_noise=0.3, batch_size=10)
    run = train(cfg, tmp_path / "a", seed=1, progress=False)
    hp = run.manifest["hparams"]
    assert hp["train_fraction"] == 0.5 and hp["label_noise"] == 0.3
    data = datasets.load("moons", n=200)
    keep = train_subset(len(data.x_train), 0.5, seed=1)
    assert run.checkpoints[-1].meta["epoch"] == pytest.approx(3 * 10 / len(keep))
    # the step-0 train accuracy is measured against the subset's flipped labels
    y = flip_labels(data.y_train[keep], 0.3, 2, seed=1)
    with torch.no_grad():
        pred = run.load(0).eval()(data.x_train[keep]).argmax(1)
    assert run.checkpoints[0].meta["train_acc"] == pytest.approx(float((pred == y).double().mean()))
    # deterministic in the seed
    again = train(cfg, tmp_path / "b", seed=1, progress=False)
    sa, sb = again.load(3).state_dict(), run.load(3).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sharpness_of_a_quadratic_loss_matches_its_closed_form():
    # MSE of a linear model: the Hessian in each output row is X1^T X1 / n, X1 = [x, 1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 0.5, 0.2], dtype=torch.float64
    )
    y = torch.arange(64) % 3
    model = nn.Linear(4, 3).double()
    x1 = torch.cat([x, torch.ones(64, 1, dtype=torch.float64)], 1)
    expected = float(torch.linalg.eigvalsh(x1.T @ x1 / 64)[-1])
    assert sharpness(model, "mse", x, y, iters=200) == pytest.approx(expected, rel=1e-8)


def test_alpha_too_small_warns_of_a_catapult(tmp_path):
    # lr 0.05 / alpha^2 = 5 at alpha = 0.1: the loss rises at step ~21 (measured)
    with pytest.warns(CatapultWarning, match=r"alpha=0.1: catapult at step \d+"):
        train("digits", tmp_path / "a", alpha=0.1, steps=30, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatapultWarning)
        capped = train("digits", tmp_path / "b", alpha=0.1, steps=30, progress=False, cap_lr=True)
        train("digits", tmp_path / "c", alpha=1.0, steps=30, progress=False)
    lrs = [c.meta["lr"] for c in capped.checkpoints]
    assert lrs[0] == pytest.approx(5.0) and lrs[-1] < 5.0  # capped where the loss rose
    assert capped.manifest["hparams"]["sharpness_init"] > 0


def test_cli_prints_the_catapult_warning(tmp_path, capsys):
    args = ["train", "digits", "--out", str(tmp_path / "r"), "--alpha", "0.1", "--steps", "30"]
    assert cli.main([*args, "-q"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("richviz train: warning: alpha=0.1: catapult at step")
    assert "--cap-lr" in err
