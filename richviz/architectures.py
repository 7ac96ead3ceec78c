"""A registry of model architectures that a run's manifest can rebuild by name.

A manifest stores ``{"name": ..., "kwargs": {...}}``; :func:`build` turns that back into an
``nn.Module``. Every architecture ends in an ``nn.Linear`` readout, so the default feature map
(input of the last Linear, :mod:`richviz.features`) is the penultimate representation.

:class:`Centered` implements the lazy/rich output scale of Chizat, Oyallon & Bach:
``alpha * (f(x) - f0(x))`` with ``f0`` a frozen copy of the network at initialisation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from richviz import activations, validation
from richviz.errors import ArgumentError

__all__ = [
    "ARCHITECTURES",
    "build",
    "build_model",
    "Centered",
    "make_activation",
    "mlp",
    "register",
    "resnet18",
    "Scale",
    "small_cnn",
    "vgg16",
]

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


class Scale(nn.Module):
    """Multiply by a fixed constant (a parametrisation, not a parameter)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make ``fn(**kwargs) -> nn.Module`` buildable from a manifest as ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = fn
        return fn

    return deco


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments ``kwargs``."""
    if name not in ARCHITECTURES:
        raise ArgumentError(
            f"architecture={name!r} is not registered; choose one of {sorted(ARCHITECTURES)}"
        )
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as exc:
        raise ArgumentError(
            f"architecture {name!r}: bad keyword arguments {kwargs}: {exc}"
        ) from exc


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (any of :data:`richviz.activations.REGISTRY`)."""
    return activations.make(name)


@register("mlp")
def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    init: str = "default",
) -> nn.Sequential:
    """``Flatten -> [Linear -> act] * len(hidden) -> Linear``.

    ``init="normal"`` is the Zavatone-Veth et al. sinusoid setting: hidden weights and biases
    and the readout weights from N(0, 1), readout bias 0, and the readout's output multiplied
    by ``1/sqrt(width)`` (a fixed :class:`Scale` after the last Linear, so the Linear's own
    output stays the unscaled logits). ``"default"`` is PyTorch's initialisation.
    """
    if init not in ("default", "normal"):
        raise ArgumentError(f"init={init!r} must be 'default' or 'normal'")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        lin = nn.Linear(width, h)
        if init == "normal":
            nn.init.normal_(lin.weight)
            nn.init.normal_(lin.bias)
        layers += [lin, make_activation(activation)]
        width = h
    readout = nn.Linear(width, out_features)
    layers.append(readout)
    if init == "normal":
        nn.init.normal_(readout.weight)
        nn.init.zeros_(readout.bias)
        layers.append(Scale(width**-0.5))
    return nn.Sequential(*layers)


@register("small_cnn")
def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    width: int = 16,
    image_size: int = 8,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Two 3x3 conv + ReLU blocks (the second pools by 2), a hidden Linear and a readout.

    ``batch_norm``: a BatchNorm after each conv and after the hidden Linear (before each ReLU).
    """
    pooled = image_size // 2

    def norm(kind: type[nn.Module], channels: int) -> list[nn.Module]:
        return [kind(channels)] if batch_norm else []

    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        *norm(nn.BatchNorm2d, width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        *norm(nn.BatchNorm2d, 2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * pooled * pooled, 64),
        *norm(nn.BatchNorm1d, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


@register("resnet18")
def resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision ResNet18 for 32x32 inputs: 3x3 stride-1 conv1, no max-pool, random init."""
    import torchvision

    m = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    return m


@register("vgg16")
def vgg16(num_classes: int = 10) -> nn.Module:
    """torchvision VGG16-BN for 32x32 inputs: 1x1 pooled features, a 512-wide classifier."""
    import torchvision

    m = torchvision.models.vgg16_bn(weights=None)
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
    return m


class Centered(nn.Module):
    """``alpha * (net(x) - net0(x))``: the output-scaled, centred model of Chizat et al.

    ``net0`` is a frozen snapshot of ``net`` at construction, kept as *buffers* (``f0.*`` in the
    state dict, so checkpoints round-trip) and evaluated with ``torch.func.functional_call`` on a
    parameter-free template. The only ``nn.Linear`` modules are those of the trainable ``net``,
    so :func:`richviz.features.last_linear_name` finds ``net``'s readout, and feature hooks never
    see the frozen copy. At construction the model outputs exactly zero.
    """

    def __init__(self, net: nn.Module, alpha: float):
        super().__init__()
        validation.check_number(alpha, "alpha", low=0, low_open=True)
        self.alpha = float(alpha)
        self.net = net
        self.f0 = nn.Module()
        self._keys: list[tuple[str, str]] = []
        for i, (key, t) in enumerate(net.state_dict(keep_vars=False).items()):
            self.f0.register_buffer(f"t{i}", t.detach().clone())
            self._keys.append((key, f"t{i}"))
        # The template holds no data (meta device) and is not a registered submodule.
        template = copy.deepcopy(net).to("meta").eval()
        object.__setattr__(self, "_template", template)

    def initial(self, x: torch.Tensor) -> torch.Tensor:
        """f0(x): the frozen network at initialisation (always in eval mode)."""
        tensors = {key: getattr(self.f0, b) for key, b in self._keys}
        return functional_call(self._template, tensors, (x,), strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * (self.net(x) - self.initial(x))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Model from a manifest's ``architecture`` entry ``{"name", "kwargs", "alpha"}``.

    With ``alpha`` not None the network is wrapped in :class:`Centered`.
    """
    try:
        name = spec["name"]
        kwargs = dict(spec.get("kwargs") or {})
        alpha = spec.get("alpha")
    except (TypeError, KeyError) as exc:
        raise ArgumentError(
            f"architecture spec {spec!r} needs 'name' and optional 'kwargs'"
        ) from exc
    net = build(name, **kwargs)
    return net if alpha is None else Centered(net, alpha)
