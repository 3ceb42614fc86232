"""Request contexts for observability tests."""

from __future__ import annotations

from typing import Any

from portway.config.schema import RouteConfig
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.routing.router import RouteMatch


def make_ctx(
    method: str = "GET",
    path: str = "/x",
    *,
    route: str | None = "r",
    upstream: str | None = "u",
    status: int | None = 200,
    headers: list[tuple[str, str]] | None = None,
    query: bytes = b"",
    **extra: Any,
) -> RequestContext:
    req = Request(
        method=method,
        path=path,
        query=query,
        headers=Headers.from_pairs(headers or []),
        host="example.test",
        client_ip="10.0.0.1",
    )
    ctx = RequestContext(req, request_id="rid-1")
    if route is not None:
        ctx.match = RouteMatch(
            RouteConfig.model_validate({"name": route, "upstream": upstream}), 0, {}, "/", "/", 1
        )
    ctx.upstream_name = upstream
    if status is not None:
        ctx.response = Response(status=status)
    for k, v in extra.items():
        setattr(ctx, k, v)
    return ctx
