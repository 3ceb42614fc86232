#!/usr/bin/env python3
"""Gateway CPU per Redis rate-limit decision with batching: 64 coroutines x 300 decisions
on one store against a private ``redis-server`` (started and stopped here, 127.0.0.1).

    python bench/redis_batch_bench.py [--workers 64] [--decisions 300] [--redis-py]
                                      [--keys 1] [--rounds 3] [--suspend]
    python bench/redis_batch_bench.py --gateway 64 [--passes 200] [--store redis|local]


Prints, per round, the gateway's CPU (user + system of this process, so the socket writes
count) per decision, the ``redis-server``'s CPU per decision (it shares the machine's cores
with the gateways in a real deployment of this size), and how many round trips carried the
calls. ``--redis-py`` measures the previous path (redis-py pipelines, ``state/batch.py``)
instead of the raw pipelined connection (``state/resp.py``). ``--keys N`` spreads the
decisions over N keys (one per worker modulo N). ``--suspend`` also measures what a decision
costs when its hook starts outside any task and suspends (see :func:`suspend_cost`).

``--gateway C`` measures whole requests instead (:func:`gateway_cost`): a real gateway (its
config, router, ``rate_limit`` plugin, task-free path) with ``C`` client connections and
``C`` pooled upstream connections on in-memory transports, as ``bench/hotpath_bench.py`` does
for one; each pass feeds one request into every client connection (so the ``C`` decisions
of a pass share one write to Redis, as at ``c C`` under wrk), waits for the upstream
requests and answers them. The only sockets are Redis': CPU per request is the gateway's
Python work plus its Redis syscalls. ``--store local`` runs the same route on the local store
(the baseline); under callgrind, two runs with different ``--passes`` give instructions per
request (difference / (C x passes difference)).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import statistics
import subprocess
import tempfile
import time

import uvloop

from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
from portway.state.redis import RedisStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(port: int, redis_pid: int, args: argparse.Namespace) -> None:
    store = RedisStore(
        f"redis://127.0.0.1:{port}/0", timeout=5, connect_timeout=5, raw_pipe=not args.redis_py
    )
    limiter = RedisLimiter(store, "gcra", [LimitSpec("l", 1e9, 1, 1e9)], key_prefix="bench:")
    await limiter.decide("warm-up", 1)

    async def worker(i: int) -> None:
        key = f"k{i % args.keys}"
        for _ in range(args.decisions):
            await limiter.decide(key, 1)

    gw, rd = [], []
    for rnd in range(args.rounds):
        trips0, calls0 = store.batcher.round_trips, store.batcher.calls
        r0 = proc_cpu(redis_pid)
        t = time.process_time()
        await asyncio.gather(*(worker(i) for i in range(args.workers)))
        n = args.workers * args.decisions
        gw.append((time.process_time() - t) / n * 1e6)
        rd.append((proc_cpu(redis_pid) - r0) / n * 1e6)
        print(
            f"round {rnd + 1}: {gw[-1]:.1f} µs of gateway CPU per decision, Redis {rd[-1]:.1f} µs; "
            f"{store.batcher.calls - calls0} calls in {store.batcher.round_trips - trips0} "
            "round trips"
        )
    if args.suspend:
        await suspend_cost(limiter, args)
    path = "redis-py pipelines" if args.redis_py else "raw pipelined connection"
    print(
        f"{path}: median {statistics.median(gw):.1f} µs gateway CPU per decision, "
        f"Redis {statistics.median(rd):.1f} µs"
    )
    await store.aclose()


async def suspend_cost(limiter: RedisLimiter, args: argparse.Namespace) -> None:
    """What a ``sync_hooks`` hook that suspends on its Redis decision costs (pipeline/
    suspend.py): each decision starts outside any task (``runner.drive``, as the task-free
    path runs hooks from the parser callback), suspends (``HookSuspended``), and the
    connection's waiting task carries it on (``suspend.finish``), against the same decisions
    awaited inside the connection's task from the start (the general path)."""
    from portway.pipeline.runner import drive
    from portway.pipeline.suspend import HookSuspended, finish

    loop = asyncio.get_running_loop()
    n = args.workers * args.decisions

    async def conn_task(waiters: list[asyncio.Future[HookSuspended | None]], i: int) -> None:
        for _ in range(args.decisions):
            waiter: asyncio.Future[HookSuspended | None] = loop.create_future()
            waiters[i] = waiter
            loop.call_soon(arrive, waiters, i)  # the next request's bytes arrive
            s = await waiter
            if s is not None:
                await finish(s)

    def arrive(waiters: list[asyncio.Future[HookSuspended | None]], i: int) -> None:
        try:
            drive(limiter.decide("k", 1))
        except HookSuspended as s:
            waiters[i].set_result(s)  # hand over to the connection's task
            return
        waiters[i].set_result(None)

    for rnd in range(args.rounds):
        waiters: list[asyncio.Future[HookSuspended | None]] = [loop.create_future()] * args.workers
        t = time.process_time()
        await asyncio.gather(*(conn_task(waiters, i) for i in range(args.workers)))
        susp = (time.process_time() - t) / n * 1e6

        async def in_task() -> None:
            for _ in range(args.decisions):
                fut: asyncio.Future[None] = loop.create_future()
                loop.call_soon(fut.set_result, None)  # the same arrival, inside the task
                await fut
                await limiter.decide("k", 1)

        t = time.process_time()
        await asyncio.gather(*(in_task() for _ in range(args.workers)))
        plain = (time.process_time() - t) / n * 1e6

        # no task at all: the hook's coroutine is continued from the reply future's
        # done-callback (what a task-free continuation in proxy/fast.py would do)
        trips = limiter.store.batcher.round_trips  # type: ignore[attr-defined]
        t = time.process_time()
        await _callback_round(limiter, n, args.workers)
        cb = (time.process_time() - t) / n * 1e6
        trips = limiter.store.batcher.round_trips - trips  # type: ignore[attr-defined]
        print(
            f"round {rnd + 1}: per decision, awaited in the connection's task {plain:.1f} µs; "
            f"started outside it, suspended and finished by the task {susp:.1f} µs "
            f"({susp - plain:+.1f}); continued from the reply's done-callback, no task "
            f"{cb:.1f} µs ({cb - plain:+.1f}, {trips} round trips)"
        )


async def _callback_round(limiter: RedisLimiter, n: int, workers: int) -> None:
    """``n`` decisions, ``workers`` at a time, each started outside any task and continued
    from its reply's done-callback."""
    from portway.pipeline.runner import drive
    from portway.pipeline.suspend import HookSuspended

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = n

    def start() -> None:
        try:
            drive(limiter.decide("k", 1))
        except HookSuspended as s:
            # bound with partial: a closure over ``s`` would tie the exception, its
            # traceback and this frame into a cycle (garbage-collector work per decision)
            s.yielded.add_done_callback(functools.partial(resume, s))
            return
        finished()

    def resume(s: HookSuspended, _fut: object) -> None:
        try:
            s.coro.send(None)
        except StopIteration:
            finished()
            return
        raise RuntimeError("a decision suspended twice")

    def finished() -> None:
        nonlocal left
        left -= 1
        if left == 0:
            done.set_result(None)
        elif left >= workers:
            loop.call_soon(start)  # this connection's next request arrives

    for _ in range(workers):
        loop.call_soon(start)
    await done


REQUEST = b"GET /api/items?id=7 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n"
    + b"x"
    * 1024
)


async def gateway_cost(port: int, redis_pid: int, args: argparse.Namespace) -> None:
    """Whole requests through a gateway, ``args.gateway`` per loop pass; see the docstring."""
    import gc
    import json

    from hotpath_bench import MemTransport

    from portway.config.loader import load_config_text
    from portway.http.client import UpstreamConnection
    from portway.http.flow import _batch_for
    from portway.http.forwarded import TrustedProxies
    from portway.http.server import ServerConnection
    from portway.proxy.handler import ProxyApp
    from portway.runtime.gateway import Gateway

    conf = {
        "algorithm": "gcra",
        "limits": [{"rate": 1_000_000_000, "per": "1s"}],
        "key": ["ip"],
        "store": args.store,
        "redis": {"url": f"redis://127.0.0.1:{port}/0", "key_prefix": "bench:", "timeout": "5s"},
    }
    cfg = load_config_text(
        "listeners: [{name: public, address: '127.0.0.1:0'}]\n"
        "admin: {enabled: false}\n"
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes:\n"
        "  - {name: items, match: {paths: ['/api/items']}, upstream: u}\n"
        f"plugins:\n  - {{name: rate_limit, config: {json.dumps(conf)}}}\n",
        "bench.yaml",
    )
    from portway.observability.metrics import get_metrics

    gw = Gateway(cfg, observers=[get_metrics()])
    await gw.start()
    loop = asyncio.get_running_loop()
    app = ProxyApp(gw.graph_ref)
    app.fast = not args.general
    c = args.gateway
    clients = []
    for i in range(c):
        conn = ServerConnection(app, cfg.server.limits, TrustedProxies([]), "http", loop)
        ct = MemTransport((f"127.0.0.{1 + i % 200}", 40000 + i))
        conn.connection_made(ct)
        clients.append((conn, ct))
    target = gw.graph.upstreams["u"].targets[0]
    ups = []
    for _ in range(c):
        up = UpstreamConnection(loop)
        ut = MemTransport(("127.0.0.1", 9))
        up.connection_made(ut)
        target.pool.release(up)
        ups.append((up, ut))
    batch = _batch_for(loop)

    async def one_pass() -> None:
        for conn, ct in clients:
            ct.out.clear()
            conn.data_received(REQUEST)
        batch.flush()  # what the end of the loop pass does
        waiting = list(ups)
        answered = 0
        while answered < c:
            await asyncio.sleep(0)
            rest = []
            for up, ut in waiting:
                if ut.out:
                    ut.out.clear()
                    up.data_received(RESPONSE)
                    answered += 1
                else:
                    rest.append((up, ut))
            waiting = rest
            batch.flush()
        while not all(ct.out for _, ct in clients):
            await asyncio.sleep(0)
            batch.flush()

    await one_pass()
    for _, ct in clients:
        assert b"".join(ct.out).startswith(b"HTTP/1.1 200"), ct.out
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the worker does (server/worker.py)
    for rnd in range(args.rounds):
        fast0 = app.fast_requests
        r0 = proc_cpu(redis_pid)
        t = time.process_time()
        for _ in range(args.passes):
            await one_pass()
        n = c * args.passes
        gw_us = (time.process_time() - t) / n * 1e6
        rd_us = (proc_cpu(redis_pid) - r0) / n * 1e6
        print(
            f"round {rnd + 1}: {gw_us:.1f} µs of gateway CPU per request, Redis {rd_us:.1f} µs "
            f"({n} requests, {c} per pass, store {args.store}, "
            f"task-free {app.fast_requests - fast0})"
        )
    await gw.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--decisions", type=int, default=300)
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-py", action="store_true", help="the redis-py pipeline path")
    ap.add_argument("--suspend", action="store_true", help="also measure hook suspension")
    ap.add_argument("--gateway", type=int, default=0, help="whole requests, N per loop pass")
    ap.add_argument("--passes", type=int, default=200, help="loop passes per round (--gateway)")
    ap.add_argument("--store", choices=("redis", "local"), default="redis")
    ap.add_argument("--general", action="store_true", help="switch the task-free path off")
    args = ap.parse_args()
    port = free_port()
    d = tempfile.mkdtemp(prefix="portway-redis-bench-")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*cmd, "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        uvloop.run((gateway_cost if args.gateway else run)(port, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
