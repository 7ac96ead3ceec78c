"""Training runs on disk: storage apart from analysis, and the :class:`Run` that ties them.

- :mod:`richviz.runs.storage`: safe loading (``torch.load(weights_only=True)``), the
  :class:`Checkpoint` record, :func:`save_checkpoint` and :class:`RunWriter` (atomic writes via
  :mod:`richviz.atomic`); imports no numerics;
- :mod:`richviz.runs.manifest`: the ``run.json`` schema and its validation;
- :mod:`richviz.runs.identity`: model and factory identities for cache keys;
- :mod:`richviz.runs.run`: :class:`Run`, a run folder with cached safe loading;
- :mod:`richviz.runs.analysis`: the per-run metrics table and its cache (imports
  :mod:`richviz.metrics` and :mod:`richviz.geometry`; imported by :class:`Run`'s metrics
  methods when first called, never by this package's ``__init__``, so importing
  :mod:`richviz.runs` stays free of numerics). It never imports :mod:`richviz.runs.run`.
"""

from richviz.errors import CheckpointError, RunError
from richviz.runs.manifest import FORMAT, FORMAT_VERSION, MANIFEST, validate_manifest
from richviz.runs.run import Run
from richviz.runs.storage import (
    META_KEYS,
    Checkpoint,
    RunWriter,
    atomic_save,
    atomic_write_json,
    check_run_folder,
    checkpoint_name,
    file_hash,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEYS",
    "Checkpoint",
    "CheckpointError",
    "Run",
    "RunError",
    "RunWriter",
    "atomic_save",
    "atomic_write_json",
    "check_run_folder",
    "checkpoint_name",
    "file_hash",
    "save_checkpoint",
    "validate_manifest",
]
