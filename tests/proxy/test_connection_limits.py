"""``pool.max_connections`` through the gateway, against a real slow upstream that counts the
connections it accepts: never more than the limit are opened, a request beyond it waits and
is served when one frees (cold pool: the general path; warm pool: the task-free path takes the
idle connections and hands the one that would wait to the general path), a waiter that times
out gets 503 ``upstream_overloaded`` without touching the target's health or breaker, and a
client that leaves while queued leaks nothing. The same limit bounds HTTP/2 upstream
connections (streams queue for room)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from portway.http.client import simple_request
from portway.observability.metrics import Metrics
from portway.proxy import overload
from tests.helpers import run_gateway, tcp_server
from tests.http.test_h2client import config as h2_config
from tests.http.test_h2client import h2_upstream

LONG = 30.0


@dataclass
class Slow:
    """An HTTP/1.1 keep-alive upstream that answers each request only when told to."""

    port: int
    accepted: int = 0
    #: request paths in arrival order, and the event that lets each one be answered
    arrived: list[str] = field(default_factory=list)
    go: dict[str, asyncio.Event] = field(default_factory=dict)

    def answer(self, path: str) -> None:
        self.go.setdefault(path, asyncio.Event()).set()


@asynccontextmanager
async def slow_upstream() -> AsyncIterator[Slow]:
    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                up.arrived.append(path)
                await up.go.setdefault(path, asyncio.Event()).wait()
                body = path.encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # (cancelled: the test's loop is closing)
        finally:
            writer.close()

    async with tcp_server(conn) as port:
        up = Slow(port)
        yield up


def cfg(port: int, **pool: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "u": {
                "targets": [{"url": f"http://127.0.0.1:{port}"}],
                "pool": pool,
                "timeouts": {"read": "60s", "total": "60s"},
                "health": {"passive": {"unhealthy_after": 1}},
                "circuit_breaker": {"min_requests": 1, "failure_ratio": 0.01},
            }
        },
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
    }


async def until(cond: Callable[[], bool], timeout: float = LONG) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset (a FIN is a half-close, after which an HTTP/1.1
    client may still wait for its response)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def get(gw: Any, path: str) -> asyncio.Future[Any]:
    return asyncio.ensure_future(simple_request("GET", gw.url + path, timeout=LONG))


def pool_of(gw: Any) -> Any:
    return gw.gateway.graph.upstreams["u"].targets[0].pool


async def warm_two(gw: Any, up: Slow) -> None:
    """Two concurrent requests, so the pool holds two idle connections."""
    warm = [get(gw, "/w1"), get(gw, "/w2")]
    await until(lambda: len(up.arrived) == 2)
    up.answer("/w1")
    up.answer("/w2")
    assert [r.status for r in await asyncio.gather(*warm)] == [200, 200]
    await until(lambda: pool_of(gw).idle_count == 2)
    up.arrived.clear()


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_third_request_waits_for_a_connection_and_is_served(warm: bool) -> None:
    async with slow_upstream() as up, run_gateway(cfg(up.port, max_connections=2)) as gw:
        app = gw.worker.app
        if warm:
            await warm_two(gw, up)
        fast_before = app.fast_requests
        a, b = get(gw, "/a"), get(gw, "/b")
        await until(lambda: len(up.arrived) == 2)
        c = get(gw, "/c")
        pool = pool_of(gw)
        await until(lambda: pool.waiting == 1)
        assert up.accepted == 2 and up.arrived == ["/a", "/b"] and pool.open_count == 2
        up.answer("/a")
        assert (await a).body == b"/a"
        # the freed connection carries the waiting request
        await until(lambda: len(up.arrived) == 3)
        assert up.arrived[2] == "/c"
        up.answer("/b")
        up.answer("/c")
        rb, rc = await asyncio.gather(b, c)
        assert (rb.status, rb.body, rc.status, rc.body) == (200, b"/b", 200, b"/c")
        assert up.accepted == 2 and pool.opened == 2 and pool.open_count == 2
        if warm:
            # the idle connections went task-free; the request that had to wait was handed over
            assert app.fast_requests - fast_before == 2


async def test_waiters_are_served_in_arrival_order() -> None:
    async with slow_upstream() as up, run_gateway(cfg(up.port, max_connections=1)) as gw:
        first = get(gw, "/0")
        await until(lambda: up.arrived == ["/0"])
        pool = pool_of(gw)
        rest = []
        for i in range(1, 5):
            rest.append(get(gw, f"/{i}"))
            await until(lambda i=i: pool.waiting == i)  # type: ignore[misc]
        for i in range(5):
            up.answer(f"/{i}")
        rs = await asyncio.gather(first, *rest)
        assert [r.status for r in rs] == [200] * 5
        assert up.arrived == ["/0", "/1", "/2", "/3", "/4"]
        assert up.accepted == 1


async def test_queue_timeout_answers_503_upstream_overloaded_blaming_nobody() -> None:
    async with slow_upstream() as up:
        config = cfg(up.port, max_connections=2, queue_timeout="200ms")
        async with run_gateway(config) as gw:
            target = gw.gateway.graph.upstreams["u"].targets[0]
            tid = target.id
            before = overload.counts().get(("u", tid), 0)
            a, b = get(gw, "/a"), get(gw, "/b")
            await until(lambda: len(up.arrived) == 2)
            r = await simple_request("GET", gw.url + "/c", timeout=LONG)
            assert r.status == 503
            assert r.headers.get("x-portway-overloaded") == "true"
            body = orjson.loads(r.body)
            assert body["code"] == "upstream_overloaded" and body["status"] == 503
            assert "connection limit" in body["error"]
            # neither passive health nor the breaker saw a failure
            assert target.healthy and target.fails == 0
            assert target.breaker.counts()[1] == 0 and target.breaker.state == "closed"
            assert overload.counts()[("u", tid)] == before + 1
            up.answer("/a")
            up.answer("/b")
            assert [x.status for x in await asyncio.gather(a, b)] == [200, 200]
            assert up.accepted == 2 and "/c" not in up.arrived
            metrics = Metrics(include_default_registry=False).render()[0].decode()
            line = f'portway_upstream_pool_overflow_total{{target="{tid}",upstream="u"}}'
            assert line in metrics


async def test_max_queue_refuses_without_waiting() -> None:
    async with slow_upstream() as up:
        config = cfg(up.port, max_connections=1, queue_timeout="30s", max_queue=0)
        async with run_gateway(config) as gw:
            a = get(gw, "/a")
            await until(lambda: up.arrived == ["/a"])
            r = await simple_request("GET", gw.url + "/b", timeout=LONG)
            assert r.status == 503 and orjson.loads(r.body)["code"] == "upstream_overloaded"
            up.answer("/a")
            assert (await a).status == 200


async def test_a_client_leaving_while_queued_frees_its_place() -> None:
    async with slow_upstream() as up:
        # a queue timeout far beyond the test: only the client's leaving can empty the queue
        async with run_gateway(cfg(up.port, max_connections=1, queue_timeout="60s")) as gw:
            a = get(gw, "/a")
            await until(lambda: up.arrived == ["/a"])
            pool = pool_of(gw)
            _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET /gone HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            await until(lambda: pool.waiting == 1)
            reset(writer)  # the client leaves: its queued request goes
            await until(lambda: pool.waiting == 0)
            up.answer("/a")
            assert (await a).status == 200
            b = get(gw, "/b")
            await until(lambda: "/b" in up.arrived)
            up.answer("/b")
            assert (await b).status == 200
            assert "/gone" not in up.arrived and pool.overflows == 0
            assert up.accepted == 1 and pool.open_count == 1 and pool.waiting == 0


async def test_h2_upstream_connections_are_bounded_and_streams_queue() -> None:
    """max_connections=1 and the upstream takes 2 concurrent streams: a third stream waits
    for room on the one connection instead of opening a second."""
    async with h2_upstream(max_streams=2, hold_until=2) as up:
        config = h2_config(up.port, pool={"max_connections": 1, "queue_timeout": "30s"})
        async with run_gateway(config) as gw:
            rs = await asyncio.gather(
                *(
                    simple_request("POST", gw.url + "/x", body=b"%d" % i, timeout=LONG)
                    for i in range(3)
                )
            )
            pool = gw.gateway.graph.upstreams["u"].targets[0].extra["h2pool"]
    assert sorted(r.body for r in rs) == [b"got:0", b"got:1", b"got:2"]
    assert up.connections == 1 and pool.opened == 1


async def test_h2_stream_queue_timeout_is_503_upstream_overloaded() -> None:
    async with h2_upstream(max_streams=1, hold_until=10**6) as up:
        config = h2_config(up.port, pool={"max_connections": 1, "queue_timeout": "200ms"})
        async with run_gateway(config) as gw:
            a = asyncio.ensure_future(
                simple_request("POST", gw.url + "/x", body=b"a", timeout=LONG)
            )
            await until(lambda: up.open_streams == 1)
            r = await simple_request("POST", gw.url + "/x", body=b"b", timeout=LONG)
            assert r.status == 503
            assert orjson.loads(r.body)["code"] == "upstream_overloaded"
            assert r.headers.get("x-portway-overloaded") == "true"
            target = gw.gateway.graph.upstreams["u"].targets[0]
            assert target.healthy and target.fails == 0
            up.release.set()
            assert (await a).status == 200
    assert up.connections == 1 and up.bodies == [b"a"]


async def test_h2_client_leaving_while_its_stream_waits_frees_its_place() -> None:
    async with h2_upstream(max_streams=1, hold_until=10**6) as up:
        # a queue timeout far beyond the test: only the client's leaving can empty the queue
        config = h2_config(up.port, pool={"max_connections": 1, "queue_timeout": "60s"})
        async with run_gateway(config) as gw:
            a = asyncio.ensure_future(
                simple_request("POST", gw.url + "/x", body=b"a", timeout=LONG)
            )
            await until(lambda: up.open_streams == 1)
            pool = gw.gateway.graph.upstreams["u"].targets[0].extra["h2pool"]
            _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\ngone")
            await writer.drain()
            await until(lambda: len(pool._waiters) == 1)
            reset(writer)  # the client leaves: its queued stream goes
            await until(lambda: not pool._waiters)
            up.release.set()
            assert (await a).status == 200
            r = await simple_request("POST", gw.url + "/x", body=b"c", timeout=LONG)
            assert r.status == 200
    assert up.connections == 1 and up.bodies == [b"a", b"c"]
