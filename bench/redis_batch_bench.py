#!/usr/bin/env python3
"""Gateway CPU per Redis rate-limit decision with batching: 64 coroutines x 300 decisions
on one store against a private ``redis-server`` (started and stopped here, 127.0.0.1).

    python bench/redis_batch_bench.py [--workers 64] [--decisions 300] [--redis-py]
                                      [--keys 1] [--rounds 3]

Prints, per round, the gateway's CPU (user + system of this process, so the socket writes
count) per decision, the ``redis-server``'s CPU per decision (it shares the machine's cores
with the gateways in a real deployment of this size), and how many round trips carried the
calls. ``--redis-py`` measures the previous path (redis-py pipelines, ``state/batch.py``)
instead of the raw pipelined connection (``state/resp.py``). ``--keys N`` spreads the
decisions over N keys (one per worker modulo N).
"""

from __future__ import annotations

import argparse
import asyncio
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
    path = "redis-py pipelines" if args.redis_py else "raw pipelined connection"
    print(
        f"{path}: median {statistics.median(gw):.1f} µs gateway CPU per decision, "
        f"Redis {statistics.median(rd):.1f} µs"
    )
    await store.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--decisions", type=int, default=300)
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-py", action="store_true", help="the redis-py pipeline path")
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
        uvloop.run(run(port, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
