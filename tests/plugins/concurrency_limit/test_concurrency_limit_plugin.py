from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from portway.errors import TooManyRequestsError, UnavailableError
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginEnv, Stage
from portway.pipeline.registry import registry
from portway.plugins.concurrency_limit.config import ConcurrencyLimitConfig
from portway.plugins.concurrency_limit.plugin import ConcurrencyLimitPlugin


def make_ctx(ip: str = "10.0.0.1") -> RequestContext:
    return RequestContext(Request("GET", "/", b"", Headers(), client_ip=ip))


def plugin(**cfg: object) -> ConcurrencyLimitPlugin:
    cfg.setdefault("key", ["ip"])
    return ConcurrencyLimitPlugin(ConcurrencyLimitConfig.model_validate(cfg), PluginEnv(route="r"))


def test_registered_and_validated():
    assert registry.get("concurrency_limit") is ConcurrencyLimitPlugin
    assert ConcurrencyLimitPlugin.stage is Stage.traffic
    for bad in [{}, {"max": 0}, {"max": 1, "status": 500}, {"max": 1, "key": ["nope"]}]:
        with pytest.raises(ValidationError):
            ConcurrencyLimitConfig.model_validate(bad)


async def test_local_slots_taken_and_released_on_log():
    p = plugin(max=2)
    a, b, c = make_ctx(), make_ctx(), make_ctx()
    assert await p.on_request(a) is None
    assert await p.on_request(b) is None
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(c)
    assert ei.value.code == "concurrency_limited"
    assert dict(ei.value.headers)["retry-after"] == "1"
    # the rejected request holds nothing: its on_log releases nothing
    p.on_log(c)
    assert p.local.in_flight("ip:10.0.0.1") == 2
    assert await p.on_request(make_ctx(ip="10.0.0.2")) is None  # other keys unaffected
    p.on_log(a)
    p.on_log(a)  # idempotent per request
    assert p.local.in_flight("ip:10.0.0.1") == 1
    assert await p.on_request(c) is None
    p.on_log(b)
    p.on_log(c)
    assert p.local.in_flight("ip:10.0.0.1") == 0
    assert "ip:10.0.0.1" not in p.local._counts


async def test_status_503_and_instances():
    p = plugin(max=4, instances=2, status=503)
    await p.on_request(make_ctx())
    await p.on_request(make_ctx())
    with pytest.raises(UnavailableError):
        await p.on_request(make_ctx())


async def test_redis_leases_shared_and_released(redis_url, redis_prefix):
    cfg = dict(max=2, store="redis", redis={"url": redis_url, "key_prefix": redis_prefix})
    p1, p2 = plugin(**cfg), plugin(**cfg)
    a, b, c = make_ctx(), make_ctx(), make_ctx()
    await p1.on_request(a)
    await p2.on_request(b)
    with pytest.raises(TooManyRequestsError):
        await p1.on_request(c)
    p2.on_log(b)
    await asyncio.sleep(0)
    await p2.aclose()  # waits for the release to land
    assert await p1.on_request(c) is None
    p1.on_log(a)
    p1.on_log(c)
    await p1.aclose()
    assert p1.store is not None
    # every lease was given back: the emptied set is gone, nothing lingers
    assert await p1.store.client.keys(redis_prefix + "*") == []
    for q in (p1, p2):
        assert q.store is not None
        await q.store.aclose()


async def test_redis_lease_expires_when_never_released(redis_url, redis_prefix):
    cfg = dict(
        max=1,
        store="redis",
        lease_ttl="200ms",
        redis={"url": redis_url, "key_prefix": redis_prefix},
    )
    p = plugin(**cfg)
    await p.on_request(make_ctx())  # a "crashed" request: on_log never runs
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())
    await asyncio.sleep(0.25)
    assert await p.on_request(make_ctx()) is None
    assert p.store is not None
    for k in await p.store.client.keys(redis_prefix + "*"):
        await p.store.delete(k.decode())
    await p.store.aclose()


async def test_redis_down_allow_and_deny():
    down = {"url": "redis://127.0.0.1:1/0", "timeout": "100ms"}
    p = plugin(max=1, store="redis", redis=down)
    ctx = make_ctx()
    assert await p.on_request(ctx) is None  # local fallback
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())
    p.on_log(ctx)  # local slot released
    assert p.local.in_flight("ip:10.0.0.1") == 0
    d = plugin(max=1, store="redis", redis=down, on_store_error="deny")
    with pytest.raises(UnavailableError):
        await d.on_request(make_ctx())
    for q in (p, d):
        assert q.store is not None
        await q.store.aclose()


def test_local_store_hooks_never_suspend():
    # sync_hooks: the task-free path drives on_request without a loop step
    from portway.pipeline.runner import drive

    p = plugin(max=1)
    assert p.sync_hooks
    a = make_ctx()
    assert drive(p.on_request(a)) is None
    with pytest.raises(TooManyRequestsError):
        drive(p.on_request(make_ctx()))
    p.on_log(a)
    assert p.local.in_flight("ip:10.0.0.1") == 0
    assert not plugin(max=1, store="redis").sync_hooks
