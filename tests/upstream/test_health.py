"""Active probes against real local HTTP servers; passive marking from recorded outcomes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from portway.config.schema import UpstreamConfig
from portway.upstream.upstream import Upstream
from tests.upstream.support import CtxFactory, HttpServer

Servers = Callable[[], Awaitable[HttpServer]]


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_active_probe_down_and_up(
    http_servers: Servers, make_ctx: CtxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await http_servers(), await http_servers()
    events: list[tuple[str, str, Any]] = []
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": a.url}, {"url": b.url}],
            "health": {
                "min_healthy_percent": 0,  # no panic mode: all down means no target
                "active": {
                    "path": "/healthz",
                    "interval": "30ms",
                    "timeout": "200ms",
                    "healthy_after": 2,
                    "unhealthy_after": 2,
                },
            },
        }
    )
    up = Upstream("orders", cfg, on_state_change=lambda u, t, w, v: events.append((t.id, w, v)))
    ta, tb = up.targets
    caplog.set_level(logging.INFO, logger="portway.upstream")
    await up.start()
    try:
        await wait_for(lambda: a.hits >= 2 and b.hits >= 2)
        assert ta.healthy and tb.healthy
        b.status = 503
        await wait_for(lambda: not tb.healthy)
        assert {up.pick(make_ctx(), set()) for _ in range(20)} == {ta}
        # a stopped server (connection refused) is unhealthy too
        await a.stop()
        await wait_for(lambda: not ta.healthy)
        assert up.pick(make_ctx(), set()) is None
        assert up.retry_after() >= 1
        b.status = 200
        await wait_for(lambda: tb.healthy)
        await a.start()
        await wait_for(lambda: ta.healthy)
        assert {up.pick(make_ctx(), set()) for _ in range(20)} == {ta, tb}
    finally:
        await up.aclose()
    assert events == [
        (tb.id, "healthy", False),
        (ta.id, "healthy", False),
        (tb.id, "healthy", True),
        (ta.id, "healthy", True),
    ]
    downs = [r for r in caplog.records if "unhealthy" in r.getMessage()]
    assert len(downs) == 2  # logged once per transition, not per probe


async def test_probe_thresholds_need_consecutive_results(http_servers: Servers) -> None:
    s = await http_servers()
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": s.url}],
            "health": {
                "active": {
                    "interval": "1h",
                    "timeout": "500ms",
                    "healthy_after": 3,
                    "unhealthy_after": 2,
                }
            },
        }
    )
    up = Upstream("u", cfg)
    (t,) = up.targets
    probe = up.health.probe_once
    s.status = 500
    await probe(t)
    assert t.healthy
    s.status = 200
    await probe(t)  # streak broken
    s.status = 500
    await probe(t)
    assert t.healthy
    await probe(t)
    assert not t.healthy
    s.status = 204
    await probe(t)
    await probe(t)
    assert not t.healthy
    await probe(t)
    assert t.healthy
    await up.aclose()


async def test_probe_timeout_counts_as_failure() -> None:
    # a server that accepts and never answers
    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": f"http://127.0.0.1:{port}"}],
            "health": {"active": {"interval": "1h", "timeout": "100ms", "unhealthy_after": 1}},
        }
    )
    up = Upstream("u", cfg)
    t0 = asyncio.get_running_loop().time()
    await up.health.probe_once(up.targets[0])
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert not up.targets[0].healthy
    server.close()
    await up.aclose()


async def test_custom_probe_exception_is_a_failure() -> None:
    async def broken(t: Any) -> bool:
        raise RuntimeError("boom")

    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": "http://127.0.0.1:1"}],
            "health": {"active": {"interval": "1h", "unhealthy_after": 1}},
        }
    )
    up = Upstream("u", cfg, probe=broken)
    await up.health.probe_once(up.targets[0])
    assert not up.targets[0].healthy


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_passive_marks_down_after_consecutive_failures(make_ctx: CtxFactory) -> None:
    c = Clock()
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": "http://127.0.0.1:9101"}, {"url": "http://127.0.0.1:9102"}],
            "health": {
                "passive": {"unhealthy_after": 3, "on_status": [502, 503], "recover_after": "10s"}
            },
        }
    )
    up = Upstream("u", cfg, clock=c)
    a, b = up.targets
    up.record(a, True, 0.01, 503)
    up.record(a, True, 0.01, 500)  # not an on_status code: resets the streak
    up.record(a, True, 0.01, 502)
    up.record(a, False, 0.01, None, "timeout")
    assert a.healthy
    up.record(a, False, 0.0, None, "connect_error")
    assert not a.healthy
    assert {up.pick(make_ctx(), set()) for _ in range(10)} == {b}
    assert up.retry_after() == 1  # b is still fine
    for _ in range(5):
        up.record(b, False, 0.0, None, "reset")
    assert b.healthy  # the last healthy target is never ejected
    assert up.pick(make_ctx(), set()) is b
    c.t += 4
    assert up.retry_after() == 1
    # recover_after elapsed: a comes back on trial
    c.t += 6.5
    assert up.pick(make_ctx(), set()) in (a, b)
    assert a.healthy and b.healthy
    # one failure during the trial sends it straight back
    up.record(a, True, 0.01, 503)
    assert not a.healthy
    up.record(b, True, 0.01, 200)
    up.record(b, True, 0.01, 503)
    assert b.healthy  # the success ended b's streak


def test_passive_disabled(make_ctx: CtxFactory) -> None:
    cfg = UpstreamConfig.model_validate(
        {"targets": [{"url": "http://127.0.0.1:9101"}], "health": {"passive": None}}
    )
    up = Upstream("u", cfg)
    (t,) = up.targets
    for _ in range(50):
        up.record(t, False, 0.0, None, "connect_error")
    assert t.healthy


@pytest.mark.parametrize("on_status", [[], [503], [200, 503]])
def test_a_remembered_plain_status_records_as_a_looked_up_one(on_status: list[int]) -> None:
    """``Upstream.record`` remembers the last status in neither failure set: any sequence of
    statuses leaves the targets (streaks, health, breaker) as the set lookups would."""
    import random

    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": "http://127.0.0.1:9101"}, {"url": "http://127.0.0.1:9102"}],
            "health": {
                "passive": {"unhealthy_after": 2, "on_status": on_status, "recover_after": "10s"}
            },
            "circuit_breaker": {"min_requests": 4, "window": "3s", "open_for": "2s"},
        }
    )
    c1, c2 = Clock(), Clock()
    ups = Upstream("u", cfg, clock=c1), Upstream("u", cfg, clock=c2)
    rng = random.Random(3)
    for _ in range(300):
        status = rng.choice([200, 200, 200, 204, 404, 500, 502, 503])
        i = rng.randrange(2)
        ups[1]._plain_status = 0  # looks every status up
        for up in ups:
            up.record(up.targets[i], True, 0.01, status)
        c1.t += 0.5
        c2.t += 0.5
        got = [
            [(t.fails, t.healthy, t.breaker.state if t.breaker else None) for t in up.targets]
            for up in ups
        ]
        assert got[0] == got[1]
