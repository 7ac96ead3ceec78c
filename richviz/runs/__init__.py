"""Training runs on disk: storage (:mod:`.storage`, :mod:`.manifest`) apart from analysis.

- :mod:`richviz.runs.storage`: safe I/O (atomic writes, ``torch.load(weights_only=True)``),
  :class:`Run`, :class:`Checkpoint`, :class:`RunWriter`; imports no numerics;
- :mod:`richviz.runs.manifest`: the ``run.json`` schema and its validation;
- :mod:`richviz.runs.analysis`: the per-run metrics table and its cache (imports
  :mod:`richviz.metrics` and :mod:`richviz.geometry`; not imported by this package's
  ``__init__``, so importing :mod:`richviz.runs` stays free of numerics).
"""

from richviz.errors import CheckpointError, RunError
from richviz.runs.manifest import FORMAT, FORMAT_VERSION, MANIFEST, validate_manifest
from richviz.runs.storage import (
    META_KEYS,
    Checkpoint,
    Run,
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
