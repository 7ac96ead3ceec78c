"""One registry of elementwise activations: name -> module, function, derivative, theory support.

Every part of richviz that needs to know about activations asks this module:

- :func:`richviz.architectures.make_activation` builds a module by name (:func:`make`);
- :mod:`richviz.theory` takes ``sigma'`` (numpy, float64) of the activations whose
  infinite-width metric it can compute (``theory=True``);
- :mod:`richviz.geometry`'s fast forward-mode path for MLPs accepts exactly the module types
  listed here (:func:`elementwise_types`) and takes ``(sigma(h), sigma'(h))`` in one pass from
  an entry's ``jet`` where it has one;
- the slice viewer's theory overlay recognises a model's activation with :func:`identify`.

Each :class:`Activation` holds the elementwise function ``sigma`` (torch), its derivative
``sigma'`` (numpy float64; ``None`` when no theory uses it), the module classes that compute
it, and whether the infinite-width theory supports it. :class:`Erf` (``erf(u / sqrt 2)``) is
defined here: the activation with a closed-form infinite-width metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from richviz.errors import ArgumentError

__all__ = [
    "Activation",
    "Erf",
    "Square",
    "REGISTRY",
    "THEORY_ACTIVATIONS",
    "MENU",
    "get",
    "make",
    "identify",
    "elementwise_types",
]

_SQRT_2PI = math.sqrt(2 * math.pi)


class Erf(nn.Module):
    """``sigma(u) = erf(u / sqrt 2)``: the activation with a closed-form infinite-width metric."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erf(x / math.sqrt(2.0))


class Square(nn.Module):
    """``sigma(u) = u^2`` (Gromov's modular-arithmetic network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def _erf_np(x: np.ndarray) -> np.ndarray:
    return torch.special.erf(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _sigmoid_np(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _d_erf(u: np.ndarray) -> np.ndarray:
    return math.sqrt(2 / math.pi) * np.exp(-0.5 * u * u)


def _d_relu(u: np.ndarray) -> np.ndarray:
    return (u > 0).astype(np.float64)


def _d_tanh(u: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(u) ** 2


def _d_sigmoid(u: np.ndarray) -> np.ndarray:
    s = _sigmoid_np(u)
    return s * (1.0 - s)


def _d_gelu(u: np.ndarray) -> np.ndarray:
    """Exact GELU ``u Phi(u)``: derivative ``Phi(u) + u phi(u)``."""
    return 0.5 * (1.0 + _erf_np(u / math.sqrt(2))) + u * np.exp(-0.5 * u * u) / _SQRT_2PI


def _d_silu(u: np.ndarray) -> np.ndarray:
    """SiLU ``u s(u)``: derivative ``s(u) (1 + u (1 - s(u)))``."""
    s = _sigmoid_np(u)
    return s * (1.0 + u * (1.0 - s))


@dataclass(frozen=True)
class Activation:
    """One elementwise activation.

    Attributes
    ----------
    name : registry name (``"tanh"``, ``"erf"``, ...).
    module : factory of a fresh ``nn.Module`` computing it.
    types : module classes that compute it (their default settings; see :func:`identify`).
    function : ``sigma`` on tensors.
    derivative : ``sigma'`` on float64 numpy arrays, or None.
    theory : whether :mod:`richviz.theory` computes the infinite-width metric for it.
    closed_form : whether that metric has a closed form (else Gauss quadrature).
    jet : ``(h, inplace) -> (sigma(h), sigma'(h))`` on tensors in one pass (``inplace``: may
        overwrite ``h`` with ``sigma(h)``), or None (forward-mode AD then supplies ``sigma'``).
    push : ``(jet) -> None`` on a stacked jet ``(1 + k, N, ...)`` = primal ``h`` and k tangents
        ``t``: overwrites them with ``sigma(h)`` and ``sigma'(h) * t`` in two fused passes
        (``sigma'`` from the output, as autograd's backward kernels do), or None (``jet`` then).
    """

    name: str
    module: Callable[[], nn.Module]
    types: tuple[type[nn.Module], ...]
    function: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[np.ndarray], np.ndarray] | None = None
    theory: bool = False
    closed_form: bool = False
    jet: Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]] | None = None
    push: Callable[[torch.Tensor], None] | None = None


def _jet_tanh(h: torch.Tensor, inplace: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tanh(h, out=h) if inplace else torch.tanh(h)
    return y, 1 - y * y


def _jet_sigmoid(h: torch.Tensor, inplace: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.sigmoid(h, out=h) if inplace else torch.sigmoid(h)
    return y, y * (1 - y)


def _jet_relu(h: torch.Tensor, inplace: bool) -> tuple[torch.Tensor, torch.Tensor]:
    d = (h > 0).to(h.dtype)
    return (torch.relu_(h) if inplace else torch.relu(h)), d


def _push_tanh(jet: torch.Tensor) -> None:
    y = torch.tanh_(jet[0])
    torch.ops.aten.tanh_backward.grad_input(jet[1:], y, grad_input=jet[1:])  # t * (1 - y^2)


def _push_sigmoid(jet: torch.Tensor) -> None:
    y = torch.sigmoid_(jet[0])
    torch.ops.aten.sigmoid_backward.grad_input(jet[1:], y, grad_input=jet[1:])  # t * y (1 - y)


def _push_relu(jet: torch.Tensor) -> None:
    y = torch.relu_(jet[0])  # y > 0 exactly where h > 0
    torch.ops.aten.threshold_backward.grad_input(jet[1:], y, 0.0, grad_input=jet[1:])


def _entry(
    name: str,
    cls: type[nn.Module],
    function: Callable[[torch.Tensor], torch.Tensor],
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    closed_form: bool = False,
    jet: Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]] | None = None,
    push: Callable[[torch.Tensor], None] | None = None,
) -> Activation:
    theory = derivative is not None
    return Activation(name, cls, (cls,), function, derivative, theory, closed_form, jet, push)


REGISTRY: dict[str, Activation] = {
    a.name: a
    for a in (
        _entry("erf", Erf, lambda x: torch.special.erf(x / math.sqrt(2.0)), _d_erf, True),
        _entry("relu", nn.ReLU, torch.relu, _d_relu, True, _jet_relu, _push_relu),
        _entry("tanh", nn.Tanh, torch.tanh, _d_tanh, jet=_jet_tanh, push=_push_tanh),
        _entry(
            "sigmoid", nn.Sigmoid, torch.sigmoid, _d_sigmoid, jet=_jet_sigmoid, push=_push_sigmoid
        ),
        _entry("gelu", nn.GELU, nn.functional.gelu, _d_gelu),
        _entry("softplus", nn.Softplus, nn.functional.softplus, _sigmoid_np),
        _entry("silu", nn.SiLU, nn.functional.silu, _d_silu),
        _entry("square", Square, lambda x: x * x),
        _entry("relu6", nn.ReLU6, nn.functional.relu6),
        _entry("leaky_relu", nn.LeakyReLU, nn.functional.leaky_relu),
        _entry("elu", nn.ELU, nn.functional.elu),
        _entry("celu", nn.CELU, nn.functional.celu),
        _entry("selu", nn.SELU, nn.functional.selu),
        _entry("mish", nn.Mish, nn.functional.mish),
        _entry("hardtanh", nn.Hardtanh, nn.functional.hardtanh),
        _entry("hardsigmoid", nn.Hardsigmoid, nn.functional.hardsigmoid),
        _entry("hardswish", nn.Hardswish, nn.functional.hardswish),
        _entry("softsign", nn.Softsign, nn.functional.softsign),
        _entry("tanhshrink", nn.Tanhshrink, nn.functional.tanhshrink),
        _entry("logsigmoid", nn.LogSigmoid, nn.functional.logsigmoid),
    )
}
"""Every activation richviz knows, by name."""

THEORY_ACTIVATIONS: tuple[str, ...] = tuple(n for n, a in REGISTRY.items() if a.theory)
"""Names whose infinite-width metric :mod:`richviz.theory` computes."""


MENU: tuple[str, ...] = ("tanh", "relu", "sigmoid", "gelu", "erf")
"""The short list offered by menus (the Playground): common, and each with a theory overlay."""


def get(name: str) -> Activation:
    """The registry entry ``name``; ``ValueError`` naming the choices otherwise."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ArgumentError(f"activation={name!r} is unknown; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def make(name: str) -> nn.Module:
    """A fresh activation module by name (``"gelu"`` is the exact, erf-based GELU)."""
    return get(name).module()


def _default_settings(m: nn.Module) -> bool:
    """Whether a module computes its registry function (no non-default shape parameters)."""
    if isinstance(m, nn.GELU):
        return m.approximate == "none"
    if isinstance(m, nn.Softplus):
        return m.beta == 1 and m.threshold == 20
    return True


def identify(module: nn.Module) -> Activation | None:
    """The registry entry computed by ``module`` (exact type, default settings), else None.

    ``nn.GELU(approximate="tanh")`` or ``nn.Softplus(beta=2)`` compute other functions than the
    registry's GELU / Softplus and are not identified (the theory would not apply to them).
    """
    for a in REGISTRY.values():
        if type(module) in a.types:
            return a if _default_settings(module) else None
    return None


def elementwise_types() -> tuple[type[nn.Module], ...]:
    """Module classes that act elementwise (any settings): the fast MLP path accepts these."""
    return tuple(t for a in REGISTRY.values() for t in a.types)
