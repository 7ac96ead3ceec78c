"""Training recipes: :class:`Config` (one validated recipe) and the named :data:`PRESETS`.

A recipe says what to train (data set, architecture), how (loss, optimizer, learning rate,
steps, batch size, output scale ``alpha``) and on what share of the data (training fraction,
label noise); :func:`richviz.train.train` runs one. Pure data: no torch work here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from richviz import validation
from richviz.errors import ArgumentError

__all__ = ["ALPHA_RANGE", "PRESETS", "Config", "resolve"]

ALPHA_RANGE = (1e-4, 1e6)  #: accepted output scales (beyond them training over/underflows)


def _check_fractions(train_fraction: float | None, label_noise: float | None) -> None:
    """``train_fraction`` in (0, 1], ``label_noise`` in [0, 1) (None: not checked)."""
    if train_fraction is not None:
        validation.check_number(train_fraction, "train_fraction", low=0, high=1, low_open=True)
    if label_noise is not None:
        validation.check_number(label_noise, "label_noise", low=0, high=1, high_open=True)


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
    train_fraction: float = 1.0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        validation.check_choice(self.loss, "loss", ("ce", "mse"))
        validation.check_choice(self.optimizer, "optimizer", ("sgd", "adam", "adamw"))
        validation.check_int(self.steps, "steps", low=1)
        if self.alpha is not None:
            validation.check_number(self.alpha, "alpha", low=ALPHA_RANGE[0], high=ALPHA_RANGE[1])
        validation.check_number(self.lr, "lr", low=0, low_open=True)
        validation.check_int(self.batch_size, "batch_size", low=1, optional=True)
        validation.check_int(self.checkpoints, "checkpoints", low=2)
        _check_fractions(self.train_fraction, self.label_noise)

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
_DIGITS_CNN = {"in_channels": 1, "num_classes": 10, "width": 16, "image_size": 8}
_DIGITS_CNN_SGD = {"lr": 0.05, "momentum": 0.9, "batch_size": 128, "steps": 1000}
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
        arch_kwargs=_DIGITS_CNN,
        description="8x8 digits, small CNN (2 conv + 2 linear), CE, SGD momentum",
        **_DIGITS_CNN_SGD,
    ),
    "digits_cnn_bn": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs={**_DIGITS_CNN, "batch_norm": True},
        description="as 'digits_cnn' with BatchNorm after each conv and the hidden Linear",
        **_DIGITS_CNN_SGD,
    ),
    "digits_cnn_lr_low": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs=_DIGITS_CNN,
        description="as 'digits_cnn' with a 10x smaller learning rate (0.005)",
        **{**_DIGITS_CNN_SGD, "lr": 0.005},
    ),
    "digits_cnn_lr_high": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs=_DIGITS_CNN,
        description="as 'digits_cnn' with a 4x larger learning rate (0.2)",
        **{**_DIGITS_CNN_SGD, "lr": 0.2},
    ),
    "digits_cnn_small_data": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs=_DIGITS_CNN,
        train_fraction=0.1,
        description="as 'digits_cnn' on 10% of the training images (a seed-fixed subset)",
        **_DIGITS_CNN_SGD,
    ),
    "digits_cnn_label_noise": Config(
        data="digits",
        arch="small_cnn",
        arch_kwargs=_DIGITS_CNN,
        label_noise=0.2,
        description="as 'digits_cnn' with 20% of the training labels flipped (seed-fixed)",
        **_DIGITS_CNN_SGD,
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


def resolve(preset_or_config: str | Config) -> tuple[str, Config]:
    """(name, config) for a preset name or a Config."""
    if isinstance(preset_or_config, Config):
        return "custom", preset_or_config
    if preset_or_config not in PRESETS:
        raise ArgumentError(
            f"preset={preset_or_config!r} is unknown; choose one of {sorted(PRESETS)}"
        )
    return preset_or_config, PRESETS[preset_or_config]
