"""``request_termination``: answer with a fixed status and body (maintenance, stubs)."""

from __future__ import annotations

from pydantic import Field

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage


class RequestTerminationConfig(PluginConfig):
    status: int = Field(503, ge=100, le=599)
    body: str | None = Field(None, description="raw body; default: a JSON error body")
    content_type: str = Field("application/json")
    message: str = Field("service unavailable", description="message of the default JSON body")


class RequestTerminationPlugin(Plugin[RequestTerminationConfig]):
    name = "request_termination"
    stage = Stage.edge
    Config = RequestTerminationConfig

    async def on_request(self, ctx: RequestContext) -> Response | None:
        c = self.config
        if c.body is not None:
            h = Headers()
            h.set("content-type", c.content_type)
            return Response(c.status, h, c.body.encode())
        return Response.json(
            c.status,
            {
                "error": c.message,
                "code": "terminated",
                "status": c.status,
                "request_id": ctx.request_id or None,
            },
        )
