"""``fault_injection``: chaos testing at the gateway (after Envoy's fault filter).

Requests that meet ``when`` (all of its header and consumer conditions; every request when
absent) are delayed by ``delay.ms`` and/or answered with ``abort.status`` instead of being
sent upstream — the delay first, as in Envoy. Percentages are exact, not random: each kind
keeps a counter of the requests it saw (per plugin binding, per worker process, restarted by
a reload), and the n-th is hit when ``floor(n * percent / 100)`` moves, so N requests get
exactly ``floor(N * percent / 100)`` faults, evenly spread. Injected faults are counted in
``portway_fault_injections_total{route, kind}`` and aborted answers carry
``X-Portway-Fault: abort``.
"""

from __future__ import annotations

import asyncio
from typing import Final

from prometheus_client import Counter

from portway.config.traffic import BUCKETS
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.fault_injection.config import FaultInjectionConfig
from portway.routing.conditions import CompiledCondition

INJECTED: Final = Counter(
    "portway_fault_injections", "Faults injected by fault_injection", ["route", "kind"]
)


class Every:
    """Counter-based sampling of ``percent`` (two decimals): exact over any run."""

    __slots__ = ("bp", "n")

    def __init__(self, percent: float) -> None:
        self.bp = round(percent * 100)
        self.n = 0

    def hit(self) -> bool:
        n = self.n = self.n + 1
        return (n * self.bp) // BUCKETS > ((n - 1) * self.bp) // BUCKETS


class FaultInjectionPlugin(Plugin[FaultInjectionConfig]):
    """Delays and/or aborts a configured share of the requests that meet ``when``."""

    name = "fault_injection"
    stage = Stage.traffic  # after authentication: ``when.consumers`` needs the consumer
    Config = FaultInjectionConfig

    def __init__(self, config: FaultInjectionConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.when = CompiledCondition(config.when) if config.when is not None else None
        self.delay = Every(config.delay.percent) if config.delay is not None else None
        self.abort = Every(config.abort.percent) if config.abort is not None else None
        # without a delay nothing here awaits: the task-free path may run it
        self.sync_hooks = config.delay is None

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if self.when is not None and not self.when.holds(ctx):
            return None
        c = self.config
        route = ctx.route_name or ""
        if self.delay is not None and c.delay is not None and self.delay.hit():
            INJECTED.labels(route, "delay").inc()
            if c.delay.ms:
                await asyncio.sleep(c.delay.ms / 1000)
        if self.abort is not None and c.abort is not None and self.abort.hit():
            INJECTED.labels(route, "abort").inc()
            status = c.abort.status
            resp = Response.json(
                status,
                {
                    "error": "fault injected",
                    "code": "fault_injected",
                    "status": status,
                    "request_id": ctx.request_id or None,
                },
            )
            resp.headers.set("x-portway-fault", "abort")
            return resp
        return None
