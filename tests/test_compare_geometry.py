"""GeometryRow: slice viewers of several runs side by side on one shared colour range, and the
SliceViewer's colour limits fixed from outside.

The shared range is re-computed here independently (the covering square of the test inputs,
each checkpoint's log10 volume field through ``views.log10_volume_field``, each run's range by
``views.run_color_limits``, the union by min/max), and every viewer's drawn colour scale (its
frame's limits, its heatmap's pixels, the row's colour bar) must equal it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import traitlets  # noqa: E402

from richviz import views  # noqa: E402
from richviz.errors import ArgumentError  # noqa: E402
from richviz.geometry import Slice  # noqa: E402
from richviz.runs import Run  # noqa: E402
from richviz.widgets import rendering  # noqa: E402
from richviz.widgets.compare_geometry import GeometryRow, input_space, union_limits  # noqa: E402
from richviz.widgets.slice_viewer import SliceViewer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"resolution": 16, "coarse_resolution": 16, "ellipse_density": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def xor_runs(tiny_run) -> list[Run]:
    """Two XOR runs of different seeds and lengths: checkpoints [0, 1, 2, 6] and [0, 1, 3, 12]."""
    paths = [
        tiny_run("xor", steps=steps, seed=seed, overrides={"checkpoints": 4})
        for seed, steps in ((0, 6), (1, 12))
    ]
    return [Run.open(p) for p in paths]


@pytest.fixture(scope="module")
def row(xor_runs):
    row = GeometryRow(xor_runs, colors=["#0072B2", "#E69F00"], names=["a", "b"], **FAST)
    assert row.wait(120)
    yield row
    row.close()


def independent_range(run: Run) -> tuple[float, float]:
    """A run's own colour range on the covering square of its test inputs (margin 0.1)."""
    x = run.data().x_test
    sl = Slice.covering(x, margin=0.1)
    fields = [
        views.log10_volume_field(run.load(s, device="cpu"), sl, views.RANGE_RESOLUTION)
        for s in run.steps
    ]
    return views.run_color_limits(fields)


def nearest(steps: list[int], step: int) -> int:
    return min(steps, key=lambda s: (abs(s - step), s))


def test_the_shared_range_is_the_union_of_the_runs_ranges(row, xor_runs) -> None:
    ranges = [independent_range(r) for r in xor_runs]
    lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
    assert row.color_limits == pytest.approx([lo, hi], abs=1e-9)
    for name, expected in zip(row.names, ranges, strict=True):
        assert row.ranges[name] == pytest.approx(expected, abs=1e-9)
    # the union is wider than at least one run's own range: the test is not vacuous
    assert any(b - a < hi - lo - 1e-6 for a, b in ranges)
    assert union_limits([(0.0, 1.0), (-2.0, 0.5), (0.2, 3.0)]) == (-2.0, 3.0)


def test_every_viewer_draws_the_shared_scale(row) -> None:
    lo, hi = row.color_limits
    assert row.ready
    for v in row.viewers:
        assert v.color_limits == [lo, hi]
        assert (v.frame.vmin, v.frame.vmax) == (lo, hi)
        assert v.frame.cmap == "viridis"
        # the heatmap's pixels are the field coloured on [lo, hi]
        expected = rendering.field_to_rgba(v.frame.values, lo, hi, "viridis")
        np.testing.assert_array_equal(v.frame.rgba, expected)
        assert v.colorbar.layout.display == "none"  # one colour bar for the row
    # the row's one colour bar states the range with its numbers
    assert (row._cb_sy.min, row._cb_sy.max) == (lo, hi)
    ticks = np.asarray(row.color_axis.tick_values)
    assert len(ticks) >= 2 and lo - 1e-9 <= ticks.min() and ticks.max() <= hi + 1e-9
    assert row.colorbar_box.layout.display == "flex"
    assert f"{lo:.2f}" in row.note.value and f"{hi:.2f}" in row.note.value


def test_the_viewers_share_one_slice(row) -> None:
    for v in row.viewers:
        assert v.slice.origin.equal(row.slice.origin) and v.slice.basis.equal(row.slice.basis)
        assert (v.slice.u_range, v.slice.v_range) == (row.slice.u_range, row.slice.v_range)


@pytest.mark.parametrize("step", [0, 2, 4, 7, 10, 100])
def test_the_shared_step_snaps_per_run(row, xor_runs, step: int) -> None:
    row.step = step
    assert row.wait(60)
    for v, run in zip(row.viewers, xor_runs, strict=True):
        assert v.step == nearest(run.steps, step)
        assert v.shown_step == v.step
        assert (v.frame.vmin, v.frame.vmax) == tuple(row.color_limits)  # every step, one range
        assert f"step {v.step}" in row.titles[row.viewers.index(v)].value


def test_runs_on_different_input_spaces_are_refused(tiny_run, xor_runs) -> None:
    circles = Run.open(tiny_run("circles", steps=2, overrides={"checkpoints": 2}))
    assert input_space(circles) != input_space(xor_runs[0])
    with pytest.raises(ArgumentError, match="different input spaces") as info:
        GeometryRow([xor_runs[0], circles], **FAST)
    assert "\n" not in str(info.value) and "circles" in str(info.value)


@pytest.mark.parametrize("count", [1, 5])
def test_two_to_four_runs(xor_runs, count: int) -> None:
    with pytest.raises(ArgumentError, match="2 to 4 runs"):
        GeometryRow([xor_runs[0]] * count, **FAST)


def test_bad_colors_and_names_are_one_line_errors(xor_runs) -> None:
    with pytest.raises(ArgumentError, match="colors: 1 colours for 2 runs"):
        GeometryRow(xor_runs, colors=["red"], **FAST)
    with pytest.raises(ArgumentError, match="color_limits: set by GeometryRow"):
        GeometryRow(xor_runs, color_limits=(0, 1), **FAST)


# ---------------------------------------------------------------- SliceViewer.color_limits


@pytest.fixture(scope="module")
def viewer(xor_runs):
    v = SliceViewer(xor_runs[0], color_limits=(-3.0, 1.0), **FAST)
    assert v.wait(60)
    yield v
    v.close()


def test_viewer_takes_fixed_color_limits(viewer) -> None:
    assert viewer.color_limits == [-3.0, 1.0]
    assert (viewer.frame.vmin, viewer.frame.vmax) == (-3.0, 1.0)
    assert (viewer._cb_sy.min, viewer._cb_sy.max) == (-3.0, 1.0)
    expected = rendering.field_to_rgba(viewer.frame.values, -3.0, 1.0, "viridis")
    np.testing.assert_array_equal(viewer.frame.rgba, expected)
    # the fixed range wins over a locked one and over the run range
    viewer.lock_colors = True
    viewer.color_limits = [-2.0, 0.0]
    assert viewer.wait(60)
    assert (viewer.frame.vmin, viewer.frame.vmax) == (-2.0, 0.0)
    viewer.lock_colors = False
    # the relative view has a range of its own (symmetric about 0), not the absolute one
    viewer.relative = True
    assert viewer.wait(60)
    assert viewer.frame.vmin == pytest.approx(-viewer.frame.vmax)
    viewer.relative = False
    # cleared: back to the run's own range
    viewer.color_limits = []
    assert viewer.wait(60)
    assert (viewer.frame.vmin, viewer.frame.vmax) == pytest.approx(
        independent_range(viewer.source.run), abs=1e-9
    )


@pytest.mark.parametrize(
    "bad", [[1.0, 1.0], [2.0, 1.0], [0.0, float("nan")], [0.0, float("inf")], [0.0], [0, 1, 2]]
)
def test_bad_color_limits_are_refused_and_the_viewer_stays(viewer, bad) -> None:
    viewer.color_limits = [-1.0, 0.5]
    with pytest.raises(traitlets.TraitError, match="color_limits"):
        viewer.color_limits = bad
    assert viewer.color_limits == [-1.0, 0.5]
    assert viewer.wait(60) and (viewer.frame.vmin, viewer.frame.vmax) == (-1.0, 0.5)


@pytest.mark.parametrize("bad", [(1.0, 0.0), (True, 2.0), ("a", "b"), 3.0, (0.0, float("nan"))])
def test_bad_color_limits_argument_is_one_line(xor_runs, bad) -> None:
    with pytest.raises(ArgumentError, match="color_limits") as info:
        SliceViewer(xor_runs[0], color_limits=bad, **FAST)
    assert "\n" not in str(info.value)


def test_export_draws_the_views_and_one_colour_bar(row, tmp_path) -> None:
    canvas = row.canvas()
    images = [op for kind, op in canvas.ops if kind == "image"]
    heatmaps = [v.frame.rgba for v in row.viewers]
    assert len(images) == len(heatmaps) + 1  # one heatmap per run + ONE colour bar
    for rgba, op in zip(heatmaps, images, strict=False):
        np.testing.assert_array_equal(op["rgba"], rgba)
    texts = [op["s"] for kind, op in canvas.ops if kind == "text"]
    lo, hi = row.color_limits
    ticks = rendering.nice_ticks(lo, hi, 5)
    first = rendering.format_ticks(ticks, rendering.tick_format(ticks))[0]
    assert texts.count("log10 volume") == 1 and first in texts
    assert any(t.startswith("a · step") for t in texts) and any(
        t.startswith("b · step") for t in texts
    )
    png = row.save_png(tmp_path / "row.png", scale=1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert row.save_svg(tmp_path / "row.svg").read_text().count("<image") == len(images)


def test_refreshes_from_two_threads_end_on_the_newest_settings(xor_runs) -> None:
    """A GeometryRow refreshes its viewers from its own thread (the shared colour range) while
    the kernel sets the shared step. A refresh that read the old step must not submit after
    the one that read the new step: the frame on screen ends at the newest settings."""
    import threading

    v = SliceViewer(xor_runs[0], step=xor_runs[0].steps[0], **FAST)
    try:
        assert v.wait(60) and v.shown_step == xor_runs[0].steps[0]
        cancel, entered, release = v._worker.cancel, threading.Event(), threading.Event()
        old_reader = threading.Thread(target=v.refresh)

        def held_cancel() -> int:  # the old reader is held after reading the settings
            if threading.current_thread() is old_reader:
                entered.set()
                assert release.wait(10)
            return cancel()

        v._worker.cancel = held_cancel
        old_reader.start()
        assert entered.wait(10)
        new_step = xor_runs[0].steps[-1]
        setter = threading.Thread(target=lambda: setattr(v, "step", new_step))
        setter.start()
        setter.join(0.3)  # on the old code it submits here, before the old reader
        release.set()
        old_reader.join(10)
        setter.join(10)
        assert v.wait(60)
        assert v.step == new_step and v.shown_step == new_step and v.frame.step == new_step
    finally:
        v.close()


def test_a_job_cancelled_before_it_starts_leaves_the_viewer_idle(xor_runs) -> None:
    """A refresh drawn from the cache cancels the job queued before it; if that job then
    starts, it must not mark the viewer busy or write "computing…" over the newer frame."""
    from richviz.widgets.tasks import Job

    v = SliceViewer(xor_runs[0], **FAST)
    try:
        assert v.wait(60) and not v.busy
        queued: list[tuple] = []
        submit = v._worker.submit
        v._worker.submit = lambda fn, *args: queued.append((fn, args))  # held, not run
        v.step = xor_runs[0].steps[1]  # not cached yet: a job is queued
        v._worker.submit = submit
        ((fn, args),) = queued
        job = Job(v._worker, v._worker.generation)
        status = v.status.value
        v._worker.cancel()  # what a refresh drawn from the cache does first
        fn(job, *args)  # the cancelled job starts after all
        assert not v.busy and v.status.value == status
    finally:
        v.close()
