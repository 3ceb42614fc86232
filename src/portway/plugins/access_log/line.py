"""The access log's line for one request (compiled with mypyc, setup.py ``HOT_MODULES``).

The fields and their order are the plugin's contract (see ``AccessLogPlugin``); the record is
built as one dict literal and serialised by orjson (C), the formatted second is cached.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from portway.pipeline.context import RequestContext
from portway.upstream.choice import variant_of

#: fields added only when the request set them
_OPTIONAL: Final[tuple[str, ...]] = ("profile", "graphql_operation", "aggregate")


class LineFormatter:
    """Formats lines; keeps the current second's formatted stamp (one per binding)."""

    def __init__(self) -> None:
        self.sec = -1
        self.stamp = ""

    def line(self, ctx: RequestContext) -> bytes:
        """One JSON line, newline-terminated."""
        req = ctx.request
        resp = ctx.response
        t = ctx.target
        ua = req.headers.get_raw(b"user-agent")
        now = time.time()
        sec = int(now)
        if sec != self.sec:
            # the formatted second changes once a second, not per request
            self.sec = sec
            self.stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        up_latency = ctx.upstream_latency
        consumer = ctx.consumer
        body = req.body
        rec: dict[str, Any] = {
            "time": f"{self.stamp}.{int(now * 1000) % 1000:03d}Z",
            "request_id": ctx.request_id or None,
            "client_ip": req.client_ip,
            "method": req.method,
            "path": req.path,
            "route": ctx.route_name,
            "upstream": ctx.upstream_name,
            "target": t.id if t is not None else None,
            "status": resp.status if resp is not None else 499,
            "bytes_in": body.received if body is not None else 0,
            "bytes_out": ctx.bytes_out,
            "latency_ms": round((time.perf_counter() - ctx.start) * 1000, 3),
            "upstream_latency_ms": round(up_latency * 1000, 3) if up_latency is not None else None,
            "user_agent": ua.decode("latin-1") if ua is not None else None,
            "consumer": consumer.username if consumer is not None else None,
            "variant": variant_of(ctx),
        }
        extra = ctx.extra
        if extra:
            # only when set: BFF profile, GraphQL operation, aggregate calls (status, ms, error)
            for k in _OPTIONAL:
                v = extra.get(k)
                if v is not None:
                    rec[k] = v
        return orjson.dumps(rec) + b"\n"
