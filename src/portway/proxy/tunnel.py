"""Upgrade tunnel (WebSocket and other ``Connection: upgrade`` protocols).

The handshake is forwarded like any request; after the upstream's ``101`` the two connections
become a two-way byte pipe with flow control (a side whose peer cannot keep up stops reading).
Any other status is relayed as a normal response and the client connection closes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from portway.errors import UpstreamError
from portway.http.client import UpstreamConnection
from portway.http.relay import add_connection_field, no_body, without_framing
from portway.http.server import ServerConnection
from portway.http.wire import head_bytes
from portway.pipeline.context import RequestContext
from portway.proxy.exchange import take_exchange

if TYPE_CHECKING:
    from portway.proxy.forward import Forwarder
    from portway.runtime.graph import RouteRuntime, RuntimeGraph

_HIGH = 1024 * 1024


async def tunnel(
    ctx: RequestContext,
    rt: RouteRuntime,
    graph: RuntimeGraph,
    client: ServerConnection,
    forwarder: Forwarder,
) -> bool:
    resp = await forwarder.forward(ctx, rt, client)
    ctx.response = resp
    if resp.status != 101 or ctx.exchange is None:
        # not switching: send it as a normal response and close afterwards
        body = resp.body if isinstance(resp.body, bytes) else await resp.body.read_all(1 << 20)
        items = without_framing(resp.headers.raw())
        if not no_body(ctx.request.method, resp.status) or ctx.request.method == "HEAD":
            items.append((b"content-length", str(len(body)).encode()))
        add_connection_field(items, ctx.request, False)
        if no_body(ctx.request.method, resp.status):
            body = b""
        client.write(head_bytes(resp.status, resp.reason, items) + body)
        return False
    if rt.chain.on_response:
        await rt.chain.run_response(ctx)
    ex = take_exchange(ctx)
    assert ex is not None
    conn: UpstreamConnection = ex.detach()
    head = ex.head
    items = resp.headers.raw()
    client.write(head_bytes(101, resp.reason, items))
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ct = client.transport
    ut = conn.transport
    if ct is None or ut is None:
        conn.abort()
        ex.done()
        raise UpstreamError("connection lost during upgrade")

    def to_upstream(data: bytes) -> None:
        if not data:
            if not done.done():
                done.set_result(None)
            return
        ctx.bytes_in += len(data)
        ut.write(data)
        if ut.get_write_buffer_size() > _HIGH:
            ct.pause_reading()
            loop.call_later(0.01, _resume_when_drained, ut, ct)

    def to_client(data: bytes) -> None:
        if not data:
            if not done.done():
                done.set_result(None)
            return
        ctx.bytes_out += len(data)
        ct.write(data)
        if ct.get_write_buffer_size() > _HIGH:
            ut.pause_reading()
            loop.call_later(0.01, _resume_when_drained, ct, ut)

    eofs = {"client": False, "upstream": False}

    def half_close(side: str, dst: asyncio.Transport) -> None:
        eofs[side] = True
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
        if all(eofs.values()) and not done.done():
            done.set_result(None)

    loop = asyncio.get_running_loop()
    conn.tunnel = to_client
    client.tunnel = to_upstream
    client.tunnel_eof = lambda: half_close("client", ut)
    conn.tunnel_eof = lambda: half_close("upstream", ct)
    buffered = bytes(client.upgrade_buffer or b"")
    client.upgrade_buffer = None
    if buffered:
        to_upstream(buffered)
    if head.upgrade_tail:
        to_client(head.upgrade_tail)
    ct.resume_reading()
    try:
        await done
    finally:
        ex.done()
        conn.close()
        client.close()
    return False


def _resume_when_drained(dst: asyncio.Transport, src: asyncio.Transport) -> None:
    if dst.is_closing() or src.is_closing():
        return
    if dst.get_write_buffer_size() <= _HIGH // 4:
        src.resume_reading()
    else:
        asyncio.get_running_loop().call_later(0.01, _resume_when_drained, dst, src)
