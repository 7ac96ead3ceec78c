"""Issue 20 classes 1, 2, 4 for sweeps: worker bound, connection deadline, quiet failures."""

from __future__ import annotations

import http.server
import logging
import socket
import threading

import pytest

from richviz.errors import ArgumentError, RichvizError
from richviz.sweep.cluster import _FILTER, check_workers, max_workers, open_client

pytest.importorskip("distributed")


@pytest.mark.parametrize("n", [10000, 10**9])
def test_workers_bounded_by_machine(n) -> None:
    with pytest.raises(ArgumentError, match="at most"):
        check_workers(n)
    assert check_workers(max_workers()) == max_workers()
    with pytest.raises(ArgumentError):
        check_workers(0)


def test_cli_workers_one_line(capsys) -> None:
    from richviz.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "x", "--workers", "10000"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "at most" in err and "Too many open files" not in err


def _silent_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []

    def accept() -> None:
        for _ in range(8):
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, held


@pytest.mark.parametrize("kind", ["silent", "http", "refused"])
def test_scheduler_deadline_one_line(kind) -> None:
    stop = None
    if kind == "silent":
        srv, _ = _silent_server()
        port = srv.getsockname()[1]
    elif kind == "http":
        h = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        h.daemon_threads = True
        threading.Thread(target=h.serve_forever, daemon=True).start()
        port, stop = h.server_address[1], h.server_close  # shutdown() would wait on a handler
    else:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    address = f"tcp://127.0.0.1:{port}"
    try:
        with pytest.raises(RichvizError) as info, open_client(address, timeout=1.5):
            pass
    finally:
        if stop:
            stop()
    msg = str(info.value)
    assert address in msg and "\n" not in msg and "within 1.5 s" in msg


def test_own_task_failure_log_is_dropped() -> None:
    def record(key: str) -> logging.LogRecord:
        return logging.LogRecord(
            "distributed.worker", logging.ERROR, "w", 1, "Compute Failed\nKey: %s\n", (key,), None
        )

    assert not _FILTER.filter(record("richviz-metrics-run-3-abcd"))
    assert _FILTER.filter(record("someone-elses-task"))


def test_read_only_run_warns_once(tmp_path, monkeypatch) -> None:
    import warnings

    from richviz.runs import analysis
    from richviz.runs.run import Run
    from richviz.train import train

    folder = tmp_path / "xor"
    train("xor", folder, steps=3, progress=False, device="cpu")
    run = Run.open(folder)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(analysis, "atomic_write_text", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in run.steps:
            analysis.store_metrics_rows(run, [{"step": step, "key": [], "row": {}}])
    texts = [str(w.message) for w in caught if "metrics cache" in str(w.message)]
    assert len(texts) == 1, texts
