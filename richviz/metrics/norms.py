"""Parameter norms: |theta|^2 and the squared distance from initialisation |theta - theta_0|^2.

Pure functions of state dicts (name -> tensor); float64 sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from richviz.errors import ArgumentError

__all__ = ["parameter_norms"]


def parameter_norms(
    state_dict: Mapping[str, torch.Tensor],
    init_state_dict: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Squared parameter norm |theta|^2 and squared distance from init |theta - theta_0|^2.

    Sums over the floating-point tensors of ``state_dict`` (non-floating entries, e.g.
    BatchNorm's ``num_batches_tracked``, and non-tensors are skipped; floating buffers such
    as running statistics count if present, so pass ``dict(model.named_parameters())`` for
    parameters only). Returns ``{"param_norm_sq", "param_dist_sq"}`` as floats (float64
    sums); ``param_dist_sq`` is ``nan`` without ``init_state_dict``. A diverged model gives
    ``inf``/``nan``, not an error.

    Raises ``ValueError`` naming the key when the two dicts have different floating keys or
    a shape differs.
    """
    cur = _floating(state_dict)
    total = sum((_sum_sq(t.detach()) for t in cur.values()), 0.0)
    dist = math.nan
    if init_state_dict is not None:
        init = _floating(init_state_dict)
        for key in sorted(set(cur) ^ set(init)):
            where = "init_state_dict" if key in cur else "state_dict"
            raise ArgumentError(f"parameter {key!r} is missing from {where} (dicts must match)")
        dist = 0.0
        for key, t in cur.items():
            t0 = init[key]
            if t.shape != t0.shape:
                raise ArgumentError(
                    f"parameter {key!r} has shape {tuple(t.shape)} but {tuple(t0.shape)} at init"
                )
            # the difference in the tensors' own precision is exact for nearby values (Sterbenz)
            dtype = torch.promote_types(t.dtype, t0.dtype)
            dist += _sum_sq(t.detach().to(dtype) - t0.detach().to(device=t.device, dtype=dtype))
    return {"param_norm_sq": total, "param_dist_sq": dist}


def _sum_sq(t: torch.Tensor) -> float:
    """sum(t^2) computed in float64."""
    return float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2


def _floating(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise ArgumentError(f"state_dict must be a mapping of name -> tensor, got {type(state)}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
