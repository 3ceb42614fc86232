"""A consumer's rate-limit state, as the dashboard's consumers view shows it.

For every ``rate_limit`` binding (global or per route) whose key is fully determined by the
consumer (key parts ``consumer``, ``route``, ``service``, ``global``), the limiter is asked
with a cost of 0 — it answers the remaining units and reset time without spending any. A
binding keyed on the client's address, a header or a credential depends on the request and is
listed as such, without a figure.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.plugins.rate_limit.plugin import RateLimitPlugin
from portway.routing.router import RouteMatch

if TYPE_CHECKING:
    from portway.runtime.graph import RuntimeGraph

#: key parts computable from the consumer and the route alone
_STATIC_PARTS = frozenset({"consumer", "route", "service", "global"})


def _num(v: float) -> float | None:
    return None if math.isinf(v) or math.isnan(v) else round(v, 3)


async def consumer_limits(graph: RuntimeGraph, username: str) -> list[dict[str, Any]] | None:
    """Rows of ``{route, plugin_scope, policies: [{name, rate, per, remaining, reset}]}``;
    ``None`` when no consumer has that name."""
    consumer = None
    for p in graph.plugins:
        directory = getattr(getattr(p, "env", None), "consumers", None)
        if directory is not None and (c := directory.get(username)) is not None:
            consumer = c
            break
    if consumer is None:
        if not any(c.username == username for c in graph.config.consumers):
            return None
        from portway.pipeline.context import Consumer

        cfg = next(c for c in graph.config.consumers if c.username == username)
        consumer = Consumer(id=cfg.id or username, username=username)
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for idx, rt in enumerate(graph.routes):
        for bound in rt.chain.plugins:
            if not isinstance(bound, RateLimitPlugin):
                continue
            p = bound
            scope = "route" if any(b.name == "rate_limit" for b in rt.config.plugins) else "global"
            if scope == "global" and id(p) in seen and "route" not in p.config.key:
                continue  # one global limiter shared by every route: list it once
            seen.add(id(p))
            parts = list(p.config.key)
            row: dict[str, Any] = {
                "route": rt.config.name if scope == "route" or "route" in parts else None,
                "scope": scope,
                "key": parts,
            }
            if not set(parts) <= _STATIC_PARTS:
                row["policies"] = None
                row["note"] = "the key depends on the request (address, header or credential)"
                rows.append(row)
                continue
            ctx = RequestContext(Request("GET", "/", b"", Headers()))
            ctx.consumer = consumer
            ctx.match = RouteMatch(rt.config, idx)
            ctx.upstream_name = rt.config.upstream
            d = await p.decide(p._key(ctx), 0)
            row["policies"] = [
                {
                    "name": spec.name,
                    "rate": spec.rate,
                    "per": spec.per,
                    "remaining": _num(rem),
                    "reset": _num(rst),
                }
                for spec, rem, rst in zip(p.specs, d.remaining, d.reset, strict=False)
            ]
            rows.append(row)
    return rows
