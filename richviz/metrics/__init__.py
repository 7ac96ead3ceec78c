"""Richness and collapse metrics of a representation: D_LR, NC1-NC4, CKA, norms, spectra.

A package of small modules, one idea each, behind this facade:

- :mod:`~richviz.metrics.centring`: validated, float64-centred matrices shared by the others;
- :mod:`~richviz.metrics.alignment`: :func:`d_lr`, :func:`richness`, :func:`linear_cka`,
  :func:`similarity_to_init`;
- :mod:`~richviz.metrics.collapse`: :func:`neural_collapse` (NC1-NC4);
- :mod:`~richviz.metrics.spectrum`: :func:`feature_spectrum`;
- :mod:`~richviz.metrics.norms`: :func:`parameter_norms`;
- :mod:`~richviz.metrics.checkpoint`: :func:`checkpoint_metrics`, the model-level
  orchestration (one forward pass over a probe set, then the functions above).

Every function but :func:`checkpoint_metrics` is a pure function of tensors. Notation:
``features`` Phi is (n, p) (n probe inputs, p features), ``outputs`` F is (n, C) (the last
Linear layer's own output), ``labels`` is (n,) of class indices. The O(n p^2) work runs on the
tensors' device; the small dense factorisations (``eigh`` of the min(n, p)^2 Gram, ``svd`` of
the (n, C) outputs and of the (C, p) class means) run on the CPU, where they are faster than on
a GPU (reported from an H200: with ``eigh`` on the GPU, ``feature_spectrum`` cost 45x a forward
pass).

Precision and cost: columns are centred in float64, and SVDs, class statistics, projections and
all reductions are float64. Only the O(n p^2) Gram products (and the p x p eigensolvers) run in
the features' own precision: float32 features give ~1e-6 relative rounding there (measured
|D_LR(float32) - D_LR(float64)| ~ 2e-8 at n = 2000, p = 512) for a ~4x faster Gram on CPU;
float64 features are float64 throughout. float32 matmuls run with TF32 off. Nothing forms an
n x n matrix when n >= p: Gram matrices are taken on the smaller side, min(n, p) x min(n, p)
(their nonzero spectra agree).

Degenerate inputs (see each docstring) either raise a one-line
:class:`~richviz.errors.ArgumentError` (a ``ValueError``) naming the argument, or return
``nan`` with a documented meaning, so a metrics panel never crashes on a checkpoint. Non-finite
features raise :class:`NonFiniteError` (a ``ValueError``), which :func:`checkpoint_metrics`
turns into ``nan`` metrics for that checkpoint.
"""

from richviz.errors import NonFiniteError
from richviz.metrics.alignment import Richness, d_lr, linear_cka, richness, similarity_to_init
from richviz.metrics.centring import RANK_RTOL
from richviz.metrics.checkpoint import METRIC_KEYS, OUTPUTS, checkpoint_metrics
from richviz.metrics.collapse import NC_KEYS, neural_collapse
from richviz.metrics.norms import parameter_norms
from richviz.metrics.spectrum import FeatureSpectrum, feature_spectrum

__all__ = [
    "NonFiniteError",
    "FeatureSpectrum",
    "Richness",
    "richness",
    "OUTPUTS",
    "RANK_RTOL",
    "d_lr",
    "neural_collapse",
    "linear_cka",
    "similarity_to_init",
    "parameter_norms",
    "feature_spectrum",
    "checkpoint_metrics",
    "METRIC_KEYS",
    "NC_KEYS",
]
