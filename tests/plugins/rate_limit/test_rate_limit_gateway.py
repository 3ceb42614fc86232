"""The limiting plugins inside a real in-process gateway, over real sockets."""

from __future__ import annotations

import asyncio

import orjson

from portway.http.models import Request, Response
from tests.helpers import (
    ServingPath,
    http_get,
    run_gateway,
    run_upstream,
    simple_config,
)


async def test_rate_limit_through_gateway(path: ServingPath) -> None:
    async with run_upstream() as up:
        cfg = simple_config(
            up.url,
            plugins=[
                {
                    "name": "rate_limit",
                    "config": {"limits": [{"rate": 2, "per": "1h"}], "key": ["ip"]},
                }
            ],
        )
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)  # (through a route without the limit)
            warmed = len(up.requests)
            for left in (1, 0):
                status, h, _ = await http_get(gw.url + "/a")
                assert status == 200
                assert h.get("ratelimit-policy") == '"default";q=2;w=3600'
                assert h.get("ratelimit", "").startswith(f'"default";r={left};t=')
                assert h.get("x-ratelimit-remaining") == str(left)
                assert len(h.get_all("ratelimit")) == 1
            status, h, body = await http_get(gw.url + "/a")
            assert status == 429
            assert h.get("content-type") == "application/json"
            doc = orjson.loads(body)
            assert doc["status"] == 429 and doc["code"] == "rate_limited"
            assert int(h.get("retry-after", "0")) == 1800
            assert h.get("x-ratelimit-remaining") == "0"
            assert len(h.get_all("ratelimit")) == 1
            assert len(up.requests) == warmed + 2
            # the in-memory store decides without awaiting: on a warm pool, the allowed
            # requests take the task-free path; the refusal is the hook's own answer
            path.assert_served(3, local=1)


def test_every_store_offers_sync_hooks() -> None:
    """The Redis store suspends on the decision's future; the task-free path parks the
    request on it (tests/plugins/rate_limit/test_redis_paths.py)."""
    from portway.pipeline.plugin import PluginEnv
    from portway.plugins.rate_limit.config import RateLimitConfig
    from portway.plugins.rate_limit.plugin import RateLimitPlugin

    def plugin(**cfg: object) -> RateLimitPlugin:
        return RateLimitPlugin(
            RateLimitConfig.model_validate({"limits": [{"rate": 1, "per": "1s"}], **cfg}),
            PluginEnv(),
        )

    assert plugin().sync_hooks
    redis = plugin(store="redis", redis={"url": "redis://127.0.0.1:1"})
    assert redis.sync_hooks
    # its response work only sets fields: the route keeps the lite response head
    from portway.pipeline.runner import Chain

    assert Chain([redis]).fields_only


async def test_concurrency_limit_released_after_each_request():
    gate = asyncio.Event()

    async def slow(req: Request) -> Response:
        if req.path == "/slow":
            await gate.wait()
        return Response.json(200, {})

    async with run_upstream(slow) as up:
        cfg = simple_config(
            up.url,
            plugins=[{"name": "concurrency_limit", "config": {"max": 1, "key": ["global"]}}],
        )
        async with run_gateway(cfg) as gw:
            first = asyncio.create_task(http_get(gw.url + "/slow"))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if up.requests:
                    break
            status, _h, body = await http_get(gw.url + "/fast")
            assert status == 429 and orjson.loads(body)["code"] == "concurrency_limited"
            gate.set()
            assert (await first)[0] == 200
            for _ in range(3):  # each completed request gave its slot back
                assert (await http_get(gw.url + "/fast"))[0] == 200


async def test_quota_and_rate_limit_headers_combine():
    async with run_upstream() as up:
        cfg = simple_config(
            up.url,
            plugins=[
                {
                    "name": "rate_limit",
                    "config": {"limits": [{"rate": 100, "per": "1s"}], "key": ["ip"]},
                },
                {"name": "quota", "config": {"day": 1, "store": "local", "key": ["ip"]}},
            ],
        )
        async with run_gateway(cfg) as gw:
            status, h, _ = await http_get(gw.url + "/")
            assert status == 200
            assert h.get("ratelimit-policy", "").startswith('"default";q=100;w=1, "daily";q=1;w=')
            assert h.get("x-ratelimit-limit") == "1"  # the tightest policy
            status, h, body = await http_get(gw.url + "/")
            assert status == 429 and orjson.loads(body)["code"] == "quota_exceeded"
            assert int(h.get("retry-after", "0")) >= 1
            assert len(h.get_all("ratelimit-policy")) == 1
