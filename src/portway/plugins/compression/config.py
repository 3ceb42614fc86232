"""Config of ``compression``."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from portway.config.types import Size
from portway.pipeline.plugin import PluginConfig
from portway.plugins.compression.codecs import Algorithm, Level

_TYPE = re.compile(r"^(\*|[a-z0-9!#$&^_.+-]+)/[a-z0-9!#$&^_.+*-]+$")

DEFAULT_TYPES = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
]


def _default_algorithms() -> list[Algorithm]:
    return ["zstd", "br", "gzip"]


class CompressionConfig(PluginConfig):
    """Response compression negotiated with Accept-Encoding."""

    algorithms: list[Algorithm] = Field(
        default_factory=_default_algorithms,
        description="codings offered, in order of preference when the client weights "
        "several equally",
    )
    min_size: Size = Field(1024, description="bodies known to be smaller are sent as they are")
    types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TYPES),
        description="media types compressed (wildcards: text/*, application/*+json)",
    )
    level: Level | int = Field(
        "default",
        description="fastest | default | best (per algorithm), or 1-9 used for every algorithm",
    )

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[Algorithm]) -> list[Algorithm]:
        if not v:
            raise ValueError("list at least one of zstd, br, gzip")
        if len(set(v)) != len(v):
            raise ValueError("an algorithm is listed twice")
        return v

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        out = [t.strip().lower() for t in v]
        for t in out:
            if not _TYPE.match(t):
                raise ValueError(
                    f"invalid media type pattern {t!r} (e.g. text/*, application/json)"
                )
        return out

    @field_validator("level")
    @classmethod
    def _level(cls, v: Level | int) -> Level | int:
        if isinstance(v, int) and not 1 <= v <= 9:
            raise ValueError("a numeric level is 1 (fastest) to 9 (smallest)")
        return v
