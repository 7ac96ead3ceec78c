"""Closed-form metric of a wide random two-layer network at initialisation.

For ``phi_j(x) = sigma(w_j . x + b_j)``, ``j = 1..p``, ``w ~ N(0, s^2 I_d)``, ``b ~ N(0, z^2)``,
the pulled-back metric ``g = J^T J / p = (1/p) sum_j sigma'(w_j.x + b_j)^2 w_j w_j^T`` tends,
as ``p -> inf``, to ``E[sigma'(w.x + b)^2 w w^T]``. Gaussian integration by parts gives

    g(x) = A(r^2) I + 2 A'(r^2) x x^T,          r = |x|,
    A(r^2) = s^2 E_{u ~ N(0, V)}[sigma'(u)^2],   V = s^2 r^2 + z^2,
    A'(r^2) = dA/d(r^2) = s^4 E_{u ~ N(0, V)}[sigma'(u)^2 (u^2 - V)] / (2 V^2).

(The last line: d/dV E_{N(0,V)}[f] = E[f (u^2 - V)] / (2 V^2), by differentiating the Gaussian
density, and dV/d(r^2) = s^2.) So g depends on x only through |x| and x x^T: spherical
symmetry. The volume element is ``A^{d/2} sqrt(1 + 2 r^2 A'/A)``.

Closed forms: ``sigma(u) = erf(u / sqrt 2)`` (``"erf"``) gives
``A = (2 s^2 / pi) q^{-1/2}``, ``A' = -(2 s^4 / pi) q^{-3/2}``, ``q = 1 + 2 z^2 + 2 s^2 r^2``;
ReLU gives the flat ``g = (s^2 / 2) I``. Other activations use Gauss-Hermite quadrature
(``numpy.polynomial.hermite_e``, 180 nodes) for V <= 1; for larger V the narrow integrand
needs more nodes than Gauss-Hermite can give stably, and a composite Gauss-Legendre rule in u
(panels of width 0.5 over +-9 standard deviations) takes over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from richviz import activations, validation
from richviz.activations import THEORY_ACTIVATIONS, Erf
from richviz.errors import ArgumentError, RichvizError

ACTIVATIONS = THEORY_ACTIVATIONS
"""Activations with an infinite-width theory (closed form: erf, relu; quadrature: the rest)."""
Method = Literal["auto", "closed", "quadrature"]

__all__ = [
    "ACTIVATIONS",
    "Erf",
    "Method",
    "NoTheoryError",
    "activation_module",
    "infer_theory_params",
    "infinite_width_field",
    "infinite_width_metric",
    "infinite_width_volume",
    "metric_coefficients",
    "random_two_layer_network",
]

_SQRT_2PI = math.sqrt(2 * math.pi)


def _derivative(activation: str) -> Callable[[np.ndarray], np.ndarray]:
    """sigma'(u) for a named activation (numpy, float64), from :mod:`richviz.activations`."""
    entry = activations.REGISTRY.get(activation) if isinstance(activation, str) else None
    if entry is None or not entry.theory or entry.derivative is None:
        raise ArgumentError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return entry.derivative


# Gauss-Hermite (probabilists') nodes: accurate to ~1e-11 relative for V <= _GH_MAX_VAR with
# every activation above (checked against the erf closed form and a composite rule). Beyond,
# sigma'(u)^2 is too narrow in units of the standard deviation (tanh's poles at u = +-i pi/2
# come close to the real axis), and a composite Gauss-Legendre rule in u takes over.
_GH_ORDER = 180
_GH_MAX_VAR = 1.0
_PANEL_WIDTH = 0.5  # in u; sigma'(u)^2 of the activations above varies on a scale of ~1
_PANEL_NODES = 8
_TAIL = 9.0  # integrate u over +-_TAIL standard deviations


@lru_cache(maxsize=4)
def _hermite_e(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to a standard normal."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / _SQRT_2PI


def _composite_nodes(half_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes/weights on [-half_range, half_range], a panel edge at 0."""
    panels = max(1, math.ceil(half_range / _PANEL_WIDTH))
    h = half_range / panels
    t, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    left = np.arange(-panels, panels) * h  # (2 * panels,)
    nodes = (left[:, None] + (t[None, :] + 1) * h / 2).reshape(-1)
    weights = np.tile(w * h / 2, 2 * panels)
    return nodes, weights


def _quadrature_a(
    var: np.ndarray, activation: str, s: float, order: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """A and A' by quadrature, var (M,) -> (M,), (M,).

    ``A = s^2 E[f(u)]``, ``A' = s^4 E[f(u) (u^2 - V)] / (2 V^2)``, ``f = sigma'^2``,
    ``u ~ N(0, V)``: Gauss-Hermite for V <= 1 (or always, when ``order`` is given), composite
    Gauss-Legendre in u for larger V.
    """
    f = _derivative(activation)
    a = np.empty_like(var)
    da = np.empty_like(var)
    zero = var <= 0
    if zero.any():  # V = 0 (bias_std = 0 at x = 0): A = s^2 f(0), A' = s^4 f''(0) / 2
        h = 1e-4
        f0, fp, fm = (float(f(np.array([t]))[0]) ** 2 for t in (0.0, h, -h))
        a[zero] = s**2 * f0
        da[zero] = s**4 * 0.5 * (fp - 2 * f0 + fm) / h**2
    gh = ~zero & ((var <= _GH_MAX_VAR) | (order is not None))
    if gh.any():
        x, w = _hermite_e(_GH_ORDER if order is None else int(order))
        v = var[gh]
        fu2 = f(np.sqrt(v)[:, None] * x[None, :]) ** 2  # (M, n), u = sqrt(V) X
        a[gh] = s**2 * fu2 @ w
        # E[f (u^2 - V)] / (2 V^2) = E[f(sqrt(V) X) (X^2 - 1)] / (2 V)
        da[gh] = s**4 * (fu2 @ (w * (x * x - 1.0))) / (2.0 * v)
    rest = np.flatnonzero(~zero & ~gh)
    if rest.size:
        u, w = _composite_nodes(_TAIL * math.sqrt(float(var[rest].max())))
        fu2w = f(u) ** 2 * w
        for block in np.array_split(rest, max(1, rest.size * u.size // 2**22)):
            v = var[block][:, None]
            dens = np.exp(-0.5 * u[None, :] ** 2 / v) / np.sqrt(2 * math.pi * v)  # (M, K)
            a[block] = s**2 * dens @ fu2w
            da[block] = s**4 * (dens * (u[None, :] ** 2 - v)) @ fu2w / (2.0 * v[:, 0] ** 2)
    return a, da


def metric_coefficients(
    r2: np.ndarray | torch.Tensor,
    activation: str = "erf",
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    method: Method = "auto",
    order: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``A(r^2)`` and ``A'(r^2) = dA/d(r^2)`` (float64 arrays shaped like ``r2``).

    ``method``: ``"closed"`` (erf, relu only), ``"quadrature"`` (any activation), or
    ``"auto"`` (closed form when there is one). ``order``: force Gauss-Hermite with this many
    nodes (default: 180 nodes for V <= 1, composite Gauss-Legendre beyond).
    """
    _derivative(activation)  # validates the name
    validation.check_choice(method, "method", ("auto", "closed", "quadrature"))
    s = validation.finite_float(weight_std, "weight_std", low=0.0, low_open=True)
    z = validation.finite_float(bias_std, "bias_std", low=0.0)
    r2 = np.asarray(r2.detach().cpu() if isinstance(r2, torch.Tensor) else r2, dtype=np.float64)
    validation.check_finite(r2, "r2")
    if np.any(r2 < 0):
        raise ArgumentError("r2 must be >= 0")
    closed = activations.REGISTRY[activation].closed_form
    if method == "closed" and not closed:
        raise ArgumentError(
            f"no closed form for activation={activation!r}; use method='quadrature'"
        )
    if closed and method != "quadrature":
        if activation == "relu":
            return np.full_like(r2, s**2 / 2), np.zeros_like(r2)
        q = 1.0 + 2 * z**2 + 2 * s**2 * r2
        return (2 * s**2 / math.pi) * q**-0.5, -(2 * s**4 / math.pi) * q**-1.5
    var = s**2 * r2 + z**2
    flat, inverse = np.unique(var.reshape(-1), return_inverse=True)
    a, da = _quadrature_a(flat, activation, s, order)
    return a[inverse].reshape(r2.shape), da[inverse].reshape(r2.shape)


def _as_points(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = validation.as_float_tensor(x, "x", finite=False).cpu().to(torch.float64)
    validation.check_ndim(t, "x", 2, "(N, d)")
    validation.check_finite(t, "x")
    return t


def infinite_width_metric(
    x: np.ndarray | torch.Tensor,
    activation: str = "erf",
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    method: Method = "auto",
) -> torch.Tensor:
    """The width-normalised metric ``g(x) = A I + 2 A' x x^T`` at inputs x (N, d): (N, d, d).

    Float64 on CPU. See the module docstring for A and A'.
    """
    pts = _as_points(x)
    r2 = (pts * pts).sum(1)
    a, da = metric_coefficients(r2.numpy(), activation, weight_std, bias_std, method)
    a_t, da_t = torch.from_numpy(a), torch.from_numpy(da)
    eye = torch.eye(pts.shape[1], dtype=torch.float64)
    return a_t[:, None, None] * eye + 2 * da_t[:, None, None] * pts[:, :, None] * pts[:, None, :]


def infinite_width_volume(
    x: np.ndarray | torch.Tensor,
    activation: str = "erf",
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    method: Method = "auto",
) -> torch.Tensor:
    """Volume element ``sqrt(det g) = A^{d/2} sqrt(1 + 2 r^2 A'/A)`` at x (N, d): (N,) float64."""
    pts = _as_points(x)
    d = pts.shape[1]
    r2 = (pts * pts).sum(1).numpy()
    a, da = metric_coefficients(r2, activation, weight_std, bias_std, method)
    vol = a ** (d / 2) * np.sqrt(np.clip(1 + 2 * r2 * da / a, 0.0, None))
    return torch.from_numpy(vol)


def infinite_width_field(
    slice,
    resolution: int = 128,
    activation: str = "erf",
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    method: Method = "auto",
):
    """The theory metric on a slice grid, as a :class:`richviz.geometry.MetricField`.

    ``G = E^T g E = A E^T E + 2 A' c c^T`` with ``c = E^T x``, ``det G`` formed as
    ``A^2 det(E^T E) (1 + 2 (A'/A) c^T (E^T E)^{-1} c)`` (no cancellation). ``p`` is 0 (infinite
    width). For comparing a trained network with its infinite-width limit on the same grid.
    """
    from richviz.geometry import MetricField  # local: geometry is the heavier module

    u, v = slice.grid(resolution)
    res = u.shape[0]
    pts = slice.to_input(slice.grid_uv(res), dtype=torch.float64, device="cpu")
    flat = pts.reshape(res * res, -1)
    basis = slice.basis.detach().cpu().to(torch.float64).reshape(2, -1)
    r2 = (flat * flat).sum(1)
    a, da = metric_coefficients(r2.numpy(), activation, weight_std, bias_std, method)
    a_t, da_t = torch.from_numpy(a), torch.from_numpy(da)
    m = basis @ basis.T  # (2, 2)
    c = flat @ basis.T  # (N, 2)
    metric = a_t[:, None, None] * m + 2 * da_t[:, None, None] * c[:, :, None] * c[:, None, :]
    quad = (c @ torch.linalg.inv(m) * c).sum(1)
    det = a_t**2 * torch.linalg.det(m) * torch.clamp(1 + 2 * (da_t / a_t) * quad, min=0)
    return MetricField(
        metric=metric.reshape(res, res, 2, 2),
        volume=torch.sqrt(det).reshape(res, res),
        u=u,
        v=v,
        slice=slice,
        p=0,
    )


def activation_module(activation: str) -> nn.Module:
    """The ``nn.Module`` of a theory activation (``"gelu"`` is the exact, erf-based GELU)."""
    _derivative(activation)  # validates: only activations with a theory
    return activations.make(activation)


def random_two_layer_network(
    d: int,
    width: int,
    activation: str = "erf",
    weight_std: float = 1.0,
    bias_std: float = 1.0,
    num_outputs: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """``Linear(d, width) -> activation -> Linear(width, num_outputs)`` at the theory's init.

    Hidden weights ``N(0, weight_std^2)``, biases ``N(0, bias_std^2)``; readout ``N(0, 1/width)``,
    zero bias. The default feature map (input of the last Linear) is then
    ``phi(x) = sigma(W x + b)``, whose metric tends to :func:`infinite_width_metric` as
    ``width`` grows. In eval mode.
    """
    d = validation.positive_int(d, "d")
    width = validation.positive_int(width, "width")
    num_outputs = validation.positive_int(num_outputs, "num_outputs")
    weight_std = validation.finite_float(weight_std, "weight_std", low=0.0)
    bias_std = validation.finite_float(bias_std, "bias_std", low=0.0)
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(d, width), activation_module(activation), nn.Linear(width, num_outputs)
    ).to(dtype)
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(width, d, generator=gen, dtype=torch.float64) * weight_std)
        net[0].bias.copy_(torch.randn(width, generator=gen, dtype=torch.float64) * bias_std)
        net[2].weight.copy_(
            torch.randn(num_outputs, width, generator=gen, dtype=torch.float64) / math.sqrt(width)
        )
        net[2].bias.zero_()
    return net.eval()


class NoTheoryError(RichvizError, ValueError):
    """The infinite-width theory does not describe this model (the message says why)."""


_PASSIVE: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Identity, nn.Dropout)


def infer_theory_params(model: nn.Module, layer: str | None = None) -> dict[str, Any]:
    """``activation``, ``weight_std``, ``bias_std`` of a one-hidden-layer network for the theory.

    The theory describes ``phi(x) = sigma(W x + b)`` of ``Linear(d, width) -> sigma ->
    Linear(width, C)`` (optionally wrapped in :class:`richviz.architectures.Centered`, with a
    ``Flatten`` in front, a ``Scale`` after the readout): the default feature map
    (``layer`` None or ``"penultimate"``). ``sigma`` must be an activation of
    :data:`ACTIVATIONS` with its default settings (:func:`richviz.activations.identify`).
    ``weight_std`` and ``bias_std`` are the empirical standard deviations of the first
    Linear's weights and biases (0 without a bias).

    Raises :class:`NoTheoryError` with the reason otherwise (deep nets, convolutions,
    unsupported activations, another feature layer).
    """
    if layer not in (None, "penultimate"):
        raise NoTheoryError(
            f"the theory describes the default feature map (penultimate), not layer={layer!r}"
        )
    from richviz.architectures import Centered, Scale  # local: architectures is the heavier module

    net = model.net if isinstance(model, Centered) else model
    leaves = [
        m for m in net.modules() if not list(m.children()) and not isinstance(m, (*_PASSIVE, Scale))
    ]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    others = [m for m in leaves if not isinstance(m, nn.Linear)]
    names = ", ".join(sorted({type(m).__name__ for m in others})) or "none"
    if len(linears) != 2 or len(others) != 1 or leaves[1] is not others[0]:
        hidden = max(len(linears) - 1, 0)
        raise NoTheoryError(
            "the theory covers Linear -> activation -> Linear (one hidden layer); this model has "
            f"{hidden} hidden Linear layer(s) and non-Linear layers: {names}"
        )
    act = activations.identify(others[0])
    if act is None or not act.theory:
        raise NoTheoryError(
            f"no infinite-width theory for activation {others[0]!r}; supported: {ACTIVATIONS}"
        )
    first = linears[0]
    w = first.weight.detach().double()
    return {
        "activation": act.name,
        "weight_std": float(w.std()) if w.numel() > 1 else float(w.abs().sum()),
        "bias_std": float(first.bias.detach().double().std())
        if first.bias is not None and first.bias.numel() > 1
        else 0.0,
    }
