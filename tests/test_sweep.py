"""Sweeps on a real Dask LocalCluster (2 worker processes on loopback) and the SweepView.

Workers run with one torch thread (dask sets OMP_NUM_THREADS=1), so this module does too: the
tables of the cluster and of the serial path are then the same floats, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

from richviz import cli, sweep
from richviz.checkpoints import MANIFEST, METRICS_CACHE, Run
from richviz.errors import MissingDependencyError, RichvizError
from richviz.summary import hyperparameters, summarize, varying
from richviz.train import Config, checkpoint_steps, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models, like the workers

CFG = Config(
    data="moons",
    data_kwargs={"n": 120},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [8], "out_features": 2},
    steps=30,
    lr=0.1,
    momentum=0.9,
    batch_size=32,
    checkpoints=6,
)
STEPS = checkpoint_steps(30, 6)
GRID = {"alpha": [1.0, 10.0], "seed": [0, 1]}
NAMES = ["alpha=1,seed=0", "alpha=1,seed=1", "alpha=10,seed=0", "alpha=10,seed=1"]
PROBE = 64


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    with sweep.open_client(workers=2) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture(scope="module")
def grid_dir(client, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "grid"
    runs = sweep.train_sweep(CFG, out, GRID, scheduler=client, progress=False)
    assert [r.path.name for r in runs] == NAMES
    return out


@pytest.fixture(scope="module")
def serial_tables(grid_dir, tmp_path_factory) -> dict[str, list[dict]]:
    """Metrics of every grid run computed in this process by ``Run.metrics`` (a fresh copy)."""
    copy = Path(shutil.copytree(grid_dir, tmp_path_factory.mktemp("serial") / "grid"))
    return {name: Run.open(copy / name).metrics(progress=False, probe_size=PROBE) for name in NAMES}


def fresh_copy(grid_dir: Path, dest: Path) -> list[Path]:
    copy = Path(shutil.copytree(grid_dir, dest))
    for name in NAMES:
        (copy / name / METRICS_CACHE).unlink(missing_ok=True)
    return [copy / name for name in NAMES]


def strict_json(path: Path) -> dict:
    """Parse a cache file, failing on duplicate keys (which plain json.loads would hide)."""

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"{path}: duplicate keys {keys}"
        return dict(pairs)

    return json.loads(path.read_text(), object_pairs_hook=no_duplicates)


def assert_clean_cache(run_dir: Path) -> None:
    cache = strict_json(run_dir / METRICS_CACHE)
    assert sorted(int(s) for s in cache["rows"]) == STEPS
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- local hooks


def test_hooks_compose_to_the_serial_table(grid_dir, serial_tables, tmp_path):
    """pending -> compute_metrics_entry -> store, in process, gives Run.metrics's table."""
    path = fresh_copy(grid_dir, tmp_path / "g")[0]
    run = Run.open(path)
    assert run.pending_metrics(probe_size=PROBE) == STEPS
    entry = sweep.compute_metrics_entry(str(path), STEPS[2], None, PROBE)
    assert entry["step"] == STEPS[2] and set(entry) == {"step", "key", "row"}
    run.store_metrics_rows([entry])
    assert Run.open(path).pending_metrics(probe_size=PROBE) == STEPS[:2] + STEPS[3:]
    for step in STEPS:
        if step != STEPS[2]:
            run.store_metrics_rows([sweep.compute_metrics_entry(str(path), step, None, PROBE)])
    assert Run.open(path).pending_metrics(probe_size=PROBE) == []
    rows = Run.open(path).metrics(progress=False, probe_size=PROBE)
    assert json.dumps(rows) == json.dumps(serial_tables[NAMES[0]])
    # another probe size is another key: everything pending again
    assert run.pending_metrics(probe_size=PROBE + 1) == STEPS


# --------------------------------------------------------------------------- cluster


@pytest.mark.slow
def test_cluster_is_two_loopback_processes(client):
    info = client.scheduler_info()
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == 2
    assert all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
    assert all(w["nthreads"] == 1 for w in info["workers"].values())
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    # workers keep glibc's adaptive malloc (Dask would set MALLOC_TRIM_THRESHOLD_), and this
    # process's environment is not changed either
    envs = client.run(lambda: os.environ.get(sweep.MALLOC_TRIM))
    assert list(envs.values()) == [None, None] and sweep.MALLOC_TRIM not in os.environ
    import dask

    from richviz.sweep.cluster import WORKER_PROFILE

    # no worker samples its stack for a dashboard the cluster does not have; this process's
    # Dask configuration keeps its own value
    samplers = client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks))
    assert len(samplers) == 2
    assert all("heartbeat" in names and "profile" not in names for names in samplers.values())
    assert dask.config.get(WORKER_PROFILE) is True


@pytest.mark.slow
def test_train_sweep_names_runs_and_matches_serial_training(grid_dir, tmp_path):
    for name in NAMES:
        run = Run.open(grid_dir / name)
        params = dict(p.split("=") for p in name.split(","))
        assert run.manifest["architecture"]["alpha"] == float(params["alpha"])
        assert run.manifest["seed"] == int(params["seed"])
        assert run.steps == STEPS
    assert not [p for p in grid_dir.iterdir() if p.name.startswith(".")]  # no partial folders
    # the worker trained exactly what the serial trainer trains
    serial = train(CFG, tmp_path / "serial", alpha=10.0, seed=1, progress=False)
    swept = Run.open(grid_dir / "alpha=10,seed=1")
    for step in STEPS:
        a, b = serial.load(step).state_dict(), swept.load(step).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_sweep_rerun_trains_nothing(client, grid_dir):
    before = {p: p.stat().st_mtime_ns for p in grid_dir.glob("*/*.pt")}
    seen = []
    runs = sweep.train_sweep(
        CFG, grid_dir, GRID, scheduler=client, progress=lambda d, t: seen.append((d, t))
    )
    assert [r.path.name for r in runs] == NAMES and seen == [(0, 0)]
    assert {p: p.stat().st_mtime_ns for p in grid_dir.glob("*/*.pt")} == before


@pytest.mark.slow
def test_sweep_tables_equal_serial_and_land_as_tasks_finish(
    client, grid_dir, serial_tables, tmp_path
):
    paths = fresh_copy(grid_dir, tmp_path / "g")
    landed = []

    def progress(done: int, total: int) -> None:
        stored = 0
        for p in paths:
            if (p / METRICS_CACHE).exists():
                stored += len(strict_json(p / METRICS_CACHE)["rows"])
        landed.append((done, total, stored))

    tables = sweep.sweep_metrics(paths, scheduler=client, probe_size=PROBE, progress=progress)
    total = len(NAMES) * len(STEPS)
    assert landed[0] == (0, total, 0) and landed[-1] == (total, total, total)
    # every reported task is already in a cache file when reported
    assert all(stored >= done for done, _, stored in landed)
    assert len(landed) > 2  # rows landed in several batches, not all at the end
    assert list(tables) == [p.resolve() for p in paths]
    for p in paths:
        assert json.dumps(tables[p.resolve()]) == json.dumps(serial_tables[p.name])
        assert_clean_cache(p)
    # a rerun computes nothing and leaves the caches byte for byte
    before = {p: (p / METRICS_CACHE).read_bytes() for p in paths}
    seen = []
    again = sweep.sweep_metrics(
        paths, scheduler=client, probe_size=PROBE, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(0, 0)]
    assert list(again) == list(tables)
    assert all(json.dumps(again[k]) == json.dumps(tables[k]) for k in tables)
    assert {p: (p / METRICS_CACHE).read_bytes() for p in paths} == before


@pytest.mark.slow
def test_worker_killed_mid_sweep_loses_nothing(client, grid_dir, serial_tables, tmp_path):
    paths = fresh_copy(grid_dir, tmp_path / "g")
    # one finished run and one half-finished run: only the missing rows are tasks
    Run.open(paths[0]).metrics(progress=False, probe_size=PROBE)
    run1 = Run.open(paths[1])
    run1.store_metrics_rows(
        [sweep.compute_metrics_entry(str(paths[1]), s, None, PROBE) for s in STEPS[:3]]
    )
    pids_before = client.run(os.getpid)
    victim = sorted(pids_before.values())[0]
    killed = []

    def progress(done: int, total: int) -> None:
        if done > 0 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append((done, total))

    tables = sweep.sweep_metrics(paths, scheduler=client, probe_size=PROBE, progress=progress)
    expected_tasks = 2 * len(STEPS) + len(STEPS) - 3
    assert killed and killed[0][0] < expected_tasks == killed[0][1]  # killed mid-sweep
    for p in paths:
        assert json.dumps(tables[p.resolve()]) == json.dumps(serial_tables[p.name])
        assert_clean_cache(p)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
    assert victim not in client.run(os.getpid).values()


@pytest.mark.slow
def test_cli_sweep_and_train_sweep_on_a_scheduler_address(client, grid_dir, tmp_path, capsys):
    address = client.scheduler.address
    paths = fresh_copy(grid_dir, tmp_path / "g")[:2]
    argv = ["sweep", *map(str, paths), "--scheduler", address, "--probe-size", str(PROBE), "-q"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for p in paths:
        assert f"== {p.resolve()}" in out
        rows = Run.open(p).metrics(progress=False, probe_size=PROBE)
        assert f"{rows[-1]['d_lr']:.4g}" in out
    assert cli.main([*argv, "--combined"]) == 0
    combined = capsys.readouterr().out.splitlines()
    assert combined[0].split()[:2] == ["run", "step"] and len(combined) == 1 + 2 * len(STEPS)
    out_dir = tmp_path / "trained"
    argv = ["train", "moons", "--out", str(out_dir), "--steps", "3", "--sweep", "seed=0,1"]
    assert cli.main([*argv, "--sweep", "lr=0.05", "--scheduler", address, "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 runs in" in out
    for name in ("seed=0,lr=0.05", "seed=1,lr=0.05"):
        run = Run.open(out_dir / name)
        assert run.manifest["preset"] == "moons" and run.manifest["hparams"]["lr"] == 0.05
        assert run.manifest["hparams"]["steps"] == 3 and name in out


@pytest.mark.slow
def test_cli_sweep_on_its_own_local_cluster_with_a_progress_bar(grid_dir, tmp_path, capsys):
    """``richviz sweep RUN --workers 1`` starts (and stops) a local cluster; without -q a tqdm
    bar on stderr counts the tasks."""
    pytest.importorskip("distributed")
    path = fresh_copy(grid_dir, tmp_path / "g")[0]
    argv = ["sweep", str(path), "--workers", "1", "--probe-size", str(PROBE)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert f"== {path.resolve()}" in captured.out
    bar = captured.err.replace("\r", "\n")
    assert "sweep" in bar and f"{len(STEPS)}/{len(STEPS)}" in bar, bar  # every task counted
    rows = Run.open(path).metrics(progress=False, probe_size=PROBE)
    assert [r["step"] for r in rows] == STEPS and f"{rows[-1]['d_lr']:.4g}" in captured.out
    # a bad worker count is refused by the parser, in one line, even with nothing to compute
    with pytest.raises(SystemExit) as info:
        cli.main([*argv[:2], "--workers", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "'0' is not a worker count" in err


def test_bad_scheduler_address_is_one_line(capsys):
    pytest.importorskip("distributed")
    with pytest.raises(RichvizError, match="scheduler='tcp://127.0.0.1:9'") as err:
        with sweep.open_client("tcp://127.0.0.1:9", timeout=2):
            pass
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- without dask


def test_missing_dask_message_and_exit_code(grid_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    with pytest.raises(MissingDependencyError) as err:
        sweep.sweep_metrics([grid_dir / NAMES[0]], progress=False)
    assert isinstance(err.value, ImportError)
    assert 'pip install "richviz[dask]"' in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImportError, match=r"richviz\[dask\]"):
        sweep.train_sweep(CFG, tmp_path / "x", {"seed": [0]}, progress=False)
    assert not (tmp_path / "x").exists()
    assert cli.main(["sweep", str(grid_dir / NAMES[0]), "-q"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines == ["richviz sweep: error: " + sweep.DASK_HINT]
    argv = ["train", "moons", "--out", str(tmp_path / "t"), "--sweep", "seed=0,1", "-q"]
    assert cli.main(argv) == 2
    assert 'pip install "richviz[dask]"' in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- grids


def test_parse_grid_and_names():
    grid = sweep.parse_grid(["alpha=0.1,1,100", "seed=0,1", "optimizer=adam"])
    assert grid == {"alpha": [0.1, 1.0, 100.0], "seed": [0, 1], "optimizer": ["adam"]}
    assert all(isinstance(a, float) for a in grid["alpha"])
    points = sweep.grid_points(grid)
    assert len(points) == 6 and points[1] == {"alpha": 0.1, "seed": 1, "optimizer": "adam"}
    assert [sweep.run_name(p) for p in points[:2]] == [
        "alpha=0.1,seed=0,optimizer=adam",
        "alpha=0.1,seed=1,optimizer=adam",
    ]
    assert sweep.run_name({"lr": 1e-5, "width": 16}) == "lr=1e-05,width=16"


@pytest.mark.parametrize(
    "specs, match",
    [
        (["alpha"], "KEY=V1,V2"),
        (["alpha=1,,2"], "KEY=V1,V2"),
        (["colour=1,2"], "'colour' cannot be swept"),
        (["batch_norm=maybe"], "batch_norm='maybe' must be on or off"),
        (["train_fraction=half"], "train_fraction='half' must be a number"),
        (["seed=0.5"], "seed=0.5 must be an integer"),
        (["alpha=big"], "alpha='big' must be a number"),
        (["alpha=nan"], "must be finite"),
        (["optimizer=../x"], "must be a word"),
        (["seed=1", "seed=2"], "given twice"),
    ],
)
def test_parse_grid_rejects(specs, match):
    with pytest.raises(ValueError, match=match) as err:
        sweep.parse_grid(specs)
    assert "\n" not in str(err.value)


def test_grid_rejects_invalid_configs_before_any_work(tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(ValueError, match=r"lr=-1.0 must be .*positive"):
        sweep.train_sweep(CFG, tmp_path / "o", {"lr": [0.1, -1.0]}, progress=False)
    with pytest.raises(ValueError, match="repeats a value"):
        sweep.train_sweep(CFG, tmp_path / "o", {"seed": [1, 1]}, progress=False)
    (tmp_path / "o" / "seed=0").mkdir(parents=True)
    (tmp_path / "o" / "seed=0" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no richviz run"):
        sweep.train_sweep(CFG, tmp_path / "o", {"seed": [0]}, progress=False)


def test_batch_norm_train_fraction_and_label_noise_can_be_swept():
    from richviz.train import PRESETS

    grid = sweep.parse_grid(["batch_norm=off,on", "train_fraction=0.5,1", "label_noise=0,0.2"])
    assert grid == {
        "batch_norm": [False, True],
        "train_fraction": [0.5, 1.0],
        "label_noise": [0.0, 0.2],
    }
    point = sweep.grid_points(grid)[5]
    assert sweep.run_name(point) == "batch_norm=on,train_fraction=0.5,label_noise=0.2"
    cnn = PRESETS["digits_cnn"]
    seed, over = sweep._overrides(cnn, {**point, "seed": 1})
    assert seed == 1 and over["arch_kwargs"] == {**cnn.arch_kwargs, "batch_norm": True}
    assert over["train_fraction"] == 0.5 and over["label_noise"] == 0.2
    # an architecture without the switch is refused in one line, before any work
    with pytest.raises(ValueError, match="architecture 'mlp' has no BatchNorm to switch"):
        sweep._overrides(CFG, {"batch_norm": True})
    # the sweep view can use them: they are hyper-parameters of the manifest
    manifest = {"architecture": {"name": "small_cnn", "kwargs": {"batch_norm": True}},
                "hparams": {"train_fraction": 0.5, "label_noise": 0.2}}  # fmt: skip
    hp = hyperparameters(manifest)
    assert hp["batch_norm"] is True and hp["train_fraction"] == 0.5 and hp["label_noise"] == 0.2


def test_width_override_changes_every_hidden_layer():
    cfg = Config(**{**CFG.__dict__, "arch_kwargs": {**CFG.arch_kwargs, "hidden": [8, 8]}})
    seed, over = sweep._overrides(cfg, {"width": 5, "seed": 3, "lr": 0.2})
    assert seed == 3 and over == {"lr": 0.2, "arch_kwargs": {**cfg.arch_kwargs, "hidden": [5, 5]}}


# --------------------------------------------------------------------------- summaries


def test_hyperparameters_and_varying(grid_dir):
    manifest = json.loads((grid_dir / NAMES[3] / MANIFEST).read_text())
    hp = hyperparameters(manifest)
    assert hp["alpha"] == 10.0 and hp["seed"] == 1 and hp["width"] == 8 and hp["depth"] == 1
    assert hp["lr"] == CFG.lr and hp["data"] == "moons" and "effective_lr" not in hp
    summaries = [summarize(grid_dir / n, []) for n in NAMES]
    assert varying(summaries) == ["alpha", "seed"]
    assert all(math.isnan(v) for v in summaries[0].final.values())
    with pytest.raises(RichvizError, match="run.json"):
        summarize(grid_dir / "missing", [])


# --------------------------------------------------------------------------- the view


def test_sweep_view_points_colours_and_click(grid_dir, serial_tables):
    traitlets = pytest.importorskip("traitlets", reason="the view needs ipywidgets")
    pytest.importorskip("bqplot", reason="the view needs bqplot")
    from richviz.widgets import SweepView

    tables = {grid_dir / n: rows for n, rows in serial_tables.items()}
    view = SweepView(tables, explorer={"viewer": {"resolution": 24}})
    try:
        assert view.loaded and view.x_choices == ["alpha", "seed"]
        assert view.x_param == "alpha" and view.color_param == "seed"
        for key in ("d_lr", "boundary_magnification", "test_acc"):
            marks = view.marks[key]
            assert len(marks) == 2  # seed 0 and seed 1
            for seed, mark in enumerate(marks):
                names = [p.name for p in view._mark_paths[id(mark)]]
                assert names == [f"alpha=1,seed={seed}", f"alpha=10,seed={seed}"]
                assert list(mark.x) == [1.0, 10.0]
                assert list(mark.y) == [serial_tables[n][-1][key] for n in names]
            assert marks[0].colors != marks[1].colors
            for axis in view.figures[key].axes:  # the project's tick rules, as in LineChart
                assert 2 <= len(axis.tick_values) <= 6
                assert axis.scale.min <= min(axis.tick_values) <= max(axis.tick_values)
                assert max(axis.tick_values) <= axis.scale.max
        assert "seed=0" in view.legend.value and "seed=1" in view.legend.value
        # the x axis follows the dropdown; colour "none" is one group
        view.x_menu.value = "seed"
        view.color_menu.value = "alpha"
        assert view.x_param == "seed" and view.color_param == "alpha"
        assert [list(m.x) for m in view.marks["d_lr"]] == [[0.0, 1.0], [0.0, 1.0]]
        assert [p.name for p in view._mark_paths[id(view.marks["d_lr"][1])]] == NAMES[2:]
        view.color_param = "none"
        assert len(view.marks["d_lr"]) == 1 and view.legend.value == ""
        with pytest.raises(traitlets.TraitError, match="x_param='width'"):
            view.x_param = "width"
        with pytest.raises(traitlets.TraitError, match="color_param='lr'"):
            view.color_param = "lr"
        # a click on the second point of the single mark (seed axis: alpha=1,seed=1)
        mark = view.marks["test_acc"][0]
        mark._handle_custom_msg({"event": "element_click", "data": {"index": 1}}, [])
        assert view.selected == str(grid_dir / NAMES[1])
        assert view.explorer.run.path == grid_dir / NAMES[1]
        assert view.explorer_box.children == (view.explorer,)
        assert view.wait(120)
    finally:
        view.close()


def test_sweep_view_loads_runs_in_background_and_escapes_names(grid_dir, tmp_path):
    pytest.importorskip("bqplot", reason="the view needs bqplot")
    from richviz.widgets import SweepView

    evil = tmp_path / "<img src=x onerror=alert(1)>"
    shutil.copytree(grid_dir / NAMES[0], evil)
    (evil / METRICS_CACHE).unlink(missing_ok=True)
    view = SweepView([evil, grid_dir / NAMES[3]], x="alpha", probe_size=PROBE)
    try:
        assert view.wait(120) and view.loaded
        assert view.x_param == "alpha" and view.color_param == "seed"
        assert len(view.summaries) == 2 and (evil / METRICS_CACHE).is_file()
        view.open_run(evil)
        assert "<img" not in view.status.value and "&lt;img" in view.status.value
        view.open_run(tmp_path / "nowhere")  # an error is a status line, the view stays
        assert "no such run folder" in view.status.value
        assert view.selected == str(evil)
        assert view.wait(120)
    finally:
        view.close()


@pytest.mark.slow
def test_failed_tasks_are_reported_and_the_others_stored(client, grid_dir, tmp_path, monkeypatch):
    paths = fresh_copy(grid_dir, tmp_path / "g")[:2]
    gone = tmp_path / "gone"
    pending_metrics = Run.pending_metrics

    def vanish_once_opened(run: Run, *args, **kwargs) -> list[int]:
        # the client has opened the second run and listed its rows; none of its tasks has
        # been submitted yet: the folder vanishes under the sweep, so every one of its rows
        # fails on a worker (renaming from the progress callback raced the first tasks)
        steps = pending_metrics(run, *args, **kwargs)
        if run.path.resolve() == paths[1].resolve():
            paths[1].rename(gone)
        return steps

    monkeypatch.setattr(Run, "pending_metrics", vanish_once_opened)
    with pytest.raises(RichvizError) as err:
        sweep.sweep_metrics(paths, scheduler=client, probe_size=PROBE, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{len(STEPS)} of {2 * len(STEPS)} metrics tasks failed, e.g. ")
    assert "no such run folder" in msg and "\n" not in msg
    assert_clean_cache(paths[0])  # the healthy run's rows all landed
    assert not (gone / METRICS_CACHE).exists()
