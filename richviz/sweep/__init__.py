"""Sweeps across many runs on a Dask cluster: metrics tables and training grids.

The unit of work is one checkpoint's metrics row (or one training run); a metrics task carries
a few rows of one run. Tasks go to
``dask.distributed``: a ``LocalCluster`` of worker processes on loopback by default, or any
scheduler address. Workers receive paths, open the runs themselves and return rows; the client
writes each finished row into its run's ``metrics.json`` atomically as tasks complete, so a
killed worker loses nothing that finished and a rerun computes only what is missing (rows are
keyed by the run's own cache key, exactly as :meth:`richviz.runs.Run.metrics` does).

A package of small modules behind this facade:

- :mod:`~richviz.sweep.cluster`: :func:`open_client` (a local cluster or a scheduler address);
- :mod:`~richviz.sweep.grid`: training grids, pure (:func:`parse_grid`, :func:`grid_points`,
  :func:`run_name`);
- :mod:`~richviz.sweep.metrics`: :func:`sweep_metrics` and its worker task
  :func:`compute_metrics_entries` (a few rows of one run per task, each row sent back as it
  finishes; :func:`compute_metrics_entry` computes one);
- :mod:`~richviz.sweep.training`: :func:`train_sweep` and its worker task :func:`train_run`.

Worker tasks run under the process-wide :data:`richviz.compute_lock.COMPUTE` (PyTorch's
forward-mode AD levels are process-wide: one heavy computation at a time per process).
Dask is optional (``pip install "richviz[dask]"``) and imported only when a sweep starts.
Run folders must be visible at the same path to the client and every worker (a shared
filesystem for a remote cluster).
"""

from richviz.sweep.cluster import DASK_HINT, MALLOC_TRIM, open_client
from richviz.sweep.grid import GRID_KEYS, grid_points, parse_grid, run_name
from richviz.sweep.metrics import compute_metrics_entries, compute_metrics_entry, sweep_metrics
from richviz.sweep.training import _overrides, train_run, train_sweep  # noqa: F401 (_overrides)

__all__ = [
    "DASK_HINT",
    "MALLOC_TRIM",
    "GRID_KEYS",
    "compute_metrics_entries",
    "compute_metrics_entry",
    "grid_points",
    "open_client",
    "parse_grid",
    "run_name",
    "sweep_metrics",
    "train_run",
    "train_sweep",
]
