"""``mock``: answer from configuration or from an OpenAPI document's examples."""

from __future__ import annotations

import orjson

from portway.errors import GatewayError
from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.mock.config import MockConfig
from portway.plugins.mock.openapi import OpenApiMocks, load_spec


class MockNotFoundError(GatewayError):
    status = 404
    code = "mock_not_found"


class MockPlugin(Plugin[MockConfig]):
    """Answers every request itself; nothing is sent upstream (a route bound to ``mock`` may
    have no ``upstream``). Without ``openapi``: ``status``, ``headers`` and ``body`` (a string
    as is, with ``text/plain`` unless a Content-Type is given; any other value as JSON). With
    ``openapi``: the example of the operation matching the request's method and path (see
    :class:`~portway.plugins.mock.openapi.OpenApiMocks`), or a 404 JSON error when the
    document has no such operation. ``headers`` apply to every answer. The spec is read once
    per config (reloads re-read it)."""

    name = "mock"
    stage = Stage.transform
    Config = MockConfig
    sync_hooks = True

    def __init__(self, config: MockConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._spec: OpenApiMocks | None = None
        if config.openapi is not None:
            self._spec = load_spec(config.openapi)
        body = config.body
        self._content_type = "application/json"
        if body is None:
            self._body = b""
        elif isinstance(body, str):
            self._body = body.encode()
            self._content_type = "text/plain; charset=utf-8"
        else:
            self._body = orjson.dumps(body)
        self._headers = [(k.lower().encode(), v.encode()) for k, v in config.headers.items()]
        self._has_type = any(k == b"content-type" for k, _ in self._headers)

    def _respond(self, status: int, content_type: str | None, body: bytes) -> Response:
        h = Headers(self._headers)
        if not self._has_type and content_type is not None and body:
            h.set("content-type", content_type)
        return Response(status, h, body)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        req = ctx.request
        if self._spec is None:
            return self._respond(self.config.status, self._content_type, self._body)
        answer = self._spec.find(req.method, req.path)
        if answer is None:
            raise MockNotFoundError(f"no operation {req.method} {req.path} in the mocked API")
        return self._respond(answer.status, answer.content_type, answer.body)
