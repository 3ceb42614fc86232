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


class _ListBudget:
    """The budget as it counted before the head bucket's native count: every attempt added
    to its list slot at once (the reference for the test below)."""

    def __init__(self, ratio: float, floor: float) -> None:
        import math

        self.floor_fn = math.floor
        self.ratio = ratio
        self.min_per_second = floor
        self.n = 10
        self.bucket_len = BUDGET_WINDOW / self.n
        self.req = [0] * self.n
        self.ret = [0] * self.n
        self.head = 0
        self.head_t = -1

    def advance(self, now: float) -> None:
        slot = self.floor_fn(now / self.bucket_len)
        steps = slot - self.head_t
        if steps == 0:
            return
        if steps >= self.n or steps < 0 or self.head_t < 0:
            self.req = [0] * self.n
            self.ret = [0] * self.n
        else:
            for _ in range(steps):
                self.head = (self.head + 1) % self.n
                self.req[self.head] = 0
                self.ret[self.head] = 0
        self.head_t = slot

    def attempt(self, now: float) -> None:
        self.advance(now)
        self.req[self.head] += 1

    def try_withdraw(self, now: float) -> bool:
        self.advance(now)
        retries = sum(self.ret)
        requests = max(0, sum(self.req) - retries)
        if retries + 1 > self.ratio * requests + self.min_per_second * BUDGET_WINDOW:
            return False
        self.ret[self.head] += 1
        return True

    def counts(self, now: float) -> tuple[int, int]:
        self.advance(now)
        retries = sum(self.ret)
        return max(0, sum(self.req) - retries), retries


def test_the_head_buckets_native_count_equals_counting_in_the_list() -> None:
    rng = random.Random(26)
    for _ in range(40):
        ratio, floor = rng.choice([(0.2, 0.0), (0.5, 0.1), (0.1, 1.0)])
        b = RetryBudget(ratio, floor, Clock())
        ref = _ListBudget(ratio, floor)
        now = rng.uniform(0, 100)
        for _ in range(300):
            now += rng.choice([0.0, 0.0, 0.001, 0.05, 0.3, 1.0, 3.0, 20.0])
            op = rng.random()
            if op < 0.7:
                b.attempt(now)
                ref.attempt(now)
            elif op < 0.9:
                assert b.try_withdraw(now) == ref.try_withdraw(now)
            assert b.counts(now) == ref.counts(now)
