"""The ``quota`` plugin: units per calendar day and/or month per key.

Periods start at local midnight in the configured ``timezone`` (``zoneinfo``), judged by the
gateway's wall clock. Usage lives in Redis by default (one counter per key and period, expiring
a day after the period ends), so it survives restarts and is shared by every instance; every
period of a request is checked and counted atomically, and a rejected request counts nowhere.
``store: local`` keeps usage in process memory (lost on restart). With Redis down,
``on_store_error: allow`` counts locally at ``limit / instances`` from zero (usage during the
outage is not merged back later) and ``deny`` answers 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from portway.errors import TooManyRequestsError, UnavailableError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._ratelimit.headers import (
    Reporter,
    add_report,
    apply_reports,
    ceil_s,
    header_pairs,
    reports_of,
)
from portway.plugins._ratelimit.keys import compile_cost, compile_key
from portway.plugins._ratelimit.limiter import Decision, hash_tag
from portway.plugins._ratelimit.lua import QUOTA
from portway.plugins._ratelimit.stores import key_prefix, shared_redis
from portway.plugins.quota.config import QuotaConfig
from portway.plugins.quota.periods import period
from portway.state.base import StoreUnavailableError
from portway.state.redis import RedisStore

log = logging.getLogger("portway.plugins.quota")

#: counters outlive their period by this much, so usage can still be inspected afterwards
_KEEP = 86400


class LocalQuota:
    """Per-process usage counters keyed by (key, period id)."""

    __slots__ = ("_ops", "_used")

    def __init__(self) -> None:
        self._used: dict[str, tuple[int, float]] = {}
        self._ops = 0

    def check(
        self, keys: list[str], limits: list[int], ends: list[float], cost: int, now: float
    ) -> tuple[bool, list[int]]:
        self._ops += 1
        if self._ops >= 4096:
            self._ops = 0
            for k in [k for k, (_, end) in self._used.items() if end <= now]:
                del self._used[k]
        used = [self._used.get(k, (0, 0.0))[0] for k in keys]
        if any(u + cost > lim for u, lim in zip(used, limits, strict=True)):
            return False, used
        used = [u + cost for u in used]
        for k, u, end in zip(keys, used, ends, strict=True):
            self._used[k] = (u, end)
        return True, used

    def __len__(self) -> int:
        return len(self._used)


class QuotaPlugin(Plugin[QuotaConfig]):
    """Calendar quotas per key; see the module docstring for the contract."""

    name = "quota"
    stage = Stage.traffic
    Config = QuotaConfig

    def __init__(
        self, config: QuotaConfig, env: PluginEnv, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config, env)
        c = config
        self._clock = clock
        self._tz = ZoneInfo(c.timezone)
        self._key = compile_key(c.key)
        self._cost = compile_cost(c.cost)
        self._scope = env.route or "*"
        self._periods: list[tuple[str, int]] = []
        if c.day is not None:
            self._periods.append(("day", c.day))
        if c.month is not None:
            self._periods.append(("month", c.month))
        self._limits = [lim for _, lim in self._periods]
        self._local_limits = [max(1, lim // c.instances) for lim in self._limits]
        ident = f"quota.local|{self._scope}|{c.key}|{c.timezone}|{self._local_limits}"
        self.local: LocalQuota = env.shared(ident, LocalQuota)
        self.store: RedisStore | None = None
        self._prefix = ""
        if c.store == "redis":
            self.store = shared_redis(env, c.redis)
            self._prefix = key_prefix(env, c.redis, "quota:")
        self._deny = c.on_store_error == "deny"
        self._mode = c.headers
        self._names = ["daily" if k == "day" else "monthly" for k, _ in self._periods]
        # the in-memory store decides without awaiting: such routes may take the task-free path
        self.sync_hooks = self.store is None

    async def on_request(self, ctx: RequestContext) -> Response | None:
        key = self._key(ctx)
        cost = self._cost(ctx)
        now = self._clock()
        bounds = [period(kind, now, self._tz) for kind, _ in self._periods]
        limits = self._limits
        allowed: bool | None = None
        used: list[int] = []
        if self.store is not None:
            tag = hash_tag(self._scope, key)
            keys = [f"{self._prefix}{{{tag}}}:{pid}" for pid, _, _ in bounds]
            args: list[str | int | float] = [cost]
            for lim, (_, _, end) in zip(limits, bounds, strict=True):
                args += [lim, max(1, int(end - now)) + _KEEP]
            try:
                reply = await self.store.eval_script(QUOTA, keys, args)
                allowed, used = int(reply[0]) == 1, [int(x) for x in reply[1:]]
            except StoreUnavailableError as e:
                if self._deny:
                    raise UnavailableError(
                        "quota store unavailable", headers=[("retry-after", "1")], source=self.name
                    ) from e
        if allowed is None:
            limits = self._local_limits
            local_keys = [f"{self._scope}|{key}|{pid}" for pid, _, _ in bounds]
            allowed, used = self.local.check(
                local_keys, limits, [end for _, _, end in bounds], cost, now
            )
        resets = [end - now for _, _, end in bounds]
        d = Decision(
            allowed, [max(0, lim - u) for lim, u in zip(limits, used, strict=True)], resets, 0.0
        )
        if self._mode != "none":
            windows = [max(1, round(end - start)) for _, start, end in bounds]
            add_report(ctx, Reporter(self._names, limits, windows, self._mode), d)
        if not allowed:
            exhausted = [
                r for r, u, lim in zip(resets, used, limits, strict=True) if u + cost > lim
            ]
            reports = reports_of(ctx)
            headers = header_pairs(reports) if reports else []
            if cost <= min(limits):
                headers.append(("retry-after", str(max(1, ceil_s(max(exhausted))))))
            raise TooManyRequestsError(
                "quota exceeded", code="quota_exceeded", headers=headers, source=self.name
            )
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        apply_reports(ctx)
