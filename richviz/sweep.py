"""Sweeps across many runs on a Dask cluster: metrics tables and training grids.

The unit of work is one checkpoint's metrics row (or one training run). Tasks go to
``dask.distributed``: a ``LocalCluster`` of worker processes on loopback by default, or any
scheduler address. Workers receive paths, open the runs themselves and return rows; the client
writes each finished row into its run's ``metrics.json`` atomically as tasks complete, so a
killed worker loses nothing that finished and a rerun computes only what is missing (rows are
keyed by the run's own cache key, exactly as :meth:`richviz.runs.Run.metrics` does).

Dask is optional (``pip install "richviz[dask]"``) and imported only when a sweep starts.
Run folders must be visible at the same path to the client and every worker (a shared
filesystem for a remote cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import logging
import math
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from richviz.errors import MissingDependencyError, RichvizError
from richviz.runs import MANIFEST, Run

__all__ = [
    "DASK_HINT",
    "MALLOC_TRIM",
    "GRID_KEYS",
    "compute_metrics_entry",
    "grid_points",
    "open_client",
    "parse_grid",
    "run_name",
    "sweep_metrics",
    "train_run",
    "train_sweep",
]

MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"
"""The environment variable Dask sets for its workers and local clusters leave unset."""
DASK_HINT = 'richviz sweeps need dask.distributed: pip install "richviz[dask]"'

#: Keys a training grid may vary: ``seed``, ``width`` (every hidden layer of an MLP, or the
#: ``width`` of a CNN), ``batch_norm`` (on/off, for architectures that take it: the CNNs) and
#: the scalar fields of :class:`richviz.train.Config` (including the training-set fraction
#: and the label-noise rate).
GRID_KEYS = (
    "seed",
    "alpha",
    "lr",
    "width",
    "batch_norm",
    "steps",
    "momentum",
    "weight_decay",
    "batch_size",
    "checkpoints",
    "optimizer",
    "loss",
    "train_fraction",
    "label_noise",
)
_INT_KEYS = {"seed", "width", "steps", "batch_size", "checkpoints"}
_FLOAT_KEYS = {"alpha", "lr", "momentum", "weight_decay", "train_fraction", "label_noise"}
_BOOL_KEYS = {"batch_norm"}
_BOOL_WORDS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_NAME_VALUE = re.compile(r"[A-Za-z0-9_.+-]+")

Scheduler = Any  # None, a scheduler address "tcp://host:8786", or a distributed.Client


def _require_dask() -> Any:
    """The ``distributed`` module, or a one-line :class:`MissingDependencyError`."""
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError(DASK_HINT) from None
    return distributed


@contextlib.contextmanager
def open_client(
    scheduler: Scheduler = None, workers: int = 2, timeout: float = 30.0
) -> Iterator[Any]:
    """A ``distributed.Client`` for the duration of the ``with`` block.

    Parameters
    ----------
    scheduler
        None: start a ``LocalCluster`` of ``workers`` processes (one thread each, loopback
        ``127.0.0.1`` only, no dashboard) and stop it afterwards. A string: connect to that
        scheduler address (e.g. ``"tcp://10.0.0.5:8786"``). A ``distributed.Client``: use it as
        is (it stays open).
    workers
        Number of worker processes of the local cluster (>= 1).
    timeout
        Seconds to wait for a scheduler address to answer.

    Raises
    ------
    MissingDependencyError
        dask.distributed is not installed.
    RichvizError
        The scheduler cannot be reached (one line naming the address).
    """
    distributed = _require_dask()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is not None:
        if not isinstance(scheduler, str):
            raise TypeError(
                f"scheduler={scheduler!r} must be None, an address or a distributed.Client"
            )
        try:
            client = distributed.Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise RichvizError(
                f"scheduler={scheduler!r}: cannot connect ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    import dask

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off
    # glibc's adaptive mmap threshold: every tensor above 128 KiB is then a fresh mmap that
    # the kernel zero-fills, and a metrics row took ~1.5x as long as in this process. Local
    # workers start without it (a value of None unsets a variable of that config).
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), MALLOC_TRIM: None}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # no dashboard; the scheduler's small HTTP endpoint (health) on a free loopback port
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


# --------------------------------------------------------------------------- worker side

_RUNS: OrderedDict[str, tuple[tuple, Run]] = OrderedDict()
_RUNS_MAX = 4
# PyTorch's forward-mode AD levels are process-wide: one metrics row at a time per process
# even on a worker with several threads.
_COMPUTE = threading.Lock()


def _signature(path: Path) -> tuple | None:
    """(name, size, mtime_ns) of the manifest and every checkpoint file of a run folder."""
    out = []
    try:
        for p in sorted(path.iterdir()):
            if p.name == MANIFEST or p.suffix in (".pt", ".pth"):
                st = p.stat()
                out.append((p.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return None  # Run.open says what is wrong
    return tuple(out)


def _open_cached(path: str) -> Run:
    """``Run.open(path)``, reused while the folder's files are unchanged (a few per process)."""
    sig = _signature(Path(path))
    hit = _RUNS.get(path)
    if hit is not None and sig is not None and hit[0] == sig:
        _RUNS.move_to_end(path)
        return hit[1]
    run = Run.open(path)
    _RUNS[path] = (sig, run)
    while len(_RUNS) > _RUNS_MAX:
        _RUNS.popitem(last=False)
    return run


def compute_metrics_entry(
    path: str, step: int, layer: str | None = None, probe_size: int = 1000
) -> dict[str, Any]:
    """One checkpoint's metrics cache entry ``{"step", "key", "row"}``, computed where called.

    The task a Dask worker runs: it opens the run folder ``path`` itself (kept open for the
    next task while its files are unchanged) and returns
    :meth:`richviz.runs.Run.metrics_entry`; it writes nothing.
    """
    with _COMPUTE:
        return _open_cached(path).metrics_entry(step, layer, probe_size)


# --------------------------------------------------------------------------- metrics sweeps


def _as_run(run: Run | str | os.PathLike) -> Run:
    if isinstance(run, Run):
        if not (run.path / MANIFEST).is_file():
            raise RichvizError(
                f"{run.path}: sweeps need richviz run folders with a {MANIFEST} (workers open "
                "the run by path); Run.from_state_dicts runs are computed with run.metrics()"
            )
        return Run.open(run.path)
    return Run.open(run)


def _progress_bar(
    progress: bool | Callable[[int, int], None] | None, total: int, desc: str
) -> tuple[Any, Callable[[int], None]]:
    """(tqdm bar on stderr or None, report(done)) as for ``Run.metrics``."""
    if callable(progress):
        progress(0, total)
        return None, lambda done: progress(done, total)
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="task")
        return bar, lambda done: bar.update(done - bar.n)
    return None, lambda done: None


def sweep_metrics(
    runs: Sequence[Run | str | os.PathLike],
    scheduler: Scheduler = None,
    workers: int = 2,
    layer: str | None = None,
    probe_size: int = 1000,
    progress: bool | Callable[[int, int], None] | None = True,
) -> dict[Path, list[dict[str, Any]]]:
    """Metrics tables of many runs, one Dask task per missing checkpoint row.

    Parameters
    ----------
    runs
        Run folders (paths or :class:`~richviz.runs.Run` opened from a folder).
    scheduler, workers
        Where tasks run (see :func:`open_client`): a new local cluster of ``workers``
        processes by default.
    layer, probe_size
        As for :meth:`richviz.runs.Run.metrics` (the cache key includes them).
    progress
        True: a tqdm bar on stderr; False; or a callable ``(done, total)`` over the tasks.

    Returns
    -------
    dict
        ``{run path: rows}``, each table equal to ``Run.open(path).metrics(...)``.

    Raises
    ------
    MissingDependencyError
        dask.distributed is not installed.
    RichvizError
        A task failed (rows of the others are stored; a rerun retries only the missing ones).
    """
    distributed = _require_dask()
    opened: dict[Path, Run] = {}
    for r in runs:
        run = _as_run(r)
        opened.setdefault(run.path.resolve(), run)
    tasks = [(p, s) for p, run in opened.items() for s in run.pending_metrics(layer, probe_size)]
    bar, report = _progress_bar(progress, len(tasks), "sweep")
    failures: list[str] = []
    try:
        if tasks:
            with open_client(scheduler, workers) as client:
                futures = {}
                tag = uuid.uuid4().hex[:8]
                for path, step in tasks:
                    fut = client.submit(
                        compute_metrics_entry,
                        str(path),
                        step,
                        layer,
                        probe_size,
                        key=f"richviz-metrics-{path.name}-{step}-{tag}",
                        pure=False,
                    )
                    futures[fut] = (path, step)
                done = 0
                # rows are fetched batch by batch as tasks finish (one gather from this thread
                # per batch: the event loop never serves overlapping per-future fetches)
                for batch in distributed.as_completed(futures).batches():
                    ok = [f for f in batch if f.status == "finished"]
                    results = dict(zip(ok, client.gather(ok, errors="skip"), strict=False))
                    by_run: dict[Path, list[dict[str, Any]]] = {}
                    for fut in batch:
                        path, step = futures[fut]
                        if fut in results:
                            by_run.setdefault(path, []).append(results[fut])
                        else:  # a task error must not lose the others
                            exc = fut.exception() if fut.status == "error" else fut.status
                            failures.append(
                                f"{path}: step {step}: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]}"
                            )
                        fut.release()
                    for path, entries in by_run.items():
                        opened[path].store_metrics_rows(entries)
                    done += len(batch)
                    report(done)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        raise RichvizError(
            f"{len(failures)} of {len(tasks)} metrics tasks failed, e.g. {failures[0]}"
        )
    return {
        p: run.metrics(progress=False, layer=layer, probe_size=probe_size)
        for p, run in opened.items()
    }


# --------------------------------------------------------------------------- training sweeps


def _coerce(key: str, value: Any) -> Any:
    if key not in GRID_KEYS:
        raise ValueError(f"sweep key {key!r} cannot be swept; choose from {GRID_KEYS}")
    if key in _BOOL_KEYS:
        word = str(value).strip().lower()
        if isinstance(value, bool) or word in _BOOL_WORDS:
            return value if isinstance(value, bool) else _BOOL_WORDS[word]
        raise ValueError(f"sweep {key}={value!r} must be on or off (true/false, 1/0)")
    if key in _INT_KEYS:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ValueError(f"sweep {key}={value!r} must be an integer")
        return int(value)
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"sweep {key}={value!r} must be a number")
        if not math.isfinite(value):
            raise ValueError(f"sweep {key}={value!r} must be finite")
        return float(value)
    if not isinstance(value, str) or not _NAME_VALUE.fullmatch(value):
        raise ValueError(f"sweep {key}={value!r} must be a word (letters, digits, _ . + -)")
    return value


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["alpha=0.1,1,10", "seed=0,1"]`` -> ``{"alpha": [0.1, 1.0, 10.0], "seed": [0, 1]}``.

    Raises ``ValueError`` naming the ``--sweep`` argument that is malformed, repeats a key or
    names a key outside :data:`GRID_KEYS`.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise ValueError(f"--sweep {spec!r} must look like KEY=V1,V2,... (e.g. alpha=0.1,1)")
        if key in grid:
            raise ValueError(f"--sweep {spec!r}: key {key!r} is given twice")
        grid[key] = [_coerce(key, _parse_value(v)) for v in items]
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the last key varies fastest), validated."""
    if not grid:
        raise ValueError("grid is empty; give at least one KEY=V1,V2,...")
    keys = list(grid)
    values = []
    for k in keys:
        vs = [_coerce(k, v) for v in grid[k]]
        if not vs:
            raise ValueError(f"grid[{k!r}] has no values")
        if len(set(vs)) != len(vs):
            raise ValueError(f"grid[{k!r}] repeats a value: {vs}")
        values.append(vs)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def run_name(params: Mapping[str, Any]) -> str:
    """Folder name of a grid point: ``{"alpha": 0.1, "seed": 0}`` -> ``alpha=0.1,seed=0``
    (on/off values as ``on`` / ``off``)."""

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return format(v, "g") if isinstance(v, float) else str(v)

    return ",".join(f"{k}={text(v)}" for k, v in params.items())


def _overrides(config: Any, params: Mapping[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """(seed, Config overrides) of a grid point; raises ValueError for an invalid point."""
    over = {k: v for k, v in params.items() if k not in ("seed", "width", "batch_norm")}
    kw = dict(config.arch_kwargs)
    if "width" in params:
        if "hidden" in kw:
            kw["hidden"] = [params["width"]] * len(kw["hidden"])
        elif "width" in kw:
            kw["width"] = params["width"]
        else:
            raise ValueError(f"sweep width: architecture {config.arch!r} has no width to vary")
    if "batch_norm" in params:
        from richviz.architectures import ARCHITECTURES

        builder = ARCHITECTURES.get(config.arch)
        if builder is None or "batch_norm" not in inspect.signature(builder).parameters:
            raise ValueError(
                f"sweep batch_norm: architecture {config.arch!r} has no BatchNorm to switch"
            )
        kw["batch_norm"] = params["batch_norm"]
    if kw != config.arch_kwargs:
        over["arch_kwargs"] = kw
    dataclasses.replace(config, **over)  # validates (Config.__post_init__)
    return params.get("seed"), over


def train_run(
    preset: Any,
    out: str,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    data_root: str | None = None,
) -> str:
    """Train one run into ``out`` atomically; the task a Dask worker runs for a training sweep.

    Training writes into a hidden sibling folder ``.<name>.partial-<id>`` renamed onto
    ``out`` at the end, so ``out`` never holds half a run; a folder that already holds a run is
    left as it is. Returns ``out``.
    """
    from richviz.train import train

    final = Path(out)
    if (final / MANIFEST).is_file():
        return str(final)
    tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with _COMPUTE:
            train(
                preset,
                tmp,
                seed=seed,
                device=device,
                progress=False,
                data_root=data_root,
                overrides=overrides,
            )
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(final)


def train_sweep(
    preset: Any,
    out: str | os.PathLike,
    grid: Mapping[str, Sequence[Any]],
    scheduler: Scheduler = None,
    workers: int = 2,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress: bool | Callable[[int, int], None] | None = True,
) -> list[Run]:
    """Train one run per grid point on a Dask cluster; runs land in ``out/<run_name(point)>``.

    Parameters
    ----------
    preset
        A preset name or a :class:`richviz.train.Config`.
    out
        Parent folder of the runs (created).
    grid
        ``{key: values}`` over :data:`GRID_KEYS`, e.g. ``{"alpha": [0.1, 1], "seed": [0, 1]}``.
    scheduler, workers
        Where tasks run (see :func:`open_client`).
    seed, overrides
        Seed and :class:`~richviz.train.Config` fields of every run unless the grid varies them.
    device, data_root
        As for :func:`richviz.train.train`, on each worker.
    progress
        True: a tqdm bar over the runs on stderr; False; or a callable ``(done, total)``.

    Returns
    -------
    list of Run
        In grid order. Runs already in place are reused, not retrained; a killed task leaves
        only a hidden ``.<name>.partial-*`` folder, removed by the next sweep.
    """
    from richviz.train import resolve

    distributed = _require_dask()
    _, config = resolve(preset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a folder")
    base = dict(overrides or {})
    if base:
        config = dataclasses.replace(config, **base)
    jobs = []
    for params in grid_points(grid):
        point_seed, over = _overrides(config, params)
        path = out / run_name(params)
        jobs.append((path, seed if point_seed is None else point_seed, {**base, **over}))
    todo = []
    for path, s, over in jobs:
        if (path / MANIFEST).is_file():
            continue
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"{path}: exists and holds no richviz run; move it away first")
        todo.append((path, s, over))
    out.mkdir(parents=True, exist_ok=True)
    for path, _, _ in todo:  # leftovers of killed tasks
        for stale in out.glob(f".{_glob_escape(path.name)}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    bar, report = _progress_bar(progress, len(todo), "train")
    try:
        if todo:
            with open_client(scheduler, workers) as client:
                futures = [
                    client.submit(
                        train_run,
                        preset,
                        str(path.resolve()),
                        s,
                        over,
                        device,
                        data_root,
                        key=f"richviz-train-{path.name}-{uuid.uuid4().hex[:8]}",
                        pure=False,
                    )
                    for path, s, over in todo
                ]
                failures = []
                for done, fut in enumerate(distributed.as_completed(futures), 1):
                    try:
                        fut.result()
                    except Exception as exc:
                        failures.append(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                    report(done)
                if failures:
                    raise RichvizError(
                        f"{len(failures)} of {len(todo)} training runs failed, e.g. "
                        f"{failures[0][:300]}"
                    )
    finally:
        if bar is not None:
            bar.close()
    return [Run.open(path) for path, _, _ in jobs]


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)
