"""The run manifest (``run.json``): schema validation and paths that stay inside the run folder.

Storage only: no numerics imports. Every error is a one-line :class:`richviz.errors.RunError`
that names the manifest file and the offending field, e.g.
``runs/x/run.json: field 'checkpoints' must be a list, got int 5``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from richviz.errors import RunError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_ITEMS",
    "MAX_PARAMETERS",
    "MAX_POINTS",
    "MAX_SIZE",
    "check_request",
    "inside",
    "member_path",
    "validate_manifest",
]

MANIFEST = "run.json"
FORMAT = "richviz-run"
FORMAT_VERSION = 1
#: what an architecture or data spec may request before anything is built (one budget, checked
#: by :func:`check_request`): values in its kwargs (list items counted, nested included) ...
MAX_ITEMS = 1024
#: ... any integer in them (a width, a count, a size) ...
MAX_SIZE = 2**24
#: ... the data points a data set spec asks to generate (``n``; ``p * p`` for modular addition;
#: the same cap as :data:`richviz.datasets.MAX_POINTS`) ...
MAX_POINTS = 20000
#: ... and the parameters the architecture holds (counted on the ``meta`` device, no memory).
MAX_PARAMETERS = 10**9
_STR_FIELDS = ("preset", "description", "device", "torch", "created", "factory")


def _kind(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Checker:
    def __init__(self, path: Path | str):
        self.path = path

    def fail(self, field: str, what: str, value: Any) -> RunError:
        return RunError(f"{self.path}: field {field!r} {what}, got {_kind(value)}")

    def mapping(self, field: str, v: Any, optional: bool = True) -> dict[str, Any]:
        if v is None and optional:
            return {}
        if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
            raise self.fail(field, "must be a JSON object" + (" or null" if optional else ""), v)
        return dict(v)

    def string(self, field: str, v: Any, optional: bool = True) -> None:
        if v is None and optional:
            return
        if not isinstance(v, str) or (not optional and not v):
            raise self.fail(field, "must be a string", v)

    def no_negative(self, field: str, v: Any) -> None:
        """Sizes in architecture kwargs: a negative integer anywhere is refused."""
        if _is_int(v) and v < 0:
            raise self.fail(field, "must not be negative", v)
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(field, "must be finite", v)
        if isinstance(v, list):
            for i, x in enumerate(v):
                self.no_negative(f"{field}[{i}]", x)
        elif isinstance(v, Mapping):
            for k, x in v.items():
                self.no_negative(f"{field}.{k}", x)


def _walk(c: _Checker, field: str, v: Any, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_ITEMS:
        raise c.fail(field, f"asks for more than {MAX_ITEMS} values (the bound on a spec)", v)
    if _is_int(v) and abs(v) > MAX_SIZE and not field.endswith("seed"):
        raise c.fail(field, f"must be at most {MAX_SIZE} (the bound on a size in a spec)", v)
    if isinstance(v, list):
        for i, x in enumerate(v):
            _walk(c, f"{field}[{i}]", x, count)
    elif isinstance(v, Mapping):
        for k, x in v.items():
            _walk(c, f"{field}.{k}", x, count)


def check_request(kind: str, spec: Mapping[str, Any], path: Path | str) -> None:
    """Refuse a spec asking for more than the budget, before anything is built.

    ``kind`` is ``"architecture"`` or ``"data"``; ``spec`` its ``{"name", "kwargs"}``. At most
    :data:`MAX_ITEMS` values in ``kwargs``, every integer but a seed at most :data:`MAX_SIZE`,
    and a data spec at most :data:`MAX_POINTS` points. Raises ``RunError`` naming ``path`` and
    the field
    (the parameter count, :data:`MAX_PARAMETERS`, is checked when the template is built).
    """
    c = _Checker(path)
    kwargs = spec.get("kwargs") or {}
    _walk(c, f"{kind}.kwargs", kwargs, [0])
    if kind != "data" or not isinstance(kwargs, Mapping):
        return
    n, p = kwargs.get("n"), kwargs.get("p")
    if _is_int(n) and n > MAX_POINTS:
        raise c.fail("data.kwargs.n", f"must be at most {MAX_POINTS} (points a spec may ask)", n)
    if _is_int(p) and p * p > MAX_POINTS:
        raise c.fail(
            "data.kwargs.p", f"asks for p * p > {MAX_POINTS} points (the bound on a spec)", p
        )


def member_path(name: Any, field: str, manifest_path: Path | str) -> PurePosixPath:
    """``name`` as a relative path that cannot leave its folder (no ``..``, not absolute).

    Raises ``RunError`` naming ``field`` for an absolute path, a drive, ``..``, a NUL byte or
    an empty name.
    """
    if not isinstance(name, str) or not name:
        raise RunError(f"{manifest_path}: field {field!r} must be a file name, got {_kind(name)}")
    rel = PurePosixPath(name)
    win = PureWindowsPath(name)
    if (
        "\x00" in name
        or rel.is_absolute()
        or win.is_absolute()
        or win.drive
        or ".." in rel.parts
        or ".." in win.parts
        or not rel.parts
        or rel.parts == (".",)
    ):
        raise RunError(
            f"{manifest_path}: field {field!r} = {name!r} is outside the run folder; "
            "checkpoint files must be inside it"
        )
    return rel


def inside(folder: Path, path: Path) -> bool:
    """True when ``path`` (after resolving symbolic links) lies inside ``folder``."""
    try:
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(folder))
    except (OSError, ValueError):
        return False
    return real == root or root in real.parents


def _data_file(name: Any, manifest_path: Path | str) -> None:
    """A manifest's CSV ``path``: a relative path inside the run folder, else a ``RunError``."""
    try:
        member_path(name, "data.kwargs.path", manifest_path)
    except RunError:
        raise RunError(
            f"{manifest_path}: field 'data.kwargs.path' = {str(name)[:80]!r} is outside the "
            "run folder; a run's data file must be inside it"
        ) from None


def validate_manifest(
    obj: Any, path: Path | str, require_architecture: bool = True
) -> dict[str, Any]:
    """Check a parsed ``run.json`` and return it; raise ``RunError`` naming the bad field.

    Checked: ``format`` is ``"richviz-run"``; ``version`` an integer <= ``FORMAT_VERSION``;
    ``architecture`` an object with a string ``name``, an object ``kwargs`` without negative
    integers and ``alpha`` null or a finite number > 0; ``data`` null or an object with a string
    ``name`` and object ``kwargs`` (a ``csv`` file's ``path`` inside the run folder); both
    specs within the budget of :func:`check_request`; ``checkpoints`` a list of objects with
    an integer ``step >= 0``, a ``file`` inside the run folder and an object ``meta``; ``seed``
    an integer
    or null; ``hparams`` an object; ``complete`` a boolean; text fields strings.
    """
    c = _Checker(path)
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise RunError(f"{path}: not a richviz run manifest (no 'format': {FORMAT!r})")
    m = dict(obj)
    version = m.get("version", 0)
    if not _is_int(version):
        raise c.fail("version", "must be an integer", version)
    if not 0 <= version <= FORMAT_VERSION:
        raise RunError(
            f"{path}: manifest version {version!r} is not one this richviz understands "
            f"(0 to {FORMAT_VERSION})"
        )
    arch = m.get("architecture")
    if arch is not None or require_architecture:
        arch = c.mapping("architecture", arch, optional=False)
        c.string("architecture.name", arch.get("name"), optional=False)
        kwargs = c.mapping("architecture.kwargs", arch.get("kwargs"))
        c.no_negative("architecture.kwargs", kwargs)
        check_request("architecture", arch, path)
        alpha = arch.get("alpha")
        if alpha is not None and not (
            isinstance(alpha, (int, float))
            and not isinstance(alpha, bool)
            and math.isfinite(alpha)
            and alpha > 0
        ):
            raise c.fail("architecture.alpha", "must be null or a finite number > 0", alpha)
    data = m.get("data")
    if data is not None:
        data = c.mapping("data", data, optional=False)
        c.string("data.name", data.get("name"), optional=False)
        dkw = c.mapping("data.kwargs", data.get("kwargs"))
        check_request("data", data, path)
        if data["name"] == "csv" and dkw.get("path") is not None:
            _data_file(dkw["path"], path)
    entries = m.get("checkpoints", [])
    if not isinstance(entries, list):
        raise c.fail("checkpoints", "must be a list", entries)
    for i, e in enumerate(entries):
        field = f"checkpoints[{i}]"
        e = c.mapping(field, e, optional=False)
        step = e.get("step")
        if not _is_int(step) or step < 0:
            raise c.fail(f"{field}.step", "must be an integer >= 0", step)
        member_path(e.get("file"), f"{field}.file", path)
        c.mapping(f"{field}.meta", e.get("meta"))
    seed = m.get("seed")
    if seed is not None and not _is_int(seed):
        raise c.fail("seed", "must be an integer or null", seed)
    c.mapping("hparams", m.get("hparams"))
    complete = m.get("complete")
    if complete is not None and not isinstance(complete, bool):
        raise c.fail("complete", "must be true or false", complete)
    for name in _STR_FIELDS:
        c.string(name, m.get(name))
    return m
