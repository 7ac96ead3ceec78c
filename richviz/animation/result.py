"""What an animation export wrote: the file, and per frame the step, caption and numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Animation"]


@dataclass(frozen=True)
class Animation:
    """What an export wrote.

    Attributes
    ----------
    path : the file. fmt : ``"gif"`` | ``"mp4"``. fps : frames per second.
    steps : the checkpoint step of each frame. captions : each frame's headline line.
    numbers : each frame's headline numbers (``test_acc``, ``d_lr``,
        ``boundary_magnification``; from ``Run.metrics``).
    size : ``(width, height)`` of a frame in pixels.
    color_limits : the one (vmin, vmax) of the heatmap over the run.
    computed : grids computed by this export (0 when every one came from a cache).
    """

    path: Path
    fmt: str
    fps: float
    steps: tuple[int, ...]
    captions: tuple[str, ...]
    numbers: tuple[dict[str, float], ...]
    size: tuple[int, int]
    color_limits: tuple[float, float]
    computed: int

    @property
    def frames(self) -> int:
        """Number of frames."""
        return len(self.steps)
