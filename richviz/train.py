"""Reference trainer: writes checkpoint runs for the presets (lazy/rich by output scale alpha).

Lazy vs rich follows Chizat, Oyallon & Bach: with ``alpha`` set the model is
``alpha * (f(x) - f0(x))`` (:class:`richviz.architectures.Centered`) and the learning rate is
divided by ``alpha**2`` (SGD) or ``alpha`` (Adam/AdamW, whose steps do not scale with the
gradient), so the function moves at the same speed for every alpha: large alpha is lazy, small
alpha is rich. Checkpoints are saved at log-spaced steps, step 0 always.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from richviz import datasets
from richviz.architectures import build_model
from richviz.checkpoints import Run, RunWriter, _progress
from richviz.devices import best_device, module_device, to_device


@dataclass(frozen=True)
class Config:
    """A training recipe. ``batch_size=None`` is full-batch; ``alpha=None`` is the plain model."""

    data: str
    arch: str
    arch_kwargs: dict[str, Any]
    steps: int
    lr: float
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    alpha: float | None = None
    loss: str = "ce"
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int | None = None
    checkpoints: int = 30
    eval_limit: int | None = 2000
    description: str = ""

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "mse"):
            raise ValueError(f"loss={self.loss!r} must be 'ce' or 'mse'")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer={self.optimizer!r} must be 'sgd', 'adam' or 'adamw'")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be at least 1")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha} must be positive")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be positive")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be positive or None")
        if self.checkpoints < 2:
            raise ValueError(f"checkpoints={self.checkpoints} must be at least 2")

    @property
    def effective_lr(self) -> float:
        """lr / alpha^2 for SGD, lr / alpha for Adam(W); lr when alpha is None."""
        if self.alpha is None:
            return self.lr
        return self.lr / (self.alpha**2 if self.optimizer == "sgd" else self.alpha)


def _toy(
    data: str, hidden: list[int], classes: int = 2, arch: dict[str, Any] | None = None, **kw: Any
) -> Config:
    return Config(
        data=data,
        arch="mlp",
        arch_kwargs={"in_features": 2, "hidden": hidden, "out_features": classes, **(arch or {})},
        steps=kw.pop("steps", 2000),
        lr=kw.pop("lr", 0.1),
        momentum=kw.pop("momentum", 0.9),
        batch_size=kw.pop("batch_size", 50),
        **kw,
    )


_SINUSOID = {"activation": "sigmoid", "init": "normal"}
_DIGITS_MLP = {"in_features": 64, "hidden": [256, 256], "out_features": 10, "activation": "tanh"}
_MOD_MLP = {"in_features": 46, "hidden": [128, 128], "out_features": 23, "activation": "relu"}
_CIFAR = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128}

PRESETS: dict[str, Config] = {
    "moons": _toy("moons", [64, 64], description="two moons, 2-64-64-2 tanh MLP"),
    "circles": _toy("circles", [64, 64], description="concentric circles, 2-64-64-2 tanh MLP"),
    "xor": _toy("xor", [64, 64], description="XOR quadrants, 2-64-64-2 tanh MLP"),
    "spirals": _toy(
        "spirals", [128, 128], steps=4000, description="two spirals, 2-128-128-2 tanh MLP"
    ),
    "sinusoid": _toy(
        "sinusoid",
        [250],
        arch=_SINUSOID,
        steps=60000,
        description="Zavatone-Veth et al. sinusoid task: [2, 250, 2] sigmoid net, N(0,1) init, "
        "readout scaled 1/sqrt(w), SGD lr 0.1 momentum 0.9 batch 50, 10k epochs",
    ),
    "sinusoid_narrow": _toy(
        "sinusoid",
        [20],
        arch=_SINUSOID,
        steps=60000,
        description="sinusoid task with a narrow [2, 20, 2] sigmoid net (more magnification)",
    ),
    "digits": Config(
        data="digits",
        arch="mlp",
        arch_kwargs=_DIGITS_MLP,
        alpha=1.0,
        loss="mse",
        lr=0.05,
        steps=400,
        description="8x8 digits, 64-256-256-10 tanh MLP, MSE, full-batch SGD lr 0.05/alpha^2, "
        "alpha=1 (rich)",
    ),
    "digits_lazy": Config(
        data="digits",
        arch="mlp",
        arch_kwargs=_DIGITS_MLP,
        alpha=1000.0,
        loss="mse",
        lr=0.05,
        steps=400,
        description="as 'digits' with alpha=1000 (lazy)",
    ),
    "digits_cnn": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs={"in_channels": 1, "num_classes": 10, "width": 16, "image_size": 8},
        lr=0.05,
        momentum=0.9,
        batch_size=128,
        steps=1000,
        description="8x8 digits, small CNN (2 conv + 2 linear), CE, SGD momentum",
    ),
    "modular_addition": Config(
        data="modular_addition",
        data_kwargs={"p": 23, "train_fraction": 0.7},
        arch="mlp",
        arch_kwargs=_MOD_MLP,
        loss="mse",
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1.0,
        steps=8000,
        description="grokking: (a+b) mod 23 from 70% of pairs, 46-128-128-23 ReLU MLP, MSE, "
        "full-batch AdamW lr 3e-3 weight decay 1 (memorises by ~50 steps, generalises ~4000)",
    ),
    "modular_addition_quick": Config(
        data="modular_addition",
        data_kwargs={"p": 17, "train_fraction": 0.7},
        arch="mlp",
        arch_kwargs={
            "in_features": 34,
            "hidden": [96, 96],
            "out_features": 17,
            "activation": "relu",
        },
        loss="mse",
        optimizer="adamw",
        lr=1e-2,
        weight_decay=1.0,
        steps=1400,
        checkpoints=12,
        description="fast grokking: (a+b) mod 17, 34-96-96-17 ReLU MLP, AdamW lr 1e-2 wd 1",
    ),
    "cifar10_resnet18": Config(
        data="cifar10",
        arch="resnet18",
        arch_kwargs={"num_classes": 10},
        steps=5000,
        description="CIFAR-10 (local folder, --data-root) with a 32x32 ResNet18",
        **_CIFAR,
    ),
    "cifar10_vgg16": Config(
        data="cifar10",
        arch="vgg16",
        arch_kwargs={"num_classes": 10},
        steps=5000,
        description="CIFAR-10 (local folder, --data-root) with a 32x32 VGG16-BN",
        **_CIFAR,
    ),
}


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """About ``n`` log-spaced steps in [0, steps]: always 0, 1 and ``steps``, no duplicates."""
    if steps < 1 or n < 2:
        raise ValueError(f"steps={steps} and n={n} must be >= 1 and >= 2")
    pts = {0, steps}
    if n > 2:
        for k in range(n - 1):
            pts.add(int(round(math.exp(math.log(steps) * k / (n - 2)))))
    return sorted(p for p in pts if 0 <= p <= steps)


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(out, y)
    target = F.one_hot(y, out.shape[1]).to(out.dtype)
    return 0.5 * ((out - target) ** 2).sum(1).mean()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, chunk: int = 1000
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on (x, y), evaluated in chunks in eval mode.

    Each chunk is moved to the model's device (x and y may live on the CPU)."""
    was_training = model.training
    model.eval()
    dev = module_device(model)
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        out = model(to_device(x[i : i + chunk], dev))
        yy = to_device(y[i : i + chunk], dev)
        total_loss += float(_loss(loss, out, yy)) * len(yy)
        correct += int((out.argmax(1) == yy).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def _subset(
    x: torch.Tensor, y: torch.Tensor, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or len(x) <= limit:
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit]
    return x[idx], y[idx]


def resolve(preset_or_config: str | Config) -> tuple[str, Config]:
    """(name, config) for a preset name or a Config."""
    if isinstance(preset_or_config, Config):
        return "custom", preset_or_config
    if preset_or_config not in PRESETS:
        raise ValueError(f"preset={preset_or_config!r} is unknown; choose one of {sorted(PRESETS)}")
    return preset_or_config, PRESETS[preset_or_config]


def train(
    preset_or_config: str | Config,
    out: str | os.PathLike,
    steps: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | Callable[[int, int], None] = True,
    data_root: str | None = None,
    data: datasets.Dataset | None = None,
) -> Run:
    """Train a preset (or a :class:`Config`) and write its run to ``out``; return the Run.

    ``steps``/``alpha`` override the preset's; ``seed`` fixes the initialisation and minibatch
    order (same seed, same device: same checkpoints). ``data_root`` is the folder for image data
    (CIFAR-10). ``data`` reuses an already loaded Dataset matching the config.
    """
    name, cfg = resolve(preset_or_config)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    if alpha is not None:
        cfg = dataclasses.replace(cfg, alpha=alpha)
    data_kwargs = dict(cfg.data_kwargs)
    if data_root is not None:
        data_kwargs["root"] = str(data_root)
    dev = best_device(device)
    if data is None:
        data = datasets.load(cfg.data, **data_kwargs)

    torch.manual_seed(seed)
    spec = {"name": cfg.arch, "kwargs": cfg.arch_kwargs, "alpha": cfg.alpha}
    model = build_model(spec).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.effective_lr
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)

    save_at = checkpoint_steps(cfg.steps, cfg.checkpoints)
    manifest = {
        "preset": name,
        "description": cfg.description,
        "architecture": spec,
        "data": {"name": cfg.data, "kwargs": data_kwargs},
        "seed": seed,
        "hparams": {
            "loss": cfg.loss,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "effective_lr": lr,
            "momentum": cfg.momentum,
            "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size,
            "steps": cfg.steps,
            "checkpoint_steps": save_at,
        },
        "device": str(dev),
        "torch": torch.__version__,
    }
    writer = RunWriter(out, manifest)

    x_tr, y_tr = data.x_train.to(dev), data.y_train.to(dev)
    ev_tr = _subset(x_tr, y_tr, cfg.eval_limit)
    ev_te = _subset(data.x_test.to(dev), data.y_test.to(dev), cfg.eval_limit)
    n = len(x_tr)
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen).to(dev)  # CPU generator: same order on any device
    pos = 0

    save_set = set(save_at)
    bar, report = _progress(progress, cfg.steps)
    start = time.perf_counter()
    try:
        for step in range(cfg.steps + 1):
            if step in save_set:
                tl, ta = evaluate(model, *ev_tr, cfg.loss)
                vl, va = evaluate(model, *ev_te, cfg.loss)
                meta = {
                    "epoch": step * bs / n,
                    "train_loss": tl,
                    "train_acc": ta,
                    "test_loss": vl,
                    "test_acc": va,
                    "time": time.perf_counter() - start,
                }
                writer.save(step, model, meta)
            if step == cfg.steps:
                break
            if bs == n:
                xb, yb = x_tr, y_tr
            else:
                if pos + bs > n:
                    order, pos = torch.randperm(n, generator=gen).to(dev), 0
                idx = order[pos : pos + bs]
                pos += bs
                xb, yb = x_tr[idx], y_tr[idx]
            model.train()
            opt.zero_grad(set_to_none=True)
            _loss(cfg.loss, model(xb), yb).backward()
            opt.step()
            report(step + 1)
    finally:
        if bar is not None:
            bar.close()
    return Run.open(out)
