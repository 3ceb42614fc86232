"""The ``rate_limit`` plugin: request-rate limits per key, locally or in Redis.

Each request is decided against all configured limits at once (all-or-nothing: a rejected
request consumes nothing). Rejections raise :class:`TooManyRequestsError` (429) with
``Retry-After``; every response of the route carries the configured rate-limit fields (see
:mod:`portway.plugins._ratelimit.headers`).

Store semantics: ``local`` is exact within one process and enforces ``limit / instances``;
``redis`` is exact across every process sharing the Redis. When Redis is unreachable,
``on_store_error: allow`` decides with the local limiter (``limit / instances``) and
``deny`` answers 503; the store's backoff keeps a down Redis from adding latency, and exact
limiting resumes by itself once Redis answers again.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.pending import Pending, wait
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._ratelimit.algorithms import USES_BURST
from portway.plugins._ratelimit.headers import Reporter, add_report, apply_reports
from portway.plugins._ratelimit.hooks import LocalRateHooks, rejection
from portway.plugins._ratelimit.keys import compile_cost, compile_key
from portway.plugins._ratelimit.limiter import Decision, LimitSpec, LocalLimiter, RedisLimiter
from portway.plugins._ratelimit.redis_hooks import RedisRateHooks
from portway.plugins._ratelimit.stores import key_prefix, shared_redis
from portway.plugins.rate_limit.config import RateLimitConfig
from portway.state.base import StoreUnavailableError

log = logging.getLogger("portway.plugins.rate_limit")


class RateLimitPlugin(Plugin[RateLimitConfig]):
    """Limits request rate per key; see the module docstring for the contract."""

    name = "rate_limit"
    stage = Stage.traffic
    Config = RateLimitConfig
    # it never edits the upstream request: a chain of such plugins shares the client's
    # (a subclass may edit it: it gets the copy before the hooks)
    copies_on_edit: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.copies_on_edit = False

    def __init__(self, config: RateLimitConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        c = config
        names = c.policy_names()
        self.specs = tuple(
            LimitSpec(
                name,
                lim.rate,
                lim.per,
                (lim.burst or lim.rate) if c.algorithm in USES_BURST else lim.rate,
            )
            for name, lim in zip(names, c.limits, strict=True)
        )
        self._key = compile_key(c.key)
        self._cost = compile_cost(c.cost)
        self._const_cost = c.cost if isinstance(c.cost, int) else None
        self._deny = c.on_store_error == "deny"
        scope = env.route or "*"
        local_specs = [s.scaled(c.instances) for s in self.specs]
        # counters survive reloads as long as the binding's shape is unchanged
        ident = f"rate_limit.local|{scope}|{c.algorithm}|{c.instances}|{c.key}|{local_specs}"
        self.local: LocalLimiter = env.shared(
            ident, lambda: LocalLimiter(c.algorithm, local_specs, max_keys=c.max_local_keys)
        )
        self.redis: RedisLimiter | None = None
        if c.store == "redis":
            self.redis = RedisLimiter(
                shared_redis(env, c.redis),
                c.algorithm,
                self.specs,
                key_prefix=key_prefix(env, c.redis, "rl:"),
                scope=scope,
            )
        self._capacity = min(s.burst for s in self.specs)
        self._reporter: Reporter | None = None
        if c.headers != "none":
            self._reporter = Reporter(
                names,
                [math.ceil(s.rate) for s in self.specs],
                [s.window for s in self.specs],
                c.headers,
            )
        # every route may take the task-free path: the in-memory store decides without
        # awaiting; a Redis decision suspends ``on_request`` on the reply's future, and the
        # task-free path parks the request until that future is done and carries on from its
        # callback (proxy/fast.py ``Parked``; a store that yields anything else hands the
        # request to the task, which finishes the hook: pipeline/suspend.py)
        self.sync_hooks = True
        #: the per-request work as compiled plain calls (pipeline/runner.py): the local
        #: store's whole decision; Redis': the decision coroutine driven until it suspends
        #: on the reply, and the fields (the route keeps the lite response head)
        self.fast_hooks: LocalRateHooks | RedisRateHooks | None = None
        self._local_hooks: LocalRateHooks | None = None
        self._redis_hooks: RedisRateHooks | None = None
        if self.redis is not None:
            # (a subclass may change what the hooks do: it keeps the coroutine hooks, and
            # these only for the store-error state)
            exact = type(self) is RateLimitPlugin
            self._redis_hooks = RedisRateHooks(
                self._redis_request,
                self.redis.packing() if exact else None,
                self.local,
                self._key,
                None if self._const_cost is not None else self._cost,
                self._const_cost or 0,
                self._reporter,
                self._capacity,
                self.name,
                len(self.specs),
                self._deny,
                c.on_store_error,
            )
            if exact:
                self.fast_hooks = self._redis_hooks
        elif type(self) is RateLimitPlugin:
            # (a subclass may change what the hooks do: it keeps the coroutine hooks)
            self._local_hooks = LocalRateHooks(
                self.local,
                self._key,
                None if self._const_cost is not None else self._cost,
                self._const_cost or 0,
                self._reporter,
                self._capacity,
                self.name,
            )
            self.fast_hooks = self._local_hooks

    async def decide(self, key: str, cost: int) -> Decision:
        """Decide one request; raises :class:`UnavailableError` under ``deny`` when the store
        is down."""
        redis = self.redis
        if redis is None:
            return self.local.decide(key, cost)
        hooks = self._redis_hooks
        assert hooks is not None
        try:
            d = await redis.decide(key, cost)
        except StoreUnavailableError as e:
            return hooks.store_failed(e, key, cost)
        hooks.store_ok()
        return d

    async def on_request(self, ctx: RequestContext) -> Response | None:
        hooks = self._local_hooks
        if hooks is not None:
            return hooks.request(ctx)
        fast = self._redis_hooks
        if fast is not None and fast.packing is not None and fast is self.fast_hooks:
            # the compiled decision: its outcome comes from the reply's callback (a store
            # that cannot take it — TLS, Cluster, Sentinel — awaits the coroutine below)
            r = fast.request(ctx)
            if isinstance(r, Pending):
                return await wait(r)
            return r
        return await self._redis_request(ctx)

    async def _redis_request(self, ctx: RequestContext) -> Response | None:
        """The decision of a binding without local hooks (Redis, or a subclass): awaited
        by ``on_request``, driven by :class:`RedisRateHooks` on the task-free path."""
        cost = self._const_cost if self._const_cost is not None else self._cost(ctx)
        d = await self.decide(self._key(ctx), cost)
        if self._reporter is not None:
            add_report(ctx, self._reporter, d)
        if not d.allowed:
            raise rejection(ctx, d, self._capacity, self.name)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        apply_reports(ctx)
