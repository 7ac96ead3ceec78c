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
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """``richviz train xor --steps 20 --seed 2``: this module's copy, metrics caches land in it."""
    return tiny_run(
        "xor", cli=True, steps=20, seed=2, copy_to=tmp_path_factory.mktemp("cli") / "xor"
    )


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


def test_metrics_prints_the_two_factors(run_dir, capsys):
    assert cli.main(["metrics", str(run_dir), "-q"]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[3:6] == ["d_lr", "confinement", "isotropy"]
    assert "1 - d_lr = confinement x isotropy" in table
    assert cli.main(["metrics", str(run_dir), "--csv", "-q"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for r in rows:  # CSV carries full precision: the identity holds row by row
        d, c, i = float(r["d_lr"]), float(r["confinement"]), float(r["isotropy"])
        assert 0 < c <= 1 and 0 < i <= 1
        assert 1 - d == pytest.approx(c * i, abs=1e-12)


def test_metrics_learned_outputs_of_an_alpha_run(tmp_path, capsys):
    out = tmp_path / "alpha"
    args = ["train", "moons", "--out", str(out), "--steps", "3", "--alpha", "10", "-q"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["metrics", str(out), "--csv", "-q", "--outputs", "learned"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["step"] == "0" and rows[0]["d_lr"] == "nan"
    assert "zero at step 0" in rows[0]["note"] and not rows[0]["error"]
    assert all(0 <= float(r["d_lr"]) <= 1 for r in rows[1:])
    # rows with a note are valid cache rows: nothing is left to recompute
    from richviz.checkpoints import Run

    assert Run.open(out).pending_metrics(outputs="learned") == []
    assert cli.main(["metrics", str(out), "-q", "--outputs", "learned"]) == 0
    assert "step 0: the learned function" in capsys.readouterr().out
    # the default (the last Linear's own output) is defined at step 0 (outputs is in the cache key)
    assert cli.main(["metrics", str(out), "--csv", "-q"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert 0 < float(rows[0]["d_lr"]) < 1 and "note" not in rows[0]


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


# --------------------------------------------------------------------------- hardening (issue 10)


def test_info_shows_complete_and_incomplete(run_dir, tmp_path, capsys):
    import shutil

    assert cli.main(["info", str(run_dir)]) == 0
    assert "status     complete" in capsys.readouterr().out
    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    m = json.loads((copy / "run.json").read_text())
    m["complete"] = False
    (copy / "run.json").write_text(json.dumps(m))
    assert cli.main(["info", str(copy)]) == 0
    assert "status     INCOMPLETE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--alpha", "inf"], "alpha=inf must be a finite number"),
        (["--alpha", "nan"], "alpha=nan must be a finite number"),
        (["--alpha", "1e200"], "alpha=1e+200 must be a finite number in [0.0001, 1e+06]"),
        (["--alpha", "0"], "alpha=0.0 must be"),
        (["--device", "mps"], "device='mps' is not supported"),
        (["--device", "meta"], "device='meta' is not supported"),
        (["--device", "cuda:x"], "device='cuda:x' is not supported"),
        (["--steps", "0"], "steps=0"),
        (["--seed", "-1"], "seed=-1"),
    ],
)
def test_train_validates_before_writing(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    assert cli.main(["train", "xor", "--out", str(out), "-q", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists()  # nothing written, so a retry works
    assert cli.main(["train", "xor", "--out", str(out), "-q", "--steps", "2"]) == 0


def test_train_cuda_without_cuda_writes_nothing(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    assert cli.main(["train", "xor", "--out", str(out), "-q", "--device", "cuda:0"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err and not out.exists()


def test_train_into_a_file_writes_nothing(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    assert cli.main(["train", "xor", "--out", str(target), "-q"]) == 1
    assert "is not a folder" in capsys.readouterr().err and target.read_text() == "keep"


@pytest.mark.parametrize("sub", ["sub", "sub/deeper"])
def test_train_under_a_file_is_one_line(tmp_path, capsys, sub):
    target = tmp_path / "afile"
    target.write_text("keep")
    assert cli.main(["train", "xor", "--out", str(target / sub), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and str(target) in err
    assert target.read_text() == "keep"


def test_exports_honour_the_umask(run_dir, tmp_path):
    """Exported figures and tables get the mode a plain open gives (0644 under umask 022), like
    run files: one writer (richviz.atomic), not mkstemp's private 0600."""
    pytest.importorskip("ipywidgets", reason="the widget stack is not installed")
    pytest.importorskip("bqplot", reason="the widget stack is not installed")
    from richviz.widgets import MetricsPanel

    old = os.umask(0o022)
    try:
        panel = MetricsPanel(Run.open(run_dir))
        try:
            assert panel.wait(120)
            for out in (panel.save_svg(tmp_path / "m.svg"), panel.to_csv(tmp_path / "m.csv")):
                assert Path(out).stat().st_mode & 0o777 == 0o644, out
        finally:
            panel.close()
    finally:
        os.umask(old)


def test_info_into_a_closed_pipe_is_quiet(run_dir):
    """`richviz info RUN | head -1`: the reader is gone before richviz writes."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "richviz", "info", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # like `head` exiting: every write now hits EPIPE
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""
    assert proc.returncode == 141


def test_info_head_in_a_shell(run_dir):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = f"'{sys.executable}' -m richviz info '{run_dir}' | head -1"
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.startswith("run ") and proc.stdout.count("\n") == 1
    assert proc.stderr == ""


def test_metrics_bogus_layer(run_dir, tmp_path, capsys):
    import shutil

    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    (copy / "metrics.json").unlink(missing_ok=True)
    assert cli.main(["metrics", str(copy), "--layer", "bogus", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer='bogus'" in err
    assert not (copy / "metrics.json").exists()
