"""Multi-row sweep tasks: each row is stored as it finishes, a killed worker loses only the
rows it had not finished, and the tables equal the serial ones bit for bit.

Workers run with one torch thread (dask sets OMP_NUM_THREADS=1), so this module does too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from richviz import sweep
from richviz.checkpoints import METRICS_CACHE, Run
from richviz.sweep import metrics as sweep_metrics_module
from richviz.sweep.metrics import compute_metrics_entries, task_groups
from richviz.train import Config, checkpoint_steps

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = Config(
    data="moons",
    data_kwargs={"n": 100},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [8], "out_features": 2},
    steps=20,
    lr=0.1,
    momentum=0.9,
    batch_size=25,
    checkpoints=6,
)
STEPS = checkpoint_steps(20, 6)
PROBE = 48
ROW_DELAY = 0.4  # seconds each worker row sleeps after it is computed (SLOW_ROWS)

SLOW_ROWS = f"""
import time
from richviz.runs import Run
if not hasattr(Run, "_test_fast_entry"):
    Run._test_fast_entry = Run.metrics_entry
    def _slow_entry(self, *args, **kwargs):
        out = Run._test_fast_entry(self, *args, **kwargs)
        time.sleep({ROW_DELAY})
        return out
    Run.metrics_entry = _slow_entry
"""
FAST_ROWS = """
from richviz.runs import Run
if hasattr(Run, "_test_fast_entry"):
    Run.metrics_entry = Run._test_fast_entry
    del Run._test_fast_entry
"""


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    with sweep.open_client(workers=2) as c:
        c.wait_for_workers(2, timeout=120)
        c.run(exec, SLOW_ROWS, {})
        yield c
        c.run(exec, FAST_ROWS, {})


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return tiny_run(CFG, seed=4)


@pytest.fixture(scope="module")
def serial_table(run_dir, tmp_path_factory) -> list[dict]:
    copy = Path(shutil.copytree(run_dir, tmp_path_factory.mktemp("serial") / "run"))
    (copy / METRICS_CACHE).unlink(missing_ok=True)
    return Run.open(copy).metrics(progress=False, probe_size=PROBE)


def fresh(run_dir: Path, dest: Path) -> Path:
    copy = Path(shutil.copytree(run_dir, dest))
    (copy / METRICS_CACHE).unlink(missing_ok=True)
    return copy


def stored_steps(path: Path) -> list[int]:
    if not (path / METRICS_CACHE).exists():
        return []
    return sorted(int(s) for s in json.loads((path / METRICS_CACHE).read_text())["rows"])


def test_task_groups_split_in_order_and_evenly():
    assert task_groups([], 4) == []
    assert task_groups([0, 1, 2], 8) == [[0, 1, 2]]
    assert task_groups(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    groups = task_groups(list(range(26)), 8)
    assert [x for g in groups for x in g] == list(range(26))
    assert len(groups) == 4 and {len(g) for g in groups} == {6, 7}
    assert task_groups([5, 7], 1) == [[5], [7]]


def test_rows_per_task_leaves_tasks_for_every_thread():
    per = sweep_metrics_module._rows_per_task
    assert per(208, 2) == sweep_metrics_module.ROWS_PER_TASK  # 8 runs x 26 rows
    assert per(24, 2) == 4  # 6 tasks for 2 threads
    assert per(3, 2) == 1 and per(0, 4) == 1


def test_entries_in_process_equal_the_serial_rows_and_a_bad_step_fails_alone(
    run_dir, serial_table, tmp_path
):
    path = fresh(run_dir, tmp_path / "run")
    items = compute_metrics_entries(str(path), [STEPS[1], 10**6, STEPS[3]], None, PROBE)
    assert [it["step"] for it in items] == [STEPS[1], 10**6, STEPS[3]]
    assert "entry" not in items[1] and "\n" not in items[1]["error"]
    Run.open(path).store_metrics_rows([items[0]["entry"], items[2]["entry"]])
    assert stored_steps(path) == [STEPS[1], STEPS[3]]
    assert not (path / "metrics.json.tmp").exists()
    table = Run.open(path).metrics(progress=False, probe_size=PROBE)  # the rest, serially
    assert json.dumps(table) == json.dumps(serial_table)


@pytest.mark.slow
def test_each_row_of_a_multi_row_task_lands_as_it_finishes(
    client, run_dir, serial_table, tmp_path, monkeypatch
):
    monkeypatch.setattr(sweep_metrics_module, "_rows_per_task", lambda rows, threads: 6)
    path = fresh(run_dir, tmp_path / "run")
    landed = []

    def progress(done: int, total: int) -> None:
        landed.append((done, total, len(stored_steps(path))))

    tables = sweep.sweep_metrics([path], scheduler=client, probe_size=PROBE, progress=progress)
    assert landed[0] == (0, 6, 0) and landed[-1] == (6, 6, 6)
    assert all(stored >= done for done, _, stored in landed)  # reported only once stored
    # one task of 6 rows, 0.4 s apart: rows were stored while the task still ran
    partial = [done for done, _, _ in landed if 0 < done < 6]
    assert len(partial) >= 2, landed
    assert json.dumps(tables[path.resolve()]) == json.dumps(serial_table)


@pytest.mark.slow
def test_killed_worker_loses_only_its_unfinished_rows(
    client, run_dir, serial_table, tmp_path, monkeypatch
):
    monkeypatch.setattr(sweep_metrics_module, "_rows_per_task", lambda rows, threads: 6)
    path = fresh(run_dir, tmp_path / "run")
    pids = client.run(os.getpid)
    killed: list[tuple[int, list[int]]] = []

    def progress(done: int, total: int) -> None:
        if done >= 2 and not killed:  # mid-task: kill the worker that runs it
            busy = [w for w, keys in client.processing().items() if keys]
            assert len(busy) == 1
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append((done, stored_steps(path)))
            time.sleep(ROW_DELAY)

    tables = sweep.sweep_metrics([path], scheduler=client, probe_size=PROBE, progress=progress)
    assert killed and 2 <= killed[0][0] < 6
    done_at_kill, stored_at_kill = killed[0]
    assert stored_at_kill == STEPS[: len(stored_at_kill)] and len(stored_at_kill) >= done_at_kill
    # the rows stored before the kill are still there, every other row came from the retry
    assert stored_steps(path) == STEPS
    assert json.dumps(tables[path.resolve()]) == json.dumps(serial_table)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
    client.run(exec, SLOW_ROWS, {})


class _RecordingRun:
    def __init__(self) -> None:
        self.writes: list[list[int]] = []

    def store_metrics_rows(self, entries: list[dict]) -> None:
        self.writes.append([e["step"] for e in entries])


def test_row_store_writes_first_and_last_rows_at_once_and_batches_the_rest():
    path = Path("run")
    run = _RecordingRun()
    store = sweep_metrics_module._RowStore({path: run}, {path: [1, 2, 3, 4]})
    for step in (1, 2, 3):
        store.add(path, {"step": step})
        store.flush(due_only=True)
    # the first row at once; rows 2 and 3 wait (written at most every STORE_EVERY_S)
    assert run.writes == [[1]] and store.unsaved == 2
    store.settle(path)  # row 4 failed: the run is complete, its rows are due at once
    store.flush(due_only=True)
    assert run.writes == [[1], [2, 3]] and store.unsaved == 0


def test_row_store_wait_returns_when_unsaved_rows_fall_due(monkeypatch):
    import queue

    monkeypatch.setattr(sweep_metrics_module, "STORE_EVERY_S", 0.05)
    path = Path("run")
    run = _RecordingRun()
    store = sweep_metrics_module._RowStore({path: run}, {path: [1, 2, 3]})
    store.add(path, {"step": 1})
    store.flush(due_only=True)
    store.add(path, {"step": 2})
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    t = time.monotonic()
    assert store.wait(inbox) == []  # nothing arrived, but row 2 fell due
    assert time.monotonic() - t >= 0.04
    store.flush(due_only=True)
    assert run.writes == [[1], [2]]
    inbox.put(("rows", []))
    assert store.wait(inbox) == [("rows", [])]


@pytest.mark.parametrize("every,expected", [(0.0, [[0], [1], [2]]), (3600.0, [[0]])])
def test_task_events_batch_rows_and_leave_the_last_to_the_result(
    run_dir, tmp_path, monkeypatch, every, expected
):
    """Rows go out as events at most every STORE_EVERY_S (the first at once); the last row
    of a task only comes with its result."""
    sent: list[list[int]] = []
    monkeypatch.setattr(sweep_metrics_module, "STORE_EVERY_S", every)
    monkeypatch.setattr(
        sweep_metrics_module,
        "_event_sender",
        lambda topic: lambda msg: sent.append([STEPS.index(m["step"]) for m in msg]),
    )
    path = fresh(run_dir, tmp_path / "run")
    items = compute_metrics_entries(str(path), STEPS[:4], None, PROBE, topic="t")
    assert [it["step"] for it in items] == STEPS[:4] and all("entry" in it for it in items)
    assert sent == expected


def _count_reads(monkeypatch) -> list[Path]:
    """Checkpoint files this process reads from now on (Run's default reader)."""
    from richviz.runs import run as run_module

    reads: list[Path] = []
    real = run_module._read_payload

    def counting(path, reference, mmap):
        reads.append(Path(path))
        return real(path, reference, mmap)

    monkeypatch.setattr(run_module, "_read_payload", counting)
    return reads


def test_open_with_known_reuses_unchanged_readable_inspections(run_dir, tmp_path, monkeypatch):
    path = fresh(run_dir, tmp_path / "run")
    first = Run.open(path)
    reads = _count_reads(monkeypatch)
    again = Run.open(tmp_path / "." / "run", known=first.checkpoints)  # however it is named
    assert reads == [] and again.steps == first.steps == STEPS
    assert [(c.step, c.meta, c.error) for c in again.checkpoints] == [
        (c.step, c.meta, c.error) for c in first.checkpoints
    ]
    changed = first.checkpoint(STEPS[2]).path
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten since
    unreadable = first.checkpoints[0]
    unreadable.error = "an earlier failure"  # not reused: looked at again
    reads.clear()
    third = Run.open(path, known=first.checkpoints)
    assert sorted(reads) == sorted([changed, unreadable.path]) and third.steps == STEPS
    assert third.checkpoints[0].error is None


@pytest.mark.slow
def test_workers_inspect_the_runs_after_the_first_and_the_client_reads_none_of_them(
    client, run_dir, serial_table, tmp_path, monkeypatch
):
    paths = [fresh(run_dir, tmp_path / f"run{i}") for i in range(3)]
    for p in paths:  # every row but the last already stored: one row per run to compute
        items = compute_metrics_entries(str(p), STEPS[:-1], None, PROBE)
        Run.open(p).store_metrics_rows([it["entry"] for it in items])
    reads = _count_reads(monkeypatch)
    tables = sweep.sweep_metrics(paths, scheduler=client, probe_size=PROBE, progress=False)
    # the first run is opened before the cluster is asked (is there anything to compute?)
    assert {r.parent for r in reads} == {paths[0]}, reads
    for p in paths:
        assert json.dumps(tables[p.resolve()]) == json.dumps(serial_table)


def test_pending_rows_of_a_fresh_open_build_the_architecture_twice(run_dir, tmp_path, monkeypatch):
    # what the client does per run of a sweep: Run.open builds the architecture once (the
    # reference state dict, the model's identity), the metrics checks (feature layer, output
    # type) share one more: a centred MLP costs ~15 ms per build on the client's core
    from richviz.runs import run as run_module

    path = fresh(run_dir, tmp_path / "run")
    builds = []
    real = run_module.Run._build

    def counting(self):
        builds.append(self.path)
        return real(self)

    monkeypatch.setattr(run_module.Run, "_build", counting)
    run = Run.open(path)
    assert len(builds) == 1
    assert run.pending_metrics(probe_size=16) == STEPS
    assert len(builds) == 2
    assert run.pending_metrics(probe_size=16) == STEPS  # checked once per run object
    assert len(builds) == 2
