"""Writing frames to a file: GIF through Pillow, MP4 (H.264) through ``imageio-ffmpeg`` (the
optional extra ``animation``; its wheel ships an ffmpeg binary). Both write atomically
(:mod:`richviz.atomic`): a reader sees the old file or the whole new one, never half.

Frames are (H, W, 3) uint8 RGB arrays of one size; a frame repeated in the sequence (the same
array object) is converted once.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from richviz.atomic import atomic_write_bytes
from richviz.errors import ArgumentError, MissingDependencyError

__all__ = ["MP4_EXTRA", "require_ffmpeg", "write_frames", "write_gif", "write_mp4"]

#: how to install what MP4 needs
MP4_EXTRA = "pip install 'richviz[animation]' (imageio-ffmpeg)"


def require_ffmpeg() -> Any:
    """The ``imageio_ffmpeg`` module, or a one-line ``MissingDependencyError`` naming the extra."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MissingDependencyError(
            f"writing MP4 needs the optional extra 'animation': {MP4_EXTRA}; or write a .gif"
        ) from None
    return imageio_ffmpeg


def _check(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if not len(frames):
        raise ArgumentError("an animation needs at least one frame")
    shape = frames[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(f.shape != shape for f in frames):
        raise ArgumentError(f"frames must be (H, W, 3) RGB arrays of one size, got {shape}")
    return shape[1], shape[0]


def write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, frame_ms: int) -> Path:
    """Write ``frames`` as a looping GIF, ``frame_ms`` milliseconds each (GIF keeps tens of ms).

    One palette for the whole animation (from all distinct frames), no dithering, so a pixel
    that does not change (the colour bar, the axes) has the same colour in every frame.
    Consecutive identical frames are merged into one longer frame by Pillow.
    """
    from PIL import Image

    _check(frames)
    unique: dict[int, np.ndarray] = {id(f): f for f in frames}
    sample = np.concatenate([f[::3, ::3] for f in unique.values()], axis=0)
    palette = Image.fromarray(sample).quantize(255, method=Image.Quantize.MEDIANCUT)
    indexed = {
        k: Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE)
        for k, f in unique.items()
    }
    images = [indexed[id(f)] for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=int(frame_ms),
        loop=0, optimize=False, disposal=1,
    )  # fmt: skip
    return atomic_write_bytes(buf.getvalue(), path)


def write_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write ``frames`` as an H.264 MP4 (yuv420p, even sides) at ``fps`` frames per second.

    ffmpeg writes into a temporary folder; the finished file then moves into place atomically.
    """
    ffmpeg = require_ffmpeg()
    width, height = _check(frames)
    if width % 2 or height % 2:
        raise ArgumentError(f"MP4 frames need even sides, got {width} x {height}")
    with tempfile.TemporaryDirectory(prefix="richviz-mp4-") as tmp:
        out = Path(tmp) / "animation.mp4"
        writer = ffmpeg.write_frames(
            str(out), (width, height), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=1, quality=8, ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        )  # fmt: skip
        writer.send(None)  # start ffmpeg
        try:
            for f in frames:
                writer.send(np.ascontiguousarray(f))
        finally:
            writer.close()
        data = out.read_bytes()
    return atomic_write_bytes(data, path)


def write_frames(fmt: str, frames: Sequence[np.ndarray], path: str | os.PathLike,
                 fps: float) -> Path:  # fmt: skip
    """Write ``frames`` in ``fmt`` (``"gif"`` or ``"mp4"``) at ``fps``."""
    if fmt == "gif":
        return write_gif(frames, path, max(1, round(1000.0 / fps)))
    if fmt == "mp4":
        return write_mp4(frames, path, fps)
    raise ArgumentError(f"format must be 'gif' or 'mp4', got {fmt!r}")
