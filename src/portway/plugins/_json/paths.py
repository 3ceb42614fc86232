"""The JSON-path syntax of the transformers and aggregation (``items[*].secret``).

It lives in :mod:`portway.config.jsonpath` because the configuration validates paths at
load (aggregate field filters), and config sits below plugins in the layers; plugins import
it from here as before."""

from __future__ import annotations

from portway.config.jsonpath import (
    JsonPath,
    PathError,
    Step,
    move,
    parse,
    remove,
    rename,
    select,
    set_value,
)

__all__ = [
    "JsonPath",
    "PathError",
    "Step",
    "move",
    "parse",
    "remove",
    "rename",
    "select",
    "set_value",
]
