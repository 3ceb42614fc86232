"""Drives CachePlugin phases the way the data plane does (proxy/handler.py), without I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from portway.errors import GatewayError, UpstreamError
from portway.http.body import BodyStream
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginEnv
from portway.plugins.cache.config import CacheConfig
from portway.plugins.cache.directives import format_http_date
from portway.plugins.cache.plugin import CachePlugin

Handler = Callable[[Request], Awaitable[tuple[int, list[tuple[str, str]], bytes]]]


@dataclass
class Result:
    status: int
    headers: Headers
    body: bytes

    def h(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Upstream:
    """Scripted upstream: ``reply`` gives (status, headers, body); requests are recorded."""

    reply: Handler
    seen: list[Request] = field(default_factory=list)
    fail: BaseException | None = None

    async def __call__(self, req: Request) -> Response:
        self.seen.append(req)
        if self.fail is not None:
            raise self.fail
        status, headers, body = await self.reply(req)
        stream = BodyStream()
        # several chunks so the streaming copy is exercised
        for i in range(0, len(body), 3):
            stream.feed(body[i : i + 3])
        stream.feed_eof()
        return Response(status, Headers.from_pairs(headers), stream, upstream=True)

    @property
    def calls(self) -> int:
        return len(self.seen)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def date(self, offset: float = 0) -> str:
        return format_http_date(self.t + offset)


def make_plugin(
    clock: Clock | None = None, route: str | None = "r1", forward: Any = None, **cfg: Any
) -> CachePlugin:
    env = PluginEnv(route=route)
    if forward is not None:
        env.forward = forward
    p = CachePlugin(CacheConfig.model_validate(cfg), env)
    if clock is not None:
        p.clock = clock
    return p


def make_request(
    method: str = "GET",
    path: str = "/r",
    query: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    host: str = "example.com",
) -> Request:
    return Request(
        method=method, path=path, query=query, headers=Headers.from_pairs(headers or []), host=host
    )


async def run(
    plugin: CachePlugin,
    upstream: Upstream,
    method: str = "GET",
    path: str = "/r",
    headers: list[tuple[str, str]] | None = None,
    query: bytes = b"",
) -> Result:
    """One request through the plugin's phases, mirroring ProxyApp.handle/_send/_fail."""
    ctx = RequestContext(make_request(method, path, query, headers))
    try:
        try:
            resp = await plugin.on_request(ctx)
            if resp is None:
                resp = await upstream(ctx.upstream_request)
        except (TimeoutError, OSError) as e:
            raise UpstreamError("upstream failed") from e
        ctx.response = resp
        await plugin.on_response(ctx)
    except GatewayError as err:
        ctx.error = err
        alt = await plugin.on_error(ctx, err)
        if alt is None:
            alt = Response(
                err.status,
                Headers.from_pairs([("content-type", "application/json")]),
                err.body(None),
            )
        ctx.response = alt
        await plugin.on_response(ctx)
    final = ctx.response
    assert final is not None
    if isinstance(final.body, bytes):
        body = await plugin.on_response_chunk(ctx, final.body, True)
    else:
        parts = []
        while chunk := await final.body.read():
            parts.append(await plugin.on_response_chunk(ctx, chunk, False))
        parts.append(await plugin.on_response_chunk(ctx, b"", True))
        body = b"".join(parts)
    plugin.on_log(ctx)
    if method == "HEAD":
        body = b""
    return Result(final.status, final.headers, body)


def fixed(
    status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b"hello world"
) -> Handler:
    async def reply(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        return status, list(headers or []), body

    return reply
