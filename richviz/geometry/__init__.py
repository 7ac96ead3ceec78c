"""Riemannian geometry of a feature map on 2-D slices of input space.

A feature map ``phi: (N, *input_shape) -> (N, p)`` pulls the Euclidean metric of feature space
back to input space, ``g(x) = J(x)^T J(x) / p`` (``J = d phi / d x``; the ``1/p`` keeps numbers
comparable across widths). On a slice ``x(u, v) = origin + u e1 + v e2`` the induced 2x2
metric is ``G = (J E)^T (J E) / p``, ``E = [e1 e2]``, with volume element ``sqrt(det G)``.

One idea per module; this facade re-exports their public names:

- :mod:`.slices`: :class:`Slice` (square, covering, plane, paper_plane), grids, coordinates;
- :mod:`.jets`: forward-mode kernels, a feature map's primal and directional derivatives;
- :mod:`.field`: :func:`pullback_metric`, :class:`MetricField`, the volume element, chunking;
- :mod:`.chunking`: the chunk policy per device (cache-sized on CPU, memory-sized on CUDA);
- :mod:`.overlays`: ellipses, the decision field, entropy, class regions, boundary statistics;
- :mod:`.effective`: the full-space effective volume element (top-k singular values of J);
- :mod:`.curvature`: Gaussian and scalar curvature of the pulled-back metric (2-D slices);
- :mod:`.frame_pass`: metric and logits from ONE forward-mode pass over the grid;
- :mod:`richviz.contours` (pure numpy, shared with the widgets): contour lines (marching
  squares) and the decision-boundary lines.

Grid convention: every field array is indexed ``[i, j] = (v[i], u[j])``.
"""

from richviz.contours import (
    contour_levels,
    contour_lines,
    decision_boundary_lines,
    marching_squares,
    split_paths,
)
from richviz.geometry.chunking import ChunkPlan
from richviz.geometry.curvature import (
    CurvatureField,
    brioschi,
    gaussian_curvature_at,
    scalar_curvature,
    second_order_jets,
)
from richviz.geometry.effective import effective_volume
from richviz.geometry.field import (
    OUTPUT_BYTES_PER_POINT,
    OUTPUT_MEMORY_FRACTION,
    MetricChunk,
    MetricField,
    auto_chunk_size,
    available_memory,
    check_output_bytes,
    iter_metric_chunks,
    pullback_metric,
    pullback_metric_at,
    slice_metric_and_volume,
)
from richviz.geometry.frame_pass import FrameChunk, iter_frame_chunks, separable_head
from richviz.geometry.jets import (
    COMPILE_ENV,
    FeatureFn,
    activation_jet,
    chain_directional_derivatives,
    chain_modules,
    directional_derivatives,
)
from richviz.geometry.overlays import (
    DecisionField,
    Ellipses,
    boundary_magnification,
    boundary_mask,
    decision_field,
    decision_margin,
    ellipse_sites,
    metric_ellipses,
    predicted_class,
    softmax_entropy,
)
from richviz.geometry.slices import Slice
from richviz.progress import Progress

__all__ = [
    "split_paths",
    "separable_head",
    "marching_squares",
    "iter_frame_chunks",
    "decision_boundary_lines",
    "contour_lines",
    "contour_levels",
    "FrameChunk",
    "COMPILE_ENV",
    "OUTPUT_BYTES_PER_POINT",
    "OUTPUT_MEMORY_FRACTION",
    "ChunkPlan",
    "CurvatureField",
    "DecisionField",
    "Ellipses",
    "FeatureFn",
    "MetricChunk",
    "MetricField",
    "Progress",
    "Slice",
    "activation_jet",
    "auto_chunk_size",
    "available_memory",
    "boundary_magnification",
    "boundary_mask",
    "brioschi",
    "chain_directional_derivatives",
    "chain_modules",
    "check_output_bytes",
    "decision_field",
    "decision_margin",
    "directional_derivatives",
    "effective_volume",
    "ellipse_sites",
    "gaussian_curvature_at",
    "iter_metric_chunks",
    "metric_ellipses",
    "predicted_class",
    "pullback_metric",
    "pullback_metric_at",
    "scalar_curvature",
    "second_order_jets",
    "slice_metric_and_volume",
    "softmax_entropy",
]
