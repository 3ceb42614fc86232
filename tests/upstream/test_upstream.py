"""Upstream: breaker integration in pick, retry_after, snapshot, listeners (fake clock)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from portway.config.schema import UpstreamConfig
from portway.upstream.target import Target
from portway.upstream.upstream import Upstream, make_target
from tests.upstream.support import CtxFactory


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, n: int = 2, **kw: Any) -> tuple[Upstream, list[Any]]:
    events: list[Any] = []
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": f"http://127.0.0.1:{9101 + i}"} for i in range(n)],
            "circuit_breaker": {
                "failure_ratio": 0.5,
                "min_requests": 4,
                "window": "10s",
                "open_for": "5s",
                "half_open_probes": 2,
            },
            "health": {"passive": None},
            **kw,
        }
    )
    up = Upstream(
        "orders", cfg, clock=clock, on_state_change=lambda u, t, w, v: events.append((t.id, w, v))
    )
    return up, events


def trip(up: Upstream, t: Target) -> None:
    for _ in range(4):
        up.record(t, True, 0.01, 503)


def test_open_breaker_skipped_and_retry_after(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, events = make(c)
    a, b = up.targets
    trip(up, a)
    assert a.breaker.state == "open"
    assert {up.pick(make_ctx(), set()) for _ in range(10)} == {b}
    trip(up, b)
    assert up.pick(make_ctx(), set()) is None
    c.t += 1.2
    assert up.retry_after() == 4  # ceil(3.8)
    c.t += 3.5
    assert up.retry_after() == 1  # never below 1
    assert events == [("127.0.0.1:9101", "breaker", "open"), ("127.0.0.1:9102", "breaker", "open")]


def test_half_open_probes_reserved_by_pick(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, events = make(c, n=1)
    (a,) = up.targets
    trip(up, a)
    c.t += 5
    assert up.pick(make_ctx(), set()) is a
    assert up.pick(make_ctx(), set()) is a
    assert up.pick(make_ctx(), set()) is None  # both probe slots taken
    up.release(a)  # one probe abandoned (client went away)
    assert up.pick(make_ctx(), set()) is a
    up.record(a, True, 0.01, 200)
    up.record(a, True, 0.01, 200)
    assert a.breaker.state == "closed"
    assert [e[2] for e in events] == ["open", "half_open", "closed"]
    assert up.snapshot()[0]["breaker"] == "closed"


def test_pick_never_mutates_exclude(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, _ = make(c, n=3)
    a, b, cc = up.targets
    ex = {a}
    seen = Counter(up.pick(make_ctx(), ex) for _ in range(100))
    assert set(seen) == {b, cc}
    assert ex == {a}


def test_snapshot_and_ewma(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, _ = make(c)
    a, b = up.targets
    up.record(a, True, 0.120, 200)
    up.record(b, False, 3.0, None, "connect_error")  # connect time is not response latency
    a.in_flight = 2
    snap = up.snapshot()
    assert snap[0] == {
        "id": "127.0.0.1:9101",
        "url": "http://127.0.0.1:9101",
        "weight": 1,
        "healthy": True,
        "draining": False,
        "breaker": "closed",
        "in_flight": 2,
        "ewma_ms": 120.0,
    }
    assert snap[1]["ewma_ms"] == 0.0
    trip(up, a)
    c.t += 6
    assert up.snapshot()[0]["breaker"] == "half_open"


def test_least_latency_upstream_steers_by_recorded_latency(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, _ = make(c, n=3, balancing="least_latency")
    lat = dict(zip(up.targets, (0.005, 0.006, 0.150), strict=True))
    counts: Counter[Target] = Counter()
    for _ in range(2000):
        t = up.pick(make_ctx(), set())
        assert t is not None
        counts[t] += 1
        up.record(t, True, lat[t], 200)
        c.t += 0.0005
    assert counts[up.targets[2]] / 2000 <= 0.2


def test_make_pool_and_duplicates() -> None:
    made: list[Target] = []

    def make_pool(t: Target) -> str:
        made.append(t)
        return f"pool:{t.id}"

    cfg = UpstreamConfig.model_validate(
        {
            "targets": [
                {"url": "http://a.example:80"},
                {"url": "http://a.example"},
                {"url": "https://b.example", "weight": 0},
            ]
        }
    )
    up = Upstream("u", cfg, make_pool=make_pool)
    assert [t.id for t in up.targets] == ["a.example:80", "b.example:443"]
    assert [t.pool for t in up.targets] == ["pool:a.example:80", "pool:b.example:443"]
    assert up.targets[1].authority == "b.example"


def test_make_target_ipv6() -> None:
    t = make_target("http://[::1]:8080", 2)
    assert (t.id, t.host, t.port, t.weight, t.authority) == (
        "[::1]:8080",
        "::1",
        8080,
        2,
        "[::1]:8080",
    )


def test_listener_errors_do_not_break_record(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, _ = make(c, n=1)

    def bad(*a: Any) -> None:
        raise RuntimeError("listener bug")

    up.on_state_change = bad
    trip(up, up.targets[0])
    assert up.targets[0].breaker.state == "open"


def test_may_retry_and_backoff_delegate(make_ctx: CtxFactory) -> None:
    c = Clock()
    up, _ = make(c, retries={"attempts": 2, "backoff": "10ms", "per_try_timeout": "2s"})
    assert up.may_retry(make_ctx(), 1, False, "connect_error")
    assert not up.may_retry(make_ctx(), 2, False, "connect_error")
    assert not up.may_retry(make_ctx(method="POST"), 1, True, "502")
    assert 0 <= up.backoff(1) <= 0.01
    assert up.per_try_timeout == 2.0


def test_status_decides_failure_whatever_ok_says() -> None:
    c = Clock()
    up, _ = make(c, n=1)
    (a,) = up.targets
    for _ in range(10):
        up.record(a, False, 0.01, 500)  # a caller that calls every 5xx "not ok"
    assert a.breaker.state == "closed"
    for _ in range(10):
        up.record(a, False, 0.01, 502)
    assert a.breaker.state == "open"
