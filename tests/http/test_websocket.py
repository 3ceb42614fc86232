"""WebSocket through the upgrade tunnel, driven by the ``websockets`` library on both ends:
large and fragmented messages both ways, closes from either side, a refused upgrade, and
control frames (ping/pong) crossing the tunnel untouched."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from tests.helpers import free_port, run_gateway, simple_config
from tests.http.adv_helpers import exchange, parse_responses


@asynccontextmanager
async def _ws_gateway(handler, **kw):  # type: ignore[no-untyped-def]
    port = free_port()
    async with serve(handler, "127.0.0.1", port, max_size=None, **kw) as server:
        async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
            yield server, gw


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


async def test_large_binary_and_text_echo() -> None:
    async with _ws_gateway(_echo) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws", max_size=None) as ws:
            blob = os.urandom(4 * 1024 * 1024)
            await ws.send(blob)
            assert await ws.recv() == blob
            text = "é" * 500_000
            await ws.send(text)
            assert await ws.recv() == text
            # many small messages in flight at once keep their order
            for i in range(200):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(200)] == [f"m{i}" for i in range(200)]


async def test_fragmented_messages_both_ways() -> None:
    async def fragmenting_echo(ws: ServerConnection) -> None:
        async for msg in ws:
            assert isinstance(msg, bytes)
            # answer with the message split into 64 KiB continuation frames
            await ws.send([msg[i : i + 65536] for i in range(0, len(msg), 65536)])

    async with _ws_gateway(fragmenting_echo) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws", max_size=None) as ws:
            parts = [os.urandom(n) for n in (1, 1000, 70_000, 300_000, 0, 5)]
            await ws.send(parts)
            assert await ws.recv() == b"".join(parts)
            async with asyncio.timeout(5):
                frags = [f async for f in _fragments(ws)]
            assert len(frags) >= 2  # fragmentation survives the tunnel
            assert b"".join(frags) == b"a" * 200_000 + b"b" * 200_000


async def _fragments(ws: websockets.ClientConnection) -> AsyncIterator[bytes]:
    await ws.send([b"a" * 200_000, b"b" * 200_000])
    async for frag in ws.recv_streaming():
        assert isinstance(frag, bytes)
        yield frag


async def test_client_close_reaches_upstream() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for msg in ws:
                await ws.send(msg)
        finally:
            closed.set_result((ws.close_code, ws.close_reason))

    async with _ws_gateway(handler) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await ws.close(4000, "client bye")
            assert ws.close_code == 4000  # the upstream's close echo came back
        assert await asyncio.wait_for(closed, 3) == (4000, "client bye")


async def test_upstream_close_reaches_client() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(1001, "going away")

    async with _ws_gateway(handler) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            assert await ws.recv() == "last words"
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 3)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "going away")


async def test_upstream_drops_tcp_client_sees_abnormal_close() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("bye")
        ws.transport.abort()

    async with _ws_gateway(handler) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            assert await ws.recv() == "bye"
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 3)
            assert info.value.rcvd is None  # no close frame: 1006, never a fabricated 1000


async def test_upstream_refuses_upgrade_403_relayed_and_closed() -> None:
    def refuse(conn: ServerConnection, req: WsRequest) -> WsResponse:
        return conn.respond(403, "no sockets for you\n")

    async with _ws_gateway(_echo, process_request=refuse) as (_, gw):
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{gw.port}/ws"):
                pass
        assert info.value.response.status_code == 403
        assert info.value.response.body == b"no sockets for you\n"
        # on the wire: the 403 and its body, then the connection closes; bytes the client sent
        # after the handshake are never interpreted
        out, closed = await exchange(
            gw.port,
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            b"\x81\x85\x00\x00\x00\x00hello",
        )
        (r,) = parse_responses(out)
        assert r.status == 403 and r.complete and r.body == b"no sockets for you\n"
        assert r.header(b"connection") == b"close"
        assert closed


async def test_ping_pong_cross_the_tunnel() -> None:
    server_pongs: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        latency = await (await ws.ping(b"from-upstream"))
        server_pongs.append(latency)
        await _echo(ws)

    async with _ws_gateway(handler) as (_, gw):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            pong = await ws.ping(b"from-client")
            await asyncio.wait_for(pong, 3)  # the upstream answered our ping through the tunnel
            await ws.send("after ping")
            assert await ws.recv() == "after ping"
        assert len(server_pongs) == 1  # the client's automatic pong reached the upstream


async def test_many_concurrent_tunnels() -> None:
    async with _ws_gateway(_echo) as (_, gw):

        async def one(i: int) -> None:
            async with connect(f"ws://127.0.0.1:{gw.port}/ws/{i}") as ws:
                for j in range(20):
                    await ws.send(f"{i}:{j}")
                    assert await ws.recv() == f"{i}:{j}"

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(30))), 20)
        # every tunnel released its connections: a plain request still works
        out, _ = await exchange(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_responses(out)[0].status in (400, 404, 426)
