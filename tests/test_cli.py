"""Command line: presets, train, info (with an unreadable checkpoint), metrics, clean errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from richviz import cli
from richviz.checkpoints import Run, checkpoint_name
from richviz.train import PRESETS, checkpoint_steps

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "xor"
    assert cli.main(["train", "xor", "--out", str(out), "--steps", "20", "--seed", "2", "-q"]) == 0
    return out


def test_presets(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out
    for name in ("moons", "circles", "xor", "spirals", "sinusoid", "digits", "modular_addition"):
        assert name in PRESETS


def test_train_writes_a_run(run_dir, capsys):
    run = Run.open(run_dir)
    assert run.steps == checkpoint_steps(20, PRESETS["xor"].checkpoints)
    assert run.manifest["preset"] == "xor" and run.manifest["seed"] == 2
    assert run.manifest["hparams"]["steps"] == 20


def test_train_with_alpha(tmp_path, capsys):
    out = tmp_path / "lazy"
    assert (
        cli.main(["train", "moons", "--out", str(out), "--steps", "3", "--alpha", "100", "-q"]) == 0
    )
    assert "wrote 4 checkpoints" in capsys.readouterr().out
    m = json.loads((out / "run.json").read_text())
    assert m["architecture"]["alpha"] == 100.0
    assert m["hparams"]["effective_lr"] == pytest.approx(PRESETS["moons"].lr / 100**2)


def test_info_marks_unreadable(run_dir, tmp_path, capsys):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    (copy / checkpoint_name(5)).write_bytes(b"garbage")
    assert cli.main(["info", str(copy)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "step_00000005.pt" in ln]
    assert any("UNREADABLE" in ln for ln in lines)
    assert any(ln.startswith("unreadable:") and "not a PyTorch checkpoint" in ln for ln in lines)
    assert "ok" in out and "1 unreadable" in out


def test_metrics_csv_and_table(run_dir, capsys):
    assert cli.main(["metrics", str(run_dir), "--csv", "-q"]) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["step"]) for r in rows] == Run.open(run_dir).steps
    assert {"d_lr", "nc1", "cka_init", "test_acc", "boundary_magnification", "error"} <= set(
        rows[0]
    )
    assert all(0 <= float(r["d_lr"]) <= 1 for r in rows)
    assert (run_dir / "metrics.json").is_file()
    assert cli.main(["metrics", str(run_dir), "-q"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["step", "train_acc"]


def test_device_option_for_train_and_metrics(tmp_path, device, capsys):
    out = tmp_path / "dev"
    argv = ["train", "xor", "--out", str(out), "--steps", "4", "--device", str(device), "-q"]
    assert cli.main(argv) == 0
    assert Run.open(out).manifest["device"] == str(device)
    capsys.readouterr()
    assert cli.main(["metrics", str(out), "--csv", "-q", "--device", str(device)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert all(r["error"] == "" and 0 <= float(r["d_lr"]) <= 1 for r in rows)
    assert cli.main(["metrics", str(out), "-q", "--device", "tpu-9000"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device='tpu-9000'" in err


def test_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err
    assert cli.main(["train", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "unknown" in capsys.readouterr().err
    assert cli.main(["train", "xor", "--out", str(tmp_path / "x"), "--alpha", "-1"]) == 1
    assert "alpha" in capsys.readouterr().err


def test_python_dash_m_bad_path(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "richviz", "info", str(tmp_path / "does-not-exist")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "does-not-exist" in proc.stderr
