"""Animations of a run for slides: the slice view over training as a GIF or an MP4.

One idea per module:

- :mod:`.plan`: format, frame rate, which checkpoint each frame shows (checked up front);
- :mod:`.fields`: one grid per checkpoint (:func:`richviz.views.slice_frame`), cached in a
  process-wide LRU keyed by run, checkpoint, slice, resolution and layer;
- :mod:`.frames`: the run's one colour range and each checkpoint's slice view;
- :mod:`.headline`: test accuracy, D_LR and boundary magnification from ``Run.metrics``;
- :mod:`.curves`: the metric curves with a cursor; :mod:`.layout`: one frame's page, rasterised;
- :mod:`.writers`: GIF (Pillow) and MP4 (``imageio-ffmpeg``, optional extra ``animation``),
  written atomically;
- :mod:`.animate`: :func:`save_animation`, the entry point.

Headless: no widget is built; the drawing reuses the slice viewer's server-side export
(:mod:`richviz.widgets.slice_export`, :mod:`richviz.widgets.export`).
"""

from __future__ import annotations

from richviz.animation.animate import Animation, save_animation
from richviz.animation.fields import FIELDS
from richviz.animation.plan import FORMATS, MAX_FPS, SHOWS

__all__ = ["FIELDS", "FORMATS", "MAX_FPS", "SHOWS", "Animation", "save_animation"]
