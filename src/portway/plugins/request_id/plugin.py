"""``request_id``: accept or generate ``X-Request-ID``, forward it, echo it on the response."""

from __future__ import annotations

import os
import re

from pydantic import Field

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage

_SAFE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdConfig(PluginConfig):
    header: str = Field("x-request-id", description="header carrying the id")
    trust_incoming: bool = Field(True, description="keep a well-formed id sent by the client")
    echo: bool = Field(True, description="add the id to the response")


class RequestIdPlugin(Plugin[RequestIdConfig]):
    """Sets ``ctx.request_id`` (used in error bodies and logs)."""

    name = "request_id"
    sync_hooks = True
    stage = Stage.edge
    Config = RequestIdConfig

    def __init__(self, config: RequestIdConfig, env: object) -> None:
        super().__init__(config, env)  # type: ignore[arg-type]
        self._h = config.header.lower().encode()

    async def on_request(self, ctx: RequestContext) -> Response | None:
        rid = ctx.request.headers.get_raw(self._h) if self.config.trust_incoming else None
        if rid is None or not _SAFE.match(rid):
            rid = os.urandom(16).hex().encode()
        ctx.request_id = rid.decode()
        h = ctx.upstream_request.headers
        _drop(h, self._h)
        h.add_raw(self._h, rid)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        if self.config.echo and ctx.response is not None and ctx.request_id:
            h = ctx.response.headers
            _drop(h, self._h)
            h.add_raw(self._h, ctx.request_id.encode())


def _drop(h: Headers, name: bytes) -> None:
    # a scan, and a rebuild of the list only when the field is there (rarely, upstream)
    for k, _ in h.raw():
        if k == name:
            h.remove(name)
            return
