"""``publish`` with the ``redis_stream`` sink: one XADD per request on the shared test Redis
(keys under the test's prefix), and an outage of a private Redis that loses nothing within
the buffer while requests keep being served."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis

from tests.conftest import RedisServer
from tests.helpers import run_gateway, run_upstream
from tests.plugins.publish.support import (
    check_event,
    gateway_config,
    publisher_of,
    send_requests,
    wait_for,
)


async def _events(url: str, stream: str) -> list[dict[str, Any]]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(stream)
    finally:
        await client.aclose()
    return [orjson.loads(fields[b"event"]) for _, fields in entries]


async def test_redis_stream_one_event_per_request(redis_url: str, redis_prefix: str) -> None:
    async with run_upstream() as up:
        cfg = gateway_config(
            up.url,
            {"sink": "redis_stream", "url": redis_url, "stream": redis_prefix + "calls.{route}"},
        )
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 30)
            pub = publisher_of(gw)
            await wait_for(lambda: pub.sent == 30)
    events = await _events(redis_url, redis_prefix + "calls.r")
    assert sorted(ev["request_id"] for ev in events) == sorted(ids)
    for ev in events:
        check_event(ev)


async def test_redis_stream_defaults_to_state_redis_url(redis_url: str, redis_prefix: str) -> None:
    async with run_upstream() as up:
        cfg = gateway_config(up.url, {"sink": "redis_stream", "stream": redis_prefix + "all"})
        cfg["state"] = {"redis_url": redis_url}
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 3)
            pub = publisher_of(gw)
            await wait_for(lambda: pub.sent == 3)
    assert [ev["request_id"] for ev in await _events(redis_url, redis_prefix + "all")] == ids


async def test_redis_outage_loses_nothing_and_requests_stay_served(
    private_redis: RedisServer,
) -> None:
    url = private_redis.url
    async with run_upstream() as up:
        cfg = gateway_config(up.url, {"sink": "redis_stream", "url": url, "stream": "calls"})
        async with run_gateway(cfg) as gw:
            pub = publisher_of(gw)
            before = await send_requests(gw, 20)
            await wait_for(lambda: pub.sent == 20)
            # the private server has no persistence: what it held goes with it
            assert [e["request_id"] for e in await _events(url, "calls")] == before

            private_redis.stop()
            loop = asyncio.get_running_loop()
            down_at = loop.time()
            during = await send_requests(gw, 60)
            assert pub.sent == 20  # answered while nothing could be delivered
            await wait_for(lambda: pub.failing)
            await asyncio.sleep(max(0.0, 5.0 - (loop.time() - down_at)))
            assert pub.sent == 20 and not pub.dropped

            private_redis.start()
            after = await send_requests(gw, 20)
            await wait_for(lambda: pub.sent >= 100, timeout=30)
            assert not pub.dropped
    got = [e["request_id"] for e in await _events(url, "calls")]
    # nothing lost, nothing twice, in request order
    assert got == during + after
