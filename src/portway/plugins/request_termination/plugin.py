"""``request_termination``: answer with a fixed status and body (maintenance, stubs)."""

from __future__ import annotations

from pydantic import Field, field_validator

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage


class RequestTerminationConfig(PluginConfig):
    #: a final status only: 1xx would leave the client waiting for another response
    status: int = Field(503, ge=200, le=599, description="status of the answer")
    body: str | None = Field(None, description="raw body; default: a JSON error body")
    content_type: str = Field("application/json", description="Content-Type of `body`")
    message: str = Field("service unavailable", description="message of the default JSON body")

    @field_validator("content_type")
    @classmethod
    def _field_value(cls, v: str) -> str:
        # a CR/LF here would inject header fields into every answer
        if not v or any(c in v for c in "\r\n\0") or v != v.strip():
            raise ValueError("must be a single-line header value, e.g. 'text/plain'")
        return v


class RequestTerminationPlugin(Plugin[RequestTerminationConfig]):
    """Answers every request it sees with the configured status and body; nothing is sent
    upstream. Without ``body`` the answer is the gateway's JSON error shape (code
    ``terminated``) carrying the request id."""

    name = "request_termination"
    sync_hooks = True
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
