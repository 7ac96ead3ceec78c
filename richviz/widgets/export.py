"""Server-side figure export: one drawing, written as SVG text or as a PNG at any scale.

The widgets describe what they show (heatmap images, lines, points, text) on a
:class:`Canvas` in CSS pixels; :func:`to_svg` writes it as an SVG document (text as text,
images embedded as PNG data URLs) and :func:`to_png` rasterises it with Pillow at ``scale``
device pixels per CSS pixel (text drawn with Pillow's built-in scalable font). Nothing here
needs a browser, so exports work from scripts and after a kernel restart alike.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from richviz.atomic import atomic_write_bytes
from richviz.errors import ArgumentError
from richviz.widgets import rendering

__all__ = [
    "Canvas",
    "DASHES",
    "FONTS",
    "export_path",
    "to_image",
    "to_png",
    "to_svg",
    "write_canvas",
]

#: TrueType fonts tried for PNG text (the first found wins); Pillow's built-in font otherwise,
#: with superscripts and Greek letters written in ASCII
FONTS = (
    "DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
_ASCII = str.maketrans(
    {
        **{d: "^" + str(i) for i, d in enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹")},
        **{"⁻": "-", "θ": "theta", "₀": "0", "−": "-", "Δ": "delta ", "·": "-", "×": "x"},
    }
)

#: SVG dash patterns (CSS px) for the line styles the charts use
DASHES: dict[str, tuple[float, ...]] = {
    "solid": (),
    "dashed": (6.0, 4.0),
    "dotted": (1.5, 3.0),
    "dash_dotted": (6.0, 3.0, 1.5, 3.0),
}


@dataclass
class Canvas:
    """A list of drawing operations on a ``width`` x ``height`` CSS-pixel page (white)."""

    width: float
    height: float
    ops: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def image(self, rgba: np.ndarray, x: float, y: float, w: float, h: float) -> None:
        """An RGBA ``(H, W, 4)`` uint8 image stretched over the box (nearest neighbour)."""
        self.ops.append(("image", dict(rgba=np.asarray(rgba, np.uint8), box=(x, y, w, h))))

    def rect(self, x: float, y: float, w: float, h: float, fill: str = "none",
             stroke: str = "none", width: float = 1.0) -> None:  # fmt: skip
        """A rectangle."""
        self.ops.append(("rect", dict(box=(x, y, w, h), fill=fill, stroke=stroke, width=width)))

    def polyline(self, xs: Any, ys: Any, color: str, width: float = 1.0, dash: str = "solid",
                 opacity: float = 1.0) -> None:  # fmt: skip
        """A line through the points; NaN coordinates split it into separate pieces (gaps)."""
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        pieces, start = [], None
        for i, good in enumerate(ok):
            if good and start is None:
                start = i
            if not good and start is not None:
                pieces.append((xs[start:i], ys[start:i]))
                start = None
        if start is not None:
            pieces.append((xs[start:], ys[start:]))
        for px, py in pieces:
            if len(px) >= 2:
                self.ops.append(
                    (
                        "line",
                        dict(xs=px, ys=py, color=color, width=width, dash=dash, opacity=opacity),
                    )
                )

    def polygon(self, xs: Any, ys: Any, fill: str, opacity: float = 1.0) -> None:
        """A filled polygon through the points (no outline), e.g. a chart's spread band."""
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        self.ops.append(("polygon", dict(xs=xs, ys=ys, fill=fill, opacity=opacity)))

    def marker(self, x: float, y: float, shape: str, size: float, fill: str,
               stroke: str = "none") -> None:  # fmt: skip
        """A marker (circle, square, triangle-up, diamond) of diameter ``size`` at (x, y)."""
        self.ops.append(
            ("marker", dict(x=x, y=y, shape=shape, size=size, fill=fill, stroke=stroke))
        )

    def text(self, x: float, y: float, s: str, size: float = 11.0, anchor: str = "start",
             color: str = "#222", rotate: float = 0.0, weight: str = "normal") -> None:  # fmt: skip
        """Text with its baseline at ``y``; ``anchor``: start, middle or end."""
        self.ops.append(
            ("text", dict(x=x, y=y, s=str(s), size=size, anchor=anchor, color=color,
                          rotate=rotate, weight=weight))
        )  # fmt: skip


def _marker_points(x: float, y: float, shape: str, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    if shape == "triangle-up":
        return [(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)]
    if shape == "diamond":
        return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
    return []


def to_svg(canvas: Canvas) -> str:
    """The drawing as a standalone SVG document (text stays text: searchable, editable)."""
    w, h = canvas.width, canvas.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}" height="{h:g}" '
        f'viewBox="0 0 {w:g} {h:g}" font-family="sans-serif">',
        f'<rect width="{w:g}" height="{h:g}" fill="white"/>',
    ]
    for kind, op in canvas.ops:
        if kind == "image":
            x, y, bw, bh = op["box"]
            data = base64.b64encode(rendering.encode_png(op["rgba"])).decode()
            out.append(
                f'<image x="{x:.2f}" y="{y:.2f}" width="{bw:.2f}" height="{bh:.2f}" '
                f'preserveAspectRatio="none" style="image-rendering:pixelated" '
                f'href="data:image/png;base64,{data}"/>'
            )
        elif kind == "rect":
            x, y, bw, bh = op["box"]
            out.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{bw:.2f}" height="{bh:.2f}" '
                f'fill="{html.escape(op["fill"])}" stroke="{html.escape(op["stroke"])}" '
                f'stroke-width="{op["width"]:g}"/>'
            )
        elif kind == "line":
            pts = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(op["xs"], op["ys"], strict=True))
            dash = DASHES.get(op["dash"], ())
            dash_attr = f' stroke-dasharray="{",".join(f"{d:g}" for d in dash)}"' if dash else ""
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{html.escape(op["color"])}" '
                f'stroke-width="{op["width"]:g}" stroke-opacity="{op["opacity"]:g}" '
                f'stroke-linejoin="round"{dash_attr}/>'
            )
        elif kind == "polygon":
            pts = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(op["xs"], op["ys"], strict=True))
            out.append(
                f'<polygon points="{pts}" fill="{html.escape(op["fill"])}" '
                f'fill-opacity="{op["opacity"]:g}" stroke="none"/>'
            )
        elif kind == "marker":
            r = op["size"] / 2
            style = f'fill="{html.escape(op["fill"])}" stroke="{html.escape(op["stroke"])}"'
            pts = _marker_points(op["x"], op["y"], op["shape"], r)
            if pts:
                p = " ".join(f"{a:.2f},{b:.2f}" for a, b in pts)
                out.append(f'<polygon points="{p}" {style}/>')
            else:
                out.append(f'<circle cx="{op["x"]:.2f}" cy="{op["y"]:.2f}" r="{r:g}" {style}/>')
        elif kind == "text":
            anchor = {"start": "start", "middle": "middle", "end": "end"}[op["anchor"]]
            rot = (
                f' transform="rotate({op["rotate"]:g} {op["x"]:.2f} {op["y"]:.2f})"'
                if op["rotate"]
                else ""
            )
            out.append(
                f'<text x="{op["x"]:.2f}" y="{op["y"]:.2f}" font-size="{op["size"]:g}" '
                f'text-anchor="{anchor}" fill="{html.escape(op["color"])}" '
                f'font-weight="{op["weight"]}"{rot}>{html.escape(op["s"])}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)


def _rgb(color: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    return ImageColor.getrgb(color)[:3]


def _dashed(xs: np.ndarray, ys: np.ndarray, pattern: tuple[float, ...]):
    """Pieces of a polyline that are drawn ("on") under a dash pattern (same units)."""
    if not pattern:
        yield list(zip(xs, ys, strict=True))
        return
    period = list(pattern)
    k, left, on = 0, period[0], True
    cur = [(xs[0], ys[0])]
    for i in range(1, len(xs)):
        x0, y0, x1, y1 = xs[i - 1], ys[i - 1], xs[i], ys[i]
        seg = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while seg - t > left:
            t += left
            p = (x0 + (x1 - x0) * t / seg, y0 + (y1 - y0) * t / seg)
            if on:
                cur.append(p)
                yield cur
            cur = [p]
            on = not on
            k = (k + 1) % len(period)
            left = period[k]
        left -= seg - t
        if on:
            cur.append((x1, y1))
    if on and len(cur) >= 2:
        yield cur


@contextlib.contextmanager
def _blended(img: Any, draw: Any, xs: np.ndarray, ys: np.ndarray, pad: float, translucent: bool):
    """``(draw, dx, dy)`` to draw one item: on ``img`` itself when opaque, else on a
    transparent tile over the item's box composited onto ``img`` afterwards (drawing on an
    RGBA image replaces its pixels: translucent colours would come out opaque)."""
    if not translucent:
        yield draw, 0.0, 0.0
        return
    from PIL import Image, ImageDraw

    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        yield draw, 0.0, 0.0
        return
    x0 = max(0, math.floor(xs[ok].min() - pad - 1))
    y0 = max(0, math.floor(ys[ok].min() - pad - 1))
    x1 = min(img.width, math.ceil(xs[ok].max() + pad + 2))
    y1 = min(img.height, math.ceil(ys[ok].max() + pad + 2))
    if x1 <= x0 or y1 <= y0:
        yield draw, 0.0, 0.0
        return
    tile = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    yield ImageDraw.Draw(tile), float(x0), float(y0)
    img.alpha_composite(tile, (x0, y0))


def to_png(canvas: Canvas, scale: float = 2.0) -> bytes:
    """The drawing as PNG bytes at ``scale`` device pixels per CSS pixel (Pillow)."""
    buf = io.BytesIO()
    to_image(canvas, scale).save(buf, format="PNG")
    return buf.getvalue()


def to_image(canvas: Canvas, scale: float = 2.0) -> Any:
    """The drawing as an RGB ``PIL.Image`` at ``scale`` device pixels per CSS pixel."""
    from PIL import Image, ImageDraw, ImageFont

    if scale <= 0:
        raise ArgumentError(f"scale={scale} must be > 0")
    size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
    img = Image.new("RGBA", size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(img, "RGBA")  # blends colours with alpha
    fonts: dict[int, Any] = {}

    def font(px: float) -> tuple[Any, bool]:
        key = max(1, round(px * scale))
        if key not in fonts:
            for name in FONTS:
                try:
                    fonts[key] = (ImageFont.truetype(name, key), True)
                    break
                except OSError:
                    continue
            else:
                fonts[key] = (ImageFont.load_default(size=key), False)
        return fonts[key]

    for kind, op in canvas.ops:
        if kind == "image":
            x, y, bw, bh = (v * scale for v in op["box"])
            tile = Image.fromarray(op["rgba"], "RGBA").resize(
                (max(1, round(bw)), max(1, round(bh))), Image.NEAREST
            )
            img.alpha_composite(tile, (round(x), round(y)))
        elif kind == "rect":
            x, y, bw, bh = (v * scale for v in op["box"])
            fill = None if op["fill"] == "none" else _rgb(op["fill"])
            outline = None if op["stroke"] == "none" else _rgb(op["stroke"])
            draw.rectangle(
                [x, y, x + bw, y + bh], fill=fill, outline=outline,
                width=max(1, round(op["width"] * scale)),
            )  # fmt: skip
        elif kind == "line":
            alpha = round(255 * op["opacity"])
            color = (*_rgb(op["color"]), alpha)
            width = max(1, round(op["width"] * scale))
            pattern = tuple(d * scale for d in DASHES.get(op["dash"], ()))
            xs, ys = op["xs"] * scale, op["ys"] * scale
            pieces = [p for p in _dashed(xs, ys, pattern) if len(p) >= 2]
            with _blended(img, draw, xs, ys, width, alpha < 255) as (d, dx, dy):
                for piece in pieces:
                    d.line([(a - dx, b - dy) for a, b in piece], fill=color, width=width,
                           joint="curve")  # fmt: skip
        elif kind == "polygon":
            xs, ys = op["xs"] * scale, op["ys"] * scale
            if len(xs) >= 3:
                fill = (*_rgb(op["fill"]), round(255 * op["opacity"]))
                with _blended(img, draw, xs, ys, 1, fill[3] < 255) as (d, dx, dy):
                    d.polygon([(a - dx, b - dy) for a, b in zip(xs, ys, strict=True)], fill=fill)
        elif kind == "marker":
            r = op["size"] / 2 * scale
            x, y = op["x"] * scale, op["y"] * scale
            fill = None if op["fill"] == "none" else _rgb(op["fill"])
            outline = None if op["stroke"] == "none" else _rgb(op["stroke"])
            pts = _marker_points(x, y, op["shape"], r)
            if pts:
                draw.polygon(pts, fill=fill, outline=outline)
            else:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline)
        elif kind == "text":
            f, unicode = font(op["size"])
            text = op["s"] if unicode else op["s"].translate(_ASCII)
            anchor = {"start": "ls", "middle": "ms", "end": "rs"}[op["anchor"]]
            x, y = op["x"] * scale, op["y"] * scale
            color = _rgb(op["color"])
            if op["rotate"]:
                # draw on a tile, rotate it, paste so the anchor lands at (x, y)
                l, t, r, b = draw.textbbox((0, 0), text, font=f, anchor=anchor)
                tile = Image.new("RGBA", (r - l + 2, b - t + 2), (0, 0, 0, 0))
                ImageDraw.Draw(tile).text((-l + 1, -t + 1), text, font=f, fill=color,
                                          anchor=anchor)  # fmt: skip
                rot = tile.rotate(-op["rotate"], expand=True)
                img.alpha_composite(
                    rot, (max(0, round(x - rot.width / 2)), max(0, round(y - rot.height / 2)))
                )
            else:
                draw.text((x, y), text, font=f, fill=color, anchor=anchor)
    return img.convert("RGB")


def write_canvas(
    canvas: Canvas, path: str | os.PathLike, fmt: Literal["png", "svg"], scale: float = 2.0
) -> Path:
    """Write ``canvas`` to ``path`` as PNG (``scale`` device pixels per CSS pixel) or SVG,
    atomically (temporary file, then rename; missing folders are made). Returns the path.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from richviz.widgets.export import Canvas, write_canvas
    >>> c = Canvas(40, 20)
    >>> c.text(2, 12, "hi")
    >>> out = write_canvas(c, Path(tempfile.mkdtemp()) / "a" / "hi.png", "png", scale=1.0)
    >>> out.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    if fmt == "png":
        data = to_png(canvas, scale)
    elif fmt == "svg":
        data = to_svg(canvas).encode()
    else:
        raise ArgumentError(f"fmt={fmt!r}: write 'png' or 'svg'")
    return atomic_write_bytes(data, path)


def export_path(
    path: str | os.PathLike | None, name: str, suffix: str, step: int | None = None
) -> Path:
    """The file an export writes: ``path`` when given, else ``<name>-step<step><suffix>``
    (``<name><suffix>`` without a step), ``name`` being the widget's file box.

    Examples
    --------
    >>> from richviz.widgets.export import export_path
    >>> export_path(None, "richviz", ".svg", step=40).name
    'richviz-step40.svg'
    >>> export_path("out/fig.png", "richviz", ".png", step=40).as_posix()
    'out/fig.png'
    """
    if path is not None:
        return Path(path)
    return Path(f"{name}{'' if step is None else f'-step{step}'}{suffix}")
