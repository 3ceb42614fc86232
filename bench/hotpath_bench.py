#!/usr/bin/env python3
"""Python cost of one proxied request, without sockets: the number to optimise against.

Feeds a request into a real ``ServerConnection`` (the gateway's own config, router, plugins,
pool, task-free path or, with request plugins, the connection's task) and the upstream's
response into the pooled ``UpstreamConnection``, with in-memory transports, and reports µs of
CPU per request. No kernel, no peers, no noise from the other processes of a wrk run: changes
of 1 µs show up.

    python bench/hotpath_bench.py [--requests 200000] [--plugins 'request_id;NAME={json}']
                                  [--consumers N] [--header 'Name: value'] [--general]
                                  [--profile]

``--consumers N`` configures N consumers with a ``key_auth`` key each; the requests carry
their keys in an ``apikey`` header, in turn (for ``key_auth`` and per-consumer limits).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from typing import Any

import uvloop

from portway.config.loader import load_config_text
from portway.http.client import UpstreamConnection
from portway.http.flow import _batch_for
from portway.http.forwarded import TrustedProxies
from portway.http.server import ServerConnection
from portway.proxy.handler import ProxyApp
from portway.runtime.gateway import Gateway

REQUEST = (
    b"GET /api/items?id=7 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n"
    + b"x"
    * 1024
)


class MemTransport(asyncio.Transport):
    """Collects writes; enough of the transport API for both protocols."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self._peer = peer
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.out.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def main(args: argparse.Namespace) -> None:
    if args.cache and "cache" not in args.plugins.split(";"):
        args.plugins = ";".join(p for p in (args.plugins, "cache") if p)
    response = RESPONSE
    if args.cache:
        response = RESPONSE.replace(b"Server:", b"Cache-Control: max-age=31536000\r\nServer:")
    # "name" or "name={json config}" (JSON is YAML flow syntax), separated by ";"
    plugins = "".join(
        f"\n  - {{name: {name}, config: {cfg or '{}'}}}"
        for name, _, cfg in (p.partition("=") for p in args.plugins.split(";") if p)
    )
    cfg = load_config_text(
        "listeners: [{name: public, address: '127.0.0.1:0'}]\n"
        "admin: {enabled: false}\n"
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes:\n"
        "  - {name: items, match: {paths: ['/api/items']}, upstream: u}\n"
        "  - {name: other, match: {paths: ['/other/{id}']}, upstream: u}\n"
        + (f"plugins:{plugins}\n" if plugins else "")
        + "".join(
            f"\n  - {{username: c{i}, credentials: {{key_auth: [{{key: bench-key-{i}}}]}}}}"
            for i in range(args.consumers)
        ).join(["consumers:" if args.consumers else "", "\n"]),
        "bench.yaml",
    )
    extra = b"".join(h.encode("latin-1") + b"\r\n" for h in args.header)
    requests = [REQUEST.replace(b"Accept:", extra + b"Accept:")]
    if args.consumers:
        requests = [
            REQUEST.replace(b"Accept:", extra + b"apikey: bench-key-%d\r\nAccept:" % i)
            for i in range(args.consumers)
        ]
    from portway.observability.metrics import get_metrics

    # the observers `portway run` registers (they are on every real request): metrics and
    # the dashboard's recent-errors recorder (``--no-dashboard`` leaves the latter out)
    metrics = get_metrics()
    if not args.no_dashboard:
        from portway.admin.dashboard.errors import RecentErrors

        metrics.error_sink = RecentErrors().record
    gw = Gateway(cfg, observers=[metrics])
    await gw.start()
    loop = asyncio.get_running_loop()
    app = ProxyApp(gw.graph_ref)
    app.fast = not args.general
    conn = ServerConnection(app, cfg.server.limits, TrustedProxies([]), "http", loop)
    ct = MemTransport(("127.0.0.1", 40000))
    conn.connection_made(ct)
    target = gw.graph.upstreams["u"].targets[0]
    up = UpstreamConnection(loop)
    ut = MemTransport(("127.0.0.1", 9))
    up.connection_made(ut)
    target.pool.release(up)

    batch = _batch_for(loop)

    async def one(request: bytes = requests[0]) -> None:
        conn.data_received(request)
        batch.flush()  # what the end of the loop pass does
        while not ut.out:  # the general path: the connection's task writes the request
            await asyncio.sleep(0)
        up.data_received(response)
        batch.flush()
        while not ct.out:
            await asyncio.sleep(0)

    async def hit(request: bytes = requests[0]) -> None:
        # a cache hit: answered by the gateway alone, the upstream never sees it
        conn.data_received(request)
        batch.flush()
        while not ct.out:
            await asyncio.sleep(0)
            batch.flush()

    await one()
    assert ut.out and ct.out and ct.out[0].startswith(b"HTTP/1.1 200"), (ut.out, ct.out)
    fast = app.fast_requests > 0
    assert not (fast and args.general)
    if args.cache:
        for r in requests[1:]:  # a miss per consumer key, then only hits
            ut.out.clear()
            ct.out.clear()
            await one(r)
        ut.out.clear()
        ct.out.clear()
        fast_before = app.fast_requests
        await hit()
        assert b"x-cache: HIT" in b"".join(ct.out) and not ut.out, (ct.out, ut.out)
        # whether hits are task-free (before issue 26's early answers they never were)
        fast = app.fast_requests - fast_before == 1
        assert not (fast and args.general)
        one = hit
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the worker does (server/worker.py)
    n = args.requests
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    t0 = time.process_time()
    k = len(requests)
    for i in range(n):
        ut.out.clear()
        ct.out.clear()
        await one(requests[i % k])
    dt = time.process_time() - t0
    if prof:
        prof.disable()
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(25)
        print(f"calls per request: {sum(v[1] for v in st.stats.values()) / n:.0f}")
    print(
        f"{dt / n * 1e6:.2f} µs CPU per request ({n} requests, task-free path: {fast}, "
        f"plugins: {args.plugins or 'none'}{', cache hits' if args.cache else ''})"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument(
        "--plugins",
        default="",
        help="global plugins, ';'-separated: a name, or name={json config}",
    )
    ap.add_argument("--consumers", type=int, default=0, help="consumers with key_auth keys")
    ap.add_argument(
        "--header",
        action="append",
        default=[],
        help="'Name: value' added to every request (repeatable), e.g. a bearer token",
    )
    ap.add_argument(
        "--cache",
        action="store_true",
        help="bind the cache plugin (memory store) and time cache hits (the upstream's "
        "response gets Cache-Control: max-age; the first request is the miss that stores it)",
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--no-dashboard", action="store_true", help="without the recent-errors observer"
    )
    ap.add_argument("--general", action="store_true", help="switch the task-free path off")
    uvloop.run(main(ap.parse_args()))
