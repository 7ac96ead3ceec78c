"""The trainer's optimisers on CPU without ``torch._dynamo``: SGD (momentum), Adam, AdamW.

``torch.optim``'s constructors (``add_param_group``) and ``step`` import ``torch._dynamo``
(with sympy, ``torch._inductor`` and, where installed, scikit-learn): about a second on the
first training step of a process, more than the whole quick-start training. On CPU
``torch.optim`` takes its single-tensor path (``foreach`` is only the default on accelerators);
:class:`PlainOptimizer` performs the same tensor operations in the same order, so parameters
are bit-identical to ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` with default settings
(``dampening=0``, no Nesterov, ``betas=(0.9, 0.999)``, ``eps=1e-8``, no AMSGrad). Elsewhere
:func:`make_optimizer` returns the ``torch.optim`` class itself.

Updates, per parameter ``p`` with gradient ``g`` at step ``t`` (learning rate ``lr``, weight
decay ``wd``):

- SGD: ``g <- g + wd p``; with momentum ``m``: ``b <- g`` (first step), else
  ``b <- m b + g``, and ``g <- b``; then ``p <- p - lr g``.
- Adam: ``g <- g + wd p``; AdamW instead ``p <- p (1 - lr wd)``; then
  ``m1 <- lerp(m1, g, 1 - beta1)``, ``m2 <- beta2 m2 + (1 - beta2) g^2``,
  ``p <- p - lr / (1 - beta1^t) * m1 / (sqrt(m2) / sqrt(1 - beta2^t) + eps)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from richviz.errors import ArgumentError

__all__ = ["KINDS", "PlainOptimizer", "make_optimizer"]

KINDS = ("sgd", "adam", "adamw")
BETAS = (0.9, 0.999)
EPS = 1e-8


class PlainOptimizer:
    """SGD with momentum, Adam or AdamW with ``torch.optim``'s single-tensor arithmetic.

    Parameters
    ----------
    kind : ``"sgd"``, ``"adam"`` or ``"adamw"``.
    params : the parameters (one group).
    lr, momentum, weight_decay : as for ``torch.optim.SGD`` / ``Adam`` / ``AdamW``
        (``momentum`` is SGD's only).

    Attributes
    ----------
    param_groups : one dict with ``"params"`` and ``"lr"`` (and the other settings); setting
        ``param_groups[0]["lr"]`` changes the learning rate of the next steps, as in
        ``torch.optim``.
    state : per-parameter state (``momentum_buffer``; ``step``, ``exp_avg``, ``exp_avg_sq``).

    Examples
    --------
    >>> import torch
    >>> from richviz.optimizers import PlainOptimizer
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = PlainOptimizer("sgd", [w], lr=0.5)
    >>> w.grad = torch.tensor([1.0, -2.0])
    >>> opt.step()
    >>> w.detach()
    tensor([0.5000, 2.0000])
    """

    def __init__(
        self,
        kind: Literal["sgd", "adam", "adamw"],
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        if kind not in KINDS:
            raise ArgumentError(f"optimizer must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        group = {"params": list(params), "lr": lr, "weight_decay": weight_decay}
        if kind == "sgd":
            group["momentum"] = momentum
        self.param_groups: list[dict[str, Any]] = [group]
        self.state: dict[nn.Parameter, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients (``None``, or zeroed in place with ``set_to_none=False``)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter with a gradient."""
        for group in self.param_groups:
            if self.kind == "sgd":
                self._sgd(group)
            else:
                self._adam(group, decoupled=self.kind == "adamw")

    def _sgd(self, group: dict[str, Any]) -> None:
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = grad.detach().clone()
                    state["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(grad, alpha=1)
                grad = buf
            p.add_(grad, alpha=-lr)

    def _adam(self, group: dict[str, Any], decoupled: bool) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = BETAS
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state.setdefault(p, {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            step = float(state["step"])  # torch.optim: a float32 tensor, exact up to 2**24
            if wd != 0:
                if decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    grad = grad.add(p, alpha=wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(EPS)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def make_optimizer(
    kind: Literal["sgd", "adam", "adamw"],
    params: list[nn.Parameter],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> PlainOptimizer | torch.optim.Optimizer:
    """The optimiser ``kind`` for ``params``: a :class:`PlainOptimizer` when every parameter is
    a dense CPU tensor (bit-identical to ``torch.optim`` there, without its dynamo import),
    else ``torch.optim.SGD`` / ``Adam`` / ``AdamW``."""
    if kind not in KINDS:
        raise ArgumentError(f"optimizer must be one of {', '.join(KINDS)}, got {kind!r}")
    plain = all(p.device.type == "cpu" and p.layout == torch.strided for p in params)
    if plain and not any(p.is_complex() for p in params):
        return PlainOptimizer(kind, params, lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
