"""Three gateway instances sharing a real 3-primary Redis Cluster: rate limits exact across
them (keys spread over slots and nodes), the cache shared, config sync through Cluster
pub/sub, quotas exact; plus URL parsing for Cluster and Sentinel forms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from portway.http.client import simple_request
from portway.http.models import Request, Response
from portway.state.connect import parse_redis_url, state_redis_url
from tests.helpers import GatewayHandle, http_get, run_gateway, run_upstream
from tests.state.redis_cluster import RedisCluster

USERS = [f"user-{i}" for i in range(6)]
LIMIT = 25
PER_USER = 45  # requests sent per user: LIMIT admitted, the rest refused


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster(3)
    try:
        c.start()
        yield c
    finally:
        c.close()


def _cfg(up: str, url: str, prefix: str, paths: tuple[str, ...] = ("/rl", "/c", "/q")) -> Any:
    routes: list[dict[str, Any]] = []
    if "/rl" in paths:
        routes.append(
            {
                "name": "limited",
                "match": {"paths": ["/rl"]},
                "upstream": "u",
                "plugins": [
                    {
                        "name": "rate_limit",
                        "config": {
                            # a day's window: no refill can blur the count during the test
                            "limits": [{"rate": LIMIT, "per": "24h"}],
                            "key": ["header:x-user"],
                            "store": "redis",
                            "on_store_error": "deny",
                            "redis": {"timeout": "2s"},
                        },
                    }
                ],
            }
        )
    if "/c" in paths:
        routes.append(
            {
                "name": "cached",
                "match": {"paths": ["/c"]},
                "upstream": "u",
                "plugins": [{"name": "cache", "config": {"store": "redis", "default_ttl": "60s"}}],
            }
        )
    if "/q" in paths:
        routes.append(
            {
                "name": "quota",
                "match": {"paths": ["/q"]},
                "upstream": "u",
                "plugins": [
                    {
                        "name": "quota",
                        "config": {
                            "day": 10,
                            "key": ["header:x-user"],
                            "store": "redis",
                            "on_store_error": "deny",
                            "redis": {"timeout": "2s"},
                        },
                    }
                ],
            }
        )
    for extra in paths:
        if extra not in ("/rl", "/c", "/q"):
            routes.append({"name": extra.strip("/"), "match": {"paths": [extra]}, "upstream": "u"})
    return {
        "state": {"redis_url": url, "key_prefix": prefix, "sync_config": True},
        "upstreams": {"u": {"targets": [{"url": up}]}},
        "routes": routes,
    }


@contextlib.asynccontextmanager
async def _three(cfg: Any) -> AsyncIterator[list[GatewayHandle]]:
    async with run_gateway(cfg) as a, run_gateway(cfg) as b, run_gateway(cfg) as c:
        yield [a, b, c]


async def test_three_instances_share_limits_cache_quota_and_config(
    cluster: RedisCluster, redis_prefix: str
) -> None:
    hits = {"/c": 0}

    async def handler(req: Request) -> Response:
        if req.path == "/c":
            hits["/c"] += 1
            return Response.json(
                200,
                {"n": hits["/c"]},
            )
        return Response.json(200, {"ok": True})

    async with run_upstream(handler) as up:
        cfg = _cfg(up.url, cluster.url, redis_prefix)
        async with _three(cfg) as gws:
            # --- rate limit: every user's requests spread over the three instances ---------
            async def one(i: int, user: str) -> int:
                gw = gws[i % 3]
                return (await http_get(gw.url + "/rl", headers=[("x-user", user)]))[0]

            statuses: dict[str, list[int]] = {}
            for user in USERS:
                results = await asyncio.gather(*(one(i, user) for i in range(PER_USER)))
                statuses[user] = list(results)
            for user, got in statuses.items():
                assert sorted(set(got)) == [200, 429], (user, got)
                assert got.count(200) == LIMIT, (user, got.count(200))
            # the users' keys landed on more than one node: the cluster really routed them
            keys_per_node = [int(_dbsize(p)) for p in cluster.ports]
            assert sum(1 for n in keys_per_node if n > 0) >= 2, keys_per_node

            # --- cache: stored through one instance, served by the others -----------------
            s, h, _ = await http_get(gws[0].url + "/c")
            assert s == 200 and h.get("x-cache") == "MISS"

            async def cached_elsewhere() -> bool:
                got = [(await http_get(g.url + "/c"))[1].get("x-cache") for g in gws[1:]]
                return got == ["HIT", "HIT"]

            for _ in range(100):
                if await cached_elsewhere():
                    break
                await asyncio.sleep(0.05)
            assert await cached_elsewhere()
            assert hits["/c"] == 1
            # an unsafe method through another instance invalidates the object for every one
            # (guarded put, lookup and invalidation are scripts over one hash-tagged slot)
            r = await simple_request("DELETE", gws[1].url + "/c")
            assert r.status == 200 and hits["/c"] == 2
            s, h, _ = await http_get(gws[2].url + "/c")
            assert s == 200 and h.get("x-cache") == "MISS" and hits["/c"] == 3

            # --- quota: exact across the instances ----------------------------------------
            qs = [
                (await http_get(gws[i % 3].url + "/q", headers=[("x-user", "q")]))[0]
                for i in range(15)
            ]
            assert qs.count(200) == 10 and qs.count(429) == 5, qs

            # --- config sync through Cluster pub/sub ---------------------------------------
            assert (await http_get(gws[2].url + "/new"))[0] == 404
            new_cfg = _cfg(up.url, cluster.url, redis_prefix, ("/rl", "/c", "/q", "/new"))
            await gws[0].reload(new_cfg)
            import yaml

            assert gws[0].gateway.cluster is not None
            text = yaml.safe_dump(gws[0].gateway.config.model_dump(mode="json"))
            await gws[0].gateway.cluster.publish(text)

            async def synced() -> bool:
                got = [(await http_get(g.url + "/new"))[0] for g in gws[1:]]
                return got == [200, 200]

            for _ in range(100):
                if await synced():
                    break
                await asyncio.sleep(0.05)
            assert await synced()


def _dbsize(port: int) -> str:
    from tests.state.redis_cluster import _cli

    return _cli(port, "dbsize").strip() or "0"


def test_cluster_and_sentinel_urls() -> None:
    t = parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2")
    assert t.kind == "cluster"
    assert t.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert t.password == "pw"
    t = parse_redis_url("redis+sentinel://s1:26379,s2/mymaster/2")
    assert (t.kind, t.master, t.db, t.nodes) == (
        "sentinel",
        "mymaster",
        2,
        (("s1", 26379), ("s2", 26379)),
    )
    assert parse_redis_url("redis://h:1/0").kind == "single"
    assert parse_redis_url("redis://h:1/0", cluster=True).kind == "cluster"
    with pytest.raises(ValueError, match="names the monitored primary"):
        parse_redis_url("redis+sentinel://s1:26379")
    with pytest.raises(ValueError, match="only database 0"):
        parse_redis_url("redis+cluster://h:1/3")

    class State:
        redis_url = "redis://h:7000/0"
        cluster = True

    assert state_redis_url(State()) == "redis+cluster://h:7000/0"


def test_state_config_rejects_a_bad_redis_url() -> None:
    from portway.config.errors import ConfigError
    from portway.config.loader import load_config_text

    with pytest.raises(ConfigError, match="redis_url"):
        load_config_text("state: {redis_url: 'http://h:1'}\n", "x")
    with pytest.raises(ConfigError, match="names the primary"):
        load_config_text("state: {redis_url: 'redis+sentinel://h:26379'}\n", "x")
    cfg = load_config_text("state: {redis_url: 'redis://h:7000', cluster: true}\n", "x")
    assert cfg.state.cluster is True


async def test_cluster_outage_applies_on_store_error_then_limits_resume(
    redis_prefix: str,
) -> None:
    c = RedisCluster(3)
    try:
        c.start()

        def route(name: str, on_error: str) -> dict[str, Any]:
            return {
                "name": name,
                "match": {"paths": [f"/{name}"]},
                "upstream": "u",
                "plugins": [
                    {
                        "name": "rate_limit",
                        "config": {
                            "limits": [{"rate": 3, "per": "24h"}],
                            "key": ["global"],
                            "store": "redis",
                            "on_store_error": on_error,
                            "redis": {"timeout": "500ms"},
                        },
                    }
                ],
            }

        async with run_upstream() as up:
            cfg = {
                "state": {"redis_url": c.url, "key_prefix": redis_prefix},
                "upstreams": {"u": {"targets": [{"url": up.url}]}},
                "routes": [route("allow", "allow"), route("deny", "deny")],
            }
            async with run_gateway(cfg) as gw:
                before = [(await http_get(gw.url + "/deny"))[0] for _ in range(4)]
                assert before == [200, 200, 200, 429]
                c.stop()
                # every primary gone: the configured on_store_error decides, at once
                assert (await http_get(gw.url + "/deny"))[0] == 503
                assert (await http_get(gw.url + "/allow"))[0] == 200
                c.restart()
                # the nodes came back empty (no persistence): a fresh count of 3, then 429
                # from the cluster again (not 503 from the outage path)
                back = False
                for _ in range(300):
                    if (await http_get(gw.url + "/deny"))[0] == 429:
                        back = True
                        break
                    await asyncio.sleep(0.05)
                assert back
    finally:
        c.close()
