"""The HTTP/2 upstream transport against a hand-driven ``h2`` server: GOAWAY and
REFUSED_STREAM retried safely (even for POST), SETTINGS_MAX_CONCURRENT_STREAMS opening a
second connection, trailers relayed, health recorded. The clients are HTTP/1.1 (the
gateway translates)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

from portway.http.client import simple_request
from tests.helpers import free_port, raw_request, run_gateway


@dataclass
class H2Upstream:
    port: int
    #: "goaway" | "refuse" | "" : what the FIRST stream of the server's life gets
    first: str = ""
    max_streams: int = 100
    #: responses wait until this many streams are open at once
    hold_until: int = 0
    connections: int = 0
    bodies: list[bytes] = field(default_factory=list)
    open_streams: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    handled_first: bool = False
    #: RST_STREAM frames received, and an event set on the first
    resets: int = 0
    reset_seen: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def h2_upstream(**kw: object) -> AsyncIterator[H2Upstream]:
    up = H2Upstream(free_port(), **kw)  # type: ignore[arg-type]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up.connections += 1
        c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: up.max_streams},
        )
        c.initiate_connection()
        writer.write(c.data_to_send())
        bodies: dict[int, bytearray] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def answer(sid: int) -> None:
            if up.hold_until:
                await up.release.wait()
            body = bytes(bodies.pop(sid, b""))
            up.bodies.append(body)
            c.send_headers(sid, [(b":status", b"200"), (b"x-conn", b"%d" % up.connections)])
            c.send_data(sid, b"got:" + body)
            c.send_headers(sid, [(b"x-trailer", b"yes")], end_stream=True)
            writer.write(c.data_to_send())
            up.open_streams -= 1

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        sid = ev.stream_id
                        if not up.handled_first and up.first:
                            up.handled_first = True
                            if up.first == "goaway":
                                c.close_connection(last_stream_id=0)
                            else:
                                c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                            continue
                        bodies[sid] = bytearray()
                        up.open_streams += 1
                        if up.hold_until and up.open_streams >= up.hold_until:
                            up.release.set()
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in bodies:
                            bodies[ev.stream_id] += ev.data
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        up.resets += 1
                        up.reset_seen.set()
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in bodies:
                        t = asyncio.create_task(answer(ev.stream_id))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                writer.write(c.data_to_send())
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", up.port)
    try:
        yield up
    finally:
        server.close()


def config(port: int, **up: object) -> dict[str, object]:
    target = {"url": f"http://127.0.0.1:{port}"}
    return {
        "upstreams": {"u": {"protocol": "h2c", "targets": [target], **up}},
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
    }


async def settled_in_flight(gw: object) -> int:
    """The target's in_flight once the request's handler has finished (its ``finally``)."""
    t = gw.gateway.graph.upstreams["u"].targets[0]  # type: ignore[attr-defined]
    async with asyncio.timeout(5):
        while t.in_flight != 0:
            await asyncio.sleep(0.01)
    return int(t.in_flight)


async def test_goaway_before_processing_is_retried_for_post() -> None:
    async with h2_upstream(first="goaway") as up, run_gateway(config(up.port)) as gw:
        r = await simple_request("POST", gw.url + "/x", body=b"payload", timeout=10)
        assert await settled_in_flight(gw) == 0
    assert r.status == 200
    assert r.body == b"got:payload"
    assert up.bodies == [b"payload"]  # processed once
    assert up.connections == 2  # the GOAWAY'd connection was not reused


async def test_refused_stream_is_retried_and_trailers_relayed() -> None:
    async with h2_upstream(first="refuse") as up, run_gateway(config(up.port)) as gw:
        out = await raw_request(
            gw.port,
            b"POST /x HTTP/1.1\r\nhost: gw\r\nte: trailers\r\nconnection: close\r\n"
            b"content-length: 2\r\n\r\nhi",
            timeout=10,
        )
    assert out.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"6\r\ngot:hi\r\n0\r\nx-trailer: yes\r\n\r\n")
    assert up.bodies == [b"hi"]
    assert up.connections == 1  # REFUSED_STREAM leaves the connection usable


async def test_second_connection_past_max_concurrent_streams() -> None:
    async with h2_upstream(max_streams=2, hold_until=3) as up, run_gateway(config(up.port)) as gw:
        rs = await asyncio.gather(
            *(simple_request("POST", gw.url + "/x", body=b"%d" % i, timeout=10) for i in range(3))
        )
        pool = gw.gateway.graph.upstreams["u"].targets[0].extra["h2pool"]
    assert sorted(r.body for r in rs) == [b"got:0", b"got:1", b"got:2"]
    assert up.connections == 2
    assert pool.opened == 2


async def test_grpc_deadline_enforced_by_the_gateway_and_stream_cancelled() -> None:
    """An upstream that never answers: at the client's grpc-timeout the gateway answers
    DEADLINE_EXCEEDED (trailers-only) and resets the upstream stream."""
    async with h2_upstream(hold_until=10**6) as up, run_gateway(config(up.port)) as gw:
        r = await simple_request(
            "POST",
            gw.url + "/pkg.Svc/Method",
            headers=[("content-type", "application/grpc"), ("grpc-timeout", "300m")],
            body=b"\x00\x00\x00\x00\x00",
            timeout=10,
        )
        await asyncio.wait_for(up.reset_seen.wait(), 10)
        assert await settled_in_flight(gw) == 0
    assert r.status == 200
    assert r.headers.get("grpc-status") == "4"
    assert r.body == b""
    assert up.resets == 1


async def test_total_timeout_is_504_for_plain_http() -> None:
    async with h2_upstream(hold_until=10**6) as up:
        cfg = config(up.port, timeouts={"total": "300ms"})
        async with run_gateway(cfg) as gw:
            r = await simple_request("GET", gw.url + "/x", timeout=10)
            await asyncio.wait_for(up.reset_seen.wait(), 10)
    assert r.status == 504


async def test_idle_connection_closes_after_pool_idle_timeout() -> None:
    async with h2_upstream() as up:
        async with run_gateway(config(up.port, pool={"idle_timeout": "200ms"})) as gw:
            r = await simple_request("POST", gw.url + "/x", body=b"a", timeout=10)
            assert r.status == 200
            pool = gw.gateway.graph.upstreams["u"].targets[0].extra["h2pool"]
            assert pool.live == 1
            async with asyncio.timeout(10):
                while pool.live:  # closed by the idle timer, not by the test
                    await asyncio.sleep(0.05)
            r = await simple_request("POST", gw.url + "/x", body=b"b", timeout=10)
            assert r.status == 200
    assert up.connections == 2


async def test_http1_expect_continue_gets_its_100() -> None:
    async with h2_upstream() as up, run_gateway(config(up.port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /x HTTP/1.1\r\nhost: gw\r\nexpect: 100-continue\r\ncontent-length: 4\r\n"
            b"connection: close\r\n\r\n"
        )
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")  # before any body byte is sent
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            writer.write(b"body")
            rest = await reader.read()
        writer.close()
    assert rest.startswith(b"HTTP/1.1 200")
    assert b"\r\n\r\n8\r\ngot:body\r\n" in rest
    assert up.bodies == [b"body"]
