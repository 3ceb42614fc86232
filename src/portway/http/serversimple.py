"""A small HTTP/1.1 server on the same hardened framing as the gateway's listeners
(:func:`serve_simple`: the admin API, internal servers, tests). Re-exported by
``portway.http.server``; not on the gateway's request path (compiled with the other
``http`` modules because it subclasses the compiled :class:`App`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from portway.errors import GatewayError
from portway.http.flow import as_protocol
from portway.http.forwarded import TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import Limits, ServerLimits
from portway.http.models import Request, Response
from portway.http.serverapi import App
from portway.http.wire import head_bytes

if TYPE_CHECKING:
    from portway.http.server import ServerConnection

log: Final = logging.getLogger("portway.http")


class _SimpleApp(App):
    """Adapter serving ``handler(request) -> Response`` (admin API, small internal servers)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def handle(self, conn: ServerConnection, request: Request) -> bool:
        if request.expect_continue:
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            resp = await self.handler(request)
        except GatewayError as e:
            resp = Response(e.status, Headers.from_pairs(e.headers), e.body(None))
            resp.headers.set("content-type", "application/json")
        except Exception:
            log.exception("internal handler failed")
            err = GatewayError("internal error")
            resp = Response(500, Headers([(b"content-type", b"application/json")]), err.body(None))
        body_done = request.body is None or request.body.at_eof
        keep = (
            body_done
            and request.version == "1.1"
            and b"close" not in (request.headers.get_raw(b"connection") or b"").lower()
        )
        body = resp.body if isinstance(resp.body, bytes) else await resp.body.read_all()
        headers = [(k, v) for k, v in resp.headers.raw() if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        if not keep:
            headers = [(k, v) for k, v in headers if k != b"connection"]
            headers.append((b"connection", b"close"))
        conn.write(head_bytes(resp.status, resp.reason, headers))
        if request.method != "HEAD" and body:
            conn.write(body)
        return keep


async def serve_simple(
    handler: Callable[[Request], Awaitable[Response]],
    host: str,
    port: int,
    limits: ServerLimits | None = None,
    ssl: Any = None,
) -> asyncio.Server:
    """Serve ``handler`` on ``host:port`` with the same hardened HTTP/1.1 framing."""
    from portway.http.server import ServerConnection

    loop = asyncio.get_running_loop()
    app = _SimpleApp(handler)
    lim = limits or Limits(max_body_bytes=16 * 1024 * 1024)
    trusted = TrustedProxies([])
    return await loop.create_server(
        lambda: as_protocol(ServerConnection(app, lim, trusted, "https" if ssl else "http", loop)),
        host,
        port,
        ssl=ssl,
        reuse_address=True,
    )
