"""Manifest schema and metrics-cache readers: field-naming errors, recompute, hypothesis fuzz."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from richviz import cli
from richviz.checkpoints import Run, read_metrics_cache
from richviz.errors import CheckpointError, RichvizError, RunError
from richviz.features import features_and_outputs
from richviz.metrics import d_lr
from richviz.runs.manifest import member_path, validate_manifest
from richviz.train import Config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

CFG = Config(
    data="moons",
    data_kwargs={"n": 80},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [6], "out_features": 2},
    steps=3,
    lr=0.1,
    batch_size=20,
    checkpoints=3,
)


@pytest.fixture(scope="module")
def master(tiny_run, tmp_path_factory) -> Path:
    """The module's own copy of the run (reference_rows writes and removes its metrics cache)."""
    return tiny_run(CFG, seed=0, copy_to=tmp_path_factory.mktemp("manifest") / "run")


@pytest.fixture(scope="module")
def reference_rows(master) -> list[dict]:
    """Metrics rows of the module's run, computed once (the cache is removed afterwards)."""
    rows = Run.open(master).metrics(progress=False)
    (master / "metrics.json").unlink()
    return rows


@pytest.fixture
def run_dir(master, tmp_path) -> Path:
    return Path(shutil.copytree(master, tmp_path / "run"))


def _write(run_dir: Path, manifest: object) -> None:
    (run_dir / "run.json").write_text(json.dumps(manifest))


def _good(master: Path) -> dict:
    return json.loads((master / "run.json").read_text())


# --------------------------------------------------------------------------- schema messages


def _set(m: dict, dotted: str, value: object) -> dict:
    m = copy.deepcopy(m)
    *parents, last = dotted.split(".")
    node = m
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return m


@pytest.mark.parametrize(
    ("dotted", "value", "field"),
    [
        ("checkpoints", 5, "'checkpoints' must be a list, got int 5"),
        ("data", "moons", "'data' must be a JSON object, got str 'moons'"),
        (
            "architecture.kwargs.hidden",
            [-5],
            "'architecture.kwargs.hidden[0]' must not be negative",
        ),
        ("architecture.kwargs", [2, 6], "'architecture.kwargs' must be a JSON object"),
        ("architecture.name", 3, "'architecture.name' must be a string"),
        ("architecture.alpha", "big", "'architecture.alpha' must be null or a finite number"),
        ("architecture.alpha", -1, "'architecture.alpha' must be null or a finite number"),
        ("architecture", None, "'architecture' must be a JSON object, got NoneType"),
        ("data.name", None, "'data.name' must be a string"),
        ("checkpoints.0", "step_0.pt", "'checkpoints[0]' must be a JSON object"),
        ("checkpoints.1.step", -2, "'checkpoints[1].step' must be an integer >= 0"),
        ("checkpoints.1.step", True, "'checkpoints[1].step' must be an integer >= 0"),
        ("checkpoints.1.file", 7, "'checkpoints[1].file' must be a file name"),
        ("checkpoints.1.meta", [1], "'checkpoints[1].meta' must be a JSON object"),
        ("seed", "0", "'seed' must be an integer or null"),
        ("hparams", 3, "'hparams' must be a JSON object"),
        ("complete", "yes", "'complete' must be true or false"),
        ("preset", ["moons"], "'preset' must be a string"),
    ],
)
def test_schema_errors_name_the_field(master, run_dir, dotted, value, field):
    _write(run_dir, _set(_good(master), dotted, value))
    with pytest.raises(RunError) as info:
        Run.open(run_dir)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(run_dir / "run.json") + ": field ")
    assert field in msg


def test_architecture_that_does_not_build_names_the_field(master, run_dir):
    _write(run_dir, _set(_good(master), "architecture.kwargs.hidden", [1.5]))
    with pytest.raises(RunError, match="field 'architecture': cannot build the architecture"):
        Run.open(run_dir)
    _write(run_dir, _set(_good(master), "architecture.kwargs.width", 3))  # unknown keyword
    with pytest.raises(RunError, match="field 'architecture'"):
        Run.open(run_dir)


def test_valid_manifest_passes_unchanged(master):
    m = _good(master)
    assert validate_manifest(m, "run.json") == m
    assert m["complete"] is True


@pytest.mark.parametrize(
    "name", ["../x.pt", "/etc/passwd", "a/../../x.pt", "C:\\x.pt", "..", ".", "", "a\x00.pt"]
)
def test_member_path_refuses_escapes(name):
    with pytest.raises(RunError, match="field 'f'"):
        member_path(name, "f", "run.json")


@pytest.mark.parametrize("name", ["step_00000001.pt", "sub/step_1.pt", "./a.pt", "a..b.pt"])
def test_member_path_accepts_names_inside(name):
    assert member_path(name, "f", "run.json").parts[-1] == Path(name).name


# --------------------------------------------------------------------------- metrics cache


@pytest.mark.parametrize(
    "cache",
    [
        {"rows": {"2": 5}},
        {"rows": []},
        [1, 2, 3],
        "metrics",
        {"rows": {"0": {"key": [], "row": {}}}},
        {"rows": {"0": {"key": {}, "row": {"step": "0", "d_lr": 0.5}}}},
        {"rows": {"0": {"key": {}, "row": {"step": 0, "d_lr": "high"}}}},
        {"rows": {"0": {"key": {}, "row": {"step": 1, "d_lr": 0.5}}}},  # step does not match
    ],
)
def test_wrong_shape_cache_is_recomputed(run_dir, reference_rows, cache):
    (run_dir / "metrics.json").write_text(json.dumps(cache))
    run = Run.open(run_dir)
    rows = run.metrics(progress=False)
    assert [r["step"] for r in rows] == [r["step"] for r in reference_rows]
    x, _ = run.probe()
    for r, ref in zip(rows, reference_rows, strict=True):
        assert r["error"] is None
        f, o = features_and_outputs(run.load(r["step"]), x)
        assert r["d_lr"] == pytest.approx(d_lr(f, o), rel=1e-6)
        assert r["d_lr"] == pytest.approx(ref["d_lr"], rel=1e-9)
    written = json.loads((run_dir / "metrics.json").read_text())
    assert set(written["rows"]) == {str(r["step"]) for r in rows}


def test_forged_cache_row_is_not_used(run_dir, reference_rows):
    run = Run.open(run_dir)
    run.metrics(progress=False)
    cache = json.loads((run_dir / "metrics.json").read_text())
    entry = cache["rows"]["0"]
    entry["row"]["d_lr"] = 0.123
    entry["key"]["sha256"] = "0" * 64  # a row for other bytes
    (run_dir / "metrics.json").write_text(json.dumps(cache))
    rows = Run.open(run_dir).metrics(progress=False)
    assert rows[0]["d_lr"] == pytest.approx(reference_rows[0]["d_lr"], rel=1e-9)


# --------------------------------------------------------------------------- fuzz

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=16,
)

_FIELDS = [
    "format",
    "version",
    "architecture",
    "architecture.name",
    "architecture.kwargs",
    "architecture.kwargs.hidden",
    "architecture.kwargs.in_features",
    "architecture.alpha",
    "data",
    "data.name",
    "data.kwargs",
    "seed",
    "hparams",
    "complete",
    "preset",
    "checkpoints",
    "checkpoints.0",
    "checkpoints.0.step",
    "checkpoints.0.file",
    "checkpoints.0.meta",
    "checkpoints.1.meta.step",
    "checkpoints.1.meta.test_acc",
    "checkpoints.2.file",
]

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _open_and_info(run_dir: Path) -> None:
    """Run.open and ``richviz info``: a RunError/CheckpointError or success, nothing else."""
    try:
        run = Run.open(run_dir)
    except CheckpointError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        for c in run.checkpoints:
            assert c.error is None or "\n" not in c.error
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["info", str(run_dir)])
    assert status in (0, 1)
    assert status == 0 or err.getvalue().count("\n") == 1


@FUZZ
@given(doc=JSON)
def test_fuzz_random_manifest(master, tmp_path_factory, doc):
    run_dir = tmp_path_factory.mktemp("fuzz")
    for p in master.glob("*.pt"):
        shutil.copy(p, run_dir / p.name)
    _write(run_dir, doc)
    _open_and_info(run_dir)


@FUZZ
@given(field=st.sampled_from(_FIELDS), value=JSON)
def test_fuzz_one_field_of_a_valid_manifest(master, tmp_path_factory, field, value):
    run_dir = tmp_path_factory.mktemp("fuzz")
    for p in master.glob("*.pt"):
        shutil.copy(p, run_dir / p.name)
    try:
        manifest = _set(_good(master), field, value)
    except (KeyError, IndexError, TypeError):  # the parent was replaced: nothing to set
        return
    _write(run_dir, manifest)
    _open_and_info(run_dir)


ROW = st.dictionaries(
    st.sampled_from(["step", "d_lr", "nc1", "error", "x"]),
    st.none() | st.integers() | st.floats() | st.text(max_size=5) | st.booleans(),
    max_size=5,
)
CACHE = JSON | st.fixed_dictionaries(
    {
        "rows": st.dictionaries(
            st.sampled_from(["0", "1", "3", "-1", "x"]),
            JSON | st.fixed_dictionaries({"key": JSON, "row": ROW}),
            max_size=4,
        )
    }
)


@settings(max_examples=300, deadline=None)
@given(cache=CACHE)
def test_fuzz_cache_reader(tmp_path_factory, cache):
    path = tmp_path_factory.mktemp("cache") / "metrics.json"
    path.write_text(json.dumps(cache))
    got = read_metrics_cache(path)
    assert set(got) == {"format", "rows"} and isinstance(got["rows"], dict)
    for step, entry in got["rows"].items():
        assert isinstance(entry["key"], dict) and entry["row"]["step"] == int(step)
        for k, v in entry["row"].items():
            assert v is None or (k == "error" and isinstance(v, str)) or isinstance(v, (int, float))
            assert not isinstance(v, bool)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cache=CACHE)
def test_fuzz_cache_then_metrics(master, reference_rows, tmp_path_factory, cache):
    run_dir = Path(shutil.copytree(master, tmp_path_factory.mktemp("fuzz") / "run"))
    (run_dir / "metrics.json").write_text(json.dumps(cache))
    rows = Run.open(run_dir).metrics(progress=False)
    for r, ref in zip(rows, reference_rows, strict=True):
        assert r["step"] == ref["step"] and r["error"] is None
        assert r["d_lr"] == pytest.approx(ref["d_lr"], rel=1e-9)
        assert math.isfinite(r["nc1"]) == math.isfinite(ref["nc1"])


def test_richviz_errors_hierarchy():
    assert issubclass(RunError, CheckpointError) and issubclass(RunError, RichvizError)
    assert torch.__version__  # the module imports torch-using code only via richviz
