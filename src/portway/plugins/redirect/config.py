"""Config of ``redirect``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from portway.pipeline.plugin import PluginConfig

#: placeholders a ``to`` template may use
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PARAM = re.compile(r"^params\.[A-Za-z_][A-Za-z0-9_]*$")


class RedirectConfig(PluginConfig):
    """Either ``https: true`` (plain-HTTP requests go to the same URL over https) or ``to``
    (a URL template: ``{path}``, ``{query}``, ``{host}``, ``{params.NAME}``)."""

    https: bool = Field(False, description="redirect http requests to https, same host/path/query")
    https_port: int | None = Field(
        None, ge=1, le=65535, description="port of the https URL (default: the host's, no port)"
    )
    to: str | None = Field(
        None, description='target template, e.g. "https://new.example.com{path}"'
    )
    status: Literal[301, 302, 303, 307, 308] = Field(308, description="redirect status")
    keep_query: bool = Field(
        True, description="append the request's query when `to` does not place {query} itself"
    )

    @field_validator("to")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or not v.isascii() or any(c in v for c in "\r\n\0 \t"):
            raise ValueError(
                "must be a non-empty ASCII URL without spaces or control characters "
                "(percent-encode anything else)"
            )
        rest = _PLACEHOLDER.sub("", v)
        if "{" in rest or "}" in rest:
            raise ValueError("unbalanced { } in template")
        for name in _PLACEHOLDER.findall(v):
            if name not in ("path", "query", "host") and not _PARAM.match(name):
                raise ValueError(
                    f"unknown placeholder {{{name}}}: use {{path}}, {{query}}, {{host}}, "
                    "{params.NAME}"
                )
        return v

    @model_validator(mode="after")
    def _one(self) -> RedirectConfig:
        if self.https == (self.to is not None):
            raise ValueError("set exactly one of `https: true` or `to`")
        if self.https_port is not None and not self.https:
            raise ValueError("https_port only applies with `https: true`")
        return self
