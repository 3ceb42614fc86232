"""Upgrade policy (http/upgrade.py): only a bodiless WebSocket handshake is tunnelled; any other
Upgrade (h2c, unknown protocols, a handshake with a body) is ignored: the request is forwarded
as a plain request, with its body, without Upgrade/HTTP2-Settings, and the connection is read
on as HTTP/1.1 (pipelining, keep-alive); an upstream's unasked 101 closes both sides. Each case
runs on the general path (cold pool) and the task-free path (warm pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from tests.helpers import WARM_TARGET, ServingPath, free_port, run_gateway
from tests.http.adv_helpers import (
    Message,
    ParsedResponse,
    RawUpstream,
    exchange,
    parse_responses,
    raw_upstream,
)

H2C = (
    b"GET /public/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    # what a client would send over the smuggled HTTP/2 connection
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)


class H2cServer:
    """A real h2c upstream (the ``h2`` library): answers ``Upgrade: h2c`` with 101 and then
    serves HTTP/2 on the same connection, every stream answered "secret" — what a client
    holding a smuggled tunnel would reach, routing and plugins bypassed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.plain: list[bytes] = []
        self.h2_paths: list[bytes] = []

    async def conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import base64

        import h2.config
        import h2.connection
        import h2.events

        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.plain.append(head)
                lower = head.lower()
                if b"upgrade: h2c" not in lower:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npublic")
                    await writer.drain()
                    continue
                settings = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"http2-settings:"):
                        settings = line.split(b":", 1)[1].strip()
                c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                c.initiate_upgrade_connection(base64.urlsafe_b64decode(settings + b"=="))
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: h2c\r\n\r\n" + c.data_to_send()
                )
                while data := await reader.read(65536):
                    for ev in c.receive_data(data):
                        if isinstance(ev, h2.events.RequestReceived):
                            self.h2_paths.append(dict(ev.headers)[b":path"])
                            c.send_headers(ev.stream_id, [(":status", "200")])
                            c.send_data(ev.stream_id, b"secret", end_stream=True)
                    writer.write(c.data_to_send())
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _smuggling_request(connection: bytes) -> bytes:
    """An h2c upgrade of an allowed request, then (as HTTP/2 over the hoped-for tunnel) the
    preface, SETTINGS and a request for what the gateway refuses."""
    import h2.config
    import h2.connection

    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(
        3,
        [(":method", "GET"), (":path", "/admin/secret"), (":scheme", "http"), (":authority", "a")],
        end_stream=True,
    )
    return (
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nConnection: " + connection + b"\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + c.data_to_send()
    )


@pytest.mark.parametrize("connection", [b"Upgrade, HTTP2-Settings", b"Upgrade"])
@pytest.mark.parametrize("warm", [False, True], ids=["general", "task_free"])
async def test_h2c_smuggling_cannot_reach_a_refused_route(warm: bool, connection: bytes) -> None:
    up = H2cServer()
    server = await asyncio.start_server(up.conn, "127.0.0.1", up.port)
    url = f"http://127.0.0.1:{up.port}"
    cfg = {
        "upstreams": {"u": {"targets": [{"url": url}]}},
        "routes": [
            {"name": "public", "match": {"paths": ["/public"]}, "upstream": "u"},
            {
                "name": "admin",
                "match": {"paths": ["/admin"]},
                "upstream": "u",
                "plugins": [{"name": "request_termination", "config": {"status": 403}}],
            },
        ],
    }
    try:
        async with run_gateway(cfg) as gw:
            app = gw.worker.app
            assert app is not None
            if warm:
                out, _ = await _exchange(
                    gw.port, b"GET /public/w HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                assert out.endswith(b"public")
            before = app.fast_requests
            out, closed = await _exchange(gw.port, _smuggling_request(connection))
            assert b"secret" not in out
            resps = parse_responses(out)
            # the Upgrade ignored, the bytes after the head are read as HTTP/1.1: the HTTP/2
            # preface is a malformed request (400, and the connection ends)
            assert [r.status for r in resps] == [200, 400] and resps[0].body == b"public"
            assert closed
            assert up.h2_paths == []
            assert (app.fast_requests > before) == warm
            assert all(b"upgrade" not in h.lower() for h in up.plain)
            assert all(b"http2-settings" not in h.lower() for h in up.plain)
    finally:
        server.close()


class H2cUpstream:
    """A real upstream that switches to h2c whenever asked (answers 101 and then holds the
    connection as HTTP/2 would), else answers 200; ``always_101`` switches unasked too."""

    def __init__(self, always_101: bool = False) -> None:
        self.always_101 = always_101
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = free_port()

    async def conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                if self.always_101 or b"upgrade: h2c" in head.lower():
                    writer.write(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        b"Upgrade: h2c\r\n\r\n"
                        + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an HTTP/2 SETTINGS frame
                    )
                    await writer.drain()
                    await reader.read()  # an h2c server would now speak HTTP/2
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    closed = False
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                out += chunk
            closed = True
    except TimeoutError:
        pass
    writer.close()
    return out, closed


def _cfg(url: str, **route: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": "r", "match": {"paths": ["/"]}, "upstream": "u", **route}
    return {"upstreams": {"u": {"targets": [{"url": url}]}}, "routes": [r]}


async def _warm(gw: Any) -> None:
    out, _ = await _exchange(gw.port, b"GET /warm HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("warm", [False, True], ids=["general", "task_free"])
async def test_h2c_upgrade_is_not_forwarded(warm: bool) -> None:
    up = H2cUpstream()
    server = await asyncio.start_server(up.conn, "127.0.0.1", up.port)
    try:
        async with run_gateway(_cfg(f"http://127.0.0.1:{up.port}")) as gw:
            app = gw.worker.app
            assert app is not None
            if warm:
                await _warm(gw)
            before = app.fast_requests
            out, closed = await _exchange(gw.port, H2C)
            resps = parse_responses(out)
            # a plain answer, never a 101 handing the client a raw h2c connection; what
            # follows is read as HTTP/1.1, where the HTTP/2 preface is malformed
            assert [r.status for r in resps] == [200, 400], out
            assert resps[0].body == b"ok"
            assert closed
            head = up.heads[-1].lower()
            assert head.startswith(b"get /public/x http/1.1")
            assert b"upgrade" not in head and b"http2-settings" not in head
            assert b"pri * http/2.0" not in b"".join(up.heads).lower()
            assert (app.fast_requests > before) == warm
    finally:
        server.close()


async def test_websocket_only_on_routes_that_allow_it() -> None:
    up = H2cUpstream(always_101=False)
    server = await asyncio.start_server(up.conn, "127.0.0.1", up.port)
    ws = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    try:
        async with run_gateway(_cfg(f"http://127.0.0.1:{up.port}", websocket=False)) as gw:
            out, closed = await _exchange(gw.port, ws)
            assert [r.status for r in parse_responses(out)] == [200]
            assert closed
            assert b"upgrade" not in up.heads[-1].lower()
    finally:
        server.close()


async def test_unasked_101_closes_both_sides(path: ServingPath) -> None:
    up = H2cUpstream(always_101=True)
    server = await asyncio.start_server(up.conn, "127.0.0.1", up.port)
    try:
        cfg = path.config(_cfg(f"http://127.0.0.1:{up.port}"))
        async with run_gateway(cfg) as gw:
            # the warm-up is answered 200 (the upstream switches unasked only after it)
            up.always_101 = False
            await path.prepare(gw)
            up.always_101 = True
            out, closed = await _exchange(
                gw.port,
                b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
            )
            resps = parse_responses(out)
            assert [r.status for r in resps] == [502], out
            body = orjson.loads(resps[0].body)
            assert body["code"] == "bad_gateway" and body["request_id"]
            assert closed
            # warm, the 101 reached the task-free exchange, which handed the 502 to the task
            path.assert_served(1, fallback=1)
            # the upstream connection was closed too, and /y never went anywhere
            assert not any(b"/y" in h for h in up.heads)
    finally:
        server.close()


# --- an ignored Upgrade with a body (RFC 9110 §7.8; RFC 9113 §3.2 sends it whole first) ------


async def _echo(msg: Message, writer: asyncio.StreamWriter) -> None:
    body = b"echo:" + msg.target + b":" + msg.body
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class _Client:
    """A raw-socket client on one connection: send bytes, read until ``n`` responses are
    complete (or the connection ends)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.out = b""
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> _Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def responses(self, n: int) -> list[ParsedResponse]:
        async with asyncio.timeout(5):
            while True:
                resps = parse_responses(self.out)
                if len(resps) >= n and all(r.complete for r in resps):
                    return resps
                chunk = await self.reader.read(65536)
                if not chunk:
                    self.closed = True
                    return resps
                self.out += chunk

    async def until_closed(self) -> list[ParsedResponse]:
        """Everything up to the server's close (the test fails if it does not close)."""
        async with asyncio.timeout(5):
            while chunk := await self.reader.read(65536):
                self.out += chunk
        self.closed = True
        return parse_responses(self.out)

    async def close(self) -> None:
        self.writer.close()


H2C_FIELDS = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
UPGRADES = {
    "none": b"",
    "h2c": H2C_FIELDS,
    "other": b"Connection: keep-alive, upgrade\r\nUpgrade: foo/2, bar\r\n",
    # a WebSocket handshake with a body, on a route that tunnels WebSocket: not upgraded
    "websocket": b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
}
FRAMINGS = {
    "length": b"Content-Length: 11\r\n\r\nhello world",
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
}
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def _no_upgrade_fields(msg: Message) -> None:
    assert msg.header(b"upgrade") is None and msg.header(b"http2-settings") is None, msg
    assert b"upgrade" not in (msg.header(b"connection") or b"").lower()


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("kind", UPGRADES)
async def test_an_ignored_upgrade_with_a_body_is_served_and_the_connection_goes_on(
    path: ServingPath, kind: str, framing: str
) -> None:
    """The request is forwarded with its whole body (chunked or Content-Length) and without
    the upgrade fields, on the serving path it would take without them; then the same with
    a request pipelined behind it in the same write, and one sent later on the connection
    (``none``: the same requests without an Upgrade, the control)."""
    request = b"POST /v HTTP/1.1\r\nHost: a\r\n" + UPGRADES[kind] + FRAMINGS[framing]
    async with raw_upstream(_echo) as up:
        async with run_gateway(path.config(_cfg(up.url, websocket=True))) as gw:
            await path.prepare(gw)
            c = await _Client.open(gw.port)
            await c.send(request)
            resps = await c.responses(1)
            assert [r.status for r in resps] == [200], c.out
            assert resps[0].body == b"echo:/v:hello world"
            # a request with a body is served by the task on both paths (``_serve``), as
            # without an Upgrade (the ``none`` control)
            assert path.served() == {"general": 1, "fast": 0, "fallback": 0, "started": 0}
            await c.send(request + NEXT)
            resps = await c.responses(3)
            assert [r.status for r in resps] == [200] * 3, c.out
            assert [r.body for r in resps[1:]] == [b"echo:/v:hello world", b"echo:/next:"]
            # keep-alive: the connection still reads requests
            await c.send(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            resps = await c.until_closed()
            assert [r.status for r in resps] == [200] * 4
            await c.close()
            assert sum(path.served()[k] for k in ("general", "fast", "fallback")) == 4
        sent = [m for m in up.complete if m.target != WARM_TARGET.encode()]
        assert [m.target for m in sent] == [b"/v", b"/v", b"/next", b"/last"]
        for m in sent[:2]:
            assert m.body == b"hello world" and m.method == "POST"
            _no_upgrade_fields(m)
        assert up.errors == []


class _Heads(list[Message]):
    """``RawUpstream.messages`` that sets an event when a request head arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def extend(self, items: Iterable[Message]) -> None:
        super().extend(items)
        if self:
            self.arrived.set()

    async def wait(self) -> None:
        await self.arrived.wait()


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_the_body_of_an_ignored_upgrade_may_arrive_later(framing: str) -> None:
    """The head alone first; the body (in two reads) only once the upstream holds the head:
    the parse resumed after llhttp's upgrade stop reads the body from later reads too."""
    body = FRAMINGS[framing]
    split = body.index(b"\r\n\r\n") + 4
    async with raw_upstream(_echo) as up, run_gateway(_cfg(up.url)) as gw:
        up.messages = heads = _Heads()
        c = await _Client.open(gw.port)
        await c.send(b"PUT /late HTTP/1.1\r\nHost: a\r\n" + H2C_FIELDS + body[:split])
        async with asyncio.timeout(5):
            await heads.wait()  # (the upstream got the head: the body is awaited)
        await c.send(body[split : split + 7])
        await c.send(body[split + 7 :] + NEXT)
        resps = await c.responses(2)
        assert [r.status for r in resps] == [200, 200], c.out
        assert resps[0].body == b"echo:/late:hello world"
        assert resps[1].body == b"echo:/next:"
        await c.close()


async def test_an_ignored_upgrade_keeps_the_persistence_the_client_asked_for() -> None:
    """``Connection: close`` (or HTTP/1.0 without keep-alive) next to the upgrade token: the
    answer ends the connection and a pipelined request is never forwarded; HTTP/1.0 with
    ``keep-alive`` goes on."""
    async with raw_upstream(_echo) as up, run_gateway(_cfg(up.url)) as gw:
        c = await _Client.open(gw.port)
        await c.send(
            b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: x\r\n"
            b"Content-Length: 2\r\n\r\nhi" + NEXT
        )
        resps = await c.until_closed()
        assert [r.status for r in resps] == [200] and resps[0].body == b"echo:/a:hi"
        await c.close()
        c = await _Client.open(gw.port)
        await c.send(
            b"PUT /b HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: x\r\nHost: a\r\n"
            b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /c HTTP/1.0\r\nHost: a\r\n\r\n"
        )
        # (the HTTP/1.0 request without keep-alive ends the connection)
        resps = await c.until_closed()
        assert [r.status for r in resps] == [200, 200], c.out
        assert [r.body for r in resps] == [b"echo:/b:hi", b"echo:/c:"]
        await c.close()
        assert b"/next" not in b"".join(bytes(r) for r in up.raw)


async def test_a_bodiless_ignored_upgrade_keeps_the_connection(path: ServingPath) -> None:
    """An h2c upgrade without a body (what curl sends) is served on the path a plain GET
    takes, and the connection reads the next request (RFC 9110 §7.8: the client goes on in
    HTTP/1.1 when no 101 comes)."""
    async with raw_upstream(_echo) as up:
        async with run_gateway(path.config(_cfg(up.url))) as gw:
            await path.prepare(gw)
            c = await _Client.open(gw.port)
            await c.send(b"GET /a HTTP/1.1\r\nHost: a\r\n" + H2C_FIELDS + b"\r\n")
            resps = await c.responses(1)
            assert [r.status for r in resps] == [200] and not c.closed, c.out
            path.assert_served(1)
            await c.send(b"GET /a HTTP/1.1\r\nHost: a\r\n" + H2C_FIELDS + b"\r\n" + NEXT)
            resps = await c.responses(3)
            assert [r.status for r in resps] == [200] * 3 and not c.closed, c.out
            await c.close()
        sent = [m for m in up.complete if m.target != WARM_TARGET.encode()]
        assert [m.target for m in sent] == [b"/a", b"/a", b"/next"]
        for m in sent[:2]:
            _no_upgrade_fields(m)


ADMIN = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
#: requests whose framing is refused (or delimits a smuggled request into a body) today; with
#: an ignored Upgrade added they must be answered exactly the same
SMUGGLING = {
    "cl_te": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_cl": b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
    "bad_cl": b"Content-Length: 2x\r\n\r\nhi",
    "te_not_chunked": b"Transfer-Encoding: gzip\r\n\r\nhi",
    "te_chunked_twice": b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk_size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
    "chunk_size_overflow": b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhi\r\n0\r\n\r\n",
    "chunk_ext_bare_lf": b"Transfer-Encoding: chunked\r\n\r\n2;x\nhi\r\n0\r\n\r\n",
    "chunk_bare_lf": b"Transfer-Encoding: chunked\r\n\r\n2\nhi\r\n0\r\n\r\n",
    "chunk_data_too_long": b"Transfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n",
    "bare_lf_head": b"X-A: 1\nContent-Length: 2\r\n\r\nhi",
    "obs_fold": b"X-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nhi",
    "smuggled_in_body": b"Content-Length: %d\r\n\r\n%s" % (len(ADMIN), ADMIN),
    "smuggled_after_chunks": b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "trailer_framing": b"Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
}


async def _outcome(port: int, up: RawUpstream, data: bytes) -> tuple[list[int], list[bytes]]:
    start = len(up.messages)
    out, _closed = await exchange(port, data, timeout=4.5, half_close=True)
    got = [(m.target, m.body) for m in up.messages[start:] if m.complete]
    return [r.status for r in parse_responses(out)], [t + b"=" + b for t, b in got]


@pytest.mark.parametrize("case", SMUGGLING)
async def test_smuggling_probes_are_answered_as_without_the_upgrade(case: str) -> None:
    """Differential: each probe, sent plain and with an ignored Upgrade (h2c, before and
    after its framing fields), gets the same statuses, and the upstream gets the same
    complete requests with the same bodies."""
    tail = SMUGGLING[case]
    plain = b"POST /p HTTP/1.1\r\nHost: a\r\n" + tail + NEXT
    async with raw_upstream(_echo) as up, run_gateway(_cfg(up.url)) as gw:
        want = await _outcome(gw.port, up, plain)
        first = await _outcome(
            gw.port, up, b"POST /p HTTP/1.1\r\nHost: a\r\n" + H2C_FIELDS + tail + NEXT
        )
        fields, _, rest = tail.partition(b"\r\n\r\n")
        last = await _outcome(
            gw.port,
            up,
            b"POST /p HTTP/1.1\r\nHost: a\r\n"
            + fields
            + b"\r\n"
            + H2C_FIELDS
            + b"\r\n"
            + rest
            + NEXT,
        )
    assert want == first == last, (want, first, last)
    if case == "smuggled_in_body":
        assert [t for t in want[1] if t.startswith(b"/admin")] == []
