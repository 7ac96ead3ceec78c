"""What an animation shows when: its format, its frame rate and which checkpoint each frame
holds. Pure Python (no torch, no drawing), checked before anything is computed, so a bad
argument costs nothing and leaves no file behind.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from richviz.errors import ArgumentError
from richviz.validation import check_choice, check_number

__all__ = [
    "FORMATS",
    "MAX_DURATION",
    "MAX_FPS",
    "MAX_FRAMES",
    "SHOWS",
    "Plan",
    "check_output",
    "frame_indices",
    "make_plan",
]

#: file suffix -> format written there
FORMATS = {".gif": "gif", ".mp4": "mp4"}
#: what the heatmap may show -> the slice view's name for it
SHOWS = {"volume": "volume", "regions": "classes", "entropy": "entropy"}
MAX_FPS = 60.0
MAX_DURATION = 600.0  # seconds
MAX_FRAMES = 3600


@dataclass(frozen=True)
class Plan:
    """An animation's settings once checked.

    Attributes
    ----------
    path : the output file. fmt : ``"gif"`` or ``"mp4"`` (from the suffix).
    fps : frames per second, in (0, MAX_FPS].
    show : ``"volume"`` | ``"regions"`` | ``"entropy"``; view_show: the slice view's name.
    indices : for each frame, the index of the checkpoint it shows (ascending).
    """

    path: Path
    fmt: str
    fps: float
    show: str
    indices: tuple[int, ...]

    @property
    def view_show(self) -> str:
        return SHOWS[self.show]

    @property
    def frame_ms(self) -> int:
        """Milliseconds one frame stays on screen (rounded)."""
        return max(1, round(1000.0 / self.fps))


def check_output(path: str | os.PathLike) -> tuple[Path, str]:
    """``(path, format)``: the suffix names the format; no folder in the way, none a file.

    Raises ``ArgumentError`` naming the path for another suffix, an existing folder at
    ``path``, or a file where one of its folders should be.
    """
    out = Path(path)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ArgumentError(
            f"{out}: the file name must end in {' or '.join(FORMATS)} (the format written)"
        )
    if out.is_dir():
        raise ArgumentError(f"{out}: is a folder; name the {fmt.upper()} file to write")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ArgumentError(f"{out}: {parent} is a file, not a folder")
            break
    return out, fmt


def frame_indices(count: int, frames: int | None = None) -> tuple[int, ...]:
    """Which of ``count`` checkpoints each of ``frames`` frames shows (default: one each).

    More frames than checkpoints hold each checkpoint for an equal share of the frames
    (``floor(i count / frames)``); fewer spread the frames evenly over the run, first and last
    checkpoint included.
    """
    if count < 1:
        raise ArgumentError("the run has no readable checkpoint to animate")
    if frames is None or frames == count:
        return tuple(range(count))
    if frames >= count:
        return tuple(i * count // frames for i in range(frames))
    if frames == 1:
        return (count - 1,)
    return tuple(round(i * (count - 1) / (frames - 1)) for i in range(frames))


def make_plan(
    path: str | os.PathLike,
    count: int,
    fps: float = 4.0,
    show: str = "volume",
    duration: float | None = None,
) -> Plan:
    """Check the settings of an animation of ``count`` checkpoints (``ArgumentError``s).

    ``duration`` (seconds, in (0, MAX_DURATION]): ``round(duration * fps)`` frames (at least 1),
    see :func:`frame_indices`; None: one frame per checkpoint.
    """
    out, fmt = check_output(path)
    fps = check_number(fps, "fps", low=0, high=MAX_FPS, low_open=True)
    check_choice(show, "show", tuple(SHOWS))
    frames = None
    if duration is not None:
        duration = check_number(duration, "duration", low=0, high=MAX_DURATION, low_open=True)
        frames = max(1, math.floor(duration * fps + 0.5))
        if frames > MAX_FRAMES:
            raise ArgumentError(
                f"duration={duration:g} at fps={fps:g} asks for {frames} frames, more than "
                f"{MAX_FRAMES}"
            )
    return Plan(out, fmt, fps, show, frame_indices(count, frames))
