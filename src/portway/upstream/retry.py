"""Retry policy: which failures may be retried, backoff, and the retry budget."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Final

from portway.config.schema import RetryConfig
from portway.pipeline.context import RequestContext

#: RFC 9110 §9.2.2 idempotent methods
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: the budget looks at this much recent history
BUDGET_WINDOW: Final = 10.0
_BUCKETS: Final = 10


class RetryBudget:
    """Caps retries at ``ratio`` of recent requests, plus a floor of ``min_per_second``
    retries so that low-traffic upstreams can still retry (Finagle's RetryBudget: 20 % and
    10/s over 10 s).

    Over the last ``BUDGET_WINDOW`` seconds a retry is allowed while
    ``retries < ratio * requests + min_per_second * BUDGET_WINDOW``. Every attempt is counted
    (``attempt()``, from ``Upstream.record``) and ``requests = attempts - retries``, so retries
    never feed the budget that pays for them: during an outage the upstream sees at most
    ``(1 + ratio)`` * the offered load, plus the floor.
    """

    __slots__ = (
        "_bucket_len",
        "_clock",
        "_cur",
        "_head",
        "_head_t",
        "_req",
        "_ret",
        "min_per_second",
        "ratio",
    )

    def __init__(
        self,
        ratio: float,
        min_per_second: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._clock = clock
        self._bucket_len = BUDGET_WINDOW / _BUCKETS
        self._req = [0] * _BUCKETS
        self._ret = [0] * _BUCKETS
        self._head = 0
        self._head_t = -1
        #: attempts of the head bucket not yet added to ``_req[_head]`` (a native int: one
        #: per request, where a list item is a boxed int read, added and stored back)
        self._cur = 0

    def _advance(self, now: float) -> None:
        slot = math.floor(now / self._bucket_len)
        steps = slot - self._head_t
        if steps == 0:
            return
        cur = self._cur
        self._cur = 0
        if steps >= _BUCKETS or steps < 0 or self._head_t < 0:
            self._req = [0] * _BUCKETS
            self._ret = [0] * _BUCKETS
        else:
            if cur:
                self._req[self._head] += cur
            for _ in range(steps):
                self._head = (self._head + 1) % _BUCKETS
                self._req[self._head] = 0
                self._ret[self._head] = 0
        self._head_t = slot

    def attempt(self, now: float | None = None) -> None:
        """Count one attempt (first or retry) that reached a target."""
        self._advance(self._clock() if now is None else now)
        self._cur += 1

    def try_withdraw(self, now: float | None = None) -> bool:
        """Spend one retry if the budget allows it."""
        self._advance(self._clock() if now is None else now)
        retries = sum(self._ret)
        requests = max(0, sum(self._req) + self._cur - retries)
        allowed = self.ratio * requests + self.min_per_second * BUDGET_WINDOW
        if retries + 1 > allowed:
            return False
        self._ret[self._head] += 1
        return True

    def counts(self, now: float | None = None) -> tuple[int, int]:
        """(requests, retries) in the window; requests exclude retries."""
        self._advance(self._clock() if now is None else now)
        retries = sum(self._ret)
        return max(0, sum(self._req) + self._cur - retries), retries


class RetryPolicy:
    """Decides whether a failed attempt may be retried.

    ``reason`` is ``"connect_error"``, ``"timeout"``, ``"reset"`` or a status code as a string.
    ``attempt`` is the number of attempts made so far (1 after the first). A retry needs: the
    reason listed in ``retries.on``, attempts left, and — when the request was already sent
    (``sent``) — an idempotent method or a route with ``retry_non_idempotent``; a connect
    failure never sent anything, so it retries for any method. Finally the budget must allow
    it; a refused retry is not charged.
    """

    def __init__(self, cfg: RetryConfig, budget: RetryBudget) -> None:
        self.cfg = cfg
        self.budget = budget
        self._on = frozenset(cfg.on)

    def may_retry(self, ctx: RequestContext, attempt: int, sent: bool, reason: str) -> bool:
        if attempt >= self.cfg.attempts or reason not in self._on:
            return False
        if sent and ctx.request.method not in IDEMPOTENT:
            route = ctx.match.route if ctx.match is not None else None
            if route is None or not route.retry_non_idempotent:
                return False
        return self.budget.try_withdraw()

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in ``[0, min(max, base * 2^(n-1))]``
        seconds before retry number ``attempt`` (1-based)."""
        base = self.cfg.backoff
        if base <= 0:
            return 0.0
        cap = min(self.cfg.max_backoff, base * 2.0 ** max(0, attempt - 1))
        return random.uniform(0.0, cap)
