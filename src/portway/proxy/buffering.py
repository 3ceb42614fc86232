"""``request_buffering``: read small request bodies whole before an upstream is involved.

A streamed request body holds an upstream connection for as long as the client takes to
send it: a client that stalls its body pins one upstream connection each (slow-body attacks
exhaust the upstream's connections this way). With ``request_buffering: {max: N}`` on a route
(or ``server.limits.request_buffering``), a body of at most N bytes is read whole *before* a
target is picked and a connection taken; the upstream then gets it at once, with a
Content-Length. A stalled client meets ``server.limits.body_timeout`` (408) having cost the
upstream nothing. Bodies that declare more than N bytes stream as without buffering; a
chunked body that turns out longer than N streams on after the N bytes already read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portway.http.body import BodyStream

if TYPE_CHECKING:
    from portway.http.server import ClientConnection
    from portway.pipeline.context import RequestContext


class _Prefixed(BodyStream):
    """The bytes already read, then the rest of the client's body stream."""

    __slots__ = ("_rest",)

    def __init__(self, parts: list[bytes], rest: BodyStream) -> None:
        super().__init__()
        for p in parts:
            self.feed(p)
        self._rest = rest

    async def read(self) -> bytes:
        if self._chunks:
            return self._pop()
        data = await self._rest.read()
        self.received += len(data)
        if not data:
            self.trailers = self._rest.trailers
            self._eof = True
        return data

    def read_nowait(self) -> bytes | None:
        if self._chunks:
            return self._pop()
        data = self._rest.read_nowait()
        if data is not None:
            self.received += len(data)
            if not data:
                self.trailers = self._rest.trailers
                self._eof = True
        return data


async def buffer_request_body(
    ctx: RequestContext, limit: int, client: ClientConnection | None = None
) -> None:
    """Replace ``ctx.upstream_request.body`` by the whole body when it is at most ``limit``
    bytes (errors reading it — a 408 body timeout, a 413, a client gone — propagate as
    they would from the streaming path, before any upstream was involved)."""
    req = ctx.request
    ureq = ctx.upstream_request
    body = ureq.body
    if body is None or (ureq.content_length is not None and ureq.content_length > limit):
        return
    if req.expect_continue and req.version != "1.0" and client is not None:
        # the client waits for this before sending its body; the forwarder must not send it
        # again later
        client.send_info(100, b"Continue", [])
        req.expect_continue = False
        ureq.expect_continue = False
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await body.read()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            # a chunked body longer than the limit: it streams on, read bytes first
            ureq.body = _Prefixed(parts, body)
            return
    whole = BodyStream.of(b"".join(parts))
    if body.trailers is not None:
        whole.trailers = body.trailers  # stays chunked, to carry them
    elif ureq.content_length is None:
        ureq.content_length = size
    ureq.body = whole
