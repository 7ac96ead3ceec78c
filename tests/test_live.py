"""The live trainer behind the Playground: control, reproducibility, runs, frame loop, data."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from richviz import datasets
from richviz.architectures import build_model
from richviz.checkpoints import Run
from richviz.errors import ConfigError, DataError
from richviz.live import (
    VIEW_METRICS,
    FrameLoop,
    LiveTrainer,
    PlaygroundConfig,
    compute_view,
    log_spaced,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = PlaygroundConfig(data="moons", n=120, width=8, depth=2, batch_size=16, device="cpu")


def poll(predicate, timeout: float = 60.0) -> bool:
    """Wait until ``predicate()`` holds (no timing assertion: the timeout only avoids hangs)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def trainer(tmp_path):
    t = LiveTrainer(SMALL, tmp_path / "runs", publish_hz=None)
    yield t
    t.close()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---------------------------------------------------------------- configuration


def test_config_json_round_trip(tmp_path):
    cfg = PlaygroundConfig(data="blobs", classes=5, alpha=3, optimizer="adam", seed=7)
    assert PlaygroundConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "demo.json"
    path.write_text(cfg.to_json())
    assert PlaygroundConfig.from_json(path) == cfg
    assert PlaygroundConfig.from_json(str(path)) == cfg
    pts = SMALL.with_points([[0, 1], [2, 3.5]], [1, 0])
    back = PlaygroundConfig.from_json(pts.to_json())
    assert back == pts and back.x == ((0.0, 1.0), (2.0, 3.5)) and back.y == (1, 0)
    assert json.loads(pts.to_json())["format"] == "richviz-playground"


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"data": "moons", "width": 0}', "width=0"),
        ('{"data": "nope"}', "data='nope'"),
        ('{"data": "moons", "colour": 1}', "unknown keys ['colour']"),
        ('{"format": "other"}', "format='other'"),
        ('{"data": "points", "x": [[0, 0]], "y": [9]}', "labels must lie in"),
        ('{"data": "moons", "x": [[0, 0]], "y": [0]}', "only for data='points'"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_configs_are_one_line_config_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        PlaygroundConfig.from_json(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("width", True, "width=True must be an integer"),  # a bool is not an int
        ("n", False, "n=False must be an integer"),
        ("seed", 1.0, "seed=1.0 must be an integer"),
        ("depth", "2", "depth='2' must be an integer"),
        ("batch_size", None, "batch_size=None must be an integer"),
        ("lr", True, "lr=True must be a number"),
        ("lr", "0.1", "lr='0.1' must be a number"),
        ("noise", [0.1], "noise=[0.1] must be a number"),
        ("alpha", False, "alpha=False must be a number"),
        ("classes", 2.5, "classes=2.5 must be an integer"),
        ("activation", 1, "activation=1 must be one of"),
        ("optimizer", None, "optimizer=None must be one of"),
        ("device", ["cpu"], "device=['cpu'] must be one of"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused(field, value, needle):
    with pytest.raises(ConfigError) as info:
        PlaygroundConfig(**{field: value})
    assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:  # the same through JSON, naming the source
        PlaygroundConfig.from_json(json.dumps({field: value}))
    assert str(info.value).startswith("config: " + needle.split(" must")[0])


@pytest.mark.parametrize(
    "field, value",
    [
        ("n", 7),
        ("n", 20001),
        ("noise", -0.01),
        ("noise", 2.5),
        ("classes", 1),
        ("classes", 7),
        ("width", 1025),
        ("depth", 0),
        ("depth", 9),
        ("alpha", 0.0),
        ("alpha", -1.0),
        ("alpha", 1e6),
        ("lr", 0.0),
        ("lr", 100.5),
        ("batch_size", 0),
        ("seed", -1),
        ("seed", 2**31),
    ],
)
def test_config_fields_out_of_range_are_refused(field, value):
    with pytest.raises(ConfigError) as info:
        PlaygroundConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}={value!r} must") and "\n" not in message


@pytest.mark.parametrize("field", ["noise", "lr", "alpha"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_config_floats_refuse_nan_and_inf(field, value):
    with pytest.raises(ConfigError, match=f"{field}=.* must be a finite number"):
        PlaygroundConfig(**{field: value})


def test_config_bounds_are_inclusive_where_the_table_says_so():
    from richviz.live import CONFIG_FIELDS

    assert CONFIG_FIELDS["lr"].interval() == "(0, 100]"
    assert CONFIG_FIELDS["alpha"].interval() == "(0, 1e6)"
    edge = PlaygroundConfig(n=8, noise=2, lr=100, seed=2**31 - 1, alpha=999999.0, width=1024)
    assert edge.lr == 100.0 and isinstance(edge.lr, float) and isinstance(edge.noise, float)
    assert (
        PlaygroundConfig(n=np.int64(50)).n == 50 and type(PlaygroundConfig(n=np.int64(50)).n) is int
    )
    # every field of the config is in the table, with a help line, and the defaults agree
    import dataclasses

    names = [f.name for f in dataclasses.fields(PlaygroundConfig) if f.name not in ("x", "y")]
    assert list(CONFIG_FIELDS) == names
    for f in dataclasses.fields(PlaygroundConfig):
        if f.name in CONFIG_FIELDS:
            assert CONFIG_FIELDS[f.name].default == f.default and CONFIG_FIELDS[f.name].help


@pytest.mark.parametrize(
    "labels, needle",
    [
        ([1e19], "labels must lie in [0, 5], got 1e19"),  # would overflow int64 to negative
        ([0, 2**70], "labels must lie in [0, 5]"),
        ([6], "labels must lie in [0, 5], got 6"),
        ([-1], "labels y must be integers >= 0"),
        ([True], "labels y must be integers, not bool"),
        ([0.5], "labels y must be integers >= 0"),
        (["a"], "x and y must be numeric arrays"),
    ],
)
def test_bad_point_labels_are_refused_without_overflow(labels, needle):
    import warnings

    text = json.dumps({"data": "points", "x": [[0.0, 0.0]] * len(labels), "y": labels})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way
        with pytest.raises(ConfigError) as info:
            PlaygroundConfig.from_json(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001, "nested too deeply"),
        ('{"data": "points", "x": 5, "y": []}', "x must be a list of numbers"),
        ('{"data": "points", "x": [[0, 0]], "y": 1}', "y must be a list of numbers"),
        ('{"version": true}', "version=True"),
        ('{"lr": 1e400}', "lr=inf must be a finite number"),  # JSON's overflow is inf
    ],
)
def test_hostile_json_is_a_one_line_config_error(text, needle):
    with pytest.raises(ConfigError) as info:
        PlaygroundConfig.from_json(text)
    assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="a Playground config is a JSON object"):
        PlaygroundConfig.from_dict([1, 2])


def test_deeply_nested_json_file_is_a_config_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match="deep.json: invalid JSON \\(nested too deeply\\)"):
        PlaygroundConfig.from_json(path)


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"lr": -1}')
    with pytest.raises(ConfigError, match="bad.json: lr=-1"):
        PlaygroundConfig.from_json(path)
    with pytest.raises(ConfigError, match="missing.json"):
        PlaygroundConfig.from_json(tmp_path / "missing.json")


def test_effective_lr_and_classes():
    assert PlaygroundConfig(alpha=10.0, lr=0.5).effective_lr == pytest.approx(0.5 / 100)
    assert PlaygroundConfig(alpha=10.0, lr=0.5, optimizer="adam").effective_lr == 0.05
    assert PlaygroundConfig(lr=0.5).effective_lr == 0.5
    assert PlaygroundConfig(data="moons", classes=5).num_classes == 2
    assert PlaygroundConfig(data="spirals", classes=3).num_classes == 3
    assert SMALL.with_points([[0, 0]], [4]).num_classes == 5


def test_log_spaced_steps():
    # round(10 ** (k / 10)), k = 0..20, by hand:
    # 1 1 2 2 3 3 4 5 6 8 10 13 16 20 25 32 40 50 63 79 100
    expected = [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100]
    assert [s for s in range(101) if log_spaced(s)] == expected
    assert [s for s in range(101) if log_spaced(s, 1)] == [0, 1, 10, 100]


def test_argument_errors_are_richviz_errors_naming_the_argument():
    from richviz.errors import ArgumentError, ArgumentTypeError

    with pytest.raises(ArgumentError, match="per_decade=0"):
        log_spaced(5, 0)
    with pytest.raises(ArgumentTypeError, match="config must be a PlaygroundConfig"):
        LiveTrainer({"data": "moons"})
    for bad in (float("nan"), float("inf"), -1.0, 0):
        with pytest.raises(ArgumentError, match="fps="):
            FrameLoop(lambda item: None, fps=bad)
    with pytest.raises(ArgumentTypeError, match="fps=True"):
        FrameLoop(lambda item: None, fps=True)
    with pytest.raises(ArgumentError, match="max_duty=0"):
        FrameLoop(lambda item: None, max_duty=0)


def test_cuda_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        LiveTrainer(PlaygroundConfig(device="cuda"))


# ---------------------------------------------------------------- control


def test_initial_weights_are_the_seeds(trainer):
    torch.manual_seed(SMALL.seed)
    reference = build_model(SMALL.architecture()).state_dict()
    assert same_weights(trainer.state.weights, reference)
    other = LiveTrainer(PlaygroundConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not same_weights(other.state.weights, reference)
    other.close()


def test_step_runs_exactly_n_steps(trainer):
    assert trainer.step(7) == 7 and trainer.step_count == 7
    assert trainer.step(5) == 12
    assert trainer.state.step == 12 and not trainer.running
    assert trainer.wait(5) and trainer.step_count == 12  # nothing more runs by itself
    with pytest.raises(ValueError, match="n=0"):
        trainer.step(0)


def test_start_returns_at_once_and_pause_stops(trainer):
    gate = threading.Event()
    seen: list[int] = []

    def listener(state):
        seen.append(state.step)
        gate.wait(60)  # the trainer cannot go past its first step until the test opens the gate

    trainer.add_listener(listener)
    trainer.start()  # must return although the trainer is blocked
    assert trainer.step_count <= 1 and trainer.running
    gate.set()
    assert poll(lambda: trainer.step_count >= 50)
    assert trainer.pause(wait=True, timeout=60)
    stopped = trainer.step_count
    assert not trainer.running and trainer.state.step == stopped
    assert trainer.wait(1) and trainer.step_count == stopped
    assert seen == sorted(seen) and seen[-1] == stopped


def test_reset_restores_initial_weights_and_replays(trainer):
    w0 = trainer.state.weights
    trainer.step(20)
    w20 = trainer.state.weights
    assert not same_weights(w0, w20)
    first_run = trainer.run_path
    trainer.start()
    assert poll(lambda: trainer.step_count > 30)
    trainer.reset()
    assert trainer.step_count == 0 and not trainer.running
    assert same_weights(trainer.state.weights, w0)
    assert same_weights(dict(trainer.model.state_dict()), w0)
    trainer.step(20)  # same init, optimiser and mini-batch order: the same trajectory
    assert same_weights(trainer.state.weights, w20)
    assert trainer.run_path != first_run  # a new run folder for the new trajectory


def test_checkpoints_form_a_normal_run(trainer):
    trainer.step(30)
    trainer.step(7)  # a pause at 37 is saved too
    w37 = trainer.state.weights
    run = Run.open(trainer.run_path)
    assert run.steps == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 32, 37]
    assert same_weights(run.load(37).state_dict(), w37)
    meta = run.checkpoint(37).meta
    loss, acc = trainer.evaluate()
    assert meta["train_loss"] == pytest.approx(loss) and meta["train_acc"] == pytest.approx(acc)
    data = run.data()
    assert torch.equal(data.x_train, trainer.data.x_train)
    rows = run.metrics(progress=False)
    assert [r["step"] for r in rows] == run.steps
    assert all(r["error"] is None and np.isfinite(r["d_lr"]) for r in rows)
    assert np.isfinite(rows[-1]["boundary_magnification"])


def test_a_run_is_complete_once_its_trajectory_ends(tmp_path, capsys):
    from richviz import cli

    t = LiveTrainer(SMALL, tmp_path / "runs", publish_hz=None)
    t.step(4)
    first = t.run_path
    assert Run.open(first).complete is False  # still training
    t.reset()  # the first trajectory ends: its run is complete
    assert Run.open(first).complete is True
    t.step(3)
    second = t.run_path
    assert second != first and Run.open(second).complete is False
    t.close()
    t.close()  # idempotent
    run = Run.open(second)
    assert run.complete is True and run.steps[-1] == 3
    assert cli.main(["info", str(second)]) == 0
    assert "INCOMPLETE" not in capsys.readouterr().out
    # a trainer closed before it ever stepped wrote no run at all
    idle = LiveTrainer(SMALL, tmp_path / "idle")
    idle.close()
    assert idle.run_path is None and not (tmp_path / "idle").exists()


def test_set_data_swaps_points_live_and_records_them(trainer):
    trainer.step(5)
    w = trainer.state.weights
    pts = SMALL.with_points([[0.0, 0.0], [1.0, 1.0], [0.5, -0.5]], [0, 1, 1])
    trainer.set_data(pts)
    assert same_weights(trainer.state.weights, w) and trainer.step_count == 5
    trainer.step(3)
    run = Run.open(trainer.run_path)
    assert run.manifest["data_changes"] == [5]
    assert run.data().x_train.tolist() == [[0.0, 0.0], [1.0, 1.0], [0.5, -0.5]]
    bad = SMALL.with_points([[0.0, 0.0]], [3])  # 4 classes for a 2-class network
    with pytest.raises(DataError, match="4 classes"):
        trainer.set_data(bad)


def test_points_config_without_points_cannot_train(tmp_path):
    t = LiveTrainer(PlaygroundConfig(data="points", device="cpu"), tmp_path)
    with pytest.raises(DataError, match="no points yet"):
        t.start()
    t.set_data(t.config.with_points([[0, 0], [1, 1]], [0, 1]))
    assert t.step(3) == 3
    t.close()


def test_four_blobs_trained_live_reach_95_percent(tmp_path):
    cfg = PlaygroundConfig(data="blobs", classes=4, n=400, width=16, depth=2, device="cpu")
    t = LiveTrainer(cfg, tmp_path)
    t.start()
    assert poll(lambda: t.step_count >= 300)
    t.pause(wait=True)
    _, acc = t.evaluate("test")
    assert acc >= 0.95
    t.close()


def test_training_next_to_forward_mode_drawing_is_unchanged(tmp_path):
    """Reverse-mode training needs no lock against the viewers' forward-mode (jvp) work: the
    weights after 60 steps are bit for bit those of training alone."""
    from richviz.geometry import Slice

    alone = LiveTrainer(SMALL, tmp_path / "a")
    alone.step(60)
    busy = LiveTrainer(SMALL, tmp_path / "b")
    stop = threading.Event()
    viewer = build_model(SMALL.architecture())
    s = Slice.square(torch.zeros(2), 2.0)

    def draw_forever():
        while not stop.is_set():
            viewer.load_state_dict(busy.state.weights)
            compute_view(viewer, s, 24)

    th = threading.Thread(target=draw_forever)
    th.start()
    try:
        busy.step(60)
    finally:
        stop.set()
        th.join()
    assert same_weights(busy.state.weights, alone.state.weights)
    alone.close()
    busy.close()


# ---------------------------------------------------------------- frames


def test_frame_loop_skips_instead_of_queueing():
    gate, started = threading.Event(), threading.Event()
    drawn: list[int] = []

    def draw(item):
        started.set()
        gate.wait(60)
        drawn.append(item)

    loop = FrameLoop(draw, fps=1000.0, max_duty=1.0)
    loop.submit(0)
    assert started.wait(60)
    for i in range(1, 11):  # the drawer is busy: each submission replaces the last
        loop.submit(i)
    gate.set()
    assert loop.wait(60)
    assert drawn == [0, 10] and loop.frames == 2 and loop.skipped == 9
    loop.close()


def test_frame_loop_reports_errors_and_goes_on():
    errors: list[BaseException] = []
    drawn: list[int] = []

    def draw(item):
        if item == 1:
            raise RuntimeError("boom")
        drawn.append(item)

    loop = FrameLoop(draw, fps=1000.0, on_error=errors.append, max_duty=1.0)
    loop.submit(1)
    assert loop.wait(60)
    loop.submit(2)
    assert loop.wait(60)
    assert drawn == [2] and [str(e) for e in errors] == ["boom"]
    with pytest.raises(ValueError, match="fps"):
        loop.fps = 0
    loop.close()


def test_frame_loop_bounds_the_drawing_duty_cycle():
    now = [100.0]
    starts: list[float] = []

    def draw(item):
        starts.append(now[0])
        now[0] += item  # this frame "takes" item seconds on the fake clock

    loop = FrameLoop(draw, fps=10.0, max_duty=0.2, clock=lambda: now[0])
    loop.submit(0.05)  # 50 ms: the next frame may start 0.05 / 0.2 = 0.25 s after this one
    assert loop.wait(60)
    assert loop._next == pytest.approx(100.25)
    now[0] = 100.25  # due: drawn without waiting
    loop.submit(0.01)  # 10 ms: the fps bound (0.1 s) applies
    assert loop.wait(60)
    assert starts == [100.0, 100.25] and loop._next == pytest.approx(100.35)
    loop.close()


def test_compute_view_metrics_match_independent_computations():
    from richviz.geometry import Slice, boundary_magnification, pullback_metric
    from richviz.metrics import d_lr, neural_collapse

    data = SMALL.dataset()
    torch.manual_seed(0)
    model = build_model(SMALL.architecture()).eval()
    s = Slice.covering(data.x_train)
    view = compute_view(model, s, 20, (data.x_train, data.y_train))
    with torch.no_grad():
        out = model(data.x_train)
        feats = model[:-1](data.x_train)  # the Sequential up to the readout
        lin = model[-1](feats)
    assert view.metrics["loss"] == pytest.approx(float(F.cross_entropy(out, data.y_train)))
    assert view.metrics["acc"] == pytest.approx(
        float((out.argmax(1) == data.y_train).double().mean())
    )
    assert view.metrics["d_lr"] == pytest.approx(d_lr(feats, lin))
    # 1 - D_LR = confinement x isotropy, each factor from the same one pass
    assert 1 - view.metrics["d_lr"] == pytest.approx(
        view.metrics["confinement"] * view.metrics["isotropy"], abs=1e-9
    )
    nc = neural_collapse(feats, data.y_train, model[-1].weight, model[-1].bias)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4"):
        assert view.metrics[key] == pytest.approx(nc[key], nan_ok=True), key
    assert set(view.metrics) == set(VIEW_METRICS)
    field = pullback_metric(model, s, resolution=20, method="jvp")
    np.testing.assert_allclose(view.log10_volume, field.log10_volume.numpy(), rtol=1e-5, atol=1e-6)
    assert view.metrics["boundary_magnification"] == pytest.approx(
        boundary_magnification(view.log10_volume, view.margin)
    )


def test_compute_view_gives_the_model_back_in_its_mode():
    from richviz.geometry import Slice, decision_boundary_lines

    data = SMALL.dataset()
    torch.manual_seed(0)
    model = build_model(SMALL.architecture())
    s = Slice.covering(data.x_train)
    for training in (True, False):
        model.train(training)
        view = compute_view(model, s, 12, (data.x_train, data.y_train))
        assert model.training is training and all(m.training is training for m in model.modules())
        compute_view(model, s, 12)  # without a probe too
        assert model.training is training
    # the frame's boundary lines come with the view (one pass), as the renderer draws them
    xs, ys = decision_boundary_lines(view.margin, view.predicted, view.u, view.v)
    np.testing.assert_array_equal(view.boundary[0], xs)
    np.testing.assert_array_equal(view.boundary[1], ys)
    one = compute_view(model, s, 12, (data.x_train[:1], data.y_train[:1]))  # one point
    assert np.isfinite(one.metrics["loss"]) and one.metrics["acc"] in (0.0, 1.0)
    undefined = [k for k in VIEW_METRICS if k not in ("loss", "acc", "boundary_magnification")]
    assert all(np.isnan(one.metrics[k]) for k in undefined)  # these need two points or more


# ---------------------------------------------------------------- data


def test_blobs_are_balanced_gaussians_around_their_centres():
    ds = datasets.load("blobs", n=1200, classes=3, noise=0.1, radius=0.8, test_fraction=0.25)
    x = torch.cat([ds.x_train, ds.x_test]).double()
    y = torch.cat([ds.y_train, ds.y_test])
    assert ds.num_classes == 3 and torch.bincount(y).tolist() == [400, 400, 400]
    for k in range(3):
        centre = 0.8 * torch.tensor([np.cos(2 * np.pi * k / 3), np.sin(2 * np.pi * k / 3)])
        pts = x[y == k]
        # mean within 4 standard errors, per-axis std within 15 % of 0.1
        assert torch.all((pts.mean(0) - centre).abs() < 4 * 0.1 / np.sqrt(400))
        assert torch.all((pts.std(0) - 0.1).abs() < 0.015)
    with pytest.raises(DataError, match="classes=1"):
        datasets.load("blobs", classes=1)


def test_arrays_and_csv(tmp_path):
    ds = datasets.load("arrays", x=[[0, 1], [2, 3]], y=[0, 2])
    assert ds.num_classes == 3 and ds.x_train.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert torch.equal(ds.x_test, ds.x_train)  # test_fraction=0: evaluate on the points
    path = tmp_path / "pts.csv"
    path.write_text("x1,x2,label\n0.5,1.5,1\n-1,2,0\n# a comment\n3,4,1\n")
    x, y = datasets.read_csv(path)
    assert x.tolist() == [[0.5, 1.5], [-1.0, 2.0], [3.0, 4.0]] and y.tolist() == [1, 0, 1]
    first = tmp_path / "first.csv"
    first.write_text("1,0.5,1.5\n0,-1,2\n")
    x, y = datasets.read_csv(first, label_column=0)  # label first: the inputs are the rest
    assert x.tolist() == [[0.5, 1.5], [-1.0, 2.0]] and y.tolist() == [1, 0]
    ds = datasets.load("csv", path=str(path))
    assert ds.name == "csv" and len(ds.x_train) == 3


@pytest.mark.parametrize(
    "text, needle",
    [
        ("1,2,0.5\n", "labels y must be integers"),
        ("x1,x2,y\n1,2,a\n", "not a table of numbers"),
        ("1,nan,0\n", "NaN or inf"),
        ("1\n2\n", "every row needs the inputs and a label"),
        ("x,y\n", "no data rows"),
    ],
)
def test_bad_csv_names_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        datasets.read_csv(path)
    assert str(path) in str(info.value) and needle in str(info.value)
