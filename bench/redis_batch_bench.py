#!/usr/bin/env python3
"""Gateway CPU per Redis rate-limit decision with batching: 64 coroutines x 300 decisions
on one store against a private ``redis-server`` (started and stopped here, 127.0.0.1).

    python bench/redis_batch_bench.py [--workers 64] [--decisions 300]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
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


async def run(port: int, workers: int, decisions: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=5, connect_timeout=5)
    limiter = RedisLimiter(store, "gcra", [LimitSpec("l", 1e9, 1, 1e9)], key_prefix="bench:")
    await limiter.decide("warm-up", 1)

    async def worker() -> None:
        for _ in range(decisions):
            await limiter.decide("k", 1)

    trips0, calls0 = store.batcher.round_trips, store.batcher.calls
    t = time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    n = workers * decisions
    print(
        f"{(time.process_time() - t) / n * 1e6:.1f} µs of gateway CPU per decision; "
        f"{store.batcher.calls - calls0} calls in {store.batcher.round_trips - trips0} round trips"
    )
    await store.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--decisions", type=int, default=300)
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
        uvloop.run(run(port, args.workers, args.decisions))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
