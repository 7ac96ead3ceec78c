"""Animation export: GIF and MP4 of a tiny run read back (frame count, size, the heatmap
changing, the colour bar fixed), the headline numbers against Run.metrics, the grid cache, the
frame plan, the missing MP4 extra, the widgets' methods and ``richviz animate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

from richviz import cli, views  # noqa: E402
from richviz.animation import FIELDS, make_plan  # noqa: E402
from richviz.animation.headline import HEADLINE  # noqa: E402
from richviz.animation.plan import frame_indices  # noqa: E402
from richviz.errors import ArgumentError  # noqa: E402
from richviz.geometry import Slice  # noqa: E402
from richviz.runs import Run  # noqa: E402
from richviz.widgets.animation_page import HEADER  # noqa: E402
from richviz.widgets.slice_animation import save_animation  # noqa: E402
from richviz.widgets.slice_records import FIGURE_MARGIN  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

REPO = Path(__file__).resolve().parents[1]
RES = 16
# the slice view's plot area on the page (CSS px = pixels at scale 1): 400 px square
PLOT_X, PLOT_Y, PLOT = FIGURE_MARGIN["left"], int(HEADER) + FIGURE_MARGIN["top"], 400
HEAT = (slice(PLOT_Y + 40, PLOT_Y + PLOT - 40), slice(PLOT_X + 40, PLOT_X + PLOT - 40))
BAR = (slice(PLOT_Y + 2, PLOT_Y + PLOT - 2), slice(PLOT_X + PLOT + 14, PLOT_X + PLOT + 80))
TOP = (slice(0, int(HEADER)), slice(None))


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """Circles, 20 steps, 4 checkpoints (0, 1, 4, 20): this module's copy (metrics.json lands
    in it)."""
    return tiny_run("circles", steps=20, seed=0, overrides={"checkpoints": 4},
                    copy_to=tmp_path_factory.mktemp("animation") / "circles")  # fmt: skip


@pytest.fixture(scope="module")
def run(run_dir) -> Run:
    return Run.open(run_dir)


@pytest.fixture(scope="module")
def gif(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gif") / "demo.gif"
    return save_animation(run, out, resolution=RES, fps=5, progress=False)


def _gif_frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
    from PIL import Image

    frames, durations = [], []
    with Image.open(path) as im:
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
            durations.append(im.info["duration"])
    return frames, durations


def _mp4_frames(path: Path) -> tuple[list[np.ndarray], tuple[int, int]]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3).astype(int) for b in reader]
    return frames, (w, h)


def test_gif_one_frame_per_checkpoint_of_the_page_size(gif, run):
    frames, durations = _gif_frames(gif.path)
    assert len(frames) == len(run.steps) == 4 and gif.steps == tuple(run.steps)
    h, w = frames[0].shape[:2]
    assert (w, h) == gif.size and w % 2 == 0 and h % 2 == 0
    assert durations == [200] * 4  # 5 fps
    assert sorted(os.listdir(gif.path.parent)) == ["demo.gif"]  # atomic: no temp file left


def test_gif_heatmap_changes_colour_bar_fixed(gif):
    frames, _ = _gif_frames(gif.path)
    first, last = frames[0], frames[-1]
    # training reshapes the field: the heatmap's pixels differ between step 0 and step 20
    assert np.abs(first[HEAT] - last[HEAT]).mean() > 5
    # one colour range for the run: the colour bar with its tick labels is the same everywhere
    for f in frames[1:]:
        assert np.array_equal(f[BAR], first[BAR])
    # ... and it is a colour bar: a gradient from top to bottom (not a blank area)
    column = first[BAR][:, 4]
    assert np.abs(column[0] - column[-1]).sum() > 100


def test_color_range_is_the_run_range_of_every_frames_field(gif, run):
    """Independent: each step's field from views.slice_frame on the same square, one range."""
    slice_ = Slice.covering(run.data().x_test, margin=0.1)
    fields = [views.slice_frame(run.load(s, "cpu"), slice_, RES).log10_volume for s in run.steps]
    assert gif.color_limits == pytest.approx(views.run_color_limits(fields), rel=1e-6, abs=1e-9)


def test_captions_carry_each_checkpoints_metrics(gif, run):
    rows = {r["step"]: r for r in Run.open(run.path).metrics(progress=False)}  # the cache
    assert len(gif.captions) == len(run.steps)
    for step, text, numbers in zip(gif.steps, gif.captions, gif.numbers, strict=True):
        row = rows[step]
        assert text.startswith(f"step {step} · ")
        for key, label in HEADLINE:
            assert numbers[key] == pytest.approx(row[key], nan_ok=True)
            assert f"{label} {row[key]:.3f}" in text
    frames, _ = _gif_frames(gif.path)
    for a, b, ta, tb in zip(frames, frames[1:], gif.captions, gif.captions[1:], strict=False):
        assert ta != tb and not np.array_equal(a[TOP], b[TOP])  # the text drawn differs


def test_mp4_read_back(run, tmp_path):
    out = tmp_path / "demo.mp4"
    anim = save_animation(run, out, resolution=RES, fps=4, progress=False)
    frames, size = _mp4_frames(out)
    assert len(frames) == len(run.steps) and size == anim.size
    first, last = frames[0], frames[-1]
    assert np.abs(first[HEAT] - last[HEAT]).mean() > 5
    # lossy video: the colour bar agrees up to compression noise, far below the heatmap's change
    assert np.abs(first[BAR] - last[BAR]).mean() < 2
    assert sorted(os.listdir(tmp_path)) == ["demo.mp4"]


def test_second_export_takes_every_grid_from_the_cache(run, tmp_path):
    res = 13  # a resolution no other test uses: the first export computes
    first = save_animation(run, tmp_path / "a.gif", resolution=res, progress=False)
    hits = FIELDS.hits
    second = save_animation(run, tmp_path / "b.gif", resolution=res, progress=False,
                            show="entropy")  # fmt: skip
    assert first.computed == len(run.steps) and second.computed == 0
    assert FIELDS.hits - hits == len(run.steps)
    assert second.color_limits == (0.0, 1.0)  # the entropy's own fixed range


def test_given_color_limits_fix_the_bar(run, gif, tmp_path):
    anim = save_animation(run, tmp_path / "fixed.gif", resolution=RES, progress=False,
                          color_limits=(-3.0, 1.0))  # fmt: skip
    assert anim.color_limits == (-3.0, 1.0) and anim.computed == 0  # grids from the cache
    ours, theirs = _gif_frames(anim.path)[0][0], _gif_frames(gif.path)[0][0]
    assert not np.array_equal(ours[BAR], theirs[BAR])  # other tick labels on the colour bar
    with pytest.raises(ArgumentError, match="color_limits"):
        save_animation(run, tmp_path / "bad.gif", resolution=RES, color_limits=(1, 0))


def test_duration_holds_or_spreads_the_checkpoints(run, tmp_path):
    anim = save_animation(run, tmp_path / "held.gif", resolution=RES, fps=4, duration=2,
                          progress=False)  # fmt: skip
    assert anim.steps == (0, 0, 1, 1, 4, 4, 20, 20)
    frames, durations = _gif_frames(anim.path)  # Pillow merges repeated frames into longer ones
    assert len(frames) == 4 and sum(durations) == 2000
    few = save_animation(run, tmp_path / "few.gif", resolution=RES, fps=4, duration=0.5,
                         progress=False)  # fmt: skip
    assert few.steps == (0, 20)
    assert frame_indices(4, 3) == (0, 2, 3) and frame_indices(4, 1) == (3,)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(path="x.png"), "must end in .gif or .mp4"),
        (dict(fps=0), "fps=0"),
        (dict(fps=61), "fps=61"),
        (dict(duration=-1), "duration=-1"),
        (dict(show="curvature"), "show must be one of"),
        (dict(layer="bogus"), "layer must be one of"),
    ],
)
def test_bad_arguments_fail_before_any_work(run, tmp_path, kwargs, needle):
    path = tmp_path / kwargs.pop("path", "x.gif")
    misses = FIELDS.misses
    with pytest.raises(ArgumentError, match=needle.replace(".", r"\.")):
        save_animation(run, path, resolution=RES, progress=False, **kwargs)
    assert FIELDS.misses == misses and os.listdir(tmp_path) == []


def test_out_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ArgumentError, match="afile is a file"):
        make_plan(tmp_path / "afile" / "sub" / "x.gif", 3)


def test_slice_viewer_lends_its_grids(run, tmp_path):
    from richviz.widgets import SliceViewer

    viewer = SliceViewer(run, resolution=RES, coarse_resolution=RES, device="cpu")
    try:
        for s in run.steps:
            viewer.step = s
            assert viewer.wait(120)
        computed = viewer.compute_count
        viewer.show = "classes"
        assert viewer.wait(120)
        anim = viewer.save_animation(tmp_path / "viewer.gif", fps=2)
        assert anim.computed == 0 and viewer.compute_count == computed  # its own cache
        assert anim.color_limits == (0.0, 1.0) and anim.frames == len(run.steps)
        assert "viewer.gif" in viewer.status.value
        # another resolution: the viewer's grids do not fit, every one is computed (same shape)
        other = viewer.save_animation(tmp_path / "other.gif", resolution=RES + 1)
        assert other.computed == len(run.steps) and viewer.compute_count == computed
    finally:
        viewer.close()


def test_explorer_draws_the_curves(run, tmp_path):
    from richviz.widgets import Explorer

    ex = Explorer(run, viewer={"resolution": RES, "coarse_resolution": RES}, device="cpu")
    try:
        assert ex.wait(120)
        anim = ex.save_animation(tmp_path / "explorer.gif")
        plain = save_animation(run, tmp_path / "plain.gif", resolution=RES, progress=False)
        assert anim.size[0] > plain.size[0] + 300 and anim.size[1] == plain.size[1]
        frames, _ = _gif_frames(anim.path)
        right = (slice(40, None), slice(plain.size[0] + 40, None))
        assert not np.array_equal(frames[0][right], frames[-1][right])  # the cursor moved
        assert "explorer.gif" in ex.status.value
    finally:
        ex.close()


def test_cli_animate(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.gif"
    assert cli.main(["animate", str(run_dir), "--out", str(out), "--resolution", str(RES),
                     "--fps", "2", "--show", "regions", "-q"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith("wrote 4 frames (") and str(out) in text
    assert len(_gif_frames(out)[0]) == 4


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{missing}", "--out", "{dir}/x.gif"], "no such run folder"),
        (["{run}", "--out", "{dir}/x.png"], "must end in .gif or .mp4"),
        (["{run}", "--out", "{dir}/x.gif", "--fps", "0"], "fps=0"),
        (["{run}", "--out", "{dir}/x.gif", "--fps", "61"], "fps=61"),
        (["{run}", "--out", "{dir}/afile/x.gif"], "afile is a file"),
        (["{run}", "--out", "{dir}/x.gif", "--resolution", "1"], "--resolution=1"),
        (["{run}", "--out", "{dir}/x.gif", "--layer", "bogus"], "--layer must be one of"),
    ],
)
def test_cli_animate_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys, args, needle):
    (tmp_path / "afile").write_text("x")
    fill = dict(run=run_dir, dir=tmp_path, missing=tmp_path / "missing")
    assert cli.main(["animate", *(a.format(**fill) for a in args), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("richviz animate: error: ") and needle in err
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # nothing written


def test_mp4_without_the_extra_is_one_line_exit_2(run_dir, tmp_path):
    """imageio-ffmpeg hidden (tests/hide_packages.py): the CLI names the extra, writes nothing."""
    out = tmp_path / "x.mp4"
    argv = ["animate", str(run_dir), "--out", str(out), "-q"]
    code = f"import sys, hide_packages; from richviz.cli import main; sys.exit(main({argv!r}))"
    env = {**os.environ, "RICHVIZ_HIDE_PACKAGES": "imageio_ffmpeg",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'animation'" in lines[0] and "imageio-ffmpeg" in lines[0]
    assert os.listdir(tmp_path) == []


def test_the_captions_metrics_are_computed_under_the_compute_lock(run, tmp_path, monkeypatch):
    """Missing metric rows take jvp passes, and PyTorch's forward-mode levels are process-wide:
    the animation's metrics must wait for a metrics panel computing in another thread."""
    import threading

    from richviz.compute_lock import COMPUTE

    held: list[bool] = []
    metrics = run.metrics

    def recording(*args, **kwargs):
        held.append(COMPUTE._owner == threading.get_ident())
        return metrics(*args, **kwargs)

    monkeypatch.setattr(run, "metrics", recording)
    save_animation(run, tmp_path / "m.gif", resolution=RES, progress=False)
    assert held == [True]
