"""Widget state tests: linking, background work, caching, exports (no browser needed).

One tiny run (2-D moons, a 2-16-16-2 MLP, 40 steps, 4 checkpoints) is trained once per module;
a truncated copy of one checkpoint is added as an unreadable checkpoint.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import gc
import html
import struct
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import traitlets  # noqa: E402

from richviz import datasets, train  # noqa: E402
from richviz.checkpoints import Run, checkpoint_name  # noqa: E402
from richviz.errors import DataError  # noqa: E402
from richviz.geometry import pullback_metric  # noqa: E402
from richviz.widgets import (  # noqa: E402
    CheckpointBrowser,
    Explorer,
    MetricsPanel,
    SliceViewer,
    rendering,
)
from richviz.widgets.tasks import ComputeLock, LRUCache, Worker  # noqa: E402

BAD_STEP = 3
VIEWER = {"resolution": 24, "coarse_resolution": 12, "ellipse_density": 6}


def decode_png(data: bytes) -> np.ndarray:
    """Minimal independent PNG reader for 8-bit, filter-0, non-interlaced images."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, color_type, _, _, interlace = header
    assert depth == 8 and interlace == 0
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * channels)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, channels)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Run:
    cfg = dataclasses.replace(
        train.PRESETS["moons"],
        steps=40,
        checkpoints=4,
        arch_kwargs={"in_features": 2, "hidden": [16, 16], "out_features": 2},
    )
    # the module's own copy: a damaged checkpoint is added below, the widgets cache metrics
    out = tiny_run(cfg, seed=0, copy_to=tmp_path_factory.mktemp("widgets") / "moons")
    trained = Run.open(out)
    steps = trained.steps
    assert len(steps) >= 3 and BAD_STEP not in steps
    good = trained.checkpoints[-1].path
    data = good.read_bytes()
    (out / checkpoint_name(BAD_STEP)).write_bytes(data[: len(data) // 2])
    return Run.open(out)


@pytest.fixture(scope="module")
def explorer(run: Run) -> Explorer:
    ex = Explorer(run, viewer=VIEWER)
    assert ex.wait(120)
    yield ex
    ex.close()


def other_step(run: Run, not_this: int) -> int:
    return next(s for s in reversed(run.steps) if s != not_this)


# ----------------------------------------------------------------------------- rendering


def test_png_encoding_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (6, 3, 3), (4, 9, 4)]:
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        decoded = decode_png(rendering.encode_png(pixels))
        np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)


def test_colormap_matches_stops_and_flips_rows():
    stops = rendering.COLORMAPS["viridis"]
    first = [int(stops[0][i : i + 2], 16) for i in (1, 3, 5)]
    last = [int(stops[-1][i : i + 2], 16) for i in (1, 3, 5)]
    rgba = rendering.apply_colormap(np.array([-5.0, 0.0, 1.0, 9.0, np.nan]), 0.0, 1.0)
    assert rgba[0, :3].tolist() == first == rgba[1, :3].tolist()
    assert rgba[2, :3].tolist() == last == rgba[3, :3].tolist()
    assert rgba[4, 3] == 0 and (rgba[:4, 3] == 255).all()
    field = np.array([[0.0, 0.0], [1.0, 1.0]])  # row 0 = smallest v
    img = rendering.field_to_rgba(field, 0.0, 1.0)
    assert img[0, 0, :3].tolist() == last  # image row 0 = top = largest v


def test_marching_squares_circle_and_saddle():
    u = np.linspace(-1, 1, 81)
    v = np.linspace(-1.2, 1.2, 97)
    z = u[None, :] ** 2 + v[:, None] ** 2 - 0.5**2
    xs, ys = rendering.marching_squares(z, u, v)
    assert np.isnan(xs[2::3]).all() and np.isnan(ys[2::3]).all()
    inside, outside = rendering.split_paths(xs, ys, xs[0::3] > 0)
    assert np.all(inside[0][~np.isnan(inside[0])] >= 0) and np.isnan(outside[0][-1])
    assert len(inside[0]) + len(outside[0]) == len(xs)
    r = np.hypot(xs[~np.isnan(xs)], ys[~np.isnan(ys)])
    assert np.abs(r - 0.5).max() < 2e-3
    # total length of the polyline approximates the circumference
    seg = np.hypot(xs[1::3] - xs[0::3], ys[1::3] - ys[0::3])
    assert seg.sum() == pytest.approx(np.pi, rel=0.01)
    # saddle u*v = 0: segments lie on the axes
    xs, ys = rendering.marching_squares(u[None, :] * v[:, None] + 1e-9, u, v)
    ok = ~np.isnan(xs)
    assert np.minimum(np.abs(xs[ok]), np.abs(ys[ok])).max() < 1e-6


def test_worker_cancels_stale_jobs_and_lru():
    worker = Worker()
    started, release = threading.Event(), threading.Event()
    done = []

    def slow(job):
        started.set()
        release.wait(10)
        job.check()
        done.append("slow")

    worker.submit(slow)
    started.wait(10)
    worker.submit(lambda job: done.append("fast"))
    release.set()
    assert worker.wait(10)
    assert done == ["fast"]
    worker.close()
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert "b" not in cache and "a" in cache and len(cache) == 2


def test_compute_lock_lets_waiters_run_between_units():
    lock = ComputeLock()
    order: list[str] = []
    waiting = threading.Event()

    def viewer_job():
        waiting.set()
        with lock.hold():
            order.append("viewer")

    with lock.hold():
        order.append("metrics 1")
        thread = threading.Thread(target=viewer_job)
        thread.start()
        waiting.wait(10)
        while lock._waiting == 0:  # until the viewer thread blocks on the lock
            threading.Event().wait(0.01)
        lock.yield_to_waiters()
        order.append("metrics 2")
    thread.join(10)
    assert order == ["metrics 1", "viewer", "metrics 2"]


# ----------------------------------------------------------------------------- explorer


def test_browser_lists_checkpoints_and_marks_unreadable(explorer: Explorer, run: Run):
    labels = [label for label, _ in explorer.browser.list.options]
    assert len(labels) == len(run.checkpoints) == len(run.steps) + 1
    bad = [label for label in labels if "unreadable" in label]
    assert len(bad) == 1 and str(BAD_STEP) in bad[0]
    assert explorer.browser.model is run.load(explorer.step)
    assert explorer.browser.checkpoint.step == explorer.step
    where = str(next(explorer.browser.model.parameters()).device)  # cpu, cuda:0 ...
    assert "loaded step" in explorer.browser.info.value and where in explorer.browser.info.value


def test_step_change_updates_viewer_and_cursor(explorer: Explorer, run: Run):
    viewer, panel = explorer.viewer, explorer.panel
    before = viewer.image_mark.image.value
    target = other_step(run, explorer.step)
    explorer.browser.select(target)
    assert explorer.step == viewer.step == panel.step == target
    assert explorer.wait(60)
    assert viewer.shown_step == target and viewer.frame.step == target
    assert viewer.image_mark.image.value != before
    for cursor in panel.cursors.values():
        assert list(cursor.x) == [target + 1, target + 1]
    assert explorer.browser.model is run.load(target)


def test_heatmap_values_match_geometry(explorer: Explorer, run: Run):
    viewer = explorer.viewer
    viewer.relative = False
    assert explorer.wait(60)
    model = run.load(viewer.step)
    expected = pullback_metric(model, viewer.slice, resolution=VIEWER["resolution"])
    np.testing.assert_allclose(viewer.frame.values, expected.log10_volume.numpy(), rtol=1e-6)


def test_relative_to_step_zero_changes_image(explorer: Explorer, run: Run):
    viewer = explorer.viewer
    viewer.relative = False
    assert explorer.wait(60)
    absolute_png = viewer.image_mark.image.value
    absolute = viewer.frame.values.copy()
    viewer.relative = True
    assert explorer.wait(60)
    assert viewer.image_mark.image.value != absolute_png
    try:
        base = pullback_metric(
            run.load(run.steps[0]), viewer.slice, resolution=VIEWER["resolution"]
        ).log10_volume.numpy()
        # float32 fields: each log10 volume carries rounding of a few eps32 * |value|, and BLAS
        # results may differ in the last bits between two computations of the same field (the
        # viewer's background thread vs this one; memory alignment): the difference of two such
        # logs is checked to an absolute bound of 16 eps32 * max|log10 vol| (~4e-6 here). A
        # wrong base (another step) would be off by the change between steps, 1e-2 or more.
        tol = 16 * np.finfo(np.float32).eps * max(1.0, np.abs(absolute).max(), np.abs(base).max())
        np.testing.assert_allclose(viewer.frame.values, absolute - base, rtol=0, atol=tol)
        assert viewer.frame.cmap == "diverging" and viewer.frame.vmin == -viewer.frame.vmax
    finally:  # the module's explorer is shared: leave it in the absolute view
        viewer.relative = False
        assert explorer.wait(60)


def test_corrupt_checkpoint_shows_error_and_keeps_view(explorer: Explorer, run: Run):
    step = explorer.step
    model = explorer.browser.model
    png = explorer.viewer.image_mark.image.value
    explorer.browser.select(BAD_STEP)
    assert explorer.wait(60)
    status = explorer.browser.status.value
    assert f"step {BAD_STEP}" in status and "truncated" in status and "<br" not in status
    assert explorer.step == explorer.viewer.step == explorer.panel.step == step
    assert explorer.browser.model is model
    assert explorer.viewer.image_mark.image.value == png
    # the widget stays usable
    target = other_step(run, step)
    explorer.browser.select(target)
    assert explorer.wait(60)
    assert explorer.viewer.shown_step == target and explorer.browser.model is run.load(target)


def test_play_advances_steps(explorer: Explorer, run: Run):
    panel = explorer.panel
    panel.play.value = 0
    assert panel.slider.value == run.steps[0] == explorer.step == explorer.viewer.step
    panel.play.value = 1
    assert panel.slider.index == 1
    assert explorer.step == explorer.browser.step == explorer.viewer.step == run.steps[1]
    assert explorer.wait(60)
    assert explorer.viewer.shown_step == run.steps[1]
    assert explorer.browser.checkpoint.step == run.steps[1]


def test_scrubbing_cached_steps_does_not_recompute(explorer: Explorer, run: Run):
    viewer, panel = explorer.viewer, explorer.panel
    a, b = run.steps[0], run.steps[-1]
    for s in (a, b):
        explorer.step = s
        assert explorer.wait(60)
    computed, loads = viewer.compute_count, panel.load_count
    for s in (a, b, a, b):
        panel.slider.value = s
        # cached: the view is updated synchronously, no background job needed
        assert viewer.shown_step == s and not viewer.busy
        assert list(panel.cursors["richness"].x) == [s + 1, s + 1]
    assert viewer.compute_count == computed and panel.load_count == loads


def test_slice_figure_keeps_equal_scales(explorer: Explorer):
    viewer = explorer.viewer
    fig = viewer.figure
    assert fig.min_aspect_ratio == 1.0 and fig.max_aspect_ratio == 1.0
    assert fig.padding_x == 0 and fig.padding_y == 0
    sx, sy = viewer.image_mark.scales["x"], viewer.image_mark.scales["y"]
    assert sx.max - sx.min == pytest.approx(sy.max - sy.min)
    # controls and traits stay in sync both ways
    assert viewer.resolution_picker.value == viewer.resolution == VIEWER["resolution"]
    assert viewer.shown_resolution == VIEWER["resolution"]
    assert viewer.density_slider.value == VIEWER["ellipse_density"]


def test_ellipses_are_nan_separated(explorer: Explorer):
    viewer = explorer.viewer
    marks = (viewer.ellipse_mark, viewer.ellipse_near_mark)
    xs = [np.asarray(m.x, dtype=float) for m in marks]
    n = VIEWER["ellipse_density"] ** 2
    # n closed paths, NaN between consecutive ones (no trailing NaN: bqplot labels the end)
    assert all(len(x) and not np.isnan(x[-1]) for x in xs)
    assert sum(int(np.isnan(x).sum()) + 1 for x in xs) == n
    for x, m in zip(xs, marks, strict=True):
        assert np.array_equal(np.isnan(x), np.isnan(np.asarray(m.y, dtype=float)))
        gaps = np.flatnonzero(np.isnan(x))
        closed = np.split(x, gaps)
        assert all(abs(p[~np.isnan(p)][0] - p[~np.isnan(p)][-1]) < 1e-12 for p in closed)
    # the highlighted ellipses sit where the margin is smallest (near the boundary)
    near = int(np.isnan(xs[1]).sum()) + 1
    assert 0 < near < n
    # values: every drawn point p of an ellipse centred at c satisfies
    # (p - c)^T G(c)^-1 (p - c) = s^2, one global s ("stretch": half-axes s sqrt(eig G)),
    # with G = J^T J / p from a reverse-mode Jacobian of the feature map at c (square slice)
    assert viewer.ellipse_mode == "stretch"
    phi = copy.deepcopy(nn.Sequential(*list(explorer.browser.model)[:-1])).double()  # features
    forms = []
    for x, m in zip(xs, marks, strict=True):
        y = np.asarray(m.y, dtype=float)
        for px, py in zip(
            np.split(x, np.flatnonzero(np.isnan(x))),
            np.split(y, np.flatnonzero(np.isnan(y))),
            strict=True,
        ):
            pts = np.stack([px[~np.isnan(px)], py[~np.isnan(py)]], 1)[:-1]  # drop the closing point
            c = pts.mean(0)
            jac = torch.func.jacrev(lambda z: phi(z[None])[0])(torch.tensor(c))
            g = (jac.T @ jac / jac.shape[0]).numpy()
            d = pts - c
            forms.append(np.einsum("ni,ij,nj->n", d, np.linalg.inv(g), d))
    forms = np.concatenate(forms)
    np.testing.assert_allclose(forms, forms[0], rtol=1e-5)
    viewer.ellipse_density = 0
    assert all(len(m.x) == 0 for m in marks)
    viewer.ellipse_density = VIEWER["ellipse_density"]
    assert explorer.wait(60)


def test_lock_colour_range_while_scrubbing(explorer: Explorer, run: Run):
    viewer = explorer.viewer
    a, b = run.steps[0], run.steps[-1]
    explorer.step = a
    assert explorer.wait(60)
    viewer.lock_colors = True
    limits = (viewer.frame.vmin, viewer.frame.vmax)
    explorer.step = b
    assert explorer.wait(60)
    assert (viewer.frame.vmin, viewer.frame.vmax) == limits
    viewer.lock_colors = False
    viewer.color_range = "step"
    assert explorer.wait(60)
    expected = rendering.color_limits(viewer.frame.values)
    assert (viewer.frame.vmin, viewer.frame.vmax) == pytest.approx(expected)
    assert viewer.frame.vmin != limits[0]
    viewer.color_range = "run"
    assert explorer.wait(60)


def test_colour_range_is_fixed_over_the_run_by_default(explorer: Explorer, run: Run):
    """Default colours: one range for every step, from every step's 16 x 16 field computed
    here independently; symmetric about 0 for the relative view."""
    from richviz.features import feature_map
    from richviz.geometry import pullback_metric
    from richviz.widgets.slice_viewer import RANGE_RESOLUTION

    viewer = explorer.viewer
    assert viewer.color_range == "run" and not viewer.lock_colors
    fields = np.stack(
        [
            pullback_metric(
                feature_map(run.load(s), viewer.layer), viewer.slice, resolution=RANGE_RESOLUTION
            )
            .log10_volume.double()
            .numpy()
            for s in run.steps
        ]
    )
    expected = rendering.color_limits(fields)
    seen = set()
    for step in (run.steps[0], run.steps[-1]):
        explorer.step = step
        assert explorer.wait(60)
        assert (viewer.frame.vmin, viewer.frame.vmax) == pytest.approx(expected, rel=1e-6)
        seen.add(tuple(rendering.color_limits(viewer.frame.values)))
    assert (
        len(seen) == 2
    )  # per-step ranges would differ: the fixed one is what makes Play show growth
    viewer.relative = True
    assert explorer.wait(60)
    lo, hi = rendering.color_limits(fields - fields[0], symmetric=True)
    assert (viewer.frame.vmin, viewer.frame.vmax) == pytest.approx((lo, hi), rel=1e-6)
    assert viewer.frame.vmin == -viewer.frame.vmax
    viewer.relative = False
    assert explorer.wait(60)


def test_decision_boundary_lines(explorer: Explorer):
    viewer = explorer.viewer
    xs = np.asarray(viewer.boundary_mark.x, dtype=float)
    ys = np.asarray(viewer.boundary_mark.y, dtype=float)
    assert len(xs) > 0 and np.isnan(xs[2::3]).all()
    # independent reference: the model's logit difference d = z0 - z1 on the grid; every grid
    # edge whose ends differ in sign is crossed once, at the linear interpolation of d
    model = explorer.browser.model
    res = viewer.frame.resolution
    gu, gv = (t.numpy() for t in viewer.slice.grid(res))
    pts = torch.tensor(np.stack(np.meshgrid(gu, gv, indexing="xy"), -1).reshape(-1, 2))
    with torch.no_grad():
        z = model(pts.float()).double().numpy()
    d = (z[:, 0] - z[:, 1]).reshape(res, res)  # [i, j] = (v[i], u[j])
    expected = set()
    for i in range(res):
        for j in range(res):
            for di, dj in ((0, 1), (1, 0)):
                a, b = i + di, j + dj
                if a < res and b < res and d[i, j] * d[a, b] < 0:
                    t = d[i, j] / (d[i, j] - d[a, b])
                    expected.add(
                        (
                            round(gu[j] + t * (gu[b] - gu[j]), 6),
                            round(gv[i] + t * (gv[a] - gv[i]), 6),
                        )
                    )
    ok = ~np.isnan(xs)
    drawn = {(round(a, 6), round(b, 6)) for a, b in zip(xs[ok], ys[ok], strict=True)}
    assert drawn == expected


def test_csv_export(explorer: Explorer, run: Run, tmp_path: Path):
    panel = explorer.panel
    assert panel.loaded
    path = panel.to_csv(tmp_path / "metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == run.steps
    for row, expected in zip(rows, panel.rows, strict=True):
        assert float(row["d_lr"]) == pytest.approx(expected["d_lr"])
        assert float(row["test_acc"]) == pytest.approx(expected["test_acc"])
    assert "boundary_magnification" in rows[0]


def test_heatmap_png_export(explorer: Explorer, tmp_path: Path):
    viewer = explorer.viewer
    frame = viewer.frame
    path = viewer.export_heatmap(tmp_path / "heat.png", scale=3)
    pixels = decode_png(path.read_bytes())
    res = VIEWER["resolution"]
    assert pixels.shape == (3 * res, 3 * res, 4)
    expected = rendering.field_to_rgba(frame.values, frame.vmin, frame.vmax, frame.cmap)
    np.testing.assert_array_equal(pixels[::3, ::3], expected)


def test_show_classes_entropy_and_curvature(explorer: Explorer, run: Run):
    """The heatmap's other views against the core functions, computed here independently."""
    from richviz.features import feature_map
    from richviz.geometry import decision_field, scalar_curvature

    viewer = explorer.viewer
    res = VIEWER["resolution"]
    model = run.load(viewer.step)
    dec = decision_field(model, viewer.slice, resolution=res)
    try:
        viewer.show = "classes"
        assert explorer.wait(60)
        np.testing.assert_array_equal(
            viewer.frame.rgba, rendering.class_regions_rgba(dec.predicted.numpy())
        )
        assert (viewer.frame.vmin, viewer.frame.vmax) == (-0.5, 1.5)
        assert list(viewer.color_axis.tick_values) == [0.0, 1.0]
        viewer.show = "entropy"
        assert explorer.wait(60)
        np.testing.assert_allclose(viewer.frame.values, dec.entropy.numpy(), atol=1e-6)
        assert (viewer.frame.vmin, viewer.frame.vmax) == (0.0, 1.0)
        viewer.show = "curvature"
        assert explorer.wait(120)
        expected = scalar_curvature(
            feature_map(model, viewer.layer), viewer.slice, resolution=res, dtype=torch.float64
        ).scalar.numpy()
        np.testing.assert_allclose(viewer.frame.values, expected, rtol=1e-6, atol=1e-9)
        assert viewer.frame.vmin == -viewer.frame.vmax  # signed: symmetric colours
    finally:
        viewer.show = "volume"
        assert explorer.wait(60)


def test_layers_named_by_module_and_width_and_constant_field_said(explorer: Explorer):
    viewer = explorer.viewer
    labels = dict((v, k) for k, v in viewer.layer_picker.options)
    # the fixture's 2-16-16-2 MLP: Flatten, Linear, Tanh, Linear, Tanh, Linear
    assert labels["1"] == "1: Linear (16)" and labels["2"] == "2: Tanh (16)"
    assert labels["penultimate"] == "penultimate (16)" and labels["logits"] == "logits (2)"
    viewer.layer = "0"  # Flatten of a 2-D input: the identity, a constant volume element
    try:
        assert explorer.wait(60)
        assert "constant on this slice" in viewer.status.value
    finally:
        viewer.layer = "penultimate"
        assert explorer.wait(60)
    assert "constant" not in viewer.status.value


def test_standalone_viewer_has_its_own_step_slider(run: Run):
    viewer = SliceViewer(run, **VIEWER)
    try:
        assert viewer.step_row.layout.display == "flex"
        assert [v for _, v in viewer.step_slider.options] == run.steps
        viewer.step_slider.value = run.steps[1]
        assert viewer.step == run.steps[1]
        assert viewer.wait(60) and viewer.shown_step == run.steps[1]
        viewer.step = run.steps[0]
        assert viewer.step_slider.value == run.steps[0]
    finally:
        viewer.close()


def test_explorer_layout_is_compact(explorer: Explorer):
    import ipywidgets as widgets

    # one step slider (the viewer's), metrics and checkpoints in tabs beside the viewer
    assert explorer.viewer.step_row.layout.display == "flex"
    assert explorer.panel.step_row.layout.display == "none"
    assert isinstance(explorer.tabs, widgets.Tab)
    assert list(explorer.tabs.children) == [explorer.panel, explorer.browser]
    width = lambda w: int(str(w.layout.width).removesuffix("px"))  # noqa: E731
    charts = list(explorer.panel.charts.values())
    # figure + colour bar beside two charts in a row: under a 1400 px screen with JupyterLab
    total = width(explorer.viewer.figure) + width(explorer.viewer.colorbar)
    total += 2 * (width(charts[0]) + 8)
    assert total <= 1250
    tall = 2 * (int(str(charts[0].layout.height).removesuffix("px")) + 25)
    assert width(explorer.viewer.figure) + 4 * 34 + 100 <= 900 and tall + 150 <= 900


def test_view_exports_on_the_server(explorer: Explorer, tmp_path: Path):
    import io
    import xml.etree.ElementTree as ET

    from PIL import Image

    viewer = explorer.viewer
    png = viewer.save_png(tmp_path / "view.png")
    assert str(png.resolve()) in html.unescape(viewer.status.value)
    img = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("RGB"))
    assert img.shape[1] >= 2 * 500  # >= 2x resolution of the on-screen figure
    # both class colours (points, legend) and the colour bar's ends are in the image
    frame = viewer.frame
    bar = rendering.colorbar_rgba(frame.cmap)
    for rgb in (
        [int(rendering.CLASS_PALETTE[0][i : i + 2], 16) for i in (1, 3, 5)],
        [int(rendering.CLASS_PALETTE[1][i : i + 2], 16) for i in (1, 3, 5)],
        bar[0, 0, :3].tolist(),
        bar[-1, 0, :3].tolist(),
    ):
        assert (np.abs(img.astype(int) - rgb).sum(-1) < 12).sum() > 20, rgb
    svg = viewer.save_svg(tmp_path / "view.svg")
    root = ET.fromstring(svg.read_text())
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"class 0", "class 1", "decision boundary", frame.bar_label} <= texts
    assert "view.svg" in viewer.status.value
    whole = explorer.save_svg(tmp_path / "explorer.svg")
    texts = {
        t.text for t in ET.fromstring(whole.read_text()).iter("{http://www.w3.org/2000/svg}text")
    }
    assert {"D_LR", "richness", "performance", "class 0", frame.bar_label} <= texts
    explorer.save_png(tmp_path / "explorer.png")
    assert "explorer.png" in explorer.status.value


def test_explorer_export_row_names_files_by_its_box(
    explorer: Explorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    row = explorer.children[0].children[1]  # the header row: title, export row, status
    assert row.children == (explorer.export_name, explorer.png_button, explorer.svg_button)
    assert [(c.description, c.layout.width) for c in row.children] == [
        ("file", "180px"), ("view PNG", "90px"), ("view SVG", "90px"),
    ]  # fmt: skip
    explorer.svg_button.click()
    assert (tmp_path / f"richviz-step{explorer.step}.svg").is_file()  # the box's first value
    (tmp_path / "lecture").write_text("a file where the folder would be")
    explorer.export_name.value = "lecture/figure"  # cannot be written: one line, row usable
    explorer.png_button.click()
    assert "FileExistsError" in explorer.status.value and "lecture" in explorer.status.value
    assert "\n" not in html.unescape(explorer.status.value)
    explorer.export_name.value = "lecture-figure"
    explorer.png_button.click()
    out = tmp_path / f"lecture-figure-step{explorer.step}.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out.resolve()) in html.unescape(explorer.status.value)


def test_metrics_panel_charts(explorer: Explorer, run: Run):
    panel = explorer.panel
    lines = panel.series["richness"][0]
    assert list(lines.labels) == ["D_LR"] and lines in panel.charts["richness"].marks
    np.testing.assert_allclose(lines.x, np.array(run.steps) + 1.0)
    np.testing.assert_allclose(lines.y, [r["d_lr"] for r in panel.rows])
    # D_LR with its two factors on the same [0, 1] axis, each in the legend
    factors = {m.labels[0]: m for m in panel.series["richness"][1:3]}
    assert list(factors) == ["confinement", "isotropy"]
    for key, m in factors.items():
        np.testing.assert_allclose(m.y, [r[key] for r in panel.rows])
        assert key in panel.legends["richness"].value
    np.testing.assert_allclose(
        1.0 - np.asarray(lines.y),
        np.asarray(factors["confinement"].y) * np.asarray(factors["isotropy"].y),
        atol=1e-12,
    )
    labels = [m.labels[0] for m in panel.series["neural collapse"]]
    # 2 classes: equiangularity is undefined (two centred means are always opposite), hidden
    # and said so; the rows still carry it
    assert panel.num_classes == 2 and "NC2 equiangular" not in labels
    assert "NC2 equiangular hidden" in panel.legends["neural collapse"].value
    assert all("nc2_equiangular" in r for r in panel.rows)
    assert "NC1" in labels and all(
        len(m.x) and np.isfinite(m.y[-1]) for m in panel.series["neural collapse"]
    )
    assert panel.play.max == len(run.steps) - 1


# ----------------------------------------------------------------------------- bare models


class BlockingMLP(nn.Module):
    """An MLP whose forward, on any thread but the one that made it, waits until the test sets
    ``gate`` (``entered`` says a background forward is waiting). The viewer's constructor
    measures a bare model's layers with a forward pass on the kernel thread; the field is
    computed in the background, and that is what the gate holds."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate
        self.entered = threading.Event()
        self.owner = threading.current_thread()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is not self.owner:
            self.entered.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return self.net(x)


@pytest.fixture(scope="module")
def moons():
    ds = datasets.load("moons", n=100)
    return ds.x_test, ds.y_test


def test_field_request_returns_before_computation(moons):
    gate = threading.Event()
    torch.manual_seed(0)
    model = BlockingMLP(gate)
    try:
        viewer = SliceViewer(model, data=moons, resolution=16, coarse_resolution=8)
        placeholder = viewer.image_mark.image.value
        assert viewer.shown_step == -1 and viewer.frame is None
        assert model.entered.wait(30)  # the field's computation is under way, held by the gate
        assert viewer.frame is None and viewer.busy
    finally:
        gate.set()
    assert viewer.wait(60)
    assert viewer.shown_resolution == 16 and viewer.image_mark.image.value != placeholder
    viewer.close()


def test_coarse_then_fine(moons):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    gate = threading.Event()
    blocking = BlockingMLP(gate)
    blocking.net = model
    shown: list[int] = []
    try:
        viewer = SliceViewer(blocking, data=moons, resolution=20, coarse_resolution=10)
        viewer.observe(lambda c: shown.append(c["new"]), names="shown_resolution")
    finally:
        gate.set()
    assert viewer.wait(60)
    assert shown == [10, 20]
    assert viewer.compute_count == 2
    # points of the slice are the data, coloured by class
    assert len(viewer.points_mark.x) == len(moons[0])
    # colour-blind-safe class colours (Okabe-Ito)
    assert set(viewer.points_mark.colors) == {
        rendering.CLASS_PALETTE[0],
        rendering.CLASS_PALETTE[1],
    }
    # theory overlay: "trained minus theory" differs from the plain field by the theory
    plain = viewer.frame.values.copy()
    viewer.theory = "difference"
    assert viewer.wait(60)
    from richviz.theory import infinite_width_field

    theory = infinite_width_field(viewer.slice, 20, **viewer.theory_used).log10_volume.numpy()
    np.testing.assert_allclose(viewer.frame.values, plain - theory, rtol=1e-6, atol=1e-9)
    assert viewer.theory_used["activation"] == "tanh" and viewer.theory_note == ""
    viewer.theory = "contours"
    assert viewer.wait(60)
    assert len(viewer.theory_mark.x) > 0 and np.isnan(viewer.theory_mark.x).any()
    # full-space effective volume: for 2-D inputs both singular values, i.e. the slice volume
    viewer.theory = "off"
    assert viewer.wait(60)
    count = viewer.compute_count
    viewer.volume = "full"
    assert viewer.wait(60)
    assert "top 2" in viewer.frame.label and viewer.compute_count == count
    np.testing.assert_allclose(viewer.frame.values, plain, atol=1e-4)
    viewer.close()


def test_headless_extractor_in_the_viewer_through_a_linear_probe(moons):
    """A feature extractor with no classifier: ``probe_classifier`` gives the viewer a decision
    boundary (the probe's) while the heatmap stays the extractor's own volume element."""
    from richviz.geometry import decision_field, pullback_metric
    from richviz.probe import probe_classifier

    x, y = moons
    torch.manual_seed(3)
    extractor = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
    model = probe_classifier(extractor, x, y)
    viewer = SliceViewer(model, data=moons, resolution=16, coarse_resolution=16)
    try:
        assert viewer.wait(60)
        expected = pullback_metric(extractor, viewer.slice, resolution=16)
        np.testing.assert_allclose(
            viewer.frame.values, expected.log10_volume.numpy(), rtol=1e-5, atol=1e-6
        )
        assert len(viewer.boundary_mark.x) > 0  # the probe's boundary is drawn
        viewer.show = "classes"
        assert viewer.wait(60)
        dec = decision_field(model, viewer.slice, resolution=16)
        assert set(np.unique(dec.predicted.numpy())) == {0, 1}  # two regions
        np.testing.assert_array_equal(
            viewer.frame.rgba, rendering.class_regions_rgba(dec.predicted.numpy())
        )
    finally:
        viewer.close()


def test_image_plane_through_three_classes():
    ds = datasets.load("digits")
    x, y = ds.x_test[:60], ds.y_test[:60]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    viewer = SliceViewer(model, data=(x, y), resolution=12, coarse_resolution=12)
    assert viewer.wait(60)
    idx = [p.value for p in viewer.anchor_pickers]
    assert len({int(y[i]) for i in idx}) == 3
    assert len(viewer.thumbnails.children) == 3
    # the index boxes hold the anchors' indices (and have room to show them next to their
    # one-letter label: ipywidgets' default 80 px label width would squeeze the box away)
    assert viewer.anchor_indices == idx
    assert viewer.anchor_row.layout.display != "none"
    for picker, name, i, thumb in zip(
        viewer.anchor_pickers, "ABC", idx, viewer.thumbnails.children, strict=True
    ):
        assert picker.max == len(x) - 1 and picker.description == name
        assert picker.style.description_width == "initial"
        assert thumb.children[1].value.startswith(f"{name} #{i} (class {int(y[i])})")
    np.testing.assert_allclose(
        np.stack([viewer.anchor_mark.x, viewer.anchor_mark.y], 1),
        viewer.slice.to_uv(x[idx]).numpy(),
        atol=1e-9,
    )
    # choose other anchors: a new plane, a new field
    count = viewer.compute_count
    new = [idx[0], idx[1], next(i for i in range(60) if int(y[i]) not in {int(y[j]) for j in idx})]
    for picker, i in zip(viewer.anchor_pickers, new, strict=True):
        picker.value = i
    viewer.anchor_button.click()
    assert viewer.wait(60)
    assert viewer.compute_count == count + 1
    np.testing.assert_allclose(
        viewer.slice.to_uv(x[new]).numpy(), viewer.slice.anchors.numpy(), atol=1e-9
    )
    assert viewer.anchor_indices == new == [p.value for p in viewer.anchor_pickers]
    viewer.close()


def test_bad_inputs_give_one_line_errors(run: Run):
    model = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(DataError, match="data="):
        SliceViewer(model)
    with pytest.raises(TypeError, match="model_or_run"):
        SliceViewer("not a model")
    viewer = SliceViewer(run, step=run.steps[0], **VIEWER)
    assert viewer.wait(60)
    png = viewer.image_mark.image.value
    viewer.step = 123456  # not a checkpoint: snaps to the nearest one (tests/test_widget_steps.py)
    assert viewer.wait(60)
    assert viewer.step == viewer.shown_step == run.steps[-1]
    viewer.step = run.steps[0]
    with pytest.raises(traitlets.TraitError, match="no_such_layer"):
        viewer.layer = "no_such_layer"  # refused at once: the layers are known
    assert viewer.wait(60) and viewer.layer == "penultimate"
    assert viewer.image_mark.image.value == png
    viewer.layer = "logits"  # still usable
    assert viewer.wait(60) and viewer.shown_step == run.steps[0]
    viewer.layer = "penultimate"
    assert viewer.wait(60) and viewer.shown_step == run.steps[0]
    viewer.close()
    browser = CheckpointBrowser(run)
    with pytest.raises(ValueError, match="step"):
        browser.select(999999)
    browser.close()


def test_metrics_panel_standalone(run: Run):
    calls = []
    original = run.metrics

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    run.metrics = counting
    try:
        panel = MetricsPanel(run)
        assert panel.wait(60)
    finally:
        del run.metrics
    assert len(calls) == 1 and callable(calls[0]["progress"])
    assert panel.progress.value == 1.0 and panel.loaded
    for s in run.steps:
        panel.step = s
    assert len(calls) == 1
    panel.close()


def test_import_loads_no_model():
    import subprocess
    import sys

    code = (
        "import sys, richviz.widgets as w; "
        "assert 'richviz.checkpoints' not in sys.modules; "
        "assert 'richviz.geometry' not in sys.modules; "
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_close_after_failed_init_does_not_raise(run: Run, monkeypatch):
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(TypeError, match="model_or_run"):
        SliceViewer("not a model")  # fails before any worker thread exists
    with pytest.raises(DataError):
        SliceViewer(nn.Sequential(nn.Linear(5, 3)))
    with pytest.raises(ValueError, match="resolution"):
        Explorer(run, viewer={"resolution": 1})  # fails after the browser started
    gc.collect()  # Widget.__del__ calls close() on the half-built widgets
    assert unraisable == []
    for cls in (SliceViewer, MetricsPanel, CheckpointBrowser, Explorer):
        widget = cls.__new__(cls)  # as left by an __init__ that raised at once
        widget.close()
        widget.close()


def test_nice_ticks_are_few_round_and_distinct():
    rng = np.random.default_rng(1)
    cases = [(-1.85, -0.15), (-2.83, -2.71), (0.0, 1.0), (-3.2, 3.2), (1e-4, 3e-4), (7.0, 12345.0)]
    cases += [tuple(sorted(rng.normal(0, 10 ** rng.uniform(-3, 3), 2))) for _ in range(200)]
    for lo, hi in cases:
        ticks = rendering.nice_ticks(lo, hi, 5)
        assert 1 <= len(ticks) <= 5
        assert ticks.min() >= lo - 1e-9 * abs(hi - lo) and ticks.max() <= hi + 1e-9 * abs(hi - lo)
        step = np.diff(ticks)
        if len(ticks) > 1:
            np.testing.assert_allclose(step, step[0], rtol=1e-6)
            mantissa = step[0] / 10 ** np.floor(np.log10(step[0]))
            assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
            # the step is as fine as allowed: halving to the next round step gives > 5 ticks
            assert len(rendering.nice_ticks(lo, hi, 10)) >= len(ticks)
        labels = rendering.format_ticks(ticks, rendering.tick_format(ticks))
        assert len(set(labels)) == len(labels)
        np.testing.assert_allclose(
            [float(s) for s in labels], ticks, atol=step.min() / 100 if len(step) else 1e-9
        )


def test_colour_bar_beside_a_square_slice(explorer: Explorer):
    from richviz.widgets import slice_viewer as sv

    viewer = explorer.viewer
    fig, bar = viewer.figure, viewer.colorbar
    # bqplot fits the aspect ratio to the whole figure box: a square box whose horizontal and
    # vertical margins are equal has a square plot area
    margin = fig.fig_margin
    assert fig.layout.width == fig.layout.height
    assert margin["left"] + margin["right"] == margin["top"] + margin["bottom"]
    # the colour bar is its own figure next to the slice, aligned with its plot area
    assert viewer.color_axis not in fig.axes and viewer.color_axis in bar.axes
    assert bar.layout.height == fig.layout.height
    assert (bar.fig_margin["top"], bar.fig_margin["bottom"]) == (margin["top"], margin["bottom"])
    assert any(fig in box.children and bar in box.children for box in viewer.children[1:2])
    frame = viewer.frame
    sy = viewer.color_axis.scale
    assert (sy.min, sy.max) == (frame.vmin, frame.vmax)
    assert list(viewer.colorbar_mark.y) == [frame.vmin, frame.vmax]
    ticks = np.asarray(viewer.color_axis.tick_values, dtype=float)
    assert 2 <= len(ticks) <= sv.COLORBAR_TICKS
    assert ticks.min() >= frame.vmin and ticks.max() <= frame.vmax
    labels = rendering.format_ticks(ticks, viewer.color_axis.tick_format)
    assert len(set(labels)) == len(labels)
    assert viewer.color_axis.label == frame.bar_label
    # the gradient runs from the colormap's low end (bottom) to its high end (top)
    pixels = decode_png(bytes(viewer.colorbar_mark.image.value))
    stops = rendering.COLORMAPS[frame.cmap]
    assert pixels[0, 0, :3].tolist() == [int(stops[-1][i : i + 2], 16) for i in (1, 3, 5)]
    assert pixels[-1, 0, :3].tolist() == [int(stops[0][i : i + 2], 16) for i in (1, 3, 5)]
    # the heatmap covers the slice grid exactly (pixel centres on the grid points)
    u, v = viewer.slice.grid(frame.resolution)
    (u0, u1), (v0, v1) = rendering.image_extent(u.numpy(), v.numpy())
    assert list(viewer.image_mark.x) == pytest.approx([u0, u1])
    assert list(viewer.image_mark.y) == pytest.approx([v0, v1])


def test_metrics_charts_are_readable(explorer: Explorer, run: Run):
    from richviz.widgets import metrics_panel as mp

    panel = explorer.panel
    assert panel.loaded
    sizes = {(f.layout.width, f.layout.height) for f in panel.charts.values()}
    assert len(sizes) == 1  # every chart the same size
    for title, fig in panel.charts.items():
        lines = panel.series[title]
        assert lines, title
        # legends sit below the chart (HTML), never over the data
        assert not any(m.display_legend for m in fig.marks)
        legend = panel.legends[title].value
        for m in lines:
            assert html.escape(m.labels[0]) in legend
        x_axis, *y_axes = fig.axes
        x_ticks = np.asarray(x_axis.tick_values, dtype=float)
        assert 1 <= len(x_ticks) <= 6 and x_ticks.max() <= run.steps[-1] + 1
        assert len(y_axes) >= 1
        for axis in y_axes:
            ticks = np.asarray(axis.tick_values, dtype=float)
            assert 1 <= len(ticks) <= mp.MAX_TICKS, (title, ticks)
            lo, hi = axis.scale.min, axis.scale.max
            assert lo - 1e-12 <= ticks.min() and ticks.max() <= hi + 1e-12
            # the scale covers every value drawn against it
            ys = np.concatenate(
                [np.asarray(m.y, dtype=float) for m in lines if m.scales["y"] is axis.scale]
            )
            ys = ys[np.isfinite(ys)]
            assert lo <= ys.min() and ys.max() <= hi


def test_log_ticks_are_few_and_inside():
    rng = np.random.default_rng(2)
    cases = [(1e-16, 1.2), (0.18, 0.46), (2e-3, 0.6), (1.0, 401.0), (1.0, 2.0), (1e-3, 1e3)]
    cases += [tuple(sorted(10 ** rng.uniform(-18, 6, 2))) for _ in range(200)]
    for lo, hi in cases:
        ticks = rendering.log_ticks(lo, hi, 5)
        assert 1 <= len(ticks) <= 5, (lo, hi, ticks)
        assert lo * (1 - 1e-9) <= ticks.min() and ticks.max() <= hi * (1 + 1e-9)
        assert np.all(np.diff(ticks) > 0)
        if np.log10(hi / lo) >= 3:  # wide ranges: powers of ten, evenly strided
            exps = np.log10(ticks)
            np.testing.assert_allclose(exps, np.round(exps), atol=1e-9)
            assert len(set(np.diff(np.round(exps)))) <= 1 and len(ticks) >= 2
    assert list(rendering.step_ticks(401)) == [1.0, 10.0, 100.0]


# ----------------------------------------------------------------------------- hardening

EVIL = "<img src=x onerror=alert(1)>"


def _html_values(widget) -> list[str]:
    """Values of every HTML widget in a widget tree."""
    import ipywidgets as widgets

    out, stack = [], [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, widgets.HTML):
            out.append(w.value)
        stack += list(getattr(w, "children", ()) or ())
    return out


def test_run_folder_name_is_escaped_in_every_html_widget(run: Run, tmp_path: Path):
    import shutil

    evil_dir = tmp_path / EVIL
    shutil.copytree(run.path, evil_dir)
    evil = Run.open(evil_dir)
    ex = Explorer(evil, viewer=VIEWER)
    try:
        assert ex.wait(120)
        ex.browser.select(BAD_STEP)  # an error line that may carry the path
        assert ex.wait(60)
        values = _html_values(ex)
        assert len(values) >= 5
        for value in values:
            assert "<img" not in value and "onerror=alert(1)>" not in value
        assert html.escape(EVIL) in ex.header.value
        assert html.escape(EVIL) in ex.browser.title.value
    finally:
        ex.close()


def test_status_and_legend_escape_untrusted_strings():
    from richviz.widgets.metrics_panel import legend_html
    from richviz.widgets.slice_viewer import status_html

    assert "<img" not in status_html(f"layer {EVIL}", "error")
    assert html.escape(EVIL) in status_html(EVIL)
    legend = legend_html([(EVIL, '"><script>x</script>', False)])
    assert "<img" not in legend and "<script>" not in legend


def test_widget_traits_are_typed(explorer: Explorer, run: Run):
    """A bad value raises TraitError at once; the widget keeps its value and stays usable."""
    viewer, browser, panel = explorer.viewer, explorer.browser, explorer.panel
    bad = [
        (viewer, "theory", "nonsense"),
        (viewer, "volume", "everything"),
        (viewer, "ellipse_mode", "circle"),
        (viewer, "resolution", 1),
        (viewer, "resolution", 10**6),
        (viewer, "ellipse_density", -1),
        (viewer, "anchors", [1, 1, 2]),
        (viewer, "anchors", [0, 1]),
        (viewer, "step", -5),
        (browser, "selected_index", len(run.checkpoints)),
        (browser, "step", -1),
        (panel, "step", -1),
        (explorer, "step", -1),
    ]
    if not torch.cuda.is_available():
        bad += [(viewer, "device", "cuda"), (browser, "device", "cuda")]
    bad += [(viewer, "device", "tpu"), (browser, "device", "tpu")]
    for widget, name, value in bad:
        before = getattr(widget, name)
        with pytest.raises(traitlets.TraitError):
            setattr(widget, name, value)
        assert getattr(widget, name) == before, (name, value)
    # still usable: good values take effect
    stretch = np.asarray(viewer.ellipse_mark.x, dtype=float).copy()
    viewer.theory = "contours"
    viewer.ellipse_mode = "unit_ball"
    assert explorer.wait(60)
    assert viewer.mode_picker.value == "unit_ball" and viewer.theory_picker.value == "contours"
    assert not np.array_equal(np.asarray(viewer.ellipse_mark.x, dtype=float), stretch)
    # the run's 2-16-16-2 MLP is deep: no theory is drawn, and the status says why
    assert "no theory for this model" in viewer.status.value
    assert viewer.frame.theory_lines[0].size == 0
    viewer.theory = "off"
    viewer.ellipse_mode = "stretch"
    assert explorer.wait(60) and "no theory" not in viewer.status.value
    np.testing.assert_array_equal(np.asarray(viewer.ellipse_mark.x, dtype=float), stretch)


@pytest.mark.parametrize(
    "model,why",
    [
        (
            nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)),
            "hidden",
        ),
        (nn.Sequential(nn.Linear(2, 8), nn.Softplus(beta=3.0), nn.Linear(8, 2)), "Softplus"),
        (nn.Sequential(nn.Linear(2, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 2)), "GELU"),
        (nn.Sequential(nn.Linear(2, 8), nn.Hardswish(), nn.Linear(8, 2)), "Hardswish"),
    ],
)
def test_no_theory_is_said_not_guessed(moons, model, why):
    viewer = SliceViewer(model, data=moons, resolution=12, coarse_resolution=12, ellipse_density=0)
    try:
        assert viewer.wait(60)
        plain = viewer.frame.values.copy()
        viewer.theory = "difference"
        assert viewer.wait(60)
        assert "no theory for this model" in viewer.status.value and why in viewer.status.value
        assert "#b00020" not in viewer.status.value  # a note, not an error
        np.testing.assert_array_equal(viewer.frame.values, plain)  # nothing subtracted
        assert viewer.theory_used is None
    finally:
        viewer.close()


def test_random_feature_map_gets_no_decision_boundary():
    """A bare network without labelled data: its argmax "classes" mean nothing, so no
    boundary and no emphasised ellipses are drawn."""
    from richviz.geometry import Slice

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64))
    viewer = SliceViewer(
        net, slice=Slice.square(torch.zeros(2), 2.0), resolution=12, coarse_resolution=12
    )
    try:
        assert viewer.wait(60)
        assert not viewer.decision
        assert len(viewer.boundary_mark.x) == 0 and len(viewer.ellipse_near_mark.x) == 0
        assert len(viewer.ellipse_mark.x) > 0
        viewer.decision = True
        assert viewer.wait(60)
        assert len(viewer.ellipse_near_mark.x) > 0
    finally:
        viewer.close()


def test_theory_contours_are_labelled(moons):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    viewer = SliceViewer(
        model, data=moons, resolution=16, coarse_resolution=16, ellipse_density=0,
        theory="contours",
    )  # fmt: skip
    try:
        assert viewer.wait(60)
        texts = list(viewer.theory_label_mark.text)
        assert texts and viewer.theory_label_mark in viewer.figure.marks
        levels = [float(t) for t in texts]
        assert levels == sorted(levels) and len(set(levels)) == len(levels)
        # labels are round numbers (at most 2 significant digits here) ...
        assert all(len(t.lstrip("-").replace(".", "").strip("0")) <= 2 for t in texts)
        # ... and levels the theory field actually takes on the slice
        theory = viewer._theory_cache.get((viewer._version, viewer.layer, 16))[0]
        lo, hi = np.nanmin(theory), np.nanmax(theory)
        assert all(lo < v < hi for v in levels)
    finally:
        viewer.close()


@pytest.mark.parametrize("cls,name", [(nn.Softplus, "softplus"), (nn.SiLU, "silu")])
def test_softplus_and_silu_get_their_own_theory(moons, cls, name):
    from richviz.theory import infinite_width_field

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), cls(), nn.Linear(16, 2))
    viewer = SliceViewer(model, data=moons, resolution=12, coarse_resolution=12, ellipse_density=0)
    try:
        assert viewer.wait(60)
        plain = viewer.frame.values.copy()
        viewer.theory = "difference"
        assert viewer.wait(60)
        w, b = model[0].weight.detach().double(), model[0].bias.detach().double()
        params = {"activation": name, "weight_std": float(w.std()), "bias_std": float(b.std())}
        assert viewer.theory_used == pytest.approx(params)
        theory = infinite_width_field(viewer.slice, 12, **params).log10_volume.numpy()
        np.testing.assert_allclose(viewer.frame.values, plain - theory, rtol=1e-6, atol=1e-9)
    finally:
        viewer.close()


def test_bare_model_follows_the_device_choice():
    from richviz.devices import module_device
    from richviz.widgets.sources import ModelSource

    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    src = ModelSource(model)
    assert src.load(0, "auto") is model and src.load(0, str(module_device(model))) is model
    # another device gets a copy there ("meta" stands in for a second device on a CPU machine)
    other = src.load(0, "meta")
    assert other is not model and module_device(other).type == "meta"
    assert src.load(0, "meta") is other  # cached while the weights are unchanged
    with torch.no_grad():
        model[0].weight.add_(1.0)  # trained in place: the copy is stale
    fresh = src.load(0, "meta")
    assert fresh is not other and module_device(fresh).type == "meta"
    assert module_device(model).type == "cpu"  # the user's model itself never moves


def test_a_model_copy_never_carries_another_threads_hooks(run: Run):
    """A metrics pass (under the compute lock) hooks into the run's cached model to read its
    features; the viewer's private copy of that model, asked for meanwhile, waits for the
    pass, so it never carries (and feeds) the pass's hooks."""
    from richviz.compute_lock import COMPUTE
    from richviz.widgets.sources import ModelSource, load_model

    step = run.steps[-1]
    shared = load_model(run, step, "cpu")
    entered, release, seen = threading.Event(), threading.Event(), []

    def metrics_pass() -> None:
        with COMPUTE.hold():
            hook = shared.register_forward_hook(lambda m, i, o: seen.append(o))
            entered.set()
            assert release.wait(10)
            hook.remove()

    src, copies = ModelSource(run), []
    holder = threading.Thread(target=metrics_pass)
    holder.start()
    assert entered.wait(10)
    asker = threading.Thread(target=lambda: copies.append(src.load(step, "cpu")))
    asker.start()
    asker.join(0.3)  # on the old code the copy is made here, hook and all
    release.set()
    holder.join(10)
    asker.join(10)
    (copy_,) = copies
    assert copy_ is not shared
    assert not any(m._forward_hooks for m in copy_.modules())
    with torch.no_grad():
        copy_(torch.zeros(1, *run.data().x_test.shape[1:]))
    assert seen == []  # the pass's buffer got nothing from the viewer's forward


def test_a_runs_data_asked_from_two_threads_reaches_both():
    """The viewer's job and a GeometryRow's range job ask a source for its data at once: the
    second caller waits for the first one's load instead of getting None (which placed the
    viewer on the unit square instead of the data's covering square)."""
    from types import SimpleNamespace

    from richviz.widgets.sources import ModelSource

    entered, release = threading.Event(), threading.Event()
    data = SimpleNamespace(x_test=torch.randn(5, 2), y_test=torch.tensor([0, 1, 0, 1, 1]))
    loads = []

    def slow_data():
        loads.append(1)
        entered.set()
        assert release.wait(10)
        return data

    run = SimpleNamespace(checkpoints=[], steps=[0], load=None, data=slow_data)
    src = ModelSource(run)
    got: dict[str, object] = {}
    first = threading.Thread(target=lambda: got.update(first=src.data()))
    first.start()
    assert entered.wait(10)  # the first caller is inside the run's load
    second = threading.Thread(target=lambda: got.update(second=src.data()))
    second.start()
    second.join(0.2)
    release.set()
    first.join(10)
    second.join(10)
    for who in ("first", "second"):
        x, y = got[who]
        assert x is data.x_test and y is data.y_test, who
    assert loads == [1]  # loaded once
