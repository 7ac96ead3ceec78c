"""Presentation helpers for the widgets: colormaps, PNG encoding, ticks.

Pure numpy (no widget imports), so everything here runs headless and is cheap to
test. Fields follow the geometry grid convention: ``values[i, j]`` sits at ``(u[j], v[i])``
(rows follow v, columns follow u), so v grows with the row index. Images have row 0 at the
*top*, hence :func:`field_to_rgba` flips rows. Contour lines and the decision boundary live
in :mod:`richviz.contours` (headless, shared with :mod:`richviz.views`) and are re-exported
here, with :func:`color_limits`.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from richviz.contours import (
    color_limits,
    contour_levels,
    contour_lines,
    decision_boundary_lines,
    marching_squares,
    split_paths,
)
from richviz.errors import ArgumentError

__all__ = [
    "CLASS_COLORS",
    "COLORMAPS",
    "apply_colormap",
    "color_limits",
    "colorbar_rgba",
    "colormap_stops",
    "contour_levels",
    "contour_lines",
    "decision_boundary_lines",
    "encode_png",
    "field_to_rgba",
    "format_ticks",
    "image_extent",
    "log_ticks",
    "marching_squares",
    "nice_ticks",
    "split_paths",
    "square_limits",
    "step_ticks",
    "tick_format",
    "upscale",
]

# Colour stops sampled from matplotlib's viridis and a reversed RdBu (blue = low, red = high).
COLORMAPS: dict[str, tuple[str, ...]] = {
    "viridis": (
        "#440154",
        "#472d7b",
        "#3b528b",
        "#2c728e",
        "#21918c",
        "#28ae80",
        "#5ec962",
        "#addc30",
        "#fde725",
    ),
    "diverging": (
        "#2166ac",
        "#4393c3",
        "#92c5de",
        "#d1e5f0",
        "#f7f7f7",
        "#fddbc7",
        "#f4a582",
        "#d6604d",
        "#b2182b",
    ),
}

# Category colours for classes (d3's category10).
CLASS_COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


# Colour-blind-safe class colours (Okabe & Ito): blue, orange, bluish green, reddish purple,
# sky blue, vermillion. Classes beyond six repeat them.
CLASS_PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
)


def _hex_to_rgb(colors: tuple[str, ...]) -> np.ndarray:
    """``("#rrggbb", ...)`` -> float array (K, 3) in [0, 255]."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=float)


def colormap_stops(name: str) -> list[str]:
    """Hex colour stops of a named colormap (for ``bqplot.ColorScale(colors=...)``)."""
    if name not in COLORMAPS:
        raise ArgumentError(f"cmap={name!r} is not one of {sorted(COLORMAPS)}")
    return list(COLORMAPS[name])


def apply_colormap(
    values: np.ndarray, vmin: float, vmax: float, cmap: str = "viridis"
) -> np.ndarray:
    """Map ``values`` (any shape S) to RGBA uint8 (S + (4,)) by linear interpolation of stops.

    Values are clipped to ``[vmin, vmax]``; the stops are evenly spaced over that range, which
    is exactly how ``bqplot.ColorScale(colors=stops, min=vmin, max=vmax)`` draws its colour
    bar. Non-finite values become fully transparent.
    """
    stops = _hex_to_rgb(tuple(colormap_stops(cmap)))
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    span = vmax - vmin
    if not np.isfinite(span) or span <= 0:
        t = np.full(values.shape, 0.5)
    else:
        t = (np.where(finite, values, vmin) - vmin) / span
    pos = np.clip(t, 0.0, 1.0) * (len(stops) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(stops) - 2)
    frac = (pos - lo)[..., None]
    rgb = stops[lo] * (1.0 - frac) + stops[lo + 1] * frac
    out = np.empty(values.shape + (4,), dtype=np.uint8)
    out[..., :3] = np.round(rgb).astype(np.uint8)
    out[..., 3] = np.where(finite, 255, 0)
    return out


def field_to_rgba(
    values: np.ndarray, vmin: float, vmax: float, cmap: str = "viridis"
) -> np.ndarray:
    """A field (res_v, res_u) indexed ``[i, j] = (v[i], u[j])`` as an image (rows flipped).

    Returns RGBA uint8 (res_v, res_u, 4) whose row 0 is the largest v, as images expect.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ArgumentError(f"values must be a 2-D field, got shape {values.shape}")
    return apply_colormap(values[::-1], vmin, vmax, cmap)


def class_color(c: int) -> str:
    """Hex colour of class ``c`` in :data:`CLASS_PALETTE`."""
    return CLASS_PALETTE[int(c) % len(CLASS_PALETTE)]


def class_regions_rgba(predicted: np.ndarray, tint: float = 0.55) -> np.ndarray:
    """Predicted classes (res_v, res_u), indexed ``[i, j] = (v[i], u[j])``, as an image.

    Class ``c`` is :func:`class_color` mixed with white (``tint`` = share of white, so points
    drawn in the full colour stand out): exactly one colour per class. Rows are flipped like
    :func:`field_to_rgba`. Returns RGBA uint8 (res_v, res_u, 4).
    """
    pred = np.asarray(predicted)
    if pred.ndim != 2:
        raise ArgumentError(f"predicted must be a 2-D field, got shape {pred.shape}")
    if not 0 <= tint < 1:
        raise ArgumentError(f"tint={tint} must lie in [0, 1)")
    colours = _hex_to_rgb(CLASS_PALETTE) * (1 - tint) + 255.0 * tint
    out = np.empty(pred.shape + (4,), dtype=np.uint8)
    out[..., :3] = np.round(colours[pred[::-1] % len(CLASS_PALETTE)]).astype(np.uint8)
    out[..., 3] = 255
    return out


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + tag
        + data
        + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    )


def encode_png(pixels: np.ndarray, compression: int = 6) -> bytes:
    """Encode uint8 pixels (H, W), (H, W, 3) or (H, W, 4) as PNG bytes (no PIL needed).

    Grey, RGB or RGBA at 8 bits per channel, filter type 0 on every row, one IDAT chunk.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ArgumentError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or 0 in pixels.shape[:2]:
        raise ArgumentError(f"pixels must have shape (H, W[, 1|3|4]), got {pixels.shape}")
    h, w, c = pixels.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = np.zeros((h, 1 + w * c), dtype=np.uint8)
    raw[:, 1:] = pixels.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), compression)),
            _png_chunk(b"IEND", b""),
        ]
    )


def upscale(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an image (H, W, ...) by an integer ``factor``."""
    if int(factor) != factor or factor < 1:
        raise ArgumentError(f"factor must be a positive integer, got {factor!r}")
    factor = int(factor)
    if factor == 1:
        return pixels
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def image_extent(u: np.ndarray, v: np.ndarray) -> tuple[list[float], list[float]]:
    """Edges ``([u_left, u_right], [v_bottom, v_top])`` of an image whose pixel centres are the
    grid points ``u`` (res_u,) and ``v`` (res_v,) (half a grid step beyond the outer points)."""
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    du = (u[-1] - u[0]) / (len(u) - 1) if len(u) > 1 else 1.0
    dv = (v[-1] - v[0]) / (len(v) - 1) if len(v) > 1 else 1.0
    return [u[0] - du / 2, u[-1] + du / 2], [v[0] - dv / 2, v[-1] + dv / 2]


def square_limits(
    x_range: tuple[float, float], y_range: tuple[float, float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Widen the shorter of two ranges (about its centre) so both have the same length.

    With equal data ranges on both axes, a figure whose plot area is square
    (``min_aspect_ratio = max_aspect_ratio = 1``) draws both axes at the same scale.
    """
    half = max(x_range[1] - x_range[0], y_range[1] - y_range[0]) / 2
    cx = (x_range[0] + x_range[1]) / 2
    cy = (y_range[0] + y_range[1]) / 2
    return (cx - half, cx + half), (cy - half, cy + half)


def nice_ticks(vmin: float, vmax: float, max_ticks: int = 5) -> np.ndarray:
    """At most ``max_ticks`` (>= 2) round tick values inside ``[vmin, vmax]``.

    The step is 1, 2 or 5 times a power of ten, the smallest one giving no more than
    ``max_ticks`` multiples of it in the range. Returns a float array (possibly a single value
    for a degenerate range).
    """
    if max_ticks < 2:
        raise ArgumentError(f"max_ticks must be >= 2, got {max_ticks}")
    lo, hi = float(min(vmin, vmax)), float(max(vmin, vmax))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.array([])
    span = hi - lo
    if span <= 0:
        return np.array([lo])
    step = 0.0
    for exponent in range(int(np.floor(np.log10(span / max_ticks))) - 1, 400):
        for mantissa in (1.0, 2.0, 5.0):
            step = mantissa * 10.0**exponent
            first, last = np.ceil(lo / step - 1e-9), np.floor(hi / step + 1e-9)
            if last - first + 1 <= max_ticks:
                ticks = np.arange(first, last + 1) * step
                return np.round(ticks, max(0, 1 - exponent) + 6) + 0.0  # -0.0 -> 0.0
    return np.array([lo, hi])


def tick_format(ticks: np.ndarray) -> str:
    """A d3 number format (``".2f"``) with just enough decimals to tell ``ticks`` apart."""
    ticks = np.asarray(ticks, dtype=float)
    if len(ticks) < 2:
        return ".3g"
    step = float(np.min(np.diff(np.sort(ticks))))
    decimals = int(max(0, -np.floor(np.log10(step) + 1e-9))) if step > 0 else 3
    return f".{decimals}f"


def format_ticks(ticks: np.ndarray, fmt: str) -> list[str]:
    """``ticks`` as text with a ``".Nf"`` / ``".Ng"`` format (d3 and Python agree on these)."""
    return [format(float(t), fmt) for t in np.asarray(ticks, dtype=float)]


def colorbar_rgba(cmap: str = "viridis", length: int = 256) -> np.ndarray:
    """A vertical colour bar image (length, 1, 4): row 0 (top) is the colormap's high end."""
    return apply_colormap(np.linspace(1.0, 0.0, length)[:, None], 0.0, 1.0, cmap)


def log_ticks(vmin: float, vmax: float, max_ticks: int = 5) -> np.ndarray:
    """At most ``max_ticks`` (>= 2) ticks for a log axis over ``[vmin, vmax]`` (both > 0).

    Powers of ten (every k-th decade when there are many); 1-2-5 or 1-3 multiples when the
    range spans at most two decades; round linear ticks when none of these fit.
    """
    if max_ticks < 2:
        raise ArgumentError(f"max_ticks must be >= 2, got {max_ticks}")
    lo, hi = float(min(vmin, vmax)), float(max(vmin, vmax))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0:
        return np.array([])
    a, b = np.log10(lo), np.log10(hi)
    first, last = int(np.ceil(a - 1e-9)), int(np.floor(b + 1e-9))
    decades = last - first + 1
    if decades >= 3:
        stride = int(np.ceil(decades / max_ticks))
        # keep the largest power in view, step down from it
        return 10.0 ** np.arange(last, first - 1, -stride)[::-1].astype(float)
    for mantissas in ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,)):
        candidates = [m * 10.0**e for e in range(first - 1, last + 1) for m in mantissas]
        inside = [t for t in candidates if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if 2 <= len(inside) <= max_ticks:
            return np.array(inside)
    return nice_ticks(lo, hi, max_ticks)


def step_ticks(max_step_plus_one: float) -> np.ndarray:
    """Ticks 1, 10, 100, ... (and the 2-5 multiples for short runs) of a ``step + 1`` log axis."""
    return log_ticks(1.0, max(float(max_step_plus_one), 2.0), 6)
