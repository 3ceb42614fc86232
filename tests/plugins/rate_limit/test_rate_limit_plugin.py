"""rate_limit plugin behaviour on prepared contexts (no server needed)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from portway.config.schema import RouteConfig
from portway.errors import BadRequestError, TooManyRequestsError, UnavailableError
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginEnv, Stage
from portway.pipeline.registry import registry
from portway.plugins._ratelimit.keys import compile_key
from portway.plugins.rate_limit.config import RateLimitConfig
from portway.plugins.rate_limit.plugin import RateLimitPlugin
from portway.routing.router import RouteMatch


def make_ctx(
    ip: str = "10.0.0.1",
    headers: list[tuple[str, str]] | None = None,
    consumer: Consumer | None = None,
    route: str = "api",
    upstream: str | None = "backend",
) -> RequestContext:
    req = Request("GET", "/x", b"", Headers.from_pairs(headers or []), client_ip=ip)
    ctx = RequestContext(req, "rid")
    ctx.match = RouteMatch(RouteConfig(name=route, upstream=upstream), 0)
    ctx.consumer = consumer
    return ctx


def plugin(env: PluginEnv | None = None, **cfg: object) -> RateLimitPlugin:
    cfg.setdefault("limits", [{"rate": 3, "per": "1s"}])
    return RateLimitPlugin(RateLimitConfig.model_validate(cfg), env or PluginEnv(route="api"))


async def respond(p: RateLimitPlugin, ctx: RequestContext) -> Response:
    ctx.response = Response(200)
    await p.on_response(ctx)
    return ctx.response


def test_registered_and_staged():
    assert registry.get("rate_limit") is RateLimitPlugin
    assert RateLimitPlugin.stage is Stage.traffic


@pytest.mark.parametrize(
    "cfg",
    [
        {"limits": []},
        {"limits": [{"rate": 0, "per": "1s"}]},
        {"limits": [{"rate": 1, "per": "0s"}]},
        {"limits": [{"rate": 1, "per": "1s", "burst": 0.5}]},
        {"limits": [{"rate": 1, "per": "1s", "burst": 5}], "algorithm": "fixed_window"},
        {"limits": [{"rate": 1, "per": "1s"}], "key": ["cookie:x"]},
        {"limits": [{"rate": 1, "per": "1s"}], "key": []},
        {"limits": [{"rate": 1, "per": "1s"}], "cost": "body"},
        {"limits": [{"rate": 1, "per": "1s"}], "cost": -1},
        {"limits": [{"rate": 1, "per": "1s"}], "cost": True},
        {"limits": [{"rate": 1, "per": "1s", "name": 'a"b'}]},
        {"limits": [{"rate": 1, "per": "1s"}], "unknown": 1},
        {"limits": [{"rate": 1, "per": "1s", "name": "a"}, {"rate": 2, "per": "1s", "name": "a"}]},
    ],
)
def test_invalid_config_rejected(cfg):
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(cfg)


async def test_burst_then_429_with_headers():
    p = plugin(limits=[{"rate": 10, "per": "1s", "burst": 3}], key=["ip"])
    for i in range(3):
        ctx = make_ctx()
        assert await p.on_request(ctx) is None
        h = (await respond(p, ctx)).headers
        assert h.get("ratelimit-policy") == '"default";q=10;w=1'
        assert re.fullmatch(rf'"default";r={2 - i};t=1', h.get("ratelimit") or "")
        assert h.get("x-ratelimit-limit") == "10"
        assert h.get("x-ratelimit-remaining") == str(2 - i)
        assert h.get("x-ratelimit-reset") == "1"
    ctx = make_ctx()
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(ctx)
    err = ei.value
    assert err.status == 429
    hdrs = dict(err.headers)
    assert hdrs["retry-after"] == "1"
    assert hdrs["ratelimit"].startswith('"default";r=0;')
    assert hdrs["x-ratelimit-remaining"] == "0"
    # the error response also gets the fields when response phases run on it
    h = (await respond(p, ctx)).headers
    assert h.get_all("ratelimit") == [hdrs["ratelimit"]]
    # another client is unaffected
    assert await p.on_request(make_ctx(ip="10.0.0.2")) is None


async def test_headers_modes():
    for mode, present, absent in [
        ("ietf", ["ratelimit", "ratelimit-policy"], ["x-ratelimit-limit"]),
        ("legacy", ["x-ratelimit-limit", "x-ratelimit-reset"], ["ratelimit"]),
        ("none", [], ["ratelimit", "x-ratelimit-limit"]),
    ]:
        p = plugin(headers=mode)
        ctx = make_ctx()
        await p.on_request(ctx)
        h = (await respond(p, ctx)).headers
        assert all(n in h for n in present), mode
        assert not any(n in h for n in absent), mode


async def test_multiple_limits_report_each_policy_and_tightest_legacy():
    p = plugin(
        limits=[{"rate": 10, "per": "1s", "burst": 20}, {"rate": 5, "per": "1h"}], key=["ip"]
    )
    ctx = make_ctx()
    await p.on_request(ctx)
    h = (await respond(p, ctx)).headers
    assert h.get("ratelimit-policy") == '"10-per-1s";q=10;w=1, "5-per-3600s";q=5;w=3600'
    assert re.fullmatch(r'"10-per-1s";r=19;t=1, "5-per-3600s";r=4;t=720', h.get("ratelimit"))
    assert h.get("x-ratelimit-limit") == "5"
    assert h.get("x-ratelimit-remaining") == "4"
    for _ in range(4):
        await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(make_ctx())
    # the hourly limit refills one unit every 720 s
    assert dict(ei.value.headers)["retry-after"] == "720"


async def test_weighted_cost_from_header():
    p = plugin(limits=[{"rate": 10, "per": "1m"}], cost="header:X-Cost", key=["ip"])
    assert await p.on_request(make_ctx(headers=[("x-cost", "7")])) is None
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx(headers=[("x-cost", "4")]))
    assert await p.on_request(make_ctx(headers=[("x-cost", "3")])) is None
    # absent header: cost 1; invalid: 400
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())
    for bad in ["-1", "1.5", "abc", "99999999999", ""]:
        with pytest.raises(BadRequestError):
            await p.on_request(make_ctx(headers=[("x-cost", bad)]))
    # a cost that can never fit gets 429 without a misleading Retry-After
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(make_ctx(ip="10.9.9.9", headers=[("x-cost", "11")]))
    assert "retry-after" not in dict(ei.value.headers)


async def test_key_parts():
    alice = Consumer(id="u1", username="alice", credential="key_auth:abc")
    anon = Consumer(id="anon", username="anonymous", anonymous=True)
    ctx = make_ctx(consumer=alice, headers=[("x-tenant", "t1")])
    assert compile_key(["consumer"])(ctx) == "c:u1"
    assert compile_key(["credential"])(ctx) == "k:key_auth:abc"
    assert compile_key(["header:X-Tenant", "route", "service"])(ctx) == "h:t1|r:api|s:backend"
    assert compile_key(["global"])(ctx) == "*"
    # anonymous / missing identity falls back to the client IP (never one shared bucket)
    assert compile_key(["consumer"])(make_ctx(consumer=anon)) == "ip:10.0.0.1"
    assert compile_key(["credential"])(make_ctx()) == "ip:10.0.0.1"
    assert compile_key(["header:X-Tenant"])(make_ctx(ip="::1")) == "ip:::1"
    ctx = make_ctx(upstream=None)
    ctx.upstream_name = "picked"
    assert compile_key(["service"])(ctx) == "s:picked"


async def test_consumers_are_limited_separately():
    p = plugin(limits=[{"rate": 1, "per": "1h"}])
    a = Consumer(id="a", username="a")
    b = Consumer(id="b", username="b")
    assert await p.on_request(make_ctx(consumer=a)) is None
    assert await p.on_request(make_ctx(consumer=b)) is None
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx(consumer=a))


async def test_state_survives_reload_through_env_shared():
    env = PluginEnv(route="api")
    p1 = plugin(env, limits=[{"rate": 2, "per": "1h"}], key=["ip"])
    await p1.on_request(make_ctx())
    await p1.on_request(make_ctx())
    p2 = plugin(env, limits=[{"rate": 2, "per": "1h"}], key=["ip"])
    with pytest.raises(TooManyRequestsError):
        await p2.on_request(make_ctx())
    # a changed limit starts fresh
    p3 = plugin(env, limits=[{"rate": 3, "per": "1h"}], key=["ip"])
    assert await p3.on_request(make_ctx()) is None


async def test_instances_divide_local_limit():
    p = plugin(limits=[{"rate": 10, "per": "1h"}], instances=5, key=["ip"])
    assert [s.burst for s in p.local.limits] == [2]
    await p.on_request(make_ctx())
    await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())


async def test_redis_store_exact_and_shared(redis_url, redis_prefix):
    cfg = dict(
        limits=[{"rate": 5, "per": "1h"}],
        key=["ip"],
        store="redis",
        redis={"url": redis_url, "key_prefix": redis_prefix},
    )
    p1 = plugin(PluginEnv(route="api"), **cfg)
    p2 = plugin(PluginEnv(route="api"), **cfg)  # another "process": separate store objects
    admitted = 0
    for i in range(10):
        try:
            await (p1 if i % 2 else p2).on_request(make_ctx())
            admitted += 1
        except TooManyRequestsError:
            pass
    assert admitted == 5
    assert p1.redis is not None
    await p1.redis.store.delete(*p1.redis.keys_for("ip:10.0.0.1"))
    for q in (p1, p2):
        await q.redis.store.aclose()


async def test_store_down_allow_falls_back_then_recovers(private_redis, redis_prefix):
    cfg = dict(
        limits=[{"rate": 4, "per": "1h"}],
        key=["ip"],
        store="redis",
        instances=2,
        redis={"url": private_redis.url, "key_prefix": redis_prefix, "backoff": "100ms"},
    )
    p = plugin(**cfg)
    assert await p.on_request(make_ctx()) is None  # redis: 3 left
    private_redis.stop()
    # fallback: local limiter at 4/2 = 2, no errors
    results = []
    for _ in range(4):
        try:
            results.append(await p.on_request(make_ctx()) is None)
        except TooManyRequestsError:
            results.append(False)
    assert results == [True, True, False, False]
    private_redis.start()
    import asyncio

    await asyncio.sleep(0.15)
    # exact limiting resumes from Redis' state (fresh server: full 4)
    ok = 0
    for _ in range(6):
        try:
            await p.on_request(make_ctx())
            ok += 1
        except TooManyRequestsError:
            pass
    assert ok == 4
    await p.redis.store.aclose()


async def test_store_down_deny_answers_503():
    p = plugin(
        store="redis",
        on_store_error="deny",
        redis={"url": "redis://127.0.0.1:1/0", "timeout": "100ms"},
    )
    for _ in range(3):
        with pytest.raises(UnavailableError) as ei:
            await p.on_request(make_ctx())
        assert ei.value.status == 503
        assert dict(ei.value.headers)["retry-after"] == "1"
    await p.redis.store.aclose()


def test_default_redis_url_from_gateway_settings():
    from portway.config.schema import GatewayConfig

    settings = GatewayConfig.model_validate(
        {"state": {"redis_url": "redis://example:6390/2", "key_prefix": "gw:"}}
    )
    p = plugin(PluginEnv(route=None, settings=settings), store="redis")
    assert p.redis is not None
    assert p.redis.keys_for("k")[0].startswith("gw:rl:{*|k}")
    assert p.redis.store.url == "redis://example:6390/2"
