"""The kernel warm-up: installed into an environment's IPython kernel config, a real kernel
imports torch and the widget stack in a background thread, and the module itself is light."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from richviz import kernel_warmup

# The thread pauses while a cell runs: the first cell looks at it, the kernel then idles until
# it is done (polled from outside, CHECK_DONE), and the last cell reports what it imported.
CHECK_FIRST = (
    "import sys, threading\n"
    "warm = [t for t in threading.enumerate() if t.name == 'richviz-warmup']\n"
    "from richviz import kernel_warmup\n"
    "print('PAUSED', not kernel_warmup._idle.is_set())\n"
)
CHECK_DONE = "print('DONE', all(not t.is_alive() for t in warm))\n"
CHECK_LAST = (
    "print('WARM', len(warm), sorted(m for m in ('torch', 'bqplot') if m in sys.modules))\n"
)


def test_importing_the_extension_loads_no_torch(fresh_imports):
    """Loading the extension must not hold the kernel up: no torch, no widgets at import."""
    assert fresh_imports("import richviz.kernel_warmup", ["torch", "bqplot", "ipywidgets"]) == []


def test_start_imports_the_modules_once_and_can_be_turned_off():
    code = (
        "import sys\n"
        "from richviz import kernel_warmup as w\n"
        "t = w.start(('json', 'richviz.datasets'))\n"
        "assert w.start() is t\n"
        "t.join(60)\n"
        "print('richviz.datasets' in sys.modules, t.daemon, t.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "richviz-warmup"]
    env = dict(os.environ, RICHVIZ_KERNEL_WARMUP="0")
    code = "from richviz import kernel_warmup as w; print(w.start())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "None"


def test_a_failed_import_stops_the_thread_quietly(capsys):
    kernel_warmup._import_all(("richviz_no_such_module", "json"))  # no exception, no output
    assert capsys.readouterr() == ("", "")


def test_install_keeps_the_file_adds_one_line_and_uninstall_removes_it(tmp_path):
    path = kernel_warmup.config_file(tmp_path)
    assert path == tmp_path / "etc" / "ipython" / "ipython_kernel_config.py"
    assert kernel_warmup.install(tmp_path) == path
    assert path.read_text().splitlines() == [kernel_warmup.config_line()]
    path.write_text("c.IPKernelApp.matplotlib = 'inline'\n" + path.read_text())
    kernel_warmup.install(tmp_path)  # again: still one line, the user's line kept
    lines = path.read_text().splitlines()
    assert lines == ["c.IPKernelApp.matplotlib = 'inline'", kernel_warmup.config_line()]
    kernel_warmup.uninstall(tmp_path)
    assert path.read_text() == "c.IPKernelApp.matplotlib = 'inline'\n"
    assert not list(path.parent.glob("*.tmp*"))


def test_command_line_installs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "richviz.kernel_warmup", "install", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "installed" in out.stdout and str(tmp_path) in out.stdout
    assert kernel_warmup.config_line() in kernel_warmup.config_file(tmp_path).read_text()


def _run_in_kernel(data_dir: Path, ipython_dir: Path, env: dict[str, str]) -> str:
    """Start a real IPython kernel (this interpreter, ``ipython_dir``), run CHECK_FIRST, let
    the kernel idle (checking every 0.5 s) until the warm-up thread is done, run CHECK_LAST;
    return the first and the last cell's stdout."""
    jupyter_client = pytest.importorskip("jupyter_client")
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager(kernel_dirs=[str(data_dir / "kernels")])
    km = jupyter_client.KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    km.start_kernel(env=dict(os.environ, IPYTHONDIR=str(ipython_dir), **env))
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        chunks: list[str] = []

        def keep(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                chunks.append(msg["content"]["text"])

        kc.execute_interactive(CHECK_FIRST, timeout=60, output_hook=keep)
        first = "".join(chunks)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            chunks.clear()
            kc.execute_interactive(CHECK_DONE, timeout=60, output_hook=keep)
            if "DONE True" in "".join(chunks):
                break
            time.sleep(0.5)  # the kernel idles: the thread imports
        chunks.clear()
        kc.execute_interactive(CHECK_LAST, timeout=60, output_hook=keep)
        kc.stop_channels()
        return first + "".join(chunks)
    finally:
        km.shutdown_kernel(now=True)


@pytest.fixture
def kernel_profile(tmp_path) -> Path:
    """An IPython dir whose default profile's kernel config is what ``install`` writes."""
    prefix = tmp_path / "env"
    text = kernel_warmup.install(prefix).read_text()
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(text)
    return tmp_path / "ipython"


@pytest.mark.slow
def test_a_real_kernel_warms_up_in_the_background(jupyter_data_dir, kernel_profile):
    out = _run_in_kernel(jupyter_data_dir, kernel_profile, {"RICHVIZ_KERNEL_WARMUP": "1"})
    assert "WARM 1 ['bqplot', 'torch']" in out, out
    assert "PAUSED True" in out, out  # the thread waits while a cell runs
    out = _run_in_kernel(jupyter_data_dir, kernel_profile, {"RICHVIZ_KERNEL_WARMUP": "0"})
    assert "WARM 0 []" in out, out
    assert "PAUSED False" in out, out  # turned off: no thread, nothing to pause


def test_the_thread_waits_between_modules_while_a_cell_runs():
    """Paused (a cell runs), the thread imports nothing more; resumed, it goes on."""
    code = (
        "import sys, time\n"
        "from richviz import kernel_warmup as w\n"
        "w._pause()\n"
        "t = w.start(('json', 'richviz.datasets'))\n"
        "time.sleep(1.0)\n"
        "print('richviz.datasets' in sys.modules, t.is_alive())\n"
        "w._resume()\n"
        "t.join(60)\n"
        "print('richviz.datasets' in sys.modules, t.is_alive())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "False"]


def test_the_warm_up_imports_all_its_modules_and_no_dynamo(fresh_imports):
    """What the thread imports is what the quick start needs, without torch._dynamo / sympy
    (about a second more, and the quick start itself avoids them)."""
    pytest.importorskip("bqplot")
    code = "from richviz import kernel_warmup as w\nw.start().join(300)"
    names = [*kernel_warmup.MODULES, "torch._dynamo", "sympy"]
    assert fresh_imports(code, names) == list(kernel_warmup.MODULES)
