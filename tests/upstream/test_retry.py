"""Retry policy and retry budget (fake clock)."""

from __future__ import annotations

import random

from portway.config.schema import RetryConfig, RouteConfig
from portway.routing.router import RouteMatch
from portway.upstream.retry import BUDGET_WINDOW, RetryBudget, RetryPolicy
from tests.upstream.support import CtxFactory


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def policy(clock: Clock | None = None, floor: float = 100.0, **kw: object) -> RetryPolicy:
    cfg = RetryConfig.model_validate({"attempts": 3, **kw})
    return RetryPolicy(cfg, RetryBudget(cfg.budget_ratio, floor, clock or Clock()))


def test_reasons_and_attempts(make_ctx: CtxFactory) -> None:
    p = policy(on=["connect_error", 502, "503"])
    ctx = make_ctx()
    assert p.may_retry(ctx, 1, False, "connect_error")
    assert p.may_retry(ctx, 2, True, "502")
    assert p.may_retry(ctx, 1, True, "503")
    assert not p.may_retry(ctx, 1, True, "504")
    assert not p.may_retry(ctx, 1, True, "timeout")
    assert not p.may_retry(ctx, 3, False, "connect_error")  # attempts exhausted


def test_non_idempotent_only_before_send(make_ctx: CtxFactory) -> None:
    p = policy(on=["connect_error", "reset", "502"])
    post = make_ctx(method="POST")
    assert p.may_retry(post, 1, False, "connect_error")
    assert not p.may_retry(post, 1, True, "reset")
    assert not p.may_retry(post, 1, True, "502")
    for m in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
        assert p.may_retry(make_ctx(method=m), 1, True, "reset")
    assert not p.may_retry(make_ctx(method="PATCH"), 1, True, "reset")


def test_route_may_allow_non_idempotent(make_ctx: CtxFactory) -> None:
    p = policy(on=["reset"])
    ctx = make_ctx(method="POST")
    ctx.match = RouteMatch(RouteConfig(name="r", retry_non_idempotent=True), 0)
    assert p.may_retry(ctx, 1, True, "reset")


def test_backoff_full_jitter_capped() -> None:
    random.seed(5)
    p = policy(backoff="100ms", max_backoff="300ms")
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.3), (8, 0.3)):
        vals = [p.backoff(attempt) for _ in range(500)]
        assert all(0 <= v <= cap for v in vals)
        assert max(vals) > cap * 0.8 and min(vals) < cap * 0.2  # jitter spans the range
    assert policy(backoff=0).backoff(3) == 0.0


def test_budget_caps_retries_at_ratio() -> None:
    c = Clock()
    b = RetryBudget(0.2, 0.0, c)
    for _ in range(100):
        b.attempt()
    granted = 0
    for _ in range(100):
        if b.try_withdraw():
            granted += 1
            b.attempt()  # the retry's own attempt must not pay for more retries
    assert granted == 20
    assert b.counts() == (100, 20)


def test_budget_floor_allows_retries_without_traffic() -> None:
    c = Clock()
    b = RetryBudget(0.2, 1.0, c)  # 1 retry/s over the window = 10
    assert sum(b.try_withdraw() for _ in range(50)) == int(1.0 * BUDGET_WINDOW)


def test_budget_refills_as_window_slides() -> None:
    c = Clock()
    b = RetryBudget(0.5, 0.0, c)

    def retry_all(n: int) -> int:
        granted = 0
        for _ in range(n):
            if b.try_withdraw():
                granted += 1
                b.attempt()
        return granted

    for _ in range(10):
        b.attempt()
    assert retry_all(10) == 5
    c.t += BUDGET_WINDOW + 1
    assert not b.try_withdraw()  # old requests aged out, no new traffic
    for _ in range(4):
        b.attempt()
    assert retry_all(10) == 2


def test_unused_retry_grants_count_conservatively() -> None:
    # a granted retry that never reached a target still counts against the budget
    b = RetryBudget(0.5, 0.0, Clock())
    for _ in range(10):
        b.attempt()
    assert sum(b.try_withdraw() for _ in range(10)) == 3


def test_policy_refuses_when_budget_spent(make_ctx: CtxFactory) -> None:
    c = Clock()
    p = policy(c, floor=0.0, budget_ratio=0.1)
    for _ in range(20):
        p.budget.attempt()
    ctx = make_ctx()
    results = []
    for _ in range(4):
        ok = p.may_retry(ctx, 1, False, "connect_error")
        results.append(ok)
        if ok:
            p.budget.attempt()
    assert results == [True, True, False, False]
    # refused conditions are not charged
    c.t += BUDGET_WINDOW + 1
    for _ in range(10):
        p.budget.attempt()
    assert not p.may_retry(ctx, 1, True, "404")
    assert p.may_retry(ctx, 1, False, "connect_error")
