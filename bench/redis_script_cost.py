#!/usr/bin/env python3
"""Redis' own instructions per rate-limit decision (``redis-server`` under callgrind).

    PYTHONPATH=src python bench/redis_script_cost.py [--batch 10] [--keys 1] [--passes 100,300]

Starts a private ``redis-server`` under ``valgrind --tool=callgrind`` (127.0.0.1, a free
port), then drives it through the product's client (``RedisStore`` + ``RedisLimiter``, one
``gcra`` limit: ``RATE_LIMIT_GCRA1`` and its batch variant): ``passes`` loop passes of
``batch`` concurrent decisions over ``keys`` keys, so each pass is one batch script call, as
one gateway's loop pass is under load. Two runs with different pass counts give the
server's user-space instructions per decision, start-up excluded: (Ir(P2) - Ir(P1)) /
(batch x (P2 - P1)). Deterministic (no wall clock), so it judges script and batch-layout
changes on a shared machine; the kernel's part (socket reads and writes, wake-ups) is not in
it. Needs valgrind and redis-server; the Lua scripts are whichever ``PYTHONPATH`` imports.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
from portway.state.redis import RedisStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(port: int, batch: int, keys: int, passes: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=60, connect_timeout=60)
    limiter = RedisLimiter(store, "gcra", [LimitSpec("l", 1e9, 1, 1e9)], key_prefix="bench:")
    try:
        await limiter.decide("warm-up", 1)
        for _ in range(passes + 1):  # (the first pass caches the batch script)
            await asyncio.gather(*(limiter.decide(f"k{i % keys}", 1) for i in range(batch)))
    finally:
        await store.aclose()


def instructions(batch: int, keys: int, passes: int) -> int:
    """Total user-space instructions of a ``redis-server`` that served ``passes`` passes."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-cg-") as d:
        out = Path(d) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "redis-server"]
        cmd += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", d]
        server = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            asyncio.run(drive(port, batch, keys, passes))
            subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False)
            server.wait(120)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        m = re.search(r"^summary: (\d+)", out.read_text(), re.M)
        assert m, "no callgrind summary"
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=10, help="decisions per pass (one batch)")
    ap.add_argument("--keys", type=int, default=1, help="distinct keys among them")
    ap.add_argument("--passes", default="100,300", help="two pass counts")
    args = ap.parse_args()
    p1, p2 = (int(p) for p in args.passes.split(","))
    a = instructions(args.batch, args.keys, p1)
    b = instructions(args.batch, args.keys, p2)
    per = (b - a) / (args.batch * (p2 - p1))
    print(
        f"batch {args.batch}, keys {args.keys}: {per:,.0f} redis-server instructions per decision"
    )


if __name__ == "__main__":
    main()
