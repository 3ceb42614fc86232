"""HTTP/2 streams on the task-free path (libnghttp2 engine: ``http/ng2.py`` asks
``App.try_fast`` per bodiless request; ``proxy/fastsink.py`` relays the response through the
stream's writer). Each test runs on both serving paths (``path``: ``cold``, the general path
in a task; ``warm``, the task-free one, checked by ``portway_route_path_requests_total``), and
the rules must agree: header hygiene, HEAD/204/304, trailers, faults, flow control."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.events
import orjson
import pytest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import (
    ServingPath,
    run_gateway,
    run_upstream,
    simple_config,
    skip_without_nghttp2,
    warmable,
)
from tests.http.adv_helpers import cfg_for, read_request_head, scripted_upstream
from tests.http.test_h2 import H2Client

FAST = {"timeouts": {"read": "300ms", "total": "2s", "connect": "1s"}}


@pytest.fixture(autouse=True)
def _nghttp2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task-free path is the libnghttp2 engine's (the ``h2`` engine runs a task per
    stream), so these run on that engine only (not through the two-engine ``h2_engine``)."""
    from portway.http import ng2lib

    if ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")


def _fields(c: H2Client, sid: int) -> dict[bytes, bytes]:
    return dict(c.responses[sid]["headers"])


async def _get(c: H2Client, path: str, method: str = "GET") -> int:
    sid = c.request(method, path)
    await c.flush()
    await c.wait(sid)
    return sid


async def test_h2_gets_are_task_free_and_forwarded_as_on_the_general_path(
    path: ServingPath,
) -> None:
    async with (
        run_upstream() as up,
        run_gateway(path.config(simple_config(up.url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            for i in range(3):  # one after the other: each finds the pooled connection idle
                sid = await _get(c, f"/a/{i}?q={i}")
                r = c.responses[sid]
                assert r["status"] == 200 and r["reset"] is None
                data = orjson.loads(bytes(r["body"]))
                assert data["path"] == f"/a/{i}" and data["query"] == f"q={i}"
                hdrs = dict(data["headers"])
                assert hdrs["host"] == "example.test"
                assert hdrs["x-forwarded-for"] == "127.0.0.1"
                assert hdrs["x-forwarded-proto"] == "http"
                fields = _fields(c, sid)
                assert fields[b"content-length"] == str(len(r["body"])).encode()
                assert fields[b"content-type"] == b"application/json"
        finally:
            c.close()
        path.assert_served(3)


async def test_h2_hop_by_hop_fields_never_reach_the_client(path: ServingPath) -> None:
    """A relayed head with connection-specific fields (RFC 9113 §8.2.2) and one without
    (relayed from its validated lines whole, ``on_head_raw``): same fields on both paths."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:  # (cold: one request per upstream connection)
            head = await read_request_head(r)
            if head.startswith(b"GET /x "):
                w.write(
                    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
                    b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Keep: 1\r\n"
                    b"Content-Length: 2\r\n\r\nok"
                )
            else:
                w.write(b"HTTP/1.1 200 OK\r\nX-Mixed-Case: V  \r\nContent-Length: 3\r\n\r\nyes")
            await w.drain()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/x")
            assert bytes(c.responses[sid]["body"]) == b"ok"
            names = [k for k, _ in c.responses[sid]["headers"]]
            for hop in (b"connection", b"x-private", b"keep-alive", b"proxy-connection"):
                assert hop not in names, names
            assert _fields(c, sid)[b"x-keep"] == b"1"
            sid = await _get(c, "/y")
            assert bytes(c.responses[sid]["body"]) == b"yes"
            f = _fields(c, sid)
            assert f[b"x-mixed-case"] == b"V" and f[b"content-length"] == b"3"
        finally:
            c.close()
        path.assert_served(2)


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n'),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ],
)
async def test_h2_bodiless_responses_end_with_their_headers(
    path: ServingPath, method: str, answer: bytes
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(answer)
        await w.drain()
        await r.read()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/x", method)
            assert c.responses[sid]["reset"] is None
            assert bytes(c.responses[sid]["body"]) == b""
            ended = [
                e for e in c.events if isinstance(e, h2.events.StreamEnded) and e.stream_id == sid
            ]
            assert ended  # (HEADERS with END_STREAM: no DATA frame followed)
            assert not [
                e for e in c.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
            ]
            if method == "HEAD":
                assert _fields(c, sid)[b"content-length"] == b"5"
        finally:
            c.close()
        path.assert_served(1)


async def test_h2_chunked_body_and_trailers_on_both_paths(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        await w.drain()
        await asyncio.sleep(0.05)  # a second batch: the body crosses settle twice
        w.write(b"6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n")
        await w.drain()
        await r.read()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/t")
            assert bytes(c.responses[sid]["body"]) == b"hello world"
            assert b"transfer-encoding" not in _fields(c, sid)
            trailers = [e for e in c.events if isinstance(e, h2.events.TrailersReceived)]
            assert trailers and (b"x-checksum", b"abc") in trailers[0].headers
        finally:
            c.close()
        path.assert_served(1)


async def test_h2_early_hints_then_final(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nKeep-Alive: 5\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        await w.drain()
        await r.read()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/hints")
            assert bytes(c.responses[sid]["body"]) == b"ok"
            hints = [e for e in c.events if isinstance(e, h2.events.InformationalResponseReceived)]
            assert hints, c.events
            fields = dict(hints[0].headers)
            assert fields[b":status"] == b"103"
            assert fields[b"link"] == b"</a.css>; rel=preload"
            assert b"keep-alive" not in fields
        finally:
            c.close()
        path.assert_served(1)


async def _fault(path: ServingPath, handler: Any, status: int, **up: Any) -> None:
    """A fault before the response head: a JSON ``status`` on the stream; warm, the exchange
    is handed to a task of the stream's own (one fallback), counted once."""
    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url, **up))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/x")
            r = c.responses[sid]
            assert r["status"] == status, r
            assert _fields(c, sid)[b"content-type"] == b"application/json"
            assert orjson.loads(bytes(r["body"]))["status"] == status
        finally:
            c.close()
        path.assert_served(1, fallback=1 if path.warm else 0)


async def test_h2_upstream_closes_before_responding_is_502(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)

    await _fault(path, handler, 502)


async def test_h2_upstream_stalls_before_head_is_504(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        await asyncio.sleep(10)

    await _fault(path, handler, 504, **FAST)


async def test_h2_upstream_closes_mid_body_resets_the_stream(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/x")
            # never a truncated body that looks complete: the stream is reset
            assert c.responses[sid]["reset"] is not None, c.events
        finally:
            c.close()
        path.assert_served(1)


async def test_h2_large_body_beyond_the_windows(path: ServingPath) -> None:
    """A body far beyond the stream's 64 KiB window: the upstream is paused while the DATA
    wait for the client's credit, and every byte arrives in order."""
    big = bytes(range(256)) * 4096  # 1 MiB

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
        for i in range(0, len(big), 65536):
            w.write(big[i : i + 65536])
            await w.drain()
        await r.read()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = await _get(c, "/big")
            assert c.responses[sid]["reset"] is None
            assert bytes(c.responses[sid]["body"]) == big
        finally:
            c.close()
        path.assert_served(1)


async def test_h2_client_reset_mid_response_ends_the_exchange_once(path: ServingPath) -> None:
    """The client resets the stream while the upstream body is still coming: the exchange
    ends (its upstream connection is not pooled half-read), the request is counted once, and
    the connection serves the next stream."""
    release = asyncio.Event()
    upstream_closed = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()
        try:
            await release.wait()
            w.write(b"defghij")
            await w.drain()
            await r.read()  # EOF (or a reset): the gateway gave the half-read connection up
        finally:
            upstream_closed.set()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        c = await H2Client.open(gw.port)
        try:
            sid = c.request("GET", "/x")
            await c.flush()
            while not c.responses[sid]["body"]:
                await c.pump_once()
            c.conn.reset_stream(sid)
            await c.flush()
            release.set()
            # the connection goes on: a PING round trip shows the reset was taken
            c.conn.ping(b"12345678")
            await c.flush()
            while not any(isinstance(e, h2.events.PingAckReceived) for e in c.events):
                await c.pump_once()
        finally:
            c.close()
        # the exchange ends (counted) before its upstream connection is closed, on both paths
        await asyncio.wait_for(upstream_closed.wait(), 10)
        path.assert_served(1)


async def test_h2_cache_hit_is_answered_task_free() -> None:
    """A request hook's answer (a cache hit, ``proxy/fast.py:_answer``) is written on the
    stream at once: no task, no upstream; the same fields and body as the miss relayed."""
    from tests.plugins.cache.test_cache_fast_hits import counts

    async def origin(req: Request) -> Response:
        h = Headers([(b"cache-control", b"max-age=60"), (b"content-type", b"text/plain")])
        return Response(200, h, b"cached")

    route = "h2hit"
    cfg = simple_config("http://x", plugins=[{"name": "cache"}])
    cfg["routes"][0]["name"] = route
    async with run_upstream(origin) as up:
        cfg["upstreams"]["u"]["targets"] = [{"url": up.url}]
        async with run_gateway(cfg) as gw:
            c = await H2Client.open(gw.port)
            try:
                miss = await _get(c, "/doc")
                before = counts(route)
                hit = await _get(c, "/doc")
                head = await _get(c, "/doc", "HEAD")
            finally:
                c.close()
            after = counts(route)
    assert len(up.requests) == 1
    assert after["fast"] - before["fast"] == 2, (before, after)
    assert after["general"] == before["general"] and after["fallback"] == before["fallback"]
    assert bytes(c.responses[hit]["body"]) == bytes(c.responses[miss]["body"]) == b"cached"
    f = _fields(c, hit)
    assert f[b"content-type"] == b"text/plain" and f[b"content-length"] == b"6"
    assert bytes(c.responses[head]["body"]) == b""
    assert _fields(c, head)[b"content-length"] == b"6"


async def test_h2_goaway_drain_lets_a_task_free_stream_finish(path: ServingPath) -> None:
    """Shutdown's GOAWAY (``ng2.drain_connections``) with a stream in flight on either path:
    the response completes (curl: a whole 200, its GOAWAY taken gracefully)."""
    from portway.http.ng2 import drain_connections
    from tests.http.test_h2 import curl

    arrived = asyncio.Event()
    release = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        arrived.set()
        await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await w.drain()
        await r.read()

    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url))) as gw,
    ):
        await path.prepare(gw)
        client = asyncio.create_task(
            curl("--http2-prior-knowledge", "-w", "%{http_code}", f"http://127.0.0.1:{gw.port}/x")
        )
        await arrived.wait()
        app = gw.worker.app
        assert drain_connections(app) == 1
        release.set()
        rc, out, err = await client
        assert rc == 0 and out == b"done200", (rc, out, err)
        path.assert_served(1)
