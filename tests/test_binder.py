"""The Binder (repo2docker) configuration agrees with pyproject.toml and the tested torch pins."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

jupyter_path = pytest.importorskip(
    "jupyter_core.paths", reason="binder tests need jupyter_core"
).jupyter_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parents[1]
BINDER = REPO_ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
QUICKSTART_URLPATH = "urlpath=lab/tree/notebooks/01_quickstart.ipynb"
# The quick start as an app (Voila's server extension, no code shown).
QUICKSTART_APP_URLPATH = "urlpath=voila/render/notebooks/01_quickstart.ipynb"
BINDER_LINK = "https://mybinder.org/v2/gh/"
# Optional runtime extras Binder installs too: the sweeps notebook (dask), the app link (app),
# MP4 export (animation).
RUNTIME_EXTRAS = ("dask", "app", "animation")


def project_dependencies(extras: tuple[str, ...] = ()) -> dict[str, Requirement]:
    """Requirements by canonical name: ``dependencies``, or those of the optional ``extras``."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    if extras:
        deps = [d for e in extras for d in project["optional-dependencies"][e]]
    else:
        deps = project["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {canonicalize_name(r.name): r for r in reqs}


def binder_requirements() -> tuple[dict[str, Requirement], list[str]]:
    """(requirements by canonical name, pip option lines) of binder/requirements.txt."""
    reqs: dict[str, Requirement] = {}
    options: list[str] = []
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"binder/requirements.txt lists {req.name} twice"
        reqs[name] = req
    return reqs, options


def pinned_version(req: Requirement) -> Version:
    pins = [s for s in req.specifier if s.operator == "=="]
    assert len(pins) == 1, f"binder/requirements.txt: {req} is not pinned with =="
    return Version(pins[0].version)


def setup_env_torch_pins() -> dict[str, Version]:
    """The torch / torchvision versions scripts/setup-env.sh installs by default."""
    text = (REPO_ROOT / "scripts" / "setup-env.sh").read_text()
    match = re.search(r'RICHVIZ_TORCH:-([^}"]+)\}', text)
    assert match, "scripts/setup-env.sh: default RICHVIZ_TORCH spec not found"
    pins = {}
    for spec in match.group(1).split():
        req = Requirement(spec)
        pins[canonicalize_name(req.name)] = pinned_version(req)
    return pins


@pytest.mark.parametrize("extras", [(), RUNTIME_EXTRAS], ids=["dependencies", "runtime-extras"])
def test_every_project_dependency_is_in_binder_with_a_compatible_version(
    extras: tuple[str, ...],
) -> None:
    binder, _ = binder_requirements()
    for name, dep in project_dependencies(extras).items():
        assert name in binder, f"binder/requirements.txt lacks project dependency {dep}"
        version = pinned_version(binder[name])
        # Local labels (+cpu) do not change the release: compare the public version.
        public = Version(version.public)
        assert dep.specifier.contains(public, prereleases=True), (
            f"binder pins {name}=={version}, outside pyproject.toml's {dep}"
        )


def test_binder_has_nothing_the_project_does_not_need() -> None:
    binder, _ = binder_requirements()
    extra = set(binder) - set(project_dependencies()) - set(project_dependencies(RUNTIME_EXTRAS))
    assert not extra, f"binder/requirements.txt lists packages pyproject.toml does not: {extra}"


def test_binder_torch_is_the_tested_release_as_cpu_wheels() -> None:
    binder, options = binder_requirements()
    assert f"--extra-index-url {CPU_INDEX}" in options, "binder must use PyTorch's CPU index"
    pins = setup_env_torch_pins()
    assert set(pins) == {"torch", "torchvision"}
    for name, tested in pins.items():
        version = pinned_version(binder[name])
        assert version.public == tested.public, f"binder {name}=={version}, tested {tested}"
        assert version.local == "cpu", f"binder {name}=={version} is not the CPU wheel"


def test_post_build_installs_richviz_and_valid_lab_overrides() -> None:
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert re.search(r"pip install .*-e \.", text), "postBuild must install richviz"
    body = re.search(r"<<'JSON'\n(.*?)\nJSON\n", text, re.S)
    assert body, "postBuild: overrides.json heredoc not found"
    overrides = json.loads(body.group(1))
    # Every overridden setting must exist in the installed JupyterLab's schema.
    roots = [Path(p) for p in jupyter_path("lab", "schemas")]
    for plugin, values in overrides.items():
        package, _, name = plugin.partition(":")
        found = [r / package / f"{name}.json" for r in roots]
        found = [f for f in found if f.is_file()]
        assert found, f"no JupyterLab schema for {plugin}"
        props = json.loads(found[0].read_text())["properties"]
        for key, value in values.items():
            assert key in props, f"{plugin} has no setting {key!r}"
            allowed = [o["const"] for o in props[key].get("oneOf", []) if "const" in o]
            assert not allowed or value in allowed, f"{plugin}.{key}={value!r} not in {allowed}"


def test_binder_docs_point_at_the_quick_start() -> None:
    readme = (BINDER / "README.md").read_text()
    assert QUICKSTART_URLPATH in readme
    target = QUICKSTART_URLPATH.split("lab/tree/", 1)[1]
    assert (REPO_ROOT / target).is_file(), f"Binder link points at missing {target}"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime), runtime


# ---- app mode (Voila) on Binder


def post_build_heredoc(marker: str) -> dict:
    body = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", (BINDER / "postBuild").read_text(), re.S)
    assert body, f"postBuild: {marker} heredoc not found"
    return json.loads(body.group(1))


def test_binder_installs_voila_ipyevents_and_imageio_ffmpeg() -> None:
    binder, _ = binder_requirements()
    for name in ("voila", "ipyevents", "imageio-ffmpeg"):
        assert name in binder, f"binder/requirements.txt lacks {name}"


def test_binder_pins_are_the_versions_installed_here() -> None:
    """'Pinned to tested versions': each pin is the release this test environment runs."""
    from importlib.metadata import PackageNotFoundError, version

    binder, _ = binder_requirements()
    checked = 0
    for name, req in binder.items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            continue
        pinned = pinned_version(req)
        assert pinned.public == installed.public, f"binder pins {name}=={pinned}, here {installed}"
        checked += 1
    assert checked >= len(binder) - 2, f"only {checked} of {len(binder)} pins are installed here"


def test_post_build_configures_voila_progressive_rendering(tmp_path: Path) -> None:
    """The voila.json postBuild writes is one Voila's server extension reads (from a Jupyter
    config path) and sets progressive rendering, so long cells show their progress bars."""
    pytest.importorskip("voila", reason="needs voila (the app extra)")
    import subprocess
    import sys

    config = post_build_heredoc("VOILA_JSON")
    assert config["VoilaConfiguration"]["progressive_rendering"] is True
    text = (BINDER / "postBuild").read_text()
    assert '> "$prefix/etc/jupyter/voila.json"' in text  # sys.prefix's config dir
    (tmp_path / "voila.json").write_text(json.dumps(config))
    code = (
        "from voila.server_extension import load_config_file; "
        "from voila.configuration import VoilaConfiguration as V; "
        "c = V(config=load_config_file()); print(c.progressive_rendering, c.show_tracebacks)"
    )
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]
    for key in config["VoilaConfiguration"]:
        from voila.configuration import VoilaConfiguration

        assert key in VoilaConfiguration.class_traits(config=True), key


@pytest.mark.parametrize("doc", ["binder/README.md", "README.md", "docs/notebooks.md"])
def test_docs_link_the_quick_start_as_an_app_and_in_jupyterlab(doc: str) -> None:
    text = (REPO_ROOT / doc).read_text()
    for urlpath in (QUICKSTART_APP_URLPATH, QUICKSTART_URLPATH):
        links = re.findall(rf"{re.escape(BINDER_LINK)}\S*?\?{re.escape(urlpath)}", text)
        assert links, f"{doc} has no Binder link with ?{urlpath}"
    target = QUICKSTART_APP_URLPATH.split("voila/render/", 1)[1]
    assert (REPO_ROOT / target).is_file(), f"the app link points at missing {target}"


def test_post_build_sets_the_servers_websocket_ping_timeout(tmp_path: Path) -> None:
    """postBuild's merge script, run on an existing server config, keeps what is there and
    adds the ping timeout of ``richviz app``; jupyter_server (in a child process) reads it."""
    pytest.importorskip("jupyter_server", reason="needs jupyter_server")
    import subprocess
    import sys

    from richviz.app import VOILA_CONFIG

    body = re.search(r"<<'SERVER_PY'\n(.*?)\nSERVER_PY\n", (BINDER / "postBuild").read_text(), re.S)
    assert body, "postBuild: SERVER_PY heredoc not found"
    config = tmp_path / "config" / "jupyter_server_config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"ServerApp": {"tornado_settings": {"headers": {"X-A": "1"}}}}))
    subprocess.run([sys.executable, "-", str(config)], input=body.group(1), text=True, check=True)
    want = VOILA_CONFIG["Voila"]["tornado_settings"]["ws_ping_timeout"]
    merged = json.loads(config.read_text())["ServerApp"]["tornado_settings"]
    assert merged == {"headers": {"X-A": "1"}, "ws_ping_timeout": want}
    code = (
        "from jupyter_server.serverapp import ServerApp; a = ServerApp(); "
        "a.initialize(argv=['--ServerApp.open_browser=False', '--ServerApp.port=0']); "
        "print('PING', a.web_app.settings.get('ws_ping_timeout'))"
    )
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(config.parent),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert f"PING {want}" in out.stdout, out.stdout[-1000:] + out.stderr[-2000:]
