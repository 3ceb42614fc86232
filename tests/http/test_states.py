"""The connection state machines (``http/serverstate.py``, ``http/clientstate.py``): every
transition of both tables is taken by real sockets against a real gateway and upstream, and
none outside them (the HTTP tests run strict: an illegal one raises)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from portway.http import clientstate as C
from portway.http import serverstate as S
from portway.http.serverstate import TRACE, IllegalTransitionError, table
from tests.helpers import run_gateway, simple_config

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Upstream:
    """A raw HTTP/1.1 upstream answering by path; ``release`` lets ``/slow`` answer and
    ``poke`` sends garbage on the connection that answered ``/later``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.poke = asyncio.Event()
        self.port = 0

    async def conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0]
                path = line.split(b" ")[1]
                for field in head.lower().split(b"\r\n"):
                    if field.startswith(b"content-length:"):
                        await r.readexactly(int(field.split(b":")[1]))
                if path == b"/slow":
                    await self.release.wait()
                    w.write(OK)
                elif path == b"/garbage":
                    w.write(b"NOT HTTP AT ALL\r\n\r\n")
                elif path == b"/closehead":
                    return
                elif path == b"/midbody":
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                    await w.drain()
                    return
                elif path == b"/badchunk":
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                elif path == b"/extra":
                    w.write(OK + b"HTTP/1.1 200 OK\r\n")
                elif path == b"/later":
                    w.write(OK)
                    await w.drain()
                    await self.poke.wait()
                    w.write(b"unsolicited\r\n\r\n")
                elif path == b"/bye":
                    w.write(OK)
                    await w.drain()
                    return
                elif path == b"/ws":
                    w.write(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n"
                    )
                    await w.drain()
                    await r.read()  # until the gateway closes the tunnel
                    return
                else:
                    w.write(OK)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


@asynccontextmanager
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    server = await asyncio.start_server(up.conn, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()


async def _until(cond: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not cond():
            await asyncio.sleep(0.005)
    assert cond(), what


class Client:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.w.write(data)
        await self.w.drain()

    async def response(self) -> bytes:
        """One response with a Content-Length body."""
        async with asyncio.timeout(10):
            head = await self.r.readuntil(b"\r\n\r\n")
            n = 0
            for field in head.lower().split(b"\r\n"):
                if field.startswith(b"content-length:"):
                    n = int(field.split(b":")[1])
            return head + await self.r.readexactly(n)

    async def closed(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.r.read()

    def reset(self) -> None:
        """Close with an RST (no FIN: the server sees no EOF)."""
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.w.close()


def _get(path: str, extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n".encode() + extra + b"\r\n"


def _post(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".encode()


async def test_every_transition_of_both_tables_is_taken_by_real_sockets() -> None:
    seen: set[tuple[int, int]] = set()
    seen_up: set[tuple[int, int]] = set()
    TRACE.seen, TRACE.seen_up = seen, seen_up
    try:
        async with upstream() as up:
            cfg = simple_config(f"http://127.0.0.1:{up.port}")
            cfg["upstreams"]["u"]["retries"] = {"attempts": 1}
            cfg["server"] = {"limits": {"header_timeout": 0.3}}
            async with run_gateway(cfg) as gw:
                await _scenarios(gw.port, up, seen, seen_up)
                await _until(lambda: (S.CLOSING, S.CLOSED) in seen, "closes are told")
    finally:
        TRACE.seen = TRACE.seen_up = None
    missing = table(S.NEXT) - seen
    assert not missing, [(S.NAMES[a], S.NAMES[b]) for a, b in sorted(missing)]
    missing_up = table(C.NEXT) - seen_up
    assert not missing_up, [(C.NAMES[a], C.NAMES[b]) for a, b in sorted(missing_up)]


async def _scenarios(
    port: int, up: Upstream, seen: set[tuple[int, int]], seen_up: set[tuple[int, int]]
) -> None:
    # HEAD -> FAST -> IDLE (warm pool); IDLE -> FAST; FAST -> FAST (pipelined);
    # upstream CONNECTING -> IDLE -> HEAD -> BODY -> DONE -> IDLE
    c = await Client.open(port)
    await c.send(_get("/"))
    assert b" 200 " in await c.response()
    await c.send(_get("/") + _get("/"))
    assert b" 200 " in await c.response()
    assert b" 200 " in await c.response()
    # IDLE -> HEAD (an incomplete head) -> TASK (a body) -> IDLE
    await c.send(b"POST / HTTP/1.1\r\nHost: t\r\n")
    await _until(lambda: (S.IDLE, S.HEAD) in seen, "partial head")
    await c.send(b"Content-Length: 3\r\n\r\nabc")
    assert b" 200 " in await c.response()
    # IDLE -> TASK directly (a whole head with a body); FAST -> TASK (pipelined: the
    # second one has a body); FAST -> CLOSING (Connection: close on the task-free path)
    await c.send(_post("/"))
    assert b" 200 " in await c.response()
    await c.send(_get("/") + _post("/"))
    assert b" 200 " in await c.response()
    assert b" 200 " in await c.response()
    await c.send(_get("/", b"Connection: close\r\n"))
    assert b" 200 " in await c.closed()

    # TASK -> CLOSING (Connection: close on the task); IDLE -> CLOSING (EOF when idle)
    c = await Client.open(port)
    await c.send(_post("/") + _post("/")[:-3] + b"Connection: close\r\n\r\n")
    c2 = await Client.open(port)
    await c2.send(_get("/"))
    assert b" 200 " in await c2.response()
    c2.w.write_eof()
    assert await c2.closed() == b""
    # HEAD -> CLOSING: EOF before any request; header timeout
    c3 = await Client.open(port)
    c3.w.write_eof()
    assert await c3.closed() == b""
    c4 = await Client.open(port)
    await c4.send(b"GET / HTTP/1.1\r\n")
    assert b" 408 " in await c4.closed()
    # HEAD -> H2 (h2c prior knowledge)
    c5 = await Client.open(port)
    await c5.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    async with asyncio.timeout(10):
        assert (await c5.r.readexactly(9))[3] == 0x4  # the server's SETTINGS
    c5.w.close()
    # HEAD -> CLOSED, IDLE -> CLOSED: resets
    c6 = await Client.open(port)
    await c6.send(b"GET / HT")
    c6.reset()
    c7 = await Client.open(port)
    await c7.send(_get("/"))
    assert b" 200 " in await c7.response()
    c7.reset()
    # FAST -> CLOSED (reset while the upstream holds the response back); TASK -> CLOSED
    c8 = await Client.open(port)
    await c8.send(_get("/slow"))
    await _until(lambda: (S.IDLE, S.FAST) in seen, "fast")
    c9 = await Client.open(port)
    await c9.send(_post("/slow"))
    n_closed = len([1 for t in seen if t[1] == S.CLOSED])
    c8.reset()
    c9.reset()
    await _until(
        lambda: {(S.FAST, S.CLOSED), (S.TASK, S.CLOSED)} <= seen,
        f"resets while serving ({n_closed})",
    )
    up.release.set()

    # upstream failures: HEAD -> BROKEN (invalid head), HEAD -> CLOSED (closed, no head),
    # BODY -> CLOSED (closed mid-body), BODY -> BROKEN (bad chunk), DONE -> BROKEN (bytes
    # after the response), IDLE -> BROKEN (unsolicited bytes to a pooled connection),
    # IDLE -> CLOSED (the upstream closes a pooled one), DONE -> CLOSED (a tunnel ends)
    for path in ("/garbage", "/closehead", "/midbody", "/badchunk", "/extra"):
        c = await Client.open(port)
        await c.send(_get(path, b"Connection: close\r\n"))
        await c.closed()
    c = await Client.open(port)
    await c.send(_get("/later"))
    assert b" 200 " in await c.response()
    up.poke.set()
    await _until(lambda: (C.IDLE, C.BROKEN) in seen_up, "unsolicited")
    await c.send(_get("/bye"))
    assert b" 200 " in await c.response()
    await _until(lambda: (C.IDLE, C.CLOSED) in seen_up, "pooled close")
    ws = (
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    c = await Client.open(port)
    await c.send(ws)
    async with asyncio.timeout(10):
        assert b" 101 " in await c.r.readuntil(b"\r\n\r\n")
    c.w.close()
    await _until(lambda: (C.DONE, C.CLOSED) in seen_up, "tunnel end")


def test_an_illegal_transition_raises_when_strict() -> None:
    from portway.http.client import UpstreamConnection
    from portway.http.forwarded import TrustedProxies
    from portway.http.limits import Limits
    from portway.http.server import App, ServerConnection

    loop = asyncio.new_event_loop()
    try:
        conn = ServerConnection(App(), Limits(), TrustedProxies([]), loop=loop)
        assert conn.state == S.HEAD
        with pytest.raises(IllegalTransitionError, match="HEAD -> IDLE"):
            conn._to(S.IDLE)
        conn._to(S.CLOSED)
        assert conn.closed and conn.closing
        with pytest.raises(IllegalTransitionError, match="CLOSED -> HEAD"):
            conn._to(S.HEAD)
        up = UpstreamConnection(loop)
        assert up.state == C.CONNECTING and up.message_done
        with pytest.raises(IllegalTransitionError, match="CONNECTING -> BODY"):
            up._to(C.BODY)
    finally:
        loop.close()


async def test_a_body_under_way_when_its_owner_closes_the_connection_is_failed() -> None:
    """A reader of the response body is told when the connection goes away, also when the
    exchange's owner closed it (state CLOSED from BODY), not left waiting."""
    from portway.http.client import UpstreamResetError, build_request_head, open_connection

    async def partial(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()
        await r.read()

    server = await asyncio.start_server(partial, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await open_connection("127.0.0.1", port, 5.0)
        assert conn.state == C.IDLE
        body = conn.begin(False, 5.0)
        conn.write(build_request_head("GET", "/", [(b"host", b"t")]))
        head = await conn.read_head()
        assert head.status == 200 and conn.state == C.BODY
        async with asyncio.timeout(10):
            while body.received < 3:
                await asyncio.sleep(0.005)
        conn.close()
        assert conn.state == C.CLOSED and conn.closed and not conn.reusable
        with pytest.raises(UpstreamResetError):
            async with asyncio.timeout(10):
                await body.read_all()
    finally:
        server.close()
