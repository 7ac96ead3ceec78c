"""Exceptions raised by richviz. Every message is one line that names the file or argument."""

from __future__ import annotations


class RichvizError(Exception):
    """Base class for richviz errors that are meant to be shown to a user as one line."""


class CheckpointError(RichvizError):
    """A run or checkpoint could not be read: truncated, foreign, unsafe, or mismatched."""


class DataError(RichvizError, ValueError):
    """A data set could not be found or does not fit the model."""


class ConfigError(RichvizError, ValueError):
    """A configuration (e.g. a Playground JSON file) is malformed or out of range."""
