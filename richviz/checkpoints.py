"""Compatibility facade: ``from richviz.checkpoints import Run`` keeps working.

Runs live in :mod:`richviz.runs`: storage (:mod:`richviz.runs.storage`: safe loading,
:class:`Checkpoint`, :class:`RunWriter`; no numerics) apart from analysis
(:mod:`richviz.runs.analysis`: the per-run metrics table and its cache), tied together by
:class:`Run` (:mod:`richviz.runs.run`).
"""

from richviz.errors import CheckpointError, RunError
from richviz.runs.analysis import METRICS_CACHE, METRICS_VERSION, read_metrics_cache
from richviz.runs.manifest import FORMAT, FORMAT_VERSION, MANIFEST
from richviz.runs.run import Run
from richviz.runs.storage import (
    META_KEYS,
    Checkpoint,
    RunWriter,
    atomic_save,
    atomic_write_json,
    check_run_folder,
    checkpoint_name,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEYS",
    "METRICS_CACHE",
    "METRICS_VERSION",
    "Checkpoint",
    "CheckpointError",
    "Run",
    "RunError",
    "RunWriter",
    "atomic_save",
    "atomic_write_json",
    "check_run_folder",
    "checkpoint_name",
    "read_metrics_cache",
    "save_checkpoint",
]
