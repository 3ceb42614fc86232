"""Ordering of stores and invalidations through a real gateway, for every store kind.

Read-your-writes: once a client has a cacheable response's last byte, a request on another
connection finds it stored. RFC 9111 §4.4: an unsafe request that invalidated a URL wins over
a store of a response that was still in flight when the invalidation happened.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portway.http.client import simple_request
from portway.plugins.cache.registry import registry
from tests.helpers import http_get, raw_upstream, run_gateway

STORES = ["memory", "redis", "tiered"]


@pytest.fixture(params=STORES)
def cache_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {"store": "memory"}
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return {"store": request.param, "redis_url": url, "redis_prefix": prefix}


def gateway_config(upstream_url: str, cache: dict[str, Any]) -> dict[str, Any]:
    return {
        "upstreams": {"u": {"targets": [{"url": upstream_url}]}},
        "routes": [
            {
                "name": "cached",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "cache", "config": cache}],
            }
        ],
    }


def path_of(head: bytes) -> str:
    return head.split(b" ", 2)[1].decode()


def method_of(head: bytes) -> str:
    return head.split(b" ", 1)[0].decode()


def cacheable(body: bytes, chunked: bool) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\n"
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    return head + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


async def test_second_request_after_a_miss_always_hits(cache_config: dict[str, Any]) -> None:
    """10 clients, each doing GET-then-GET pairs on fresh connections: the second GET of
    every pair must be a hit (half the bodies Content-Length framed, half chunked)."""
    upstream_calls: dict[str, int] = {}

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        p = path_of(head)
        upstream_calls[p] = upstream_calls.get(p, 0) + 1
        w.write(cacheable(p.encode() * 50, chunked=p.endswith("/1")))
        await w.drain()
        return True

    clients, pairs = 10, 10
    second: list[str | None] = []

    async with raw_upstream(handler) as url, run_gateway(gateway_config(url, cache_config)) as gw:

        async def client(c: int) -> None:
            for i in range(pairs):
                p = f"/rw/{c}/{i}/{i % 2}"
                s1, h1, b1 = await http_get(gw.url + p, timeout=20)
                assert (s1, b1, h1.get("x-cache")) == (200, p.encode() * 50, "MISS")
                s2, h2, b2 = await http_get(gw.url + p, timeout=20)
                assert (s2, b2) == (200, p.encode() * 50)
                second.append(h2.get("x-cache"))

        await asyncio.gather(*(client(c) for c in range(clients)))
    assert len(second) == clients * pairs
    assert [x for x in second if x != "HIT"] == []
    assert sum(upstream_calls.values()) == clients * pairs


async def test_store_in_flight_never_survives_a_following_delete(
    cache_config: dict[str, Any],
) -> None:
    """A GET's response is still streaming (its store not yet done) when a DELETE of the
    same URL completes; the late store must be refused, so the next GET goes upstream."""
    partial_sent = asyncio.Event()
    release = asyncio.Event()
    gets = 0

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        nonlocal gets
        if method_of(head) == "DELETE":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndeleted")
            await w.drain()
            return True
        gets += 1
        if gets == 1:
            w.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\n")
            w.write(b"Content-Length: 10\r\n\r\n01234")
            await w.drain()
            partial_sent.set()
            await release.wait()
            w.write(b"56789")
        else:
            w.write(cacheable(b"after-delete", chunked=False))
        await w.drain()
        return True

    async with raw_upstream(handler) as url, run_gateway(gateway_config(url, cache_config)) as gw:
        first = asyncio.create_task(http_get(gw.url + "/race", timeout=20))
        await asyncio.wait_for(partial_sent.wait(), 10)
        deleted = await simple_request("DELETE", gw.url + "/race", timeout=10)
        assert deleted.status == 200 and deleted.body == b"deleted"
        release.set()
        s, h, b = await first
        assert (s, b, h.get("x-cache")) == (200, b"0123456789", "MISS")
        s, h, b = await http_get(gw.url + "/race")
        assert (s, b, h.get("x-cache")) == (200, b"after-delete", "MISS")
        s, h, b = await http_get(gw.url + "/race")
        assert (s, b, h.get("x-cache")) == (200, b"after-delete", "HIT")
        assert gets == 2
        assert registry.stats()["routes"]["cached"]["store_raced"] == 1
