"""``headers``: add / set / remove / rename request and response header fields."""

from __future__ import annotations

from pydantic import Field, field_validator

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage

_FORBIDDEN = {"content-length", "transfer-encoding", "connection", "host"}


class HeaderOps(PluginConfig):
    add: dict[str, str] = Field(default_factory=dict, description="append (keeps existing)")
    set: dict[str, str] = Field(default_factory=dict, description="replace or create")
    remove: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")

    @field_validator("add", "set")
    @classmethod
    def _values(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if k.lower() in _FORBIDDEN:
                raise ValueError(f"header {k!r} is managed by the gateway")
            if any(c in val for c in "\r\n\0"):
                raise ValueError(f"header {k!r}: value contains CR, LF or NUL")
            if not k or any(c in k for c in " :\t\r\n\0"):
                raise ValueError(f"invalid header name {k!r}")
        return v

    def apply(self, h: Headers) -> None:
        for old, new in self.rename.items():
            h.rename(old, new)
        for name in self.remove:
            h.remove(name)
        for k, v in self.set.items():
            h.set(k, v)
        for k, v in self.add.items():
            h.add(k, v)

    @property
    def empty(self) -> bool:
        return not (self.add or self.set or self.remove or self.rename)


class HeadersConfig(PluginConfig):
    request: HeaderOps = Field(default_factory=HeaderOps)
    response: HeaderOps = Field(default_factory=HeaderOps)


class HeadersPlugin(Plugin[HeadersConfig]):
    """Request edits apply to the upstream request; response edits to every response of the
    route, generated errors included."""

    name = "headers"
    stage = Stage.transform
    Config = HeadersConfig

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if not self.config.request.empty:
            self.config.request.apply(ctx.upstream_request.headers)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        if ctx.response is not None and not self.config.response.empty:
            self.config.response.apply(ctx.response.headers)
