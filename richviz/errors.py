"""Exceptions raised by richviz. Every message is one line that names the file or argument."""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "ModelError",
    "NonFiniteDataError",
    "NonFiniteError",
    "RichvizError",
    "RunError",
    "checkpoint_error",
    "one_line",
]


def one_line(text: object, limit: int = 300) -> str:
    """``text`` with all whitespace runs collapsed to one space, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RichvizError(Exception):
    """Base class for richviz errors that are meant to be shown to a user as one line."""


class ArgumentError(RichvizError, ValueError):
    """An argument's value is out of range or malformed; the message names the argument.

    Also a ``ValueError``, so code that catches ``ValueError`` keeps working.
    """


class ArgumentTypeError(RichvizError, TypeError):
    """An argument has the wrong type; the message names the argument (also a ``TypeError``)."""


class CheckpointError(RichvizError):
    """A run or checkpoint could not be read: truncated, foreign, unsafe, or mismatched."""


class RunError(CheckpointError):
    """A run folder or its manifest is invalid (the message names the file and the field)."""


def checkpoint_error(path: object, reason: str) -> CheckpointError:
    """The ``CheckpointError`` ``"<path>: <reason>"``, the reason on one line."""
    return CheckpointError(f"{path}: {one_line(reason)}")


class DataError(RichvizError, ValueError):
    """A data set could not be found or does not fit the model."""


class ModelError(RichvizError, TypeError, ValueError):
    """A user's model or model factory does not fit what richviz needs (names the argument)."""


class MissingDependencyError(RichvizError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class ConfigError(RichvizError, ValueError):
    """A configuration (e.g. a Playground JSON file) is malformed or out of range."""


class NonFiniteError(RichvizError, ValueError):
    """An input contains NaN or inf (often a diverged checkpoint); the message names the argument.

    Every public numerical function of richviz raises this same type for non-finite input.
    """


class NonFiniteDataError(NonFiniteError, DataError):
    """A data set (user arrays, a CSV file) holds NaN or inf: both a ``NonFiniteError``, like every
    other non-finite input, and a ``DataError``, like every other bad data set."""
