from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from portway.errors import TooManyRequestsError, UnavailableError
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginEnv, Stage
from portway.pipeline.registry import registry
from portway.plugins.quota.config import QuotaConfig
from portway.plugins.quota.periods import period
from portway.plugins.quota.plugin import QuotaPlugin

PARIS = ZoneInfo("Europe/Paris")


class Clock:
    def __init__(self, dt: datetime) -> None:
        self.t = dt.timestamp()

    def __call__(self) -> float:
        return self.t


def make_ctx(user: str = "alice", headers: list[tuple[str, str]] | None = None) -> RequestContext:
    ctx = RequestContext(Request("GET", "/", b"", Headers.from_pairs(headers or [])))
    ctx.consumer = Consumer(id=user, username=user)
    return ctx


def plugin(clock: Clock, env: PluginEnv | None = None, **cfg: object) -> QuotaPlugin:
    cfg.setdefault("store", "local")
    return QuotaPlugin(QuotaConfig.model_validate(cfg), env or PluginEnv(route="api"), clock=clock)


def test_registered_and_validated():
    assert registry.get("quota") is QuotaPlugin
    assert QuotaPlugin.stage is Stage.traffic
    for bad in [{}, {"day": 0}, {"day": 1, "timezone": "Mars/Base"}, {"month": 1, "cost": "x"}]:
        with pytest.raises(ValidationError):
            QuotaConfig.model_validate(bad)


def test_periods_follow_local_midnight_and_dst():
    # 2026-03-29 is the spring-forward day in Paris: 23 hours long
    pid, start, end = period("day", datetime(2026, 3, 29, 12, tzinfo=PARIS).timestamp(), PARIS)
    assert pid == "d2026-03-29" and end - start == 23 * 3600
    pid, start, end = period(
        "month", datetime(2026, 12, 31, 23, 59, tzinfo=PARIS).timestamp(), PARIS
    )
    assert pid == "m2026-12"
    assert datetime.fromtimestamp(end, PARIS) == datetime(2027, 1, 1, tzinfo=PARIS)
    # 23:30 UTC on Nov 30 is already Dec 1 in Paris
    utc = datetime(2026, 11, 30, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert period("month", utc, PARIS)[0] == "m2026-12"
    assert period("day", utc, ZoneInfo("UTC"))[0] == "d2026-11-30"


async def test_daily_quota_resets_at_local_midnight():
    clock = Clock(datetime(2026, 11, 28, 23, 59, 0, tzinfo=PARIS))
    p = plugin(clock, day=2, timezone="Europe/Paris")
    ctx = make_ctx()
    await p.on_request(ctx)
    ctx.response = Response(200)
    await p.on_response(ctx)
    h = ctx.response.headers
    assert h.get("ratelimit-policy") == '"daily";q=2;w=86400'
    assert h.get("ratelimit") == '"daily";r=1;t=60'
    assert h.get("x-ratelimit-remaining") == "1"
    await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(make_ctx())
    assert ei.value.code == "quota_exceeded"
    assert dict(ei.value.headers)["retry-after"] == "60"
    assert await p.on_request(make_ctx("bob")) is None
    clock.t += 61
    assert await p.on_request(make_ctx()) is None


async def test_day_and_month_all_or_nothing():
    clock = Clock(datetime(2026, 11, 10, 12, tzinfo=ZoneInfo("UTC")))
    p = plugin(clock, day=3, month=5)
    for _ in range(3):
        await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())  # day exhausted: month not charged
    clock.t += 86400
    await p.on_request(make_ctx())
    await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError) as ei:
        await p.on_request(make_ctx())
    # month exhausted: retry after the month ends (Dec 1)
    assert int(dict(ei.value.headers)["retry-after"]) == int(
        datetime(2026, 12, 1, tzinfo=ZoneInfo("UTC")).timestamp() - clock.t
    )


async def test_redis_quota_persists_across_instances(redis_url, redis_prefix):
    clock = Clock(datetime(2026, 11, 10, 12, tzinfo=ZoneInfo("UTC")))
    cfg = dict(
        day=3,
        store="redis",
        cost="header:x-cost",
        redis={"url": redis_url, "key_prefix": redis_prefix},
    )
    p1, p2 = plugin(clock, **cfg), plugin(clock, **cfg)
    await p1.on_request(make_ctx(headers=[("x-cost", "2")]))
    with pytest.raises(TooManyRequestsError):
        await p2.on_request(make_ctx(headers=[("x-cost", "2")]))
    assert await p2.on_request(make_ctx()) is None
    assert p1.store is not None
    keys = await p1.store.client.keys(redis_prefix + "*")
    assert [k.decode() for k in keys] == [redis_prefix + "{api|c:alice}:d2026-11-10"]
    assert await p1.store.get(keys[0].decode()) == b"3"
    ttl = await p1.store.client.ttl(keys[0])
    assert ttl > 0
    await p1.store.delete(keys[0].decode())
    for q in (p1, p2):
        assert q.store is not None
        await q.store.aclose()


async def test_redis_down_policies():
    clock = Clock(datetime(2026, 11, 10, 12, tzinfo=ZoneInfo("UTC")))
    down = {"url": "redis://127.0.0.1:1/0", "timeout": "100ms"}
    p = plugin(clock, day=4, instances=2, store="redis", redis=down)
    await p.on_request(make_ctx())
    await p.on_request(make_ctx())
    with pytest.raises(TooManyRequestsError):
        await p.on_request(make_ctx())  # local fallback at 4/2
    d = plugin(clock, day=4, store="redis", redis=down, on_store_error="deny")
    with pytest.raises(UnavailableError):
        await d.on_request(make_ctx())
    for q in (p, d):
        assert q.store is not None
        await q.store.aclose()


def test_local_store_hooks_never_suspend():
    # sync_hooks: the task-free path drives the hooks without a loop step
    from portway.pipeline.runner import drive

    clock = Clock(datetime(2026, 11, 28, 12, 0, 0, tzinfo=PARIS))
    p = plugin(clock, day=1, timezone="Europe/Paris")
    assert p.sync_hooks
    ctx = make_ctx()
    assert drive(p.on_request(ctx)) is None
    ctx.response = Response(200)
    drive(p.on_response(ctx))
    assert ctx.response.headers.get("x-ratelimit-remaining") == "0"
    with pytest.raises(TooManyRequestsError):
        drive(p.on_request(make_ctx()))
    assert not plugin(clock, day=1, store="redis").sync_hooks
