"""Model factories from a name: ``torchvision:resnet18``, ``timm:vit_tiny_patch16_224``,
``module:function``, ``path/to/file.py:function``, or a Hugging Face ``config.json``.

A factory is a callable that builds a fresh, untrained model; richviz loads each checkpoint's
weights into it. No weights are ever downloaded: torchvision models are built with
``weights=None``, timm models with ``pretrained=False``, Hugging Face models from their local
``config.json``.

>>> make_factory("torchvision:resnet18", num_classes=10)()    # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from richviz.errors import ArgumentError, ArgumentTypeError, MissingDependencyError, ModelError

__all__ = ["ModelFactory", "check_factory", "hf_config_factory", "make_factory"]


class ModelFactory:
    """A named factory: ``ModelFactory("torchvision:resnet18", num_classes=10)()`` builds one.

    Its ``__qualname__`` holds the spec and the keyword arguments, so the metrics cache tells
    two factories apart by what they build.
    """

    def __init__(self, spec: str, build: Callable[..., nn.Module], kwargs: dict[str, Any]):
        self.spec, self.kwargs, self._build = spec, dict(kwargs), build
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        self.__qualname__ = f"ModelFactory({spec!r}{', ' + args if args else ''})"

    def __call__(self) -> nn.Module:
        return self._build(**self.kwargs)

    def __repr__(self) -> str:
        return self.__qualname__


def _torchvision(name: str) -> Callable[..., nn.Module]:
    import torchvision

    names = torchvision.models.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ArgumentError(f"factory='torchvision:{name}': no such torchvision model{hint}")

    def build(**kwargs: Any) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, **kwargs)

    return build


def _timm(name: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError:
        raise MissingDependencyError(
            f"factory='timm:{name}' needs the timm package (pip install timm)"
        ) from None
    if not timm.list_models(name):
        raise ArgumentError(f"factory='timm:{name}': no such timm architecture")

    def build(**kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, **kwargs)

    return build


def _user_callable(spec: str, module: str, attr: str) -> Callable[..., nn.Module]:
    """``module:function`` (importable module) or ``file.py:function`` (a file of the user's)."""
    if module.endswith(".py"):
        path = Path(module).expanduser()
        if not path.is_file():
            raise ArgumentError(f"factory={spec!r}: no such file {module}")
        mod_name = "richviz_user_factory_" + re.sub(r"\W", "_", path.stem)
        loader = importlib.util.spec_from_file_location(mod_name, path)
        if loader is None or loader.loader is None:
            raise ArgumentError(f"factory={spec!r}: cannot import {module}")
        mod = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = mod  # dataclasses and pickling look the module up by name
        loader.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ArgumentError(f"factory={spec!r}: cannot import {module} ({exc})") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ArgumentError(f"factory={spec!r}: {module} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ArgumentError(f"factory={spec!r}: {attr} is a {type(obj).__name__}, not callable")
    return obj


def make_factory(spec: str, **kwargs: Any) -> ModelFactory:
    """A factory from ``"torchvision:NAME"``, ``"timm:NAME"``, ``"module:function"`` or
    ``"file.py:function"``; ``kwargs`` go to the builder (e.g. ``num_classes=10``).

    Raises ``ArgumentError`` naming ``factory=`` for an unknown model or a malformed spec, and
    ``MissingDependencyError`` for ``timm:`` without timm installed.
    """
    if not isinstance(spec, str):
        raise ArgumentTypeError(f"factory= must be a string spec, got {type(spec).__name__}")
    head, sep, tail = spec.rpartition(":")
    if not sep or not head or not tail:
        raise ArgumentError(
            f"factory={spec!r} must be 'torchvision:NAME', 'timm:NAME', 'module:function' or "
            "'file.py:function'"
        )
    if head == "torchvision":
        build = _torchvision(tail)
    elif head == "timm":
        build = _timm(tail)
    else:
        build = _user_callable(spec, head, tail)
    return ModelFactory(spec, build, kwargs)


def hf_config_factory(folder: Path) -> ModelFactory:
    """A factory building the Hugging Face model that ``folder/config.json`` describes.

    The class is the config's first ``architectures`` entry, looked up in ``transformers``;
    the model is built from the local config (``from_config``-style, random weights).
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
        arch = config["architectures"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise ModelError(
            f"{path}: names no model class ('architectures'); pass factory= to build the model"
        ) from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(
            f"{path}: building {arch} needs the transformers package (pip install transformers)"
        ) from None
    cls = getattr(transformers, str(arch), None)
    if cls is None:
        raise ModelError(f"{path}: transformers has no class {arch!r}; pass factory=")
    try:
        config_obj = transformers.AutoConfig.from_pretrained(
            str(path.parent), local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot read the config ({exc}); pass factory=") from None

    def build() -> nn.Module:
        return cls(config_obj)

    return ModelFactory(f"huggingface:{arch}", build, {})


def check_factory(factory: Any, specs: bool = True) -> Callable[[], nn.Module]:
    """``factory`` as a callable: a spec string is resolved by :func:`make_factory` (with
    ``specs=False`` a string is refused like any other non-callable).

    Raises ``ModelError`` naming ``factory=`` for a model instance or a non-callable.
    """
    if isinstance(factory, str) and specs:
        return make_factory(factory)
    if isinstance(factory, nn.Module):
        name = type(factory).__name__
        raise ModelError(
            f"factory= got a model instance ({name}); pass a callable that builds a fresh "
            f"model, e.g. factory=lambda: {name}(...)"
        )
    if not callable(factory):
        raise ModelError(
            f"factory= must be a callable returning an nn.Module, got {type(factory).__name__}"
        )
    return factory
