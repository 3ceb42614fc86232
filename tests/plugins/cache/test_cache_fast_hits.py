"""Cache hits on the task-free path (proxy/fast.py ``_answer``), in a real gateway.

A hit on a warm keep-alive connection is answered inside the client parser's callback: no
task, no upstream, the entry's prebuilt head. Each test proves which path ran (the
``portway_route_path_requests_total`` counter per route, and ``ProxyApp.fast_requests``),
and compares the bytes on the wire with the general path's answer to the same request
(``ProxyApp.fast`` switched off), on HTTP/1.1 and HTTP/2. The plugin's wall clock is
replaced by a controlled one, so Age is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
from prometheus_client.parser import text_string_to_metric_families

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.observability.metrics import get_metrics
from portway.plugins.cache.directives import format_http_date
from portway.plugins.cache.plugin import CachePlugin
from portway.proxy.handler import ProxyApp
from tests.helpers import GatewayHandle, run_gateway, run_upstream
from tests.plugins.cache.harness import Clock

T0 = 1_800_000_000.0


def path_count(route: str, path: str) -> float:
    text = get_metrics().render()[0].decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "portway_route_path_requests_total" and s.labels == {
                "route": route,
                "path": path,
            }:
                return s.value
    return 0.0


def counts(route: str) -> dict[str, float]:
    return {p: path_count(route, p) for p in ("fast", "general", "fallback")}


def config(route: str, upstream_url: str, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "upstreams": {"u": {"targets": [{"url": upstream_url}]}},
        "routes": [{"name": route, "match": {"paths": ["/"]}, "upstream": "u", "plugins": plugins}],
    }


def cache_plugin(gw: GatewayHandle, route: str) -> CachePlugin:
    graph = gw.gateway.graph
    for rt in graph.routes:
        if rt.config.name == route:
            for p in rt.chain.plugins:
                if isinstance(p, CachePlugin):
                    return p
    raise AssertionError("no cache plugin on " + route)


def app_of(gw: GatewayHandle) -> ProxyApp:
    app = gw.worker.app
    assert app is not None
    return app


class Conn:
    """One keep-alive HTTP/1.1 client connection that reads whole responses as bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, method: str, path: str, headers: list[tuple[str, str]] = []) -> bytes:  # noqa: B006
        lines = [f"{method} {path} HTTP/1.1", "Host: cache.test"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.lower() == b"content-length":
                    length = int(v)
            status = int(head.split(b" ", 2)[1])
            if method == "HEAD" or status in (204, 304):
                return head
            return head + await self.reader.readexactly(length)


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()


def fields(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    items = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        items.append((k.lower(), v.strip()))
    return int(lines[0].split(b" ", 2)[1]), items, body


def field(raw: bytes, name: bytes) -> bytes | None:
    for k, v in fields(raw)[1]:
        if k == name:
            return v
    return None


async def h2_get(
    port: int,
    path: str,
    headers: list[tuple[bytes, bytes]] = [],  # noqa: B006
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """One request over HTTP/2 (prior knowledge): the response's fields and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    c = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(
        sid,
        [
            (b":method", b"GET"),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"cache.test"),
            *headers,
        ],
        end_stream=True,
    )
    writer.write(c.data_to_send())
    got: list[tuple[bytes, bytes]] = []
    body = b""
    try:
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                assert data, "connection closed"
                events = c.receive_data(data)
                writer.write(c.data_to_send())
                ended = False
                for ev in events:
                    if isinstance(ev, h2.events.ResponseReceived):
                        got = list(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                        c.acknowledge_received_data(len(ev.data), sid)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                if ended:
                    return got, body
    finally:
        writer.close()


def origin(clock: Clock, hits: list[Request], **extra: str) -> Any:
    async def handler(req: Request) -> Response:
        hits.append(req)
        h = Headers.from_pairs(
            [
                ("cache-control", "max-age=600"),
                ("date", format_http_date(clock.t)),
                ("etag", '"v1"'),
                ("last-modified", format_http_date(T0 - 3600)),
                ("content-type", "text/plain"),
                ("x-origin", "yes"),
                *((k.replace("_", "-"), v) for k, v in extra.items()),
            ]
        )
        lang = req.headers.get("accept-language") or "-"
        return Response(200, h, b"cached body " + lang.encode())

    return handler


async def test_a_hit_on_a_warm_connection_is_task_free_and_sends_the_general_paths_bytes() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_bytes"
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        app = app_of(gw)
        before = counts(route)
        async with connect(gw.port) as c:
            miss = await c.send("GET", "/doc")
            assert field(miss, b"x-cache") == b"MISS"
            fast_before = app.fast_requests
            clock.t += 3
            hits = [await c.send("GET", "/doc") for _ in range(5)]
            assert app.fast_requests - fast_before == 5
            app.fast = False  # the same request, answered by the connection's task
            general = await c.send("GET", "/doc")
            app.fast = True
        after = counts(route)
        # the miss ran its request hooks task-free and went upstream in the task
        assert after["fallback"] - before["fallback"] == 1
        assert after["fast"] - before["fast"] == 5
        assert after["general"] - before["general"] == 1
        assert len(seen) == 1
        assert all(h == general for h in hits)
        status, items, body = fields(general)
        assert status == 200 and body == b"cached body -"
        assert dict(items)[b"age"] == b"3" and dict(items)[b"x-cache"] == b"HIT"
        assert dict(items)[b"content-length"] == str(len(body)).encode()
        # what the origin sent, in its order, then the cache's own fields
        names = [k for k, _ in items]
        assert names == [
            b"cache-control",
            b"date",
            b"etag",
            b"last-modified",
            b"content-type",
            b"x-origin",
            b"via",
            b"age",
            b"x-cache",
            b"content-length",
        ], names


async def test_http2_hits_carry_the_same_fields_and_body_as_http1() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_h2"
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            clock.t += 11
            fast = await c.send("GET", "/doc")
        h2_fields, h2_body = await h2_get(gw.port, "/doc")
        _, h1_fields, h1_body = fields(fast)
        assert h2_fields[0] == (b":status", b"200")
        assert h2_fields[1:] == h1_fields
        assert h2_body == h1_body == b"cached body -"
        assert dict(h1_fields)[b"age"] == b"11"
        assert len(seen) == 1


async def test_age_grows_with_each_hit_on_the_task_free_path() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_age"
    async with (
        run_upstream(origin(clock, seen, age="4")) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        before = counts(route)
        ages = []
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            for step in (0, 1, 10, 100):
                clock.t += step
                ages.append(field(await c.send("GET", "/doc"), b"age"))
        # the origin's Age (4) plus the time the entry has been stored
        assert ages == [b"4", b"5", b"15", b"115"]
        assert counts(route)["fast"] - before["fast"] == 4
        assert len(seen) == 1


async def test_conditional_hits_answer_304_task_free_like_the_general_path() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_304"
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        app = app_of(gw)
        before = counts(route)
        cases = [
            [("If-None-Match", '"v1"')],
            [("If-None-Match", 'W/"v1", "other"')],
            [("If-Modified-Since", format_http_date(T0 - 60))],
        ]
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            clock.t += 2
            fast = [await c.send("GET", "/doc", h) for h in cases]
            stale_tag = await c.send("GET", "/doc", [("If-None-Match", '"v0"')])
            app.fast = False
            general = [await c.send("GET", "/doc", h) for h in cases]
            app.fast = True
        assert fast == general
        for raw in fast:
            status, items, body = fields(raw)
            assert status == 304 and body == b""
            assert dict(items)[b"etag"] == b'"v1"' and dict(items)[b"age"] == b"2"
            assert b"content-length" not in dict(items)
        # a validator that does not match: the whole stored response
        assert fields(stale_tag)[0] == 200 and fields(stale_tag)[2] == b"cached body -"
        assert counts(route)["fast"] - before["fast"] == 4
        assert len(seen) == 1


async def test_head_hit_sends_the_length_and_no_body() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_head"
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        app = app_of(gw)
        before = counts(route)
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            head = await c.send("HEAD", "/doc")
            # the next response on the connection starts right after the head: no body sent
            get = await c.send("GET", "/doc")
            app.fast = False
            general_head = await c.send("HEAD", "/doc")
            app.fast = True
        assert head == general_head
        assert head.endswith(b"\r\n\r\n") and field(head, b"content-length") == b"13"
        assert fields(get)[2] == b"cached body -"
        assert counts(route)["fast"] - before["fast"] == 2
        assert len(seen) == 1


async def test_vary_selects_the_variant_on_the_task_free_path() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_vary"
    async with (
        run_upstream(origin(clock, seen, vary="Accept-Language")) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        before = counts(route)
        async with connect(gw.port) as c:
            for lang in ("en", "fr", "en", "fr", "de", "en"):
                raw = await c.send("GET", "/doc", [("Accept-Language", lang)])
                assert fields(raw)[2] == b"cached body " + lang.encode()
        assert [r.headers.get("accept-language") for r in seen] == ["en", "fr", "de"]
        # three misses; the three repeats were hits, task-free
        assert counts(route)["fast"] - before["fast"] == 3


async def test_response_hooks_of_earlier_plugins_and_observers_still_run_on_a_hit() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_hooks"
    plugins = [
        {"name": "request_id"},
        {"name": "cors", "config": {"allow_origins": ["https://app.test"]}},
        {"name": "cache"},
    ]
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, plugins)) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        app = app_of(gw)
        before = counts(route)
        headers = [("X-Request-ID", "req-fixed-1"), ("Origin", "https://app.test")]
        async with connect(gw.port) as c:
            await c.send("GET", "/doc", headers)
            fast = await c.send("GET", "/doc", headers)
            app.fast = False
            general = await c.send("GET", "/doc", headers)
            app.fast = True
        assert fast == general
        assert field(fast, b"x-request-id") == b"req-fixed-1"
        assert field(fast, b"access-control-allow-origin") == b"https://app.test"
        assert field(fast, b"x-cache") == b"HIT"
        after = counts(route)
        # the observers saw every request (the metrics counter is one of them)
        assert after["fast"] - before["fast"] == 1
        assert after["general"] - before["general"] == 1
        assert after["fallback"] - before["fallback"] == 1
        assert len(seen) == 1


async def test_a_hit_for_a_closing_connection_is_the_tasks_and_says_close() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_close"
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        before = counts(route)
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            last = await c.send("GET", "/doc", [("Connection", "close")])
            assert await c.reader.read() == b""  # closed after the answer
        assert field(last, b"x-cache") == b"HIT" and field(last, b"connection") == b"close"
        assert fields(last)[2] == b"cached body -"
        after = counts(route)
        assert after["fast"] - before["fast"] == 0
        assert after["fallback"] - before["fallback"] == 2
        assert len(seen) == 1


async def test_redis_backed_hits_stay_on_the_general_path(
    redis_url: str, redis_prefix: str
) -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_redis"
    cache = {"store": "redis", "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with (
        run_upstream(origin(clock, seen)) as up,
        run_gateway(config(route, up.url, [{"name": "cache", "config": cache}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        before = counts(route)
        async with connect(gw.port) as c:
            await c.send("GET", "/doc")
            hits = [await c.send("GET", "/doc") for _ in range(3)]
        assert all(field(h, b"x-cache") == b"HIT" for h in hits)
        assert len(seen) == 1
        after = counts(route)
        assert after["fast"] - before["fast"] == 0
        assert after["general"] - before["general"] == 4


async def test_pipelined_hits_are_answered_in_order() -> None:
    clock = Clock(T0)
    seen: list[Request] = []
    route = "fasthit_pipeline"
    async with (
        run_upstream(origin(clock, seen, vary="Accept-Language")) as up,
        run_gateway(config(route, up.url, [{"name": "cache"}])) as gw,
    ):
        cache_plugin(gw, route).clock = clock
        before = counts(route)
        async with connect(gw.port) as c:
            for lang in ("en", "fr"):
                await c.send("GET", "/doc", [("Accept-Language", lang)])
            order = ["en", "fr", "fr", "en", "en"]
            c.writer.write(
                b"".join(
                    b"GET /doc HTTP/1.1\r\nHost: cache.test\r\nAccept-Language: %s\r\n\r\n"
                    % lang.encode()
                    for lang in order
                )
            )
            bodies = []
            for _ in order:
                async with asyncio.timeout(10):
                    head = await c.reader.readuntil(b"\r\n\r\n")
                    n = int(field(head, b"content-length") or b"0")
                    bodies.append(await c.reader.readexactly(n))
        assert bodies == [b"cached body " + lang.encode() for lang in order]
        assert counts(route)["fast"] - before["fast"] == 5
        assert len(seen) == 2
