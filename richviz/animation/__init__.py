"""Animations of a run for slides, headless parts: what each frame shows and when, the grid
cache, the headline numbers, the run's one colour range and the GIF / MP4 writers.

One idea per module:

- :mod:`.plan`: format (from the suffix), frame rate, which checkpoint each frame shows;
  checked before any work, so a bad argument writes nothing;
- :mod:`.fields`: one grid per checkpoint, cached in a process-wide LRU (:data:`FIELDS`) keyed
  by run, checkpoint file, slice, resolution and layer;
- :mod:`.ranges`: one colour range and one class count over the run;
- :mod:`.headline`: test accuracy, D_LR and boundary magnification from ``Run.metrics``, the
  caption of a frame and the curves beside it;
- :mod:`.writers`: GIF (Pillow, one palette) and MP4 (``imageio-ffmpeg``, the optional extra
  ``animation``), written atomically;
- :mod:`.result`: :class:`Animation`, what an export wrote.

No widget and no drawing here. The frames are drawn where the slice view's server-side export
lives, and the entry point is there too: :func:`richviz.widgets.slice_animation.save_animation`
(also ``SliceViewer.save_animation``, ``Explorer.save_animation`` and ``richviz animate``).
"""

from __future__ import annotations

from richviz.animation.fields import FIELDS
from richviz.animation.plan import FORMATS, MAX_FPS, SHOWS, Plan, make_plan
from richviz.animation.result import Animation
from richviz.animation.writers import write_frames

__all__ = ["FIELDS", "FORMATS", "MAX_FPS", "SHOWS", "Animation", "Plan", "make_plan",
           "write_frames"]  # fmt: skip
