"""Hot-path cost of the metrics observer.

Run: ``PYTHONPATH=src python bench/metrics_bench.py [N]``. Prints the cost per request of
``Metrics.on_request_done`` (target ≤ 2 µs), of the no-op tracer calls the data plane makes
per request, and for comparison of the same updates made through prometheus-client's
labelled children.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from portway.config.schema import RouteConfig
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.observability.metrics import Metrics
from portway.observability.tracing import NOOP_TRACER
from portway.pipeline.context import RequestContext
from portway.routing.router import RouteMatch


def _contexts(n_routes: int) -> list[RequestContext]:
    out = []
    for i in range(n_routes):
        req = Request(
            method="GET" if i % 3 else "POST", path=f"/r{i}", query=b"", headers=Headers()
        )
        ctx = RequestContext(req)
        ctx.match = RouteMatch(RouteConfig(name=f"route{i}", upstream=f"up{i % 4}"), i)
        ctx.upstream_name = f"up{i % 4}"
        ctx.response = Response(status=200 if i % 5 else 503)
        ctx.upstream_latency = 0.003
        ctx.bytes_in = 120
        ctx.bytes_out = 1024
        out.append(ctx)
    return out


def _best_of(fn: Any, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    ctxs = _contexts(16)
    m = Metrics(include_default_registry=False)

    def ours(k: int) -> None:
        done = m.on_request_done
        for i in range(k):
            done(ctxs[i & 15])

    def tracer(k: int) -> None:
        t = NOOP_TRACER
        for i in range(k):
            c = ctxs[i & 15]
            t.start_request(c)
            t.start_attempt(c, None)
            t.end_attempt(c)
            t.end_request(c)

    reg = CollectorRegistry()
    labels = ["route", "upstream", "method", "status_class"]
    c_req = Counter("x_requests", "", labels, registry=reg)
    h_dur = Histogram("x_dur", "", ["route", "upstream"], registry=reg)
    h_up = Histogram("x_up", "", ["route", "upstream"], registry=reg)
    c_in = Counter("x_in", "", ["route", "upstream"], registry=reg)
    c_out = Counter("x_out", "", ["route", "upstream"], registry=reg)
    children: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}

    def prom(k: int) -> None:
        for i in range(k):
            c = ctxs[i & 15]
            assert c.match is not None and c.response is not None
            key = (c.match.route.name, c.upstream_name or "", c.request.method, "2xx")
            ch = children.get(key)
            if ch is None:
                ch = children[key] = (
                    c_req.labels(*key),
                    h_dur.labels(*key[:2]),
                    h_up.labels(*key[:2]),
                    c_in.labels(*key[:2]),
                    c_out.labels(*key[:2]),
                )
            ch[0].inc()
            ch[1].observe(time.perf_counter() - c.start)
            ch[2].observe(c.upstream_latency or 0.0)
            ch[3].inc(c.bytes_in)
            ch[4].inc(c.bytes_out)

    print(f"metrics on_request_done        {_best_of(ours, n):6.2f} µs/request (target ≤ 2)")
    print(f"no-op tracer (4 calls)         {_best_of(tracer, n):6.2f} µs/request")
    print(f"prometheus-client children     {_best_of(prom, n):6.2f} µs/request (for comparison)")


if __name__ == "__main__":
    main()
