"""The cache plugin inside a real gateway, against real upstream servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.plugins.cache.directives import format_http_date
from tests.helpers import free_port, http_get, run_gateway, run_upstream


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The same behaviour is expected of every store kind."""
    if request.param == "memory":
        return {}
    return {
        "store": "redis",
        "redis_url": request.getfixturevalue("redis_url"),
        "redis_prefix": request.getfixturevalue("redis_prefix"),
    }


def cfg(upstream_url: str, **cache: Any) -> dict[str, Any]:
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


def reply(status: int = 200, body: bytes = b"payload", **headers: str) -> Response:
    h = Headers.from_pairs([(k.replace("_", "-"), v) for k, v in headers.items()])
    return Response(status, h, body)


async def test_miss_then_hit_with_age(store: dict[str, Any]) -> None:
    async def handler(req: Request) -> Response:
        return reply(cache_control="max-age=60", date=format_http_date(time.time()), age="5")

    async with run_upstream(handler) as up, run_gateway(cfg(up.url, **store)) as gw:
        s1, h1, b1 = await http_get(gw.url + "/a")
        s2, h2, b2 = await http_get(gw.url + "/a")
        assert (s1, b1, h1.get("x-cache")) == (200, b"payload", "MISS")
        assert (s2, b2, h2.get("x-cache")) == (200, b"payload", "HIT")
        assert int(h2.get("age") or "0") >= 5
        assert len(up.requests) == 1
        head = await simple_request("HEAD", gw.url + "/a")
        assert head.status == 200 and head.headers.get("content-length") == "7"
        assert len(up.requests) == 1


async def test_hundred_concurrent_misses_send_one_upstream_request(store: dict[str, Any]) -> None:
    async def handler(req: Request) -> Response:
        await asyncio.sleep(0.3)
        return reply(cache_control="max-age=60", body=b"x" * 20_000)

    async with run_upstream(handler) as up, run_gateway(cfg(up.url, **store)) as gw:
        results = await asyncio.gather(*(http_get(gw.url + "/c", timeout=20) for _ in range(100)))
        assert all(s == 200 and b == b"x" * 20_000 for s, _, b in results)
        assert len(up.requests) == 1


async def test_revalidation_304_through_the_gateway(store: dict[str, Any]) -> None:
    async def handler(req: Request) -> Response:
        if req.headers.get("if-none-match") == '"v1"':
            return reply(304, b"", cache_control="max-age=60", etag='"v1"', x_new="yes")
        return reply(cache_control="max-age=1", etag='"v1"', body=b"v1-body")

    async with run_upstream(handler) as up, run_gateway(cfg(up.url, **store)) as gw:
        await http_get(gw.url + "/v")
        await asyncio.sleep(1.1)
        s, h, b = await http_get(gw.url + "/v")
        assert (s, b, h.get("x-cache"), h.get("x-new")) == (200, b"v1-body", "REVALIDATED", "yes")
        s, h, b = await http_get(gw.url + "/v", headers=[("If-None-Match", '"v1"')])
        assert s == 304 and h.get("x-cache") == "HIT"
        assert len(up.requests) == 2


async def test_stale_if_error_when_the_upstream_is_gone(store: dict[str, Any]) -> None:
    port = free_port()

    async def handler(req: Request) -> Response:
        return reply(cache_control="max-age=1, stale-if-error=60", body=b"last good")

    config = cfg(f"http://127.0.0.1:{port}", **store)
    # no idle pooled connection may outlive the server (asyncio keeps accepted ones open)
    config["upstreams"]["u"]["pool"] = {"max_idle": 0}
    async with run_gateway(config) as gw:
        async with run_upstream(handler, port=port):
            assert (await http_get(gw.url + "/e"))[2] == b"last good"
        await asyncio.sleep(1.1)
        s, h, b = await http_get(gw.url + "/e")
        assert (s, b, h.get("x-cache")) == (200, b"last good", "STALE")


async def test_stale_while_revalidate_refreshes_in_background(store: dict[str, Any]) -> None:
    n = {"v": 0}

    async def handler(req: Request) -> Response:
        n["v"] += 1
        return reply(
            cache_control="max-age=3, stale-while-revalidate=30", body=f"v{n['v']}".encode()
        )

    async with run_upstream(handler) as up, run_gateway(cfg(up.url, **store)) as gw:
        assert (await http_get(gw.url + "/s"))[2] == b"v1"
        await asyncio.sleep(3.1)
        _s, h, b = await http_get(gw.url + "/s")
        assert (b, h.get("x-cache")) == (b"v1", "STALE")
        for _ in range(50):
            if len(up.requests) == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        _, h, b = await http_get(gw.url + "/s")
        assert (b, h.get("x-cache")) == (b"v2", "HIT")
        assert len(up.requests) == 2


async def test_post_invalidates_cached_get(store: dict[str, Any]) -> None:
    async def handler(req: Request) -> Response:
        if req.method == "POST":
            return reply(201, b"created")
        return reply(cache_control="max-age=60")

    async with run_upstream(handler) as up, run_gateway(cfg(up.url, **store)) as gw:
        await http_get(gw.url + "/p")
        assert (await http_get(gw.url + "/p"))[1].get("x-cache") == "HIT"
        r = await simple_request("POST", gw.url + "/p", body=b"abc")
        assert r.status == 201
        assert (await http_get(gw.url + "/p"))[1].get("x-cache") == "MISS"


async def test_two_gateways_share_a_redis_tier(redis_url: str) -> None:
    prefix = f"test:cache:{uuid.uuid4().hex[:12]}:"

    async def handler(req: Request) -> Response:
        return reply(cache_control="max-age=60", body=b"shared")

    async with run_upstream(handler) as up:
        config = cfg(up.url, store="tiered", redis_url=redis_url, redis_prefix=prefix)
        async with run_gateway(config) as a, run_gateway(config) as b:
            assert (await http_get(a.url + "/t"))[1].get("x-cache") == "MISS"
            # stored before a's response completed: b finds it at once (read-your-writes)
            _, h, body = await http_get(b.url + "/t")
            assert (body, h.get("x-cache")) == (b"shared", "HIT")
            assert len(up.requests) == 1
