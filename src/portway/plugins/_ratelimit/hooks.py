"""The per-request work of a locally limited ``rate_limit`` binding, as :class:`SyncHooks`.

Compiled with mypyc (setup.py ``HOT_MODULES``) together with the limiter, the algorithms and
the header rendering, so a decision is a handful of direct calls: key, limiter, report. The
plugin (interpreted, a :class:`~portway.pipeline.plugin.Plugin` subclass) builds one per
binding and delegates its own ``on_request``/``on_response`` here, so the task path and the
task-free path run the same code.
"""

from __future__ import annotations

import math

from portway.errors import TooManyRequestsError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import FieldHooks, FieldRun, Replaces
from portway.plugins._ratelimit.headers import (
    FIELDS,
    Reporter,
    add_admitted,
    add_report,
    ceil_s,
    header_pairs,
    report_fields,
    report_run,
    reports_of,
)
from portway.plugins._ratelimit.keys import CostFn, KeyFn, consumer_key
from portway.plugins._ratelimit.local import Decision, LocalLimiter


def rejection(
    ctx: RequestContext, d: Decision, capacity: float, source: str
) -> TooManyRequestsError:
    """The 429 for a rejected decision: the request's rate-limit fields, ``Retry-After``."""
    reports = reports_of(ctx)
    headers = header_pairs(reports) if reports else []
    if math.isinf(d.retry_after):
        return TooManyRequestsError(
            f"request cost exceeds the rate limit's capacity of {capacity:g}",
            headers=headers,
            source=source,
        )
    headers.append(("retry-after", str(max(1, ceil_s(d.retry_after)))))
    return TooManyRequestsError("rate limit exceeded", headers=headers, source=source)


class LocalRateHooks(FieldHooks):
    """Decide on the local limiter in ``request``; render the fields in ``response_fields``
    (a :class:`FieldHooks`: the route may keep the lite response head).

    ``cost`` is None for a constant cost (``const_cost``); ``reporter`` None when the binding
    sends no rate-limit fields."""

    def __init__(
        self,
        limiter: LocalLimiter,
        key: KeyFn,
        cost: CostFn | None,
        const_cost: int,
        reporter: Reporter | None,
        capacity: float,
        source: str,
    ) -> None:
        self.limiter = limiter
        self.key = key
        #: the key is the consumer's (``key: [consumer]``): a direct (compiled) call, not
        #: one through a function object
        self.by_consumer = key is consumer_key
        self.cost = cost
        self.const_cost = const_cost
        self.reporter = reporter
        self.capacity = capacity
        self.source = source

    def request(self, ctx: RequestContext) -> Response | None:
        cost_fn = self.cost
        cost = self.const_cost if cost_fn is None else cost_fn(ctx)
        limiter = self.limiter
        d = limiter.admit(consumer_key(ctx) if self.by_consumer else self.key(ctx), cost)
        reporter = self.reporter
        if d is None:
            # admitted without a decision object (a stored key, one GCRA limit): the
            # report for these numbers as they are rendered, kept while they repeat
            if reporter is not None:
                add_admitted(ctx, reporter, limiter.last_remaining, limiter.last_reset)
            return None
        if reporter is not None:
            add_report(ctx, reporter, d)
        if not d.allowed:
            raise rejection(ctx, d, self.capacity, self.source)
        return None

    def replaces_names(self) -> frozenset[bytes] | None:
        return FIELDS

    def response_fields(
        self, ctx: RequestContext, out: list[tuple[bytes, bytes]]
    ) -> Replaces | None:
        return report_fields(ctx, out)

    def response_run(self, ctx: RequestContext) -> FieldRun | None:
        return report_run(ctx)
