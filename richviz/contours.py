"""Level sets of fields on a slice grid: contour lines (marching squares), the decision
boundary drawn from the top-2 margin, contour levels and robust value ranges.

Pure numpy (no torch, no widgets), so the headless views and the widgets share one copy.
Fields follow the geometry grid convention: ``values[i, j]`` sits at ``(u[j], v[i])``. Lines
are NaN-separated paths: ``x0, x1, nan, x0, ...``, so one plot mark draws them all.
"""

from __future__ import annotations

import numpy as np

from richviz.errors import ArgumentError

__all__ = [
    "color_limits",
    "contour_levels",
    "contour_lines",
    "decision_boundary_lines",
    "marching_squares",
    "split_paths",
]


def marching_squares(
    values: np.ndarray, x: np.ndarray, y: np.ndarray, level: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Contour line ``values == level`` as NaN-separated segments, in data coordinates.

    ``values`` (ny, nx) is indexed ``[i, j] = (y[i], x[j])``. Every grid cell whose corners
    straddle the level contributes one segment (two for a saddle, resolved by the cell's
    centre value), with end points linearly interpolated along the cell edges. Cells with a
    non-finite corner are skipped. Returns ``(xs, ys)`` 1-D arrays: ``x0, x1, nan, x0, ...``.
    """
    z = np.asarray(values, dtype=float) - level
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if z.ndim != 2 or z.shape != (len(y), len(x)):
        raise ArgumentError(f"values must have shape (len(y), len(x)), got {z.shape}")
    if min(z.shape) < 2:
        return np.array([]), np.array([])
    # Corners: a = (i, j) bottom-left, b = (i, j+1), c = (i+1, j+1), d = (i+1, j).
    a, b, c, d = z[:-1, :-1], z[:-1, 1:], z[1:, 1:], z[1:, :-1]
    x0, x1 = x[None, :-1], x[None, 1:]
    y0, y1 = y[:-1, None], y[1:, None]
    shape = a.shape

    def cross(p, q):
        """Fraction t in [0, 1] where the edge p -> q meets zero, and whether it does."""
        hit = (p > 0) != (q > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(hit, p / (p - q), 0.0)
        return np.clip(t, 0.0, 1.0), hit

    # Edge order: bottom (a->b), right (b->c), top (d->c), left (a->d).
    tb, hb = cross(a, b)
    tr, hr = cross(b, c)
    tt, ht = cross(d, c)
    tl, hl = cross(a, d)
    ex = np.stack(
        [
            np.broadcast_to(x0 + tb * (x1 - x0), shape),
            np.broadcast_to(x1, shape),
            np.broadcast_to(x0 + tt * (x1 - x0), shape),
            np.broadcast_to(x0, shape),
        ]
    )
    ey = np.stack(
        [
            np.broadcast_to(y0, shape),
            np.broadcast_to(y0 + tr * (y1 - y0), shape),
            np.broadcast_to(y1, shape),
            np.broadcast_to(y0 + tl * (y1 - y0), shape),
        ]
    )
    hits = np.stack([hb, hr, ht, hl])
    valid = np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(d)
    count = hits.sum(axis=0)

    segs_x: list[np.ndarray] = []
    segs_y: list[np.ndarray] = []
    two = valid & (count == 2)
    if two.any():
        idx = np.nonzero(two)
        edges = np.nonzero(hits[:, idx[0], idx[1]].T)[1].reshape(-1, 2)
        segs_x.append(np.stack([ex[edges[:, k], idx[0], idx[1]] for k in (0, 1)], axis=1))
        segs_y.append(np.stack([ey[edges[:, k], idx[0], idx[1]] for k in (0, 1)], axis=1))
    four = valid & (count == 4)
    if four.any():
        i, j = np.nonzero(four)
        centre = (a[i, j] + b[i, j] + c[i, j] + d[i, j]) / 4
        same = (centre > 0) == (a[i, j] > 0)
        # Centre on a's side: a and c connect, cut off b (bottom, right) and d (left, top);
        # otherwise cut off a (bottom, left) and c (right, top).
        first = np.where(same[:, None], [0, 1], [0, 3])
        second = np.where(same[:, None], [3, 2], [1, 2])
        for pair in (first, second):
            segs_x.append(np.stack([ex[pair[:, k], i, j] for k in (0, 1)], axis=1))
            segs_y.append(np.stack([ey[pair[:, k], i, j] for k in (0, 1)], axis=1))
    if not segs_x:
        return np.array([]), np.array([])
    sx = np.concatenate(segs_x)
    sy = np.concatenate(segs_y)
    nan = np.full((len(sx), 1), np.nan)
    return np.hstack([sx, nan]).ravel(), np.hstack([sy, nan]).ravel()


def contour_levels(values: np.ndarray, count: int = 5) -> np.ndarray:
    """``count`` evenly spaced levels strictly inside the finite range of ``values``."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or finite.max() <= finite.min():
        return np.array([])
    return np.linspace(finite.min(), finite.max(), count + 2)[1:-1]


def contour_lines(
    values: np.ndarray, x: np.ndarray, y: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Several contour levels joined into one NaN-separated pair ``(xs, ys)``."""
    xs, ys = [np.array([])], [np.array([])]
    for level in levels:
        cx, cy = marching_squares(values, x, y, float(level))
        xs.append(cx)
        ys.append(cy)
    return np.concatenate(xs), np.concatenate(ys)


def split_paths(
    xs: np.ndarray, ys: np.ndarray, keep: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split NaN-terminated paths into those with ``keep[k]`` True and the others.

    ``xs``, ys``: 1-D arrays of paths each followed by one NaN (as ``metric_ellipses`` and
    :func:`marching_squares` return); ``keep``: one bool per path. Returns
    ``((xs_kept, ys_kept), (xs_rest, ys_rest))``, still NaN-separated.
    """
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    ends = np.flatnonzero(np.isnan(xs))
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    if len(ends) != len(keep):
        raise ArgumentError(f"keep has {len(keep)} entries for {len(ends)} paths")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    path_of = np.repeat(np.arange(len(ends)), lengths)
    mask = keep[path_of]
    n = len(path_of)
    return (xs[:n][mask], ys[:n][mask]), (xs[:n][~mask], ys[:n][~mask])


def decision_boundary_lines(
    margin: np.ndarray, predicted: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Borders between predicted classes (any number of classes) as NaN-separated segments.

    For each class c, ``+margin`` inside its region and ``-margin`` outside is zero exactly on
    the region's border (margin = top-1 minus top-2 logit), so its zero contour (marching
    squares) is that border; with two classes one contour is enough.
    """
    predicted = np.asarray(predicted)
    margin = np.asarray(margin, dtype=float)
    classes = np.unique(predicted)
    if len(classes) < 2:
        return np.array([]), np.array([])
    xs, ys = [np.array([])], [np.array([])]
    for c in classes[:1] if len(classes) == 2 else classes:
        cx, cy = marching_squares(np.where(predicted == c, margin, -margin), u, v, 0.0)
        xs.append(cx)
        ys.append(cy)
    return np.concatenate(xs), np.concatenate(ys)


def color_limits(
    values: np.ndarray, symmetric: bool = False, percentile: float = 1.0
) -> tuple[float, float]:
    """Robust colour range ``(vmin, vmax)``: the ``percentile`` and ``100 - percentile`` points.

    ``symmetric=True`` returns ``(-m, m)`` around zero (for differences). Falls back to a unit
    range when there are no finite values or they are all equal.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    lo, hi = np.percentile(finite, [percentile, 100.0 - percentile])
    if symmetric:
        m = float(max(abs(lo), abs(hi)))
        m = m if m > 0 else 1.0
        return -m, m
    if hi <= lo:
        return float(lo) - 0.5, float(lo) + 0.5
    return float(lo), float(hi)
