"""The Playground widget: controls, Start/Pause/Step/Reset, clicks, JSON replay, multi-class."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import traitlets  # noqa: E402

from richviz.checkpoints import Run  # noqa: E402
from richviz.live import PlaygroundConfig  # noqa: E402
from richviz.widgets import Playground, rendering  # noqa: E402
from richviz.widgets.charts import LineChart  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(data="moons", n=120, width=8, depth=2, batch_size=16, device="cpu")


def poll(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def click(pg: Playground, x1: float, x2: float) -> None:
    """What the browser sends (through ipyevents) when the figure is clicked at (x1, x2): the
    pixel relative to the 440 x 440 figure, inside its plot area (the margins of
    playground_figure.FIGURE_MARGIN), for the scales' current limits."""
    from richviz.widgets.playground_figure import FIGURE_MARGIN, FIGURE_SIZE

    m, f = FIGURE_MARGIN, pg.slice_figure
    fx = (x1 - f.sx.min) / (f.sx.max - f.sx.min)
    fy = (f.sy.max - x2) / (f.sy.max - f.sy.min)
    px = m["left"] + fx * (FIGURE_SIZE - m["left"] - m["right"])
    py = m["top"] + fy * (FIGURE_SIZE - m["top"] - m["bottom"])
    event = {"type": "click", "event": "click", "relativeX": round(px), "relativeY": round(py),
             "clientX": 100.0 + px, "clientY": 50.0 + py, "boundingRectLeft": 100.0,
             "boundingRectTop": 50.0, "boundingRectWidth": float(FIGURE_SIZE),
             "boundingRectHeight": float(FIGURE_SIZE)}  # fmt: skip
    f.clicks._handle_mouse_msg(f.clicks, event, [])


def png_colours(png: bytes) -> set[tuple[int, ...]]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(rgb, axis=0)}


@pytest.fixture
def pg(tmp_path):
    w = Playground(root=tmp_path / "runs", fps=30, **SMALL)
    yield w
    w.close()


def test_controls_are_typed_and_linked(pg):
    assert pg.control_widgets["width"].value == 8
    pg.control_widgets["width"].value = 12
    assert pg.width == 12 and pg.trainer.config.width == 12  # a new network
    pg.lr = 0.05
    assert pg.control_widgets["lr"].value == 0.05
    for name, bad in (("data", "nope"), ("classes", 7), ("width", 0), ("optimizer", "lbfgs")):
        with pytest.raises(traitlets.TraitError):
            setattr(pg, name, bad)
    assert pg.wait(60) and pg.drawn_step == 0


def test_the_last_frame_of_a_pause_says_paused_while_the_trainer_finishes_its_step(pg):
    """The trainer publishes its last state, then marks itself idle. A frame drawn in between
    must take "running" from the state it draws, not from the trainer's live flags (which still
    say busy): else the Playground stays "running" after the pause with no frame to correct it.
    """

    def hold_until_drawn(state):  # runs on the trainer thread, after the Playground's listener
        if not state.running:
            assert poll(lambda: pg.drawn_step == state.step, 30)

    pg.trainer.add_listener(hold_until_drawn)
    pg.steps_per_click = 3
    pg.step_button.click()
    assert pg.wait(60) and pg.trainer.step_count == 3 and pg.drawn_step == 3
    assert not pg.trainer.running and not pg.running
    assert "paused" in pg.status.value


def test_buttons_start_pause_step_reset(pg):
    w0 = pg.trainer.state.weights
    pg.steps_per_click = 7
    pg.step_button.click()  # returns at once; the trainer runs 7 steps in the background
    assert pg.wait(60) and pg.trainer.step_count == 7 and pg.drawn_step == 7
    pg.step_button.click()
    assert pg.wait(60) and pg.trainer.step_count == 14
    pg.start_button.click()
    assert poll(lambda: pg.trainer.step_count > 40)
    pg.pause_button.click()
    assert pg.wait(60)
    stopped = pg.trainer.step_count
    assert not pg.trainer.running and pg.drawn_step == stopped and not pg.running
    assert pg.trainer.wait(1) and pg.trainer.step_count == stopped
    pg.reset_button.click()
    assert pg.wait(60) and pg.trainer.step_count == 0 and pg.drawn_step == 0
    assert same_weights(pg.trainer.state.weights, w0)
    assert [r["step"] for r in pg.rows] == [0.0]  # the strip starts over


def test_start_returns_at_once_while_training_proceeds(pg):
    gate = threading.Event()
    pg.trainer.publish_hz = None
    pg.trainer.add_listener(lambda state: gate.wait(60))  # blocks the trainer after a step
    pg.start_button.click()
    assert pg.trainer.step_count <= 1 and pg.trainer.running
    gate.set()
    assert poll(lambda: pg.trainer.step_count >= 100)
    pg.pause()
    assert pg.wait(60) and pg.drawn_step == pg.trainer.step_count


def test_metrics_strip_grows_while_training(pg):
    pg.step(40)
    assert pg.wait(60)
    pg.start()
    assert poll(lambda: pg.trainer.step_count > 200)
    pg.pause()
    assert pg.wait(60)
    steps = [r["step"] for r in pg.rows]
    assert steps[0] == 0 and steps == sorted(set(steps)) and len(steps) >= 3
    assert steps[-1] == pg.trainer.step_count
    last = pg.rows[-1]
    defined = ("loss", "acc", "d_lr", "confinement", "isotropy", "nc1", "nc2_equinorm", "nc3")
    assert all(np.isfinite(last[k]) for k in (*defined, "nc4", "boundary_magnification"))
    loss, acc = pg.trainer.evaluate()  # the probe is the training set (n <= 500)
    assert last["loss"] == pytest.approx(loss, rel=1e-5) and last["acc"] == pytest.approx(acc)
    # the strip is drawn by the project's chart helper: one line per defined metric, each as
    # long as the rows, legend under the plot; NC2 equiangularity is hidden for 2 classes
    for chart in pg.strip_charts.values():
        assert isinstance(chart, LineChart) and chart.figure.axes[0].label == "step"
        for mark in chart.marks:
            assert len(mark.x) == len(steps) and len(mark.y) == len(steps), mark.labels
    labels = {s.label for c in pg.strip_charts.values() for s in c.drawn}
    assert {"accuracy", "loss", "D_LR", "confinement", "isotropy", "NC1", "NC3"} <= labels
    assert "NC2 equiangular" not in labels
    assert "undefined for 2 classes" in pg.strip_charts["neural collapse"].legend.value
    # a live redraw moves the data of the same marks (no new widgets per frame)
    marks = [m.model_id for c in pg.strip_charts.values() for m in c.marks]
    pg.step(5)
    assert pg.wait(60) and pg.rows[-1]["step"] == steps[-1] + 5
    assert [m.model_id for c in pg.strip_charts.values() for m in c.marks] == marks


def test_clicks_add_points_of_the_chosen_class_while_training(pg):
    pg.step(10)
    assert pg.wait(60)
    n0 = len(pg.trainer.data.x_train)
    pg.click_class = 1
    click(pg, 0.25, -0.5)
    assert pg.data == "points" and pg.trainer.step_count == 10  # no reset
    x, y = pg.trainer.data.x_train, pg.trainer.data.y_train
    assert len(x) == n0 + 1 and x[-1].tolist() == [0.25, -0.5] and int(y[-1]) == 1
    assert len(pg.points_mark.x) == n0 + 1 and pg.points_mark.colors[-1] == rendering.class_color(1)
    assert f"points: {n0 + 1}" in pg.points_label.value
    pg.step(5)
    assert pg.wait(60)
    run = Run.open(pg.trainer.run_path)
    assert run.data().x_train[-1].tolist() == [0.25, -0.5]
    assert pg.config.y[-1] == 1 and len(pg.config.x) == n0 + 1
    # a class the network does not have: a one-line error, the widget stays usable
    pg.click_class = 4
    click(pg, 0.0, 0.0)
    assert "class 4" in pg.status.value and len(pg.trainer.data.x_train) == n0 + 1
    pg.step(1)
    assert pg.wait(60) and pg.trainer.step_count == 16


def test_clicking_on_an_empty_canvas(tmp_path):
    pg = Playground(data="points", classes=3, root=tmp_path, device="cpu")
    try:
        pg.start_button.click()
        assert "no points yet" in pg.status.value
        for k, (a, b) in enumerate([(-1, 0), (1, 0), (0, 1)]):
            pg.click_class = k
            click(pg, a, b)
        assert pg.trainer.data.y_train.tolist() == [0, 1, 2]
        assert pg.step(50) == 50 and pg.wait(60)
        assert pg.trainer.evaluate()[1] == 1.0
    finally:
        pg.close()


def test_json_round_trip_replays_the_same_initial_weights(pg, tmp_path):
    pg.seed = 3
    pg.alpha = 2.0
    pg.step(5)
    click(pg, 0.1, 0.2)
    path = tmp_path / "demo.json"
    text = pg.to_json(path)
    assert path.read_text() == text
    again = Playground.from_json(path, root=tmp_path / "again")
    try:
        assert again.config == pg.config and again.alpha == 2.0 and again.data == "points"
        assert same_weights(again.trainer.state.weights, pg.trainer._initial)
        again.step(5)
        assert again.wait(60) and again.drawn_step == 5
    finally:
        again.close()
    with pytest.raises(Exception, match="unknown keys"):
        Playground.from_json('{"data": "moons", "speed": 1}')


def test_four_blobs_trained_live_show_four_class_regions(tmp_path):
    pg = Playground(
        data="blobs", classes=4, n=400, width=16, depth=2, device="cpu", root=tmp_path, fps=30
    )
    try:
        pg.start()
        assert poll(lambda: pg.trainer.step_count >= 300)
        pg.pause()
        assert pg.wait(60)
        assert pg.trainer.evaluate("test")[1] >= 0.95
        pg.view = "classes"
        assert pg.wait(60) and pg.frame.mode == "classes"
        predicted = pg.frame.view.predicted
        assert sorted(np.unique(predicted).tolist()) == [0, 1, 2, 3]
        # each class region is a sizeable part of the picture, and the shown image has exactly
        # the four tinted palette colours
        assert min(np.bincount(predicted.ravel())) > 0.05 * predicted.size
        tinted = {
            tuple(int(v) for v in c)
            for c in rendering.class_regions_rgba(np.arange(4)[None, :])[0, :, :3]
        }
        assert png_colours(pg.frame.png) == tinted and len(tinted) == 4
        xs, _ = pg.boundary_mark.x, pg.boundary_mark.y
        assert np.isfinite(np.asarray(xs, float)).sum() > 0  # boundary lines drawn
    finally:
        pg.close()


def borders_covered(predicted, u, v, xs, ys) -> bool:
    """Every place where two classes meet on the grid lies within 1.5 cells of a drawn line."""
    du = u[1] - u[0]
    pts = np.stack([xs[np.isfinite(xs)], ys[np.isfinite(ys)]], 1)
    mids = []
    i, j = np.nonzero(predicted[:, 1:] != predicted[:, :-1])  # horizontal neighbours
    mids.append(np.stack([(u[j] + u[j + 1]) / 2, v[i]], 1))
    i, j = np.nonzero(predicted[1:, :] != predicted[:-1, :])  # vertical neighbours
    mids.append(np.stack([u[j], (v[i] + v[i + 1]) / 2], 1))
    mids = np.concatenate(mids)
    dist = np.sqrt(((mids[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).min(1)
    return len(mids) > 0 and bool(np.all(dist <= 1.5 * du))


def test_multi_class_boundaries_in_the_playground_and_the_slice_viewer(tmp_path):
    from richviz.widgets import SliceViewer

    pg = Playground(data="blobs", classes=4, device="cpu", root=tmp_path, fps=30)
    try:
        pg.step(200)
        assert pg.wait(60)
        view = pg.frame.view
        assert len(np.unique(view.predicted)) == 4
        xs, ys = pg.frame.boundary
        assert borders_covered(view.predicted, view.u, view.v, xs, ys)
        # a binary-only boundary (the border of class 0 alone) would miss borders
        x0, y0 = rendering.decision_boundary_lines(
            view.margin, (view.predicted == 0).astype(int), view.u, view.v
        )
        assert not borders_covered(view.predicted, view.u, view.v, x0, y0)
        run = Run.open(pg.trainer.run_path)
    finally:
        pg.close()
    sv = SliceViewer(run, resolution=48, coarse_resolution=16, ellipse_density=0)
    try:
        assert sv.wait(120) and sv.shown_resolution == 48
        from richviz.geometry import Slice, decision_field

        dec = decision_field(run.load(run.steps[-1]), sv.slice, resolution=48)
        pred = dec.predicted.numpy()
        assert len(np.unique(pred)) == 4
        xs, ys = sv.frame.boundary
        assert borders_covered(pred, dec.u.numpy(), dec.v.numpy(), xs, ys)
        assert isinstance(sv.slice, Slice)
    finally:
        sv.close()


def test_errors_are_escaped_and_the_widget_stays_usable(pg, tmp_path):
    evil = tmp_path / "<img src=x onerror=alert(1)>.csv"
    pg._guard(lambda: pg.load_csv(evil))
    assert "&lt;img src=x" in pg.status.value and "<img" not in pg.status.value
    good = tmp_path / "ok.csv"
    good.write_text("0,0,0\n1,1,1\n0,1,1\n1,0,0\n")
    pg.load_csv(good)
    assert pg.data == "points" and pg.trainer.data.y_train.tolist() == [0, 1, 1, 0]
    assert pg.step(3) == 3


def test_a_playground_run_opens_in_the_explorer_and_the_cli(pg, capsys):
    from richviz import cli
    from richviz.widgets import Explorer

    pg.step(20)
    assert pg.wait(60)
    assert cli.main(["info", str(pg.trainer.run_path)]) == 0
    out = capsys.readouterr().out
    assert "playground" in out and "step_00000020.pt" in out
    assert cli.main(["metrics", str(pg.trainer.run_path)]) == 0
    assert "d_lr" in capsys.readouterr().out
    run = Run.open(pg.trainer.run_path)
    ex = Explorer(run, viewer={"resolution": 16, "coarse_resolution": 8})
    try:
        assert ex.wait(120)
        assert ex.viewer.shown_step == 20
        assert ex.panel.rows and ex.panel.rows[-1]["step"] == 20
    finally:
        ex.close()


def test_config_property_matches_traits(pg):
    pg.alpha = 0.0
    assert pg.config == PlaygroundConfig(**{**SMALL, "alpha": None})
    pg.alpha = 5.0
    assert pg.config.alpha == 5.0


def test_a_config_that_cannot_train(pg, tmp_path):
    from richviz.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Playground(device="cuda", root=tmp_path)
    before = pg.trainer
    pg.device = "cuda"  # a later change keeps the previous network and says why
    assert pg.trainer is before and "CUDA is not available" in pg.status.value
    assert pg.step(2) == 2


def test_constructor_takes_your_own_points_or_a_csv(tmp_path):
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.2, 0.9]])
    y = np.array([0, 1, 1, 0, 0, 2])
    w = Playground(points=(x, y), root=tmp_path / "a", fps=30, **SMALL)
    try:
        assert w.data == "points" and w.trainer.config.num_classes == 3  # the labels' classes
        assert torch.equal(w.trainer.data.x_train, torch.as_tensor(x, dtype=torch.float32))
        assert w.trainer.data.y_train.tolist() == y.tolist() and w.step(2) == 2
    finally:
        w.close()
    path = tmp_path / "mine.csv"
    path.write_text("x1,x2,label\n0.5,-0.5,1\n-0.5,0.5,0\n0.25,0.25,1\n-0.25,-0.75,0\n")
    w = Playground(csv=path, root=tmp_path / "b", fps=30, **SMALL)
    try:
        assert w.data == "points" and w.trainer.config.num_classes == 2
        assert w.trainer.data.x_train.tolist() == [[0.5, -0.5], [-0.5, 0.5], [0.25, 0.25],
                                                   [-0.25, -0.75]]  # fmt: skip
        assert w.trainer.data.y_train.tolist() == [1, 0, 1, 0] and w.step(2) == 2
    finally:
        w.close()


def test_strip_has_a_row_at_every_checkpoint_even_when_frames_were_skipped(pg):
    from richviz.live import compute_view

    pg.step(200)  # much faster than a frame: the frame loop draws only the newest state
    assert pg.wait(60) and pg.drawn_step == 200
    run = Run.open(pg.trainer.run_path)
    steps = [r["step"] for r in pg.rows]
    assert steps == sorted(set(steps)) and steps[-1] == 200
    assert set(run.steps) <= set(steps) and len(steps) >= 10  # log-spaced: a curve, not 2 points
    # a backfilled row is the checkpoint's own view, as a frame of that step would show it
    mid = run.steps[len(run.steps) // 2]
    model = run.load(mid)
    x, y = pg.trainer.data.x_train, pg.trainer.data.y_train
    expected = compute_view(model, pg._slice, pg.resolution, (x[-500:], y[-500:])).metrics
    row = next(r for r in pg.rows if r["step"] == mid)
    for key in ("loss", "acc", "d_lr", "boundary_magnification"):
        assert row[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
    # the strip's lines carry every row
    assert all(len(m.x) == len(steps) for c in pg.strip_charts.values() for m in c.marks)


# ---------------------------------------------------------------- settings that go wrong

FLOAT_TRAITS = ("noise", "alpha", "lr", "fps")


@pytest.mark.parametrize("name", FLOAT_TRAITS)
def test_float_traits_refuse_nan_and_inf_and_the_widget_stays_usable(pg, name):
    before = getattr(pg, name)
    trainer = pg.trainer
    for bad in (float("nan"), float("inf"), float("-inf"), np.float64("nan")):
        with pytest.raises(traitlets.TraitError) as info:
            setattr(pg, name, bad)
        message = str(info.value)
        assert message.startswith(f"{name}=") and "finite" in message and "\n" not in message
        assert getattr(pg, name) == before  # unchanged
        assert pg.control_widgets[name].value == before  # the linked control too
    assert pg.trainer is trainer  # no new network was built
    assert pg.frames.fps == pg.fps and np.isfinite(pg.frames.fps)
    assert json.loads(pg.to_json())["lr"] == pg.lr
    assert pg.step(2) == 2 and pg.wait(60) and pg.drawn_step == 2


@pytest.mark.parametrize(
    "name, bad",
    [
        ("n", 7),
        ("n", 20001),
        ("noise", 2.5),
        ("noise", -0.1),
        ("classes", 1),
        ("classes", 7),
        ("width", 0),
        ("depth", 9),
        ("alpha", -1.0),
        ("alpha", 1e6),  # the config's alpha lies in (0, 1e6); 0 is the plain network
        ("lr", 0.0),
        ("lr", 100.5),
        ("batch_size", 0),
        ("seed", -1),
        ("seed", 2**31),
        ("resolution", 15),
        ("resolution", 257),
        ("ellipse_density", 33),
        ("fps", 0.4),
        ("fps", 61.0),
        ("steps_per_click", 0),
        ("click_class", 6),
        ("width", True),  # a bool is not an int
        ("depth", False),
        ("lr", True),
        ("fps", True),
        ("data", "nope"),
        ("view", "volumes"),
        ("device", "tpu"),
    ],
)
def test_settings_out_of_bounds_or_of_the_wrong_type_are_refused(pg, name, bad):
    before = getattr(pg, name)
    with pytest.raises(traitlets.TraitError) as info:
        setattr(pg, name, bad)
    assert name in str(info.value) and getattr(pg, name) == before


def test_the_traits_bounds_and_help_come_from_the_configs_table(pg):
    from richviz.live import CONFIG_FIELDS, FIELDS
    from richviz.widgets.playground_controls import control_bounds

    assert set(FIELDS) <= set(pg.trait_names())
    for name, field in FIELDS.items():
        assert pg.traits()[name].help == field.help, name
        control = pg.control_widgets.get(name)
        if control is None:
            continue
        if field.choices is not None:
            values = [o[1] if isinstance(o, tuple) else o for o in control.options]
            assert values == list(field.choices), name
        else:
            low, high = control_bounds(name)
            assert (control.min, control.max) == (low, high), name
            assert field.low <= low <= high <= field.high
    for name in ("drawn_step", "running"):
        assert pg.traits()[name].help
    # the widget takes every value the config takes, up to its bounds: lr = 50 and 100,
    # alpha close to 1e6 (the trait used to stop at 10 and 1e5)
    pg.lr, pg.alpha = 50.0, 9.9e5
    assert pg.trainer.config.lr == 50.0 and pg.trainer.config.alpha == 9.9e5
    pg.lr = CONFIG_FIELDS["lr"].high
    assert pg.trainer.config.lr == 100.0
    pg.alpha = 0.0
    assert pg.trainer.config.alpha is None


def test_hostile_json_for_the_playground_is_a_one_line_config_error(tmp_path):
    from richviz.errors import ConfigError

    pg = Playground.from_json('{"lr": 50, "width": 4, "device": "cpu"}', root=tmp_path / "a")
    try:  # within the config's bounds: the widget takes it (it used to raise a TraitError)
        assert pg.lr == 50.0 and pg.trainer.config.lr == 50.0
    finally:
        pg.close()
    for text, needle in (
        ('{"lr": 500}', "lr=500"),
        ('{"lr": NaN}', "lr=nan"),
        ('{"width": true}', "width=True must be an integer"),
        ('{"data": "points", "x": [[0, 0]], "y": [1e19]}', "labels must lie in [0, 5]"),
        ('{"seed": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ):
        with pytest.raises(ConfigError) as info:
            Playground.from_json(text, root=tmp_path / "b")
        assert needle in str(info.value) and "\n" not in str(info.value), text


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"fps": float("nan")}, "fps=nan"),
        ({"fps": 0}, "fps=0"),
        ({"resolution": 8}, "resolution=8"),
        ({"view": "nope"}, "view"),
        ({"lr": float("inf")}, "lr=inf"),
        ({"width": True}, "width=True"),
    ],
)
def test_bad_constructor_settings_are_config_errors(tmp_path, kwargs, needle):
    from richviz.errors import ConfigError

    before = set(threading.enumerate())
    with pytest.raises(ConfigError) as info:
        Playground(root=tmp_path, **{**SMALL, **kwargs})
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert poll(lambda: set(threading.enumerate()) <= before)  # no thread left behind


def test_alpha_zero_is_the_plain_network(tmp_path):
    pg = Playground(root=tmp_path, alpha=0, **SMALL)
    try:
        assert pg.alpha == 0.0 and pg.config.alpha is None and pg.trainer.config.alpha is None
    finally:
        pg.close()


def test_a_refused_fps_leaves_a_process_that_exits_cleanly():
    """``pg.fps = nan`` used to be accepted and the process aborted at exit (SIGABRT)."""
    import subprocess
    import sys

    code = (
        "import math, traitlets\n"
        "from richviz.widgets import Playground\n"
        "pg = Playground(data='xor', width=4, depth=1, device='cpu')\n"
        "for v in (math.nan, math.inf):\n"
        "    try:\n"
        "        pg.fps = v\n"
        "    except traitlets.TraitError:\n"
        "        pass\n"
        "assert pg.fps == 10.0 and pg.step(2) == 2\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_to_json_writes_atomically_into_new_folders(pg, tmp_path):
    path = tmp_path / "new" / "folder" / "demo.json"
    text = pg.to_json(path)
    assert path.read_text() == text and PlaygroundConfig.from_json(path) == pg.config
    assert [p.name for p in path.parent.iterdir()] == ["demo.json"]  # no temp file left


def test_a_process_left_training_exits_cleanly(tmp_path):
    """A Playground still training and drawing at interpreter exit is stopped by an atexit
    hook (a daemon thread inside torch at teardown can abort the process) and its run ends
    complete."""
    import subprocess
    import sys

    code = (
        "import time\n"
        "from richviz.widgets import Playground\n"
        f"pg = Playground(data='xor', width=8, depth=1, device='cpu', root={str(tmp_path)!r})\n"
        "pg.start()\n"
        "time.sleep(1.0)\n"
        "print(pg.trainer.run_path)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    from richviz.checkpoints import Run

    assert Run.open(out.stdout.strip().splitlines()[-1]).complete is True


def test_click_point_maps_the_plot_area_through_the_scales():
    from richviz.widgets.playground_figure import FIGURE_MARGIN, click_point

    m = FIGURE_MARGIN
    size = {"boundingRectWidth": 440.0, "boundingRectHeight": 440.0}
    w, h = 440 - m["left"] - m["right"], 440 - m["top"] - m["bottom"]
    # corners of the plot area: (left, top) is (x min, y max), (right, bottom) is (x max, y min)
    at = lambda px, py: click_point({"relativeX": px, "relativeY": py, **size}, (-2, 4), (1, 3))  # noqa: E731
    assert at(m["left"], m["top"]) == (-2, 3)
    assert at(m["left"] + w, m["top"] + h) == (4, 1)
    x, y = at(m["left"] + w / 4, m["top"] + h / 2)
    assert x == pytest.approx(-2 + 6 / 4) and y == pytest.approx(2)
    # outside the plot area (axes, title, margins) or a malformed event: no point
    assert at(m["left"] - 1, m["top"] + 5) is None and at(m["left"] + 5, 439) is None
    assert click_point({"relativeX": 100}, (-1, 1), (-1, 1)) is None
    assert click_point({"relativeX": "x", "relativeY": 1, **size}, (-1, 1), (-1, 1)) is None
    # clientX - boundingRectLeft (fractional pixels) wins over the rounded relativeX
    fine = {"relativeX": 0, "relativeY": 0, "boundingRectLeft": 10.0, "boundingRectTop": 5.0}
    fine.update(clientX=10.0 + m["left"] + w / 2, clientY=5.0 + m["top"] + h / 2)
    assert click_point({**fine, **size}, (-1, 1), (-1, 1)) == (0.0, 0.0)


def test_a_click_outside_the_plot_area_adds_nothing(pg):
    n0 = len(pg.trainer.data.x_train)
    event = {"type": "click", "relativeX": 5, "relativeY": 5, "boundingRectWidth": 440.0,
             "boundingRectHeight": 440.0}  # fmt: skip
    pg.slice_figure.clicks._handle_mouse_msg(None, event, [])
    assert len(pg.trainer.data.x_train) == n0 and pg.data == "moons"
    assert pg.slice_figure.clicks.watched_events == ["click"]
    assert pg.slice_figure.clicks.source is pg.figure
