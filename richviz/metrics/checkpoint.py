"""Every metrics-panel number of one checkpoint, from one forward pass over a probe set.

The model-level orchestration over the tensor functions of :mod:`richviz.metrics`: runs the
model (features, last-Linear outputs, model outputs), then shares one centring and one Gram
between D_LR, NC1-NC4, CKA to init, the spectrum and the parameter norms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from richviz import validation
from richviz.architectures import Centered
from richviz.devices import module_device
from richviz.errors import ArgumentError, NonFiniteError
from richviz.features import PENULTIMATE, features_and_outputs, last_linear_name
from richviz.metrics.alignment import _cka_core, _richness_core
from richviz.metrics.centring import _host, _labels, _prepare
from richviz.metrics.collapse import NC_KEYS, _neural_collapse
from richviz.metrics.norms import parameter_norms
from richviz.metrics.spectrum import _effective_rank

__all__ = ["METRIC_KEYS", "OUTPUTS", "checkpoint_metrics"]

METRIC_KEYS = (
    "d_lr",
    "confinement",
    "isotropy",
    *NC_KEYS,
    "cka_init",
    "param_norm_sq",
    "param_dist_sq",
    "effective_rank",
    "probe_acc",
)
"""Keys of :func:`checkpoint_metrics`, in display order."""

OUTPUTS = ("last_linear", "learned")
"""Choices of ``outputs`` in :func:`checkpoint_metrics`: the function D_LR is measured against."""


def _forward_all(
    model: nn.Module, x: torch.Tensor, layer: str | None, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Features (n, p), last-Linear outputs (n, C) and model outputs (n, ...) in batches."""
    device = module_device(model)
    feats, outs, model_outs = [], [], []
    captured: list = []
    handle = model.register_forward_hook(lambda _m, _a, o: captured.append(o))
    try:
        for chunk in torch.split(x, batch_size):
            captured.clear()
            f, o = features_and_outputs(model, chunk.to(device), layer)
            feats.append(f)
            outs.append(o)
            model_outs.append(captured[-1] if captured else None)
    finally:
        handle.remove()
    y_out = None
    if all(isinstance(m, torch.Tensor) for m in model_outs):
        y_out = torch.cat(model_outs)
    return torch.cat(feats), torch.cat(outs), y_out


def checkpoint_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    init_model: nn.Module | None = None,
    layer: str | None = None,
    batch_size: int = 1024,
    outputs: str = "last_linear",
) -> dict[str, float]:
    """All metrics-panel numbers for one checkpoint, from one forward pass over the probe set.

    ``model``: the network (evaluated in eval mode under ``torch.no_grad``; its train/eval mode
    is restored). ``x`` (n, *input_shape) probe inputs, ``y`` (n,) integer labels (or (n, C)
    one-hot / scores, reduced by argmax). ``init_model``: the same architecture at
    initialisation (for ``cka_init`` and ``param_dist_sq``). ``layer``: feature layer as in
    :func:`richviz.features.features_and_outputs` (default: input of the last ``nn.Linear``).
    The forward runs in chunks of ``batch_size`` on the model's device.

    ``outputs``: the function F that ``d_lr``, ``confinement`` and ``isotropy`` measure the
    features against. ``"last_linear"`` (default): the last ``nn.Linear``'s own output
    f = Phi W^T + b, always defined. For an alpha-scaled model
    (:class:`richviz.architectures.Centered`, output alpha * (f - f0)) this is the inner f,
    not the scaled difference: at large alpha f hardly moves, so D_LR stays at its value at
    initialisation (the lazy reading). ``"learned"``: the learned function, i.e. the model's
    own output alpha * (f - f0) for a ``Centered`` model, and f - f0 (model output minus
    ``init_model``'s, taken from the forward pass ``cka_init`` already needs) for a plain
    model, which then requires ``init_model``. It is identically zero at initialisation, so
    the three richness numbers are ``nan`` there (outputs without variation).

    Returns a dict with keys :data:`METRIC_KEYS`: ``d_lr``, ``confinement``, ``isotropy``
    (:func:`richness` of the features vs ``outputs``),
    ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` (classifier = the last
    ``nn.Linear``'s weight and bias; C = its rows), ``cka_init`` (:func:`similarity_to_init`),
    ``param_norm_sq``, ``param_dist_sq`` (over ``named_parameters``), ``effective_rank`` (of
    the feature spectrum) and ``probe_acc`` (accuracy of the model's own output on (x, y)).

    ``nan`` where undefined (never an exception for these): ``cka_init`` and
    ``param_dist_sq`` without ``init_model``; all ``nc*`` when the probe labels miss a class
    (NC needs every class mean; the other metrics stay valid); ``nc3``/``nc4`` when the
    features are not the classifier's input (their width differs) or the model has no
    ``nn.Linear``; ``probe_acc`` when the model output is not (n, C) scores; and every
    feature metric of a checkpoint whose features or outputs contain NaN/inf (diverged
    training). Labels outside 0..C-1 (data that does not fit the model), a model without an
    ``nn.Linear`` for the default layer, or malformed ``x`` / ``y`` raise ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if init_model is not None and not isinstance(init_model, nn.Module):
        raise ArgumentError(
            f"init_model must be a torch.nn.Module, got {type(init_model).__name__}"
        )
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ArgumentError("x must be a tensor (n, *input_shape) with at least 2 inputs")
    validation.positive_int(batch_size, "batch_size")
    if outputs not in OUTPUTS:
        raise ArgumentError(f"outputs={outputs!r} must be one of {', '.join(OUTPUTS)}")
    centred = _is_centered(model)
    if outputs == "learned" and not centred and init_model is None:
        raise ArgumentError(
            "outputs='learned' needs init_model (f - f0) for a model that is not alpha-scaled "
            "(richviz.architectures.Centered)"
        )
    y = torch.as_tensor(y)
    if y.ndim == 2:
        y = y.argmax(dim=1)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ArgumentError(f"y must be (n,) labels with n = {x.shape[0]}, got {tuple(y.shape)}")
    layer = PENULTIMATE if layer is None else layer
    try:
        classifier = model.get_submodule(last_linear_name(model))
    except ValueError:
        if layer == PENULTIMATE:
            raise  # the default feature layer needs a Linear; the message says what to pass
        classifier = None

    out = {k: math.nan for k in METRIC_KEYS}
    modes = {m: m.training for m in (model, init_model) if m is not None}
    try:
        with torch.no_grad():
            feats, lin_out, model_out = _forward_all(model, x, layer, batch_size)
            init_feats = init_out = None
            if init_model is not None:
                init_feats, _, init_out = _forward_all(init_model, x, layer, batch_size)
            if outputs == "learned":
                lin_out = _learned_outputs(model_out, None if centred else init_out)
            params = dict(model.named_parameters())
            init_params = None if init_model is None else dict(init_model.named_parameters())
            out.update(parameter_norms(params, init_params))
            _feature_metrics(out, feats, lin_out, model_out, y, init_feats, classifier)
    finally:
        for m, training in modes.items():
            m.train(training)
    return out


def _is_centered(model: nn.Module) -> bool:
    return isinstance(model, Centered)


def _learned_outputs(model_out: torch.Tensor | None, init_out: torch.Tensor | None) -> torch.Tensor:
    """The learned function: the model output (Centered) or model minus init output, (n, C)."""
    if not isinstance(model_out, torch.Tensor) or model_out.ndim != 2:
        raise ArgumentError("outputs='learned' needs a model whose output is an (n, C) tensor")
    if init_out is None:
        return model_out
    if not isinstance(init_out, torch.Tensor) or init_out.shape != model_out.shape:
        raise ArgumentError("outputs='learned': init_model's output must have the model's shape")
    return model_out.double() - init_out.to(model_out.device).double()


def _feature_metrics(
    out: dict[str, float],
    feats: torch.Tensor,
    lin_out: torch.Tensor,
    model_out: torch.Tensor | None,
    y: torch.Tensor,
    init_feats: torch.Tensor | None,
    classifier: nn.Module | None,
) -> None:
    """Fill ``out`` with the feature-based metrics, sharing the centring and the Gram."""
    n = feats.shape[0]
    c = classifier.out_features if classifier is not None else lin_out.shape[1]
    labels = _labels(y, n, c, feats.device)  # out of range: the data does not fit the model
    nc_defined = c >= 2 and bool((torch.bincount(labels, minlength=c) > 0).all())
    if model_out is not None and model_out.ndim == 2 and model_out.shape[1] == c:
        if bool(torch.isfinite(model_out).all()):
            out["probe_acc"] = float((model_out.argmax(dim=1) == labels).double().mean())
    try:
        phi = _prepare("features", feats)
        f = _prepare("outputs", lin_out, rows=n)
    except NonFiniteError:
        return  # diverged checkpoint: feature metrics stay nan
    rich = _richness_core(phi, f)
    out["d_lr"], out["confinement"], out["isotropy"] = rich.d_lr, rich.confinement, rich.isotropy
    if not phi.constant:
        rho = torch.linalg.eigvalsh(_host(phi.gram) / n).clamp_min(0.0)  # small: on the CPU
        out["effective_rank"] = _effective_rank(rho)

    w = b = None
    if classifier is not None and classifier.in_features == phi.c.shape[1]:
        w = classifier.weight.detach().to(device=phi.c.device, dtype=torch.float64)
        if classifier.bias is not None:
            b = classifier.bias.detach().to(device=phi.c.device, dtype=torch.float64)
        if not (bool(torch.isfinite(w).all()) and (b is None or bool(torch.isfinite(b).all()))):
            w = b = None
    if nc_defined:
        out.update(_neural_collapse(phi, labels, c, w, b))

    if init_feats is not None:
        try:
            phi0 = _prepare("init features", init_feats, rows=n)
        except NonFiniteError:
            return
        out["cka_init"] = _cka_core(phi, phi0)
