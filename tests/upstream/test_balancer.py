"""Balancers: distribution, smoothness, steering, hash stability, skipping rules."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from portway.config.schema import CircuitBreakerConfig
from portway.upstream.balancer import (
    ConsistentHashBalancer,
    LeastConnectionsBalancer,
    LeastLatencyBalancer,
    WeightedRoundRobinBalancer,
    hash_key,
    make_balancer,
    peak_ewma_load,
    peak_ewma_observe,
)
from portway.upstream.breaker import CircuitBreaker
from portway.upstream.target import Target
from tests.upstream.support import CtxFactory

KINDS = [
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_latency",
    "consistent_hash",
    "random",
]


def targets(*weights: int) -> list[Target]:
    return [
        Target(id=f"t{i}", host="127.0.0.1", port=9000 + i, weight=w) for i, w in enumerate(weights)
    ]


def test_smooth_wrr_exact_shares_and_smoothness(make_ctx: CtxFactory) -> None:
    ts = targets(3, 1, 1)
    bal = WeightedRoundRobinBalancer(ts)
    ctx = make_ctx()
    seq = [bal.pick(ctx, set()) for _ in range(10_000)]
    counts = Counter(seq)
    assert counts[ts[0]] == 6000 and counts[ts[1]] == 2000 and counts[ts[2]] == 2000
    total = 5
    for t in ts:
        allowed_run = math.ceil(t.weight / (total - t.weight))
        run = best = 0
        prev = None
        for x in seq:
            run = run + 1 if x is prev else 1
            prev = x
            if x is t:
                best = max(best, run)
        assert best <= allowed_run, (t, best)


def test_nginx_sequence() -> None:
    a, b, c = targets(5, 1, 1)
    bal = WeightedRoundRobinBalancer([a, b, c])
    from portway.http.headers import Headers
    from portway.http.models import Request
    from portway.pipeline.context import RequestContext

    ctx = RequestContext(Request("GET", "/", b"", Headers()))
    assert [bal.pick(ctx, set()) for _ in range(7)] == [a, a, b, a, c, a, a]


def test_random_distribution(make_ctx: CtxFactory) -> None:
    random.seed(7)
    ts = targets(3, 1, 1)
    bal = make_balancer("random", ts)
    ctx = make_ctx()
    counts = Counter(bal.pick(ctx, set()) for _ in range(10_000))
    for t, share in zip(ts, (0.6, 0.2, 0.2), strict=True):
        assert abs(counts[t] / 10_000 - share) <= 0.03


def test_round_robin_ignores_weights(make_ctx: CtxFactory) -> None:
    ts = targets(3, 1, 1)
    bal = make_balancer("round_robin", ts)
    ctx = make_ctx()
    counts = Counter(bal.pick(ctx, set()) for _ in range(300))
    assert all(counts[t] == 100 for t in ts)


@pytest.mark.parametrize("kind", KINDS)
def test_weight_zero_never_picked(kind: str, make_ctx: CtxFactory) -> None:
    ts = targets(1, 0, 1)
    bal = make_balancer(kind, ts)
    seen = {bal.pick(make_ctx(client_ip=f"10.0.{i % 250}.{i // 250}"), set()) for i in range(2000)}
    assert ts[1] not in seen
    assert seen == {ts[0], ts[2]}


@pytest.mark.parametrize("kind", KINDS)
def test_skips_excluded_unhealthy_draining_and_open(kind: str, make_ctx: CtxFactory) -> None:
    ts = targets(1, 1, 1, 1)
    ts[1].healthy = False
    ts[2].draining = True
    cb = CircuitBreaker(CircuitBreakerConfig(min_requests=1, failure_ratio=0.5))
    cb.record(False)
    ts[3].breaker = cb
    bal = make_balancer(kind, ts)
    for i in range(200):
        ctx = make_ctx(client_ip=f"10.1.0.{i}")
        assert bal.pick(ctx, set()) is ts[0]
        assert bal.pick(ctx, {ts[0]}) is None


@pytest.mark.parametrize("kind", KINDS)
def test_empty(kind: str, make_ctx: CtxFactory) -> None:
    assert make_balancer(kind, []).pick(make_ctx(), set()) is None


def test_least_connections_steers_away_from_slow(make_ctx: CtxFactory) -> None:
    random.seed(1)
    ts = targets(1, 1, 1)
    slow = ts[2]
    bal = LeastConnectionsBalancer(ts)
    ctx = make_ctx()
    # each tick 6 requests arrive; fast targets answer in 1 tick, the slow one in 20
    pending: list[tuple[int, Target]] = []
    counts: Counter[Target] = Counter()
    for tick in range(2000):
        for _due, t in [p for p in pending if p[0] <= tick]:
            t.in_flight -= 1
        pending = [p for p in pending if p[0] > tick]
        for _ in range(6):
            t = bal.pick(ctx, set())
            assert t is not None
            counts[t] += 1
            t.in_flight += 1
            pending.append((tick + (20 if t is slow else 1), t))
    assert counts[slow] / sum(counts.values()) <= 0.2


def test_least_connections_respects_weight(make_ctx: CtxFactory) -> None:
    a, b = targets(2, 1)
    a.in_flight, b.in_flight = 3, 2  # 1.5 vs 2.0 per unit of weight
    assert LeastConnectionsBalancer([a, b]).pick(make_ctx(), set()) is a


def test_least_latency_steers_away_from_slow(make_ctx: CtxFactory) -> None:
    random.seed(3)
    now = [100.0]
    ts = targets(1, 1, 1)
    for t, lat in zip(ts, (0.010, 0.012, 0.200), strict=True):
        peak_ewma_observe(t, lat, now[0])
    bal = LeastLatencyBalancer(ts, clock=lambda: now[0])
    ctx = make_ctx()
    counts: Counter[Target] = Counter()
    for _ in range(3000):
        t = bal.pick(ctx, set())
        assert t is not None
        counts[t] += 1
        peak_ewma_observe(t, {0: 0.010, 1: 0.012, 2: 0.200}[ts.index(t)], now[0])
        now[0] += 0.001
    assert counts[ts[2]] / 3000 <= 0.2


def test_peak_ewma_jumps_to_peaks_and_decays() -> None:
    (t,) = targets(1)
    peak_ewma_observe(t, 0.010, 0.0)
    peak_ewma_observe(t, 0.500, 1.0)
    assert t.ewma == 0.5  # peak taken at once
    peak_ewma_observe(t, 0.010, 1.0)
    assert t.ewma == pytest.approx(0.5)  # no time passed: no decay
    peak_ewma_observe(t, 0.010, 31.0)
    assert t.ewma < 0.05  # 3 time constants later the peak is mostly forgotten
    # the load of an idle slow target decays too, so it gets retried eventually
    t.ewma, t.ewma_stamp = 1.0, 0.0
    assert peak_ewma_load(t, 50.0) < 0.01


def test_peak_ewma_unknown_latency_penalty() -> None:
    a, b = targets(1, 1)
    assert peak_ewma_load(a, 0.0) == 0.0
    b.in_flight = 2
    assert peak_ewma_load(b, 0.0) > 1.0


def test_consistent_hash_removal_remaps_about_one_nth(make_ctx: CtxFactory) -> None:
    ts = targets(1, 1, 1, 1, 1)
    before = ConsistentHashBalancer(ts, "header:x-user-id")
    after = ConsistentHashBalancer(ts[:2] + ts[3:], "header:x-user-id")
    keys = [f"user-{i}" for i in range(10_000)]
    moved = kept_unrelated = unrelated = 0
    for k in keys:
        a = before.pick_key(k, set())
        b = after.pick_key(k, set())
        if a is not ts[2]:
            unrelated += 1
            kept_unrelated += a is b
        moved += a is not b
    assert kept_unrelated / unrelated >= 0.95
    assert 0.12 <= moved / len(keys) <= 0.28


def test_consistent_hash_unhealthy_target_keys_come_back(make_ctx: CtxFactory) -> None:
    ts = targets(1, 1, 1, 1)
    bal = ConsistentHashBalancer(ts, "ip")
    ips = [f"10.2.{i // 250}.{i % 250}" for i in range(2000)]
    first = {ip: bal.pick(make_ctx(client_ip=ip), set()) for ip in ips}
    ts[1].healthy = False
    during = {ip: bal.pick(make_ctx(client_ip=ip), set()) for ip in ips}
    assert all(during[ip] is first[ip] for ip in ips if first[ip] is not ts[1])
    assert ts[1] not in during.values()
    ts[1].healthy = True
    assert {ip: bal.pick(make_ctx(client_ip=ip), set()) for ip in ips} == first


def test_consistent_hash_weights_shift_share() -> None:
    ts = targets(3, 1)
    bal = ConsistentHashBalancer(ts, "path")
    counts = Counter(bal.pick_key(f"/k/{i}", set()) for i in range(10_000))
    assert 0.68 <= counts[ts[0]] / 10_000 <= 0.82


def test_hash_keys(make_ctx: CtxFactory) -> None:
    ctx = make_ctx(
        path="/a/b",
        client_ip="1.2.3.4",
        headers=[("X-User-Id", "u1"), ("Cookie", 'a=1; sid="s9"; b=2')],
        consumer="c7",
    )
    assert hash_key(ctx, "ip") == "1.2.3.4"
    assert hash_key(ctx, "path") == "/a/b"
    assert hash_key(ctx, "consumer") == "c7"
    assert hash_key(ctx, "header:x-user-id") == "u1"
    assert hash_key(ctx, "cookie:sid") == "s9"
    assert hash_key(ctx, "cookie:nope") is None
    assert hash_key(make_ctx(), "consumer") is None


def test_consistent_hash_same_key_same_target_and_fallback(make_ctx: CtxFactory) -> None:
    ts = targets(1, 1, 1)
    bal = ConsistentHashBalancer(ts, "header:x-user-id")
    picks = {
        bal.pick(make_ctx(headers=[("x-user-id", "alice")], client_ip=f"9.9.9.{i}"), set())
        for i in range(50)
    }
    assert len(picks) == 1
    # without the header the client IP is the key
    no_header = {bal.pick(make_ctx(client_ip="8.8.8.8"), set()) for _ in range(50)}
    assert len(no_header) == 1
    # no key at all: still answers
    assert bal.pick(make_ctx(client_ip=""), set()) in ts


def test_big_weights_ring_is_capped() -> None:
    ts = targets(1000, 1000, 1000)
    bal = ConsistentHashBalancer(ts, "ip")
    assert len(bal._keys) <= 100_000
    counts = Counter(bal.pick_key(str(i), set()) for i in range(3000))
    assert len(counts) == 3
