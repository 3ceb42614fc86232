"""``headers``: add / set / remove / rename request and response header fields."""

from __future__ import annotations

from pydantic import Field, field_validator

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage
from portway.plugins._transform.headers import BAD_VALUE, check_name


class HeaderOps(PluginConfig):
    """Edits applied in this order: rename, remove, set, add. Names are case-insensitive."""

    add: dict[str, str] = Field(default_factory=dict, description="append (keeps existing)")
    set: dict[str, str] = Field(default_factory=dict, description="replace or create")
    remove: list[str] = Field(default_factory=list, description="delete every field of a name")
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")

    @field_validator("add", "set")
    @classmethod
    def _values(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            check_name(k)
            if BAD_VALUE.search(val):
                raise ValueError(f"header {k!r}: value contains CR, LF, NUL or another CTL")
        return v

    @field_validator("remove")
    @classmethod
    def _removed(cls, v: list[str]) -> list[str]:
        for k in v:
            check_name(k)
        return v

    @field_validator("rename")
    @classmethod
    def _renamed(cls, v: dict[str, str]) -> dict[str, str]:
        for old, new in v.items():
            check_name(old)
            check_name(new)
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
    request: HeaderOps = Field(default_factory=HeaderOps, description="edits sent upstream")
    response: HeaderOps = Field(default_factory=HeaderOps, description="edits to the response")


class HeadersPlugin(Plugin[HeadersConfig]):
    """Request edits apply to the upstream request (the client's request is untouched).
    Response edits apply to every response of the route once this plugin's ``on_request``
    ran: upstream responses, gateway errors (502, 504, ...) and answers from plugins after it.
    An answer from a plugin that runs before it (an authn rejection) does not pass through it,
    as with Envoy's local replies; errors raised before any plugin ran (no route) do."""

    name = "headers"
    sync_hooks = True
    stage = Stage.transform
    Config = HeadersConfig

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if not self.config.request.empty:
            self.config.request.apply(ctx.upstream_request.headers)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        if ctx.response is not None and not self.config.response.empty:
            self.config.response.apply(ctx.response.headers)
