"""Upgrade policy (http/upgrade.py): only WebSocket is tunnelled; an h2c upgrade is forwarded
as a plain request without Upgrade/HTTP2-Settings, and an upstream's unasked 101 closes both
sides. Each case runs on the general path (cold pool) and the task-free path (warm pool)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.helpers import ServingPath, free_port, run_gateway
from tests.http.adv_helpers import parse_responses

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
            assert [r.status for r in resps] == [200] and resps[0].body == b"public"
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
            # a plain answer, never a 101 handing the client a raw h2c connection
            assert [r.status for r in resps] == [200], out
            assert resps[0].body == b"ok"
            assert closed  # nothing after an upgrade request is read as HTTP
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


@pytest.mark.parametrize(
    "head",
    [
        b"PUT /v HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: x\r\nHost: a\r\n"
        b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /v HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHost: a\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    ],
)
async def test_an_upgrade_request_with_a_body_is_refused_not_forwarded_without_it(
    head: bytes,
) -> None:
    """llhttp ends a message asking for an upgrade at its head (its body is never parsed):
    forwarding it would lose the body (chunked) or wait for it forever (Content-Length), so
    it gets a 400 and nothing reaches the upstream. (Found by test_parser_fuzz.)"""
    from tests.http.adv_helpers import cfg_for, exchange, raw_upstream

    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        out, _closed = await exchange(gw.port, head, timeout=4.5, half_close=True)
    resps = parse_responses(out)
    assert [r.status for r in resps] == [400], out
    assert orjson.loads(resps[0].body)["code"] == "bad_request"
    assert up.raw == [] or all(not bytes(b) for b in up.raw)
