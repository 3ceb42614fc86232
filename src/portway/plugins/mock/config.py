"""Config of ``mock``."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins.mock.openapi import load_spec

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class MockConfig(PluginConfig):
    """A fixed answer (``status``, ``body``, ``headers``) or, with ``openapi``, the example
    of the requested operation in an OpenAPI 3.x file."""

    status: int = Field(200, ge=200, le=599, description="status of the fixed answer")
    body: Any = Field(
        None, description="a string is sent as is; anything else (mapping, list...) as JSON"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="response header fields")
    openapi: str | None = Field(
        None, description="OpenAPI 3.x file (YAML or JSON) whose examples are answered"
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not _TOKEN.match(k):
                raise ValueError(f"invalid header name {k!r}")
            if k.lower() in _FRAMING:
                raise ValueError(f"header {k!r} is set by the gateway")
            if _BAD_VALUE.search(val):
                raise ValueError(f"header {k!r}: value contains CR, LF, NUL or another CTL")
        return v

    @field_validator("openapi")
    @classmethod
    def _spec(cls, v: str | None) -> str | None:
        if v is not None:
            load_spec(v)  # a missing or broken file is a config error, not a runtime 500
        return v

    @model_validator(mode="after")
    def _exclusive(self) -> MockConfig:
        if self.openapi is not None and self.body is not None:
            raise ValueError("set `body` or `openapi`, not both")
        return self
