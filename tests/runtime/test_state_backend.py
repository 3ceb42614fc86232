"""``state.backend: redis``: plugins whose ``store`` is unset use Redis, so two gateway
instances share one limit and the keys really are in Redis; an explicit ``store`` wins."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from tests.helpers import http_get, run_gateway, run_upstream


def _config(up: str, redis_url: str, prefix: str, **plugin: Any) -> dict[str, Any]:
    limit: dict[str, Any] = {"key": ["global"], "limits": [{"rate": 3, "per": "1m"}]}
    limit.update(plugin)
    return {
        "state": {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix},
        "upstreams": {"u": {"targets": [{"url": up}]}},
        "routes": [
            {"name": "r", "match": {"paths": ["/"]}, "upstream": "u"},
            {
                "name": "cached",
                "match": {"paths": ["/c"]},
                "upstream": "u",
                "plugins": [{"name": "cache"}],
            },
        ],
        "plugins": [{"name": "rate_limit", "config": limit}],
    }


async def test_two_instances_share_a_global_limit_through_redis(
    redis_url: str, redis_prefix: str
) -> None:
    async with (
        run_upstream() as up,
        run_gateway(_config(up.url, redis_url, redis_prefix)) as a,
        run_gateway(_config(up.url, redis_url, redis_prefix)) as b,
    ):
        statuses = [(await http_get(gw.url + "/"))[0] for _ in range(4) for gw in (a, b)]
        assert sorted(statuses) == [200] * 3 + [429] * 5, statuses
        client = aioredis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        finally:
            await client.aclose()
        assert keys, "no rate-limit key reached Redis"
        cache = [p for p in a.gateway.graph.plugins if p.name == "cache"]
        assert cache and cache[0].config.store == "redis"


async def test_an_explicit_store_wins_over_state_backend(redis_url: str, redis_prefix: str) -> None:
    cfg = _config("http://127.0.0.1:9", redis_url, redis_prefix, store="local")
    async with run_gateway(cfg) as a, run_gateway(cfg) as b:
        limiter = [p for p in a.gateway.graph.plugins if p.name == "rate_limit"]
        assert limiter[0].config.store == "local"
        assert b.gateway.graph.plugins  # both built
