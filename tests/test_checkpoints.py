"""Runs on disk: round trip, safe loading, unreadable files, atomic writes, caches."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import richviz.checkpoints as ckpts
import richviz.runs.analysis as analysis
from richviz import datasets
from richviz.checkpoints import Run, atomic_save, checkpoint_name, save_checkpoint
from richviz.errors import CheckpointError, DataError, ModelError, RunError
from richviz.features import features_and_outputs
from richviz.metrics import d_lr
from richviz.train import Config, checkpoint_steps, evaluate, train

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


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)


@pytest.fixture(scope="module")
def master(tiny_run) -> Path:
    """The module's run, shared (conftest.py): a test that writes into a run takes run_dir."""
    return tiny_run(CFG, seed=3)


@pytest.fixture
def run_dir(master, tmp_path) -> Path:
    """A private copy of the module's run (without its metrics cache) that a test may damage."""
    path = Path(shutil.copytree(master, tmp_path / "run"))
    (path / "metrics.json").unlink(missing_ok=True)
    return path


def _one_line(msg: str) -> bool:
    return "\n" not in msg and len(msg) < 400


def test_round_trip(master, device):
    run = Run.open(master)
    assert run.steps == STEPS == [c.step for c in run.checkpoints]
    assert all(c.readable and c.error is None for c in run.checkpoints)
    m = run.manifest
    assert m["architecture"] == {"name": "mlp", "kwargs": CFG.arch_kwargs, "alpha": None}
    assert m["data"] == {"name": "moons", "kwargs": {"n": 120}} and m["seed"] == 3
    assert m["hparams"]["lr"] == 0.1 and m["hparams"]["checkpoint_steps"] == STEPS
    # the manifest on disk lists every checkpoint with its metadata
    on_disk = json.loads((master / "run.json").read_text())
    assert [e["step"] for e in on_disk["checkpoints"]] == STEPS
    data = run.data()
    assert data.name == "moons" and len(data.x_train) + len(data.x_test) == 120
    for c in run.checkpoints:
        assert set(ckpts.META_KEYS) <= set(c.meta)
        raw = torch.load(c.path, weights_only=True)
        model = run.load(c.step)  # the default device follows the test device
        assert not model.training
        assert all(t.device.type == device.type for t in model.state_dict().values())
        for k, v in raw["state_dict"].items():
            assert v.device.type == "cpu"  # saved on CPU whatever the training device
            torch.testing.assert_close(model.state_dict()[k].cpu(), v)
        # the stored accuracy is what the loaded weights actually achieve
        loss, acc = evaluate(model, data.x_test, data.y_test, "ce")
        assert acc == pytest.approx(c.meta["test_acc"]) and loss == pytest.approx(
            c.meta["test_loss"]
        )
    assert run.checkpoints[-1].meta["epoch"] == pytest.approx(30 * 32 / len(data.x_train))
    # training changed the weights
    w0, w1 = run.load(0)[1].weight, run.load(30)[1].weight
    assert not torch.equal(w0, w1)


def test_open_accepts_manifest_path_and_device(master, device):
    run = Run.open(master / "run.json")
    assert run.path == master
    model = run.load(0, device="cpu")
    assert next(model.parameters()).device == torch.device("cpu")
    other = run.load(0, device=device)
    assert next(other.parameters()).device.type == device.type
    torch.testing.assert_close(
        {k: v.cpu() for k, v in other.state_dict().items()}, model.state_dict()
    )


def test_lru_cache_returns_same_object_and_evicts(master):
    run = Run.open(master, cache_size=2)
    a = run.load(0)
    assert run.load(0) is a
    run.load(1)
    run.load(2)  # evicts step 0 (least recently used)
    assert run.load(2) is run.load(2)
    b = run.load(0)
    assert b is not a
    torch.testing.assert_close(b.state_dict(), a.state_dict())


def test_concurrent_loads_share_one_model(master):
    from concurrent.futures import ThreadPoolExecutor

    run = Run.open(master, cache_size=4)
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda i: run.load(STEPS[i % 3]), range(24)))
    for i, m in enumerate(models):
        assert m is models[i % 3]


def test_malicious_pickle_never_runs(run_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = run_dir / checkpoint_name(7)
    torch.save({"state_dict": {"0.weight": Evil()}, "meta": {"step": 7}}, bad)
    run = Run.open(run_dir)
    ck = run.checkpoint(7)
    assert not ck.readable and not marker.exists()
    assert str(bad) in ck.error and "refused" in ck.error and _one_line(ck.error)
    # names the callable it refused (torch spells it io.open or _io.open by version)
    assert re.search(r"would import and call [\w.]*open\b", ck.error), ck.error
    with pytest.raises(CheckpointError, match="refused") as exc:
        run.load(7)
    assert str(bad) in str(exc.value) and not marker.exists()
    assert run.steps == STEPS  # the good checkpoints are still there
    # the payload is live: an unsafe load would have created the marker
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_plain_pickle_file_is_refused(run_dir, tmp_path):
    marker = tmp_path / "pwned2"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = run_dir / "step_00000008.pt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    run = Run.open(run_dir)
    assert not run.checkpoint(8).readable and not marker.exists()
    assert "refused" in run.checkpoint(8).error and "open" in run.checkpoint(8).error
    with pytest.raises(CheckpointError, match="refused"):
        run.load(8)
    assert not marker.exists()


def test_truncated_file_names_the_file(run_dir):
    path = run_dir / checkpoint_name(STEPS[2])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    run = Run.open(run_dir)
    ck = run.checkpoint(STEPS[2])
    assert not ck.readable and str(path) in ck.error and "truncated" in ck.error
    assert _one_line(ck.error)
    with pytest.raises(CheckpointError) as exc:
        run.load(STEPS[2])
    assert str(path) in str(exc.value)
    # every other checkpoint still loads
    others = [s for s in STEPS if s != STEPS[2]]
    assert run.steps == others
    for s in others:
        run.load(s)


@pytest.mark.parametrize(
    "kind", ["random", "json", "empty", "other_arch", "shape", "not_state_dict"]
)
def test_foreign_files_are_unreadable(run_dir, kind):
    path = run_dir / checkpoint_name(999)
    if kind == "random":
        path.write_bytes(os.urandom(3000))
    elif kind == "json":
        path.write_text(json.dumps({"state_dict": {"a": 1}}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other_arch":
        torch.save(nn.Sequential(nn.Conv2d(1, 2, 3)).state_dict(), path)
    elif kind == "shape":
        other = nn.Sequential(nn.Flatten(), nn.Linear(2, 9), nn.Tanh(), nn.Linear(9, 2))
        save_checkpoint(path, other.state_dict(), {"step": 999})
    else:
        torch.save({"state_dict": [1, 2, 3]}, path)
    run = Run.open(run_dir)
    ck = run.checkpoint(999)
    assert not ck.readable and ck.error.startswith(str(path)) and _one_line(ck.error)
    if kind == "shape":
        assert "'1.weight'" in ck.error and "(9, 2)" in ck.error and "(8, 2)" in ck.error
    if kind == "other_arch":
        assert "missing" in ck.error
    if kind in ("random", "json"):
        assert "not a PyTorch checkpoint" in ck.error
    with pytest.raises(CheckpointError, match=str(path)):
        run.load(999)
    assert 999 not in run.steps and run.steps == STEPS


def test_file_listed_in_manifest_but_missing(run_dir, master):
    path = run_dir / checkpoint_name(STEPS[1])
    path.unlink()
    run = Run.open(run_dir)
    ck = run.checkpoint(STEPS[1])
    assert not ck.readable and ck.error == f"{path}: checkpoint file is missing"
    # its metadata still comes from the manifest
    assert ck.meta["train_acc"] == Run.open(master).checkpoint(STEPS[1]).meta["train_acc"]
    assert STEPS[1] not in run.steps


def test_missing_or_invalid_manifest(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        Run.open(tmp_path / "nowhere")
    (run_dir / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=str(run_dir / "run.json")):
        Run.open(run_dir)
    (run_dir / "run.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a richviz run manifest"):
        Run.open(run_dir)
    (run_dir / "run.json").write_text(
        json.dumps({"format": "richviz-run", "version": 1, "architecture": {"name": "nope"}})
    )
    with pytest.raises(CheckpointError, match="cannot build the architecture"):
        Run.open(run_dir)
    (run_dir / "run.json").unlink()
    with pytest.raises(CheckpointError, match=r"run\.json: run manifest is missing"):
        Run.open(run_dir)


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    atomic_save({"state_dict": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_nan_weights_load_with_flag_and_nan_metrics(run_dir):
    run = Run.open(run_dir)
    sd = run.load(STEPS[-1]).state_dict()
    sd = {k: v.clone() for k, v in sd.items()}
    sd["1.weight"][0, 0] = float("nan")
    save_checkpoint(run_dir / checkpoint_name(500), sd, {"step": 500})
    run = Run.open(run_dir)
    ck = run.checkpoint(500)
    assert ck.readable and ck.nonfinite
    with pytest.warns(UserWarning, match="NaN"):
        model = run.load(500)
    assert torch.isnan(model[1].weight).any()
    rows = {r["step"]: r for r in run.metrics(progress=False)}
    assert math.isnan(rows[500]["d_lr"]) and "NaN" in rows[500]["error"]
    assert rows[STEPS[-1]]["error"] is None and math.isfinite(rows[STEPS[-1]]["d_lr"])


def test_metrics_rows_match_independent_computation(run_dir):
    run = Run.open(run_dir)  # a fresh copy: no metrics cache, so every row is computed
    seen = []
    rows = run.metrics(progress=lambda done, total: seen.append((done, total)))
    assert [r["step"] for r in rows] == STEPS
    assert seen[-1] == (len(STEPS), len(STEPS))
    x, y = run.probe()
    assert len(x) == len(run.data().x_train)
    for r in rows:
        assert r["error"] is None
        f, o = features_and_outputs(run.load(r["step"]), x)  # x moves to the model's device
        assert f.device == next(run.load(r["step"]).parameters()).device
        assert r["d_lr"] == pytest.approx(d_lr(f, o), rel=1e-6, abs=1e-9)
        assert r["test_acc"] == run.checkpoint(r["step"]).meta["test_acc"]
        bm = _boundary_magnification_reference(run.load(r["step"]), x)
        assert r["boundary_magnification"] == pytest.approx(bm, rel=1e-5, abs=1e-8)
    assert rows[0]["cka_init"] == pytest.approx(1.0) and rows[0]["param_dist_sq"] == 0
    assert rows[-1]["param_dist_sq"] > 0
    assert (run_dir / "metrics.json").is_file()


def _boundary_magnification_reference(model: nn.Module, x: torch.Tensor, res: int = 48) -> float:
    """Mean log10 volume element over the 10 % of a 48 x 48 grid (the data's bounding square
    plus 5 %) with the smallest top-2 logit margin, minus the mean over the rest; the volume
    element from reverse-mode Jacobians of the features (input of the last Linear)."""
    lo, hi = x.double().min(0).values, x.double().max(0).values
    half = float((hi - lo).max()) * 0.55
    c = (lo + hi) / 2
    u = torch.linspace(float(c[0]) - half, float(c[0]) + half, res, dtype=torch.float64)
    v = torch.linspace(float(c[1]) - half, float(c[1]) + half, res, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2).float()
    layers = list(model.children())
    phi = nn.Sequential(*layers[: max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))])
    jac = torch.func.vmap(torch.func.jacrev(lambda z: phi(z[None])[0]))(pts).double()
    g = jac.transpose(1, 2) @ jac / jac.shape[1]
    log_vol = 0.5 * torch.log10(torch.linalg.det(g)).numpy()
    with torch.no_grad():
        top = model(pts).double().topk(2, dim=1).values
    margin = (top[:, 0] - top[:, 1]).numpy()
    near = np.zeros(len(margin), dtype=bool)
    near[np.argsort(margin, kind="stable")[: round(0.1 * len(margin))]] = True
    return float(log_vol[near].mean() - log_vol[~near].mean())


def test_metrics_cache_reused_and_invalidated(run_dir, monkeypatch):
    calls = []
    real = analysis.checkpoint_metrics

    def counting(model, x, y, **kw):
        calls.append(1)
        return real(model, x, y, **kw)

    monkeypatch.setattr(analysis, "checkpoint_metrics", counting)
    first = Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS)
    second = Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS)  # nothing recomputed
    assert json.dumps(first) == json.dumps(second)
    # rewrite one (non-initial) checkpoint with other weights: only it is recomputed
    run = Run.open(run_dir)
    path = run.checkpoint(STEPS[3]).path
    save_checkpoint(path, run.load(STEPS[-1]).state_dict(), {"step": STEPS[3]})
    third = Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS) + 1
    assert third[3]["d_lr"] == pytest.approx(third[-1]["d_lr"])
    assert third[3]["d_lr"] != pytest.approx(first[3]["d_lr"])
    # another layer is another cache key
    Run.open(run_dir).metrics(progress=False, layer="logits")
    assert len(calls) == 2 * len(STEPS) + 1


def test_from_state_dicts(tmp_path):
    torch.manual_seed(0)

    def factory():
        return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))

    folder = tmp_path / "sd"
    folder.mkdir()
    models = {s: factory() for s in (100, 2, 10)}
    for s, m in models.items():
        torch.save(m.state_dict(), folder / f"step_{s}.pt")
    run = Run.from_state_dicts(factory, folder, data="moons")
    assert run.steps == [2, 10, 100]
    assert run.checkpoints[0].path.name == "step_2.pt"
    loaded = {k: v.cpu() for k, v in run.load(10).state_dict().items()}
    torch.testing.assert_close(loaded, models[10].state_dict())
    assert run.data().name == "moons"
    rows = run.metrics(progress=False)
    assert [r["step"] for r in rows] == [2, 10, 100] and math.isnan(rows[0]["test_acc"])
    assert rows[0]["error"] is None and math.isfinite(rows[0]["d_lr"])

    names = tmp_path / "names"
    names.mkdir()
    for n in ("b.pt", "a.pt", "c10.pth"):
        torch.save(factory().state_dict(), names / n)
    run = Run.from_state_dicts(factory, names)
    assert run.steps == [0, 1, 2] and [c.path.name for c in run.checkpoints] == [
        "a.pt",
        "b.pt",
        "c10.pth",
    ]
    assert all(c.meta == {"step": c.step, "nonfinite": False} for c in run.checkpoints)
    with pytest.raises(DataError, match="names no data set"):
        run.data()
    with pytest.raises(CheckpointError, match="no \\*.pt"):
        Run.from_state_dicts(factory, tmp_path / "sd" / "..")


def test_from_state_dicts_with_dataset_object(tmp_path):
    def factory():
        return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))

    torch.save(factory().state_dict(), tmp_path / "0.pt")
    data = datasets.load("xor", n=40)
    run = Run.from_state_dicts(factory, tmp_path, data=data)
    assert run.data() is data
    x, y = run.probe(size=10)
    assert len(x) == 10 and torch.equal(x, run.probe(size=10)[0])


def test_a_runs_data_set_is_loaded_once_however_many_threads_ask(master, monkeypatch):
    """The viewer, the metrics panel and a GeometryRow ask a run for its data from their own
    threads: one loads it, the others wait for that load and get the same object."""
    import threading

    run = Run.open(master)  # the manifest names the data set; loaded on first ask
    name = run.manifest["data"]["name"]
    real, entered, release, loads = datasets.load, threading.Event(), threading.Event(), []

    def slow_load(name, **kwargs):
        loads.append(name)
        entered.set()
        assert release.wait(10)
        return real(name, **kwargs)

    monkeypatch.setattr(datasets, "load", slow_load)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(run.data())) for _ in range(3)]
    threads[0].start()
    assert entered.wait(10)  # the first caller is inside the load
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert loads == [name] and len(got) == 3 and all(d is got[0] for d in got)
    assert got[0].name == name


def test_writer_refuses_existing_run(master, tmp_path):
    with pytest.raises(ValueError, match="already holds a run"):
        train(CFG, master, progress=False)
    torch.save({}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="already holds checkpoint files"):
        train(CFG, tmp_path, progress=False)


def test_no_warnings_on_clean_load(master):
    run = Run.open(master)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.load(STEPS[-1])


# --------------------------------------------------------------------------- hardening (issue 10)


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested-dotdot"])
def test_manifest_path_outside_the_run_is_refused(run_dir, tmp_path, kind):
    outside = tmp_path / "x.pt"
    shutil.copy(run_dir / checkpoint_name(STEPS[-1]), outside)  # a valid checkpoint out there
    name = {
        "dotdot": "../x.pt",
        "absolute": str(outside),
        "nested-dotdot": f"sub/../../{outside.name}",
    }[kind]
    m = _manifest(run_dir)
    m["checkpoints"][0]["file"] = name
    (run_dir / "run.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="outside the run folder") as info:
        Run.open(run_dir)
    assert _one_line(str(info.value)) and "checkpoints[0].file" in str(info.value)


def test_symlink_out_of_the_run_is_unreadable(run_dir, tmp_path):
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(run_dir / checkpoint_name(STEPS[-1]), outside)
    link = run_dir / checkpoint_name(STEPS[0])
    link.unlink()
    link.symlink_to(outside)  # step 0, the init model, now points outside
    run = Run.open(run_dir)
    ck = run.checkpoints[0]
    assert ck.step == STEPS[0] and not ck.readable and "outside the run folder" in ck.error
    assert run.steps == STEPS[1:]
    with pytest.raises(CheckpointError, match="outside the run folder"):
        run.load(STEPS[0])
    # a link that stays inside the folder is fine
    link.unlink()
    link.symlink_to(run_dir / checkpoint_name(STEPS[1]))
    assert Run.open(run_dir).checkpoints[0].readable


def _tiny(act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), act(), nn.Linear(8, 2))


def test_metrics_cache_tanh_to_relu_is_not_stale(tmp_path):
    """The issue's reproduction: same state dicts, Tanh factory then ReLU factory."""
    folder = tmp_path / "sd"
    folder.mkdir()
    torch.manual_seed(1)
    for s in (0, 10, 20):
        torch.save(_tiny(nn.Tanh).state_dict(), folder / f"step_{s}.pt")
    data = datasets.load("moons", n=80)

    def factory():  # redefined below with the same name and another activation
        return _tiny(nn.Tanh)

    tanh_rows = Run.from_state_dicts(factory, folder, data=data).metrics(progress=False)

    def factory():  # noqa: F811 - the point of the test
        return _tiny(nn.ReLU)

    run = Run.from_state_dicts(factory, folder, data=data)
    relu_rows = run.metrics(progress=False)
    x, _ = run.probe()
    for r_tanh, r_relu in zip(tanh_rows, relu_rows, strict=True):
        model = run.load(r_relu["step"])
        assert isinstance(model[1], nn.ReLU)
        f, o = features_and_outputs(model, x)
        assert r_relu["d_lr"] == pytest.approx(d_lr(f, o), rel=1e-6)
        assert r_relu["d_lr"] != pytest.approx(r_tanh["d_lr"], rel=1e-3)


def test_metrics_cache_keyed_on_bytes_not_size_and_mtime(run_dir, monkeypatch):
    calls = []
    real = analysis.checkpoint_metrics
    monkeypatch.setattr(
        analysis, "checkpoint_metrics", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    first = Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS)
    run = Run.open(run_dir)
    path = run.checkpoint(STEPS[2]).path
    st = path.stat()
    # other weights, same size, same mtime: only a content hash can tell
    save_checkpoint(path, run.load(STEPS[-1]).state_dict(), run.checkpoint(STEPS[2]).meta)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS) + 1
    assert second[2]["d_lr"] == pytest.approx(first[-1]["d_lr"])
    # another richviz version invalidates every row
    monkeypatch.setattr(analysis, "METRICS_VERSION", "0.0.0-other")
    Run.open(run_dir).metrics(progress=False)
    assert len(calls) == 2 * len(STEPS) + 1


def test_metrics_table_loads_the_init_model_once_and_again_when_it_changes(run_dir, monkeypatch):
    loads = []
    real = Run.load
    monkeypatch.setattr(Run, "load", lambda self, step, *a, **k: loads.append(step) or real(
        self, step, *a, **k
    ))  # fmt: skip
    run = Run.open(run_dir)
    first = run.metrics(progress=False)
    # every checkpoint once, plus the init model once for the whole table (not once per row)
    assert sorted(loads) == sorted([*STEPS, STEPS[0]])
    # new init weights, the run opened again: the new init model is the one used
    init = run.checkpoint(STEPS[0])
    save_checkpoint(init.path, run.load(STEPS[-1]).state_dict(), init.meta)
    loads.clear()
    again = Run.open(run_dir).metrics(progress=False)
    assert sorted(loads) == sorted([*STEPS, STEPS[0]])  # every row's key changed (new init)
    # the last checkpoint is now identical to the init: similarity 1, distance 0
    assert again[-1]["cka_init"] == pytest.approx(1.0) and again[-1]["param_dist_sq"] == 0.0
    assert first[-1]["param_dist_sq"] > 0.0


def test_metrics_version_derives_from_package_version():
    import richviz

    assert ckpts.METRICS_VERSION.startswith(richviz.__version__ + "/")


def test_duplicate_step_is_unreadable_with_reason(run_dir, monkeypatch):
    # step_5.pt parses to the same step as step_00000005.pt; meta says the same step too
    shutil.copy(run_dir / checkpoint_name(STEPS[2]), run_dir / f"step_{STEPS[2]}.pt")
    run = Run.open(run_dir)
    same = [c for c in run.checkpoints if c.step == STEPS[2]]
    assert len(same) == 2
    assert same[0].readable and same[0].path.name == checkpoint_name(STEPS[2])
    assert not same[1].readable and "duplicate of step" in same[1].error
    assert checkpoint_name(STEPS[2]) in same[1].error and _one_line(same[1].error)
    assert run.steps == STEPS and run.checkpoint(STEPS[2]) is same[0]
    calls = []
    real = analysis.checkpoint_metrics
    monkeypatch.setattr(
        analysis, "checkpoint_metrics", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    rows = run.metrics(progress=False)
    assert [r["step"] for r in rows] == STEPS and len(calls) == len(STEPS)
    Run.open(run_dir).metrics(progress=False)
    assert len(calls) == len(STEPS)  # no endless recompute


def test_run_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        train(CFG, out, seed=0, progress=False, steps=2)
        Run.open(out).metrics(progress=False)
        for name in ("run.json", checkpoint_name(0), "metrics.json"):
            assert (out / name).stat().st_mode & 0o777 == 0o644, name
        os.umask(0o077)
        atomic_write_json_path = tmp_path / "private.json"
        ckpts.atomic_write_json({}, atomic_write_json_path)
        assert atomic_write_json_path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_stored_nonfinite_flag_is_not_trusted(run_dir):
    run = Run.open(run_dir)
    sd = {k: v.clone() for k, v in run.load(STEPS[-1]).state_dict().items()}
    sd["1.bias"][1] = float("inf")
    # lie in both places: the file meta and the manifest entry
    save_checkpoint(
        run_dir / checkpoint_name(STEPS[-1]), sd, {"step": STEPS[-1], "nonfinite": False}
    )
    m = _manifest(run_dir)
    m["checkpoints"][-1]["meta"]["nonfinite"] = False
    m["checkpoints"][0]["meta"]["nonfinite"] = True  # and claim clean step 0 is bad
    (run_dir / "run.json").write_text(json.dumps(m))
    run = Run.open(run_dir)
    assert run.checkpoint(STEPS[-1]).nonfinite
    assert not run.checkpoint(STEPS[0]).nonfinite
    # huge but finite weights (their float32 sum overflows) are not flagged
    sd["1.bias"][:] = 3e38
    save_checkpoint(run_dir / checkpoint_name(STEPS[-1]), sd, {"step": STEPS[-1]})
    assert not torch.isfinite(sd["1.bias"].sum()) and torch.isfinite(sd["1.bias"]).all()
    assert not Run.open(run_dir).checkpoint(STEPS[-1]).nonfinite


def test_bad_entries_never_stop_open(run_dir, monkeypatch):
    (run_dir / "step_00000099.pt").mkdir()
    bad = run_dir / checkpoint_name(STEPS[1])
    real_open = open

    def guarded_open(file, *args, **kwargs):  # tests run as root: simulate EACCES
        if Path(file) == bad:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    run = Run.open(run_dir)
    by_name = {c.path.name: c for c in run.checkpoints}
    assert "is a folder" in by_name["step_00000099.pt"].error
    assert "Permission denied" in by_name[bad.name].error
    assert all(_one_line(c.error) for c in run.checkpoints if c.error)
    assert run.steps == [s for s in STEPS if s != STEPS[1]]
    run.load(STEPS[-1])  # the rest stays usable
    rows = run.metrics(progress=False)
    assert [r["step"] for r in rows] == run.steps and rows[-1]["error"] is None


def test_load_accepts_numeric_strings(master):
    run = Run.open(master)
    assert run.load(str(STEPS[-1])) is run.load(STEPS[-1])
    assert run.checkpoint(f" {STEPS[2]} ").step == STEPS[2]
    with pytest.raises(ValueError, match="must be an integer step"):
        run.load("last")
    with pytest.raises(ValueError, match="must be an integer step"):
        run.load(2.5)
    with pytest.raises(ValueError, match="is not in run"):
        run.load("123456")


def test_writer_marks_complete_only_at_the_end(master, tmp_path):
    assert Run.open(master).complete is True and _manifest(master)["complete"] is True
    calls = []

    class Stop(Exception):
        pass

    def progress(done, total):  # kill training after a few steps, as Ctrl-C would
        calls.append(done)
        if done == 7:
            raise Stop

    out = tmp_path / "killed"
    with pytest.raises(Stop):
        train(CFG, out, seed=0, progress=progress)
    run = Run.open(out)
    assert run.complete is False and _manifest(out)["complete"] is False
    assert run.steps and run.steps[-1] < CFG.steps


def test_unknown_layer_fails_before_caching(run_dir):
    run = Run.open(run_dir)
    with pytest.raises(ModelError, match="layer='bogus'") as info:
        run.metrics(progress=False, layer="bogus")
    assert _one_line(str(info.value))
    assert not (run_dir / "metrics.json").exists()


def test_source_hash_is_remembered_per_object_and_tells_code_apart(monkeypatch):
    from richviz.runs import identity

    ns_a: dict = {}
    ns_b: dict = {}
    exec("class Net:\n    def f(self):\n        return 1\n", ns_a)  # no source file: ""
    assert identity._source_hash(ns_a["Net"]) == ""
    calls = []
    real = identity.inspect.getsource
    monkeypatch.setattr(identity.inspect, "getsource", lambda o: calls.append(o) or real(o))
    identity._remembered_source_hash.cache_clear()
    h1 = identity._source_hash(_tiny)
    assert identity._source_hash(_tiny) == h1 and calls == [_tiny]  # parsed once
    exec("def _tiny(act):\n    return act\n", ns_b)
    assert identity._source_hash(ns_b["_tiny"]) != h1  # another object, read on its own
    unhashable = type("U", (), {"__eq__": lambda s, o: False, "__hash__": None})()
    assert identity._source_hash(unhashable) == ""  # no cache, no error


def test_metrics_cache_file_has_one_line_per_row_and_parses_to_the_rows(run_dir):
    rows = Run.open(run_dir).metrics(progress=False)
    text = (run_dir / "metrics.json").read_text()
    lines = text.splitlines()
    assert lines[0] == '{"format": "richviz-metrics", "rows": {' and lines[-1] == "}}"
    assert len(lines) == len(STEPS) + 2  # one line per row
    cache = json.loads(text)
    assert [int(k) for k in cache["rows"]] == STEPS
    for line, step in zip(lines[1:-1], STEPS, strict=True):
        assert line.startswith(f'  "{step}": {{"key": ')
    # the same rows as json.dumps would write them (NaN included), read back
    again = analysis.read_metrics_cache(run_dir / "metrics.json")
    assert json.dumps(again, sort_keys=True) == json.dumps(cache, sort_keys=True)
    assert [r["d_lr"] for r in rows] == [cache["rows"][str(s)]["row"]["d_lr"] for s in STEPS]
