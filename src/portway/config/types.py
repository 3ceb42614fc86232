"""Value types used in the config: durations (``250ms``, ``2s``, ``1m``) and sizes (``8MB``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d)?\s*$")
_DUR_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$", re.I)
_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_duration(v: Any) -> float:
    """Seconds from ``"250ms"``, ``"2s"``, ``"1m"``, ``"1h"`` or a bare number of seconds."""
    if isinstance(v, bool):
        raise ValueError("a duration such as 250ms, 2s or 1m is required")
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("duration must not be negative")
        return float(v)
    if isinstance(v, str):
        m = _DUR.match(v)
        if m:
            return float(m.group(1)) * _DUR_UNITS[m.group(2) or "s"]
    raise ValueError(f"invalid duration {v!r}: use e.g. 250ms, 2s, 1m, 1h")


def parse_size(v: Any) -> int:
    """Bytes from ``"8MB"``, ``"256KiB"`` or a bare integer (binary multiples)."""
    if isinstance(v, bool):
        raise ValueError("a size such as 8MB is required")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("size must not be negative")
        return v
    if isinstance(v, str):
        m = _SIZE.match(v)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f"invalid size {v!r}: use e.g. 512KB, 8MB, 1GB")


def _fmt_duration(v: float) -> str:
    if v and v < 1:
        return f"{round(v * 1000, 3):g}ms"
    return f"{v:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(_fmt_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(us|ms|s|m|h|d)?$"}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([kmgKMG][iI]?[bB]?|[bB])?$"},
            ]
        }
    ),
]

TlsVersion = Literal["1.2", "1.3"]


class Model(BaseModel):
    """Base of the config models: frozen, unknown keys rejected, fields settable by name."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
