"""Configuration of the ``identity_headers`` plugin."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from portway.pipeline.plugin import PluginConfig

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class IdentityHeadersConfig(PluginConfig):
    claims: dict[str, str] = Field(
        default_factory=dict,
        description="claim (dotted path into nested objects allowed) → upstream header, "
        "e.g. {sub: X-User-ID, role: X-User-Role}",
    )
    consumer_headers: bool = Field(
        True, description="also (re)set X-Consumer-ID, -Username, -Groups"
    )

    @field_validator("claims")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for claim, header in v.items():
            if not _TOKEN.match(header):
                raise ValueError(f"claim {claim!r}: {header!r} is not a valid header name")
        return v
