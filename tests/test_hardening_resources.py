"""Issue 20 class 1: bounded memory on multi-GB checkpoints; bounded manifest requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from richviz.errors import RunError
from richviz.runs import Run

BIG = 3 * 2**30
MLP = "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(2, 3))\n"

# one subprocess runs every case: peak RSS (VmHWM) is reset per case through clear_refs
# when the kernel allows, else the process's overall peak bounds every case at once
_SCRIPT = textwrap.dedent(
    """
    import json, os, pickle, sys, resource
    from pathlib import Path
    import torch
    from torch import nn
    from safetensors.torch import save_file
    from richviz.runs import Run

    root = Path(sys.argv[1]); BIG = 3 * 2**30
    sd = nn.Sequential(nn.Linear(2, 3)).state_dict()
    factory = lambda: nn.Sequential(nn.Linear(2, 3))

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    def sparse(path, write):
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        with open(path, "r+b") as f:
            f.truncate(BIG)
        return path

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset():
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def opened(run):
        return [c.error or "ok" for c in run.checkpoints]

    cases = {}
    def case(name, fn):
        reset(); before = peak()
        try:
            out = fn()
        except Exception as exc:
            out = [type(exc).__name__ + ": " + str(exc)]
        cases[name] = {"out": out, "grew": peak() - before}

    zsave = lambda obj: lambda p: torch.save(obj, p)
    lsave = lambda obj: lambda p: torch.save(obj, p, _use_new_zipfile_serialization=False)
    d = root / "sd"
    sparse(d / "step_1.pt", zsave({"state_dict": sd, "meta": {}}))
    sparse(d / "step_2.pt", lsave({"state_dict": sd, "meta": {}}))
    sparse(d / "step_3.pth", lsave({"w": Evil()}))
    case("from_state_dicts", lambda: opened(Run.from_state_dicts(factory, d)))
    for name, write in {
        "lightning.ckpt": zsave({"state_dict": sd, "pytorch-lightning_version": "2.0"}),
        "legacy_loop.pt": lsave({"model": sd, "step": 3}),
        "loop.pth": zsave({"model_state_dict": sd, "step": 4}),
        "evil_legacy.pt": lsave({"model": sd, "x": Evil()}),
        "model.safetensors": lambda p: save_file(sd, str(p)),
    }.items():
        f = sparse(root / name.split(".")[0] / name, write)
        run_of = lambda f=f: Run.from_checkpoints(f.parent, factory)
        case("from_checkpoints " + name, lambda r=run_of: opened(r()))
    hf = root / "hf"
    sparse(hf / "checkpoint-5" / "pytorch_model.bin", zsave(sd))
    sparse(hf / "checkpoint-6" / "model.safetensors", lambda p: save_file(sd, str(p)))
    case("from_checkpoints hf", lambda: opened(Run.from_checkpoints(hf, factory)))
    # a richviz run folder (run.json + step_*.pt), through Run.open and `richviz info`
    import contextlib, io
    from richviz.cli import main
    from richviz.train import train
    run_dir = root / "run"
    train("xor", out=run_dir, steps=3, progress=False)
    steps = sorted(run_dir.glob("step_*.pt"))
    state = torch.load(steps[-1], weights_only=True)
    sparse(steps[-1], lsave(state))  # a legacy file of 3 GiB
    sparse(steps[-2], zsave(state))  # a zip file of 3 GiB (its central directory cut off)
    case("Run.open", lambda: opened(Run.open(run_dir)))
    def info():
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            status = main(["info", str(run_dir)])
        return [f"status {status}"] + [
            line for line in text.getvalue().splitlines() if "GiB" in line or "corrupt" in line
        ]
    case("richviz info", info)
    print(json.dumps({"cases": cases, "peak": peak()}))
    """
)


def test_multi_gb_sparse_checkpoints_stay_bounded(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "RICHVIZ_MAX_CHECKPOINT_BYTES": ""}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["peak"] < 1.5 * 2**30  # no case read its 3 GiB
    cases = result["cases"]
    assert set(cases) >= {"from_state_dicts", "from_checkpoints hf"}
    for name, c in cases.items():
        assert c["grew"] < 300 * 2**20, (name, c)
        for line in c["out"]:
            assert "\n" not in line and (
                line == "ok"
                or line.startswith("status ")
                or "GiB" in line
                or "corrupt" in line
                or "refused" in line
                or "safetensors" in line
            ), line
    assert sum("GiB" in line for line in cases["Run.open"]["out"]) == 1
    assert sum("corrupt" in line for line in cases["Run.open"]["out"]) == 1
    info = cases["richviz info"]["out"]  # lists both files as unreadable, one line each
    assert len(info) >= 3 and any("GiB" in line for line in info[1:])
    sd = cases["from_state_dicts"]["out"]
    assert "corrupt" in sd[0] and "more than the 2.0 GiB" in sd[1] and "GiB" in sd[2]


def test_read_bound_env_and_legacy_refusal_message(tmp_path: Path, monkeypatch) -> None:
    from torch import nn

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    sd = nn.Sequential(nn.Linear(2, 3)).state_dict()
    torch.save(
        {"state_dict": sd, "x": Evil()}, tmp_path / "a_1.pt", _use_new_zipfile_serialization=False
    )
    torch.save({"state_dict": sd, "x": Evil()}, tmp_path / "b_2.pt")
    run = Run.from_state_dicts(lambda: nn.Sequential(nn.Linear(2, 3)), tmp_path)
    errors = [c.error for c in run.checkpoints]
    assert all("refused to load" in e and "system" in e for e in errors), errors  # both formats
    torch.save({"state_dict": sd}, tmp_path / "a_1.pt", _use_new_zipfile_serialization=False)
    monkeypatch.setenv("RICHVIZ_MAX_CHECKPOINT_BYTES", "100")
    run = Run.from_state_dicts(lambda: nn.Sequential(nn.Linear(2, 3)), tmp_path)
    assert "RICHVIZ_MAX_CHECKPOINT_BYTES" in run.checkpoints[0].error  # legacy read whole
    assert "data.pkl" in run.checkpoints[1].error  # a zip's pickle
    monkeypatch.setenv("RICHVIZ_MAX_CHECKPOINT_BYTES", "lots")
    run = Run.from_state_dicts(lambda: nn.Sequential(nn.Linear(2, 3)), tmp_path)
    assert "must be a number of bytes" in run.checkpoints[0].error


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    from richviz.train import train

    folder = tmp_path_factory.mktemp("h") / "xor"
    train("xor", folder, steps=2, progress=False, device="cpu")
    return folder


@pytest.mark.parametrize(
    "where,key,value,field",
    [
        ("architecture", "hidden", [1] * 100000, "architecture.kwargs.hidden"),
        ("architecture", "hidden", [10**7] * 3, "architecture.kwargs"),
        ("architecture", "hidden", [10**9], "architecture.kwargs.hidden[0]"),
        ("architecture", "extra", {"a": list(range(2000))}, "architecture.kwargs.extra"),
        ("data", "n", 10**10, "data.kwargs.n"),
        ("data", "n", 10**5, "data.kwargs.n"),
        ("data", "path", "/etc/passwd", "data.kwargs.path"),
        ("data", "path", "../outside.csv", "data.kwargs.path"),
    ],
)
def test_manifest_requests_are_bounded(run_folder, tmp_path, where, key, value, field) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    for p in run_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    m = json.loads((folder / "run.json").read_text())
    if key == "path":
        m["data"] = {"name": "csv", "kwargs": {}}
    m[where]["kwargs"][key] = value
    (folder / "run.json").write_text(json.dumps(m))
    with pytest.raises(RunError) as info:
        Run.open(folder).data()
    msg = str(info.value)
    assert "\n" not in msg and "run.json" in msg and f"'{field}" in msg


def test_manifest_modular_p_and_version(run_folder, tmp_path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    for p in run_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    m = json.loads((folder / "run.json").read_text())
    for patch, field in (
        ({"data": {"name": "modular_addition", "kwargs": {"p": 10**4}}}, "data.kwargs.p"),
        ({"version": "1"}, "version"),
    ):
        (folder / "run.json").write_text(json.dumps({**m, **patch}))
        with pytest.raises(RunError, match=f"field '{field}'"):
            Run.open(folder)


def test_sweep_grid_width_is_bounded_like_a_manifest() -> None:
    from richviz.errors import ArgumentError
    from richviz.sweep import train_sweep

    with pytest.raises((ArgumentError, RunError, ValueError)):
        train_sweep("xor", "/nonexistent-h8", {"width": [10**9]}, progress=False)
