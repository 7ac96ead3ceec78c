"""Live training for the Playground: its config, a background trainer, frames and views.

One idea per module:

- :mod:`~richviz.live.config`: :class:`PlaygroundConfig` (a JSON-serialisable recipe: data,
  network, hyper-parameters, seed, device) and the one table of the Playground's settings
  (:data:`FIELDS`: type, bounds or choices, help), used by the config's validation and by the
  widget's traits and controls alike;
- :mod:`~richviz.live.trainer`: :class:`LiveTrainer` trains on a background thread and
  writes log-spaced checkpoints (:func:`log_spaced`) into an ordinary run, publishing the
  newest :class:`LiveState`;
- :mod:`~richviz.live.frames`: :class:`FrameLoop` draws the newest submitted item at most
  ``fps`` times a second (frames are skipped, never queued);
- :mod:`~richviz.live.view`: :func:`compute_view`, what one frame shows (a :class:`LiveView`).
"""

from richviz.live.config import (
    ACTIVATIONS,
    BINARY,
    CONFIG_FIELDS,
    CONFIG_FORMAT,
    CONFIG_VERSION,
    DATA_SETS,
    DEVICES,
    FIELDS,
    MAX_CLASSES,
    MOMENTUM,
    OPTIMIZERS,
    VIEW_FIELDS,
    VIEWS,
    Field,
    PlaygroundConfig,
    check_field,
)
from richviz.live.frames import FrameLoop
from richviz.live.trainer import LiveState, LiveTrainer, log_spaced
from richviz.live.view import VIEW_METRICS, LiveView, compute_view

__all__ = [
    "ACTIVATIONS",
    "BINARY",
    "CONFIG_FIELDS",
    "CONFIG_FORMAT",
    "CONFIG_VERSION",
    "DATA_SETS",
    "DEVICES",
    "FIELDS",
    "MAX_CLASSES",
    "MOMENTUM",
    "OPTIMIZERS",
    "VIEWS",
    "VIEW_FIELDS",
    "VIEW_METRICS",
    "Field",
    "FrameLoop",
    "LiveState",
    "LiveTrainer",
    "LiveView",
    "PlaygroundConfig",
    "check_field",
    "compute_view",
    "log_spaced",
]
