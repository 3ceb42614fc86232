"""Rate-limiter overhead.

    PYTHONPATH=src python bench/ratelimit_bench.py [--redis redis://127.0.0.1:6379/0]

1. Local limiter: µs per ``RateLimitPlugin.on_request`` call on a prepared context (the whole
   plugin path: key, cost, decision, header stash), per algorithm, awaited in a tight loop.
2. Redis limiter: decisions/s of the Lua script, sequentially (latency-bound) and with 64
   concurrent callers (pipelined over the pool), one key and many keys.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginEnv
from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
from portway.plugins.rate_limit.config import RateLimitConfig
from portway.plugins.rate_limit.plugin import RateLimitPlugin
from portway.state.redis import RedisStore


def ctx_for(ip: str) -> RequestContext:
    return RequestContext(Request("GET", "/", b"", Headers(), client_ip=ip))


async def bench_local(n: int) -> None:
    print(f"local limiter, on_request µs/call (best of 30 runs of {n} calls):")
    for algo in ("gcra", "token_bucket", "sliding_window", "fixed_window"):
        for limits in (1, 2):
            lims = [{"rate": 1e9, "per": "1s"}, {"rate": 1e9, "per": "1h"}][:limits]
            cfg = RateLimitConfig.model_validate({"algorithm": algo, "limits": lims, "key": ["ip"]})
            p = RateLimitPlugin(cfg, PluginEnv(route="r"))
            ctxs = [ctx_for(f"10.0.{i // 256}.{i % 256}") for i in range(1000)]
            best = float("inf")
            for _ in range(30):
                t0 = time.perf_counter()
                for i in range(n):
                    c = ctxs[i % 1000]
                    c.state = type(c.state)()  # fresh per-request state, as in production
                    await p.on_request(c)
                best = min(best, time.perf_counter() - t0)
            # subtract the loop's own cost (state reset + indexing)
            base = float("inf")
            for _ in range(30):
                t0 = time.perf_counter()
                for i in range(n):
                    c = ctxs[i % 1000]
                    c.state = type(c.state)()
                base = min(base, time.perf_counter() - t0)
            print(f"  {algo:15s} limits={limits}: {(best - base) / n * 1e6:6.2f} µs")


async def bench_redis(url: str, n: int) -> None:
    store = RedisStore(url, timeout=2.0)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    lim = RedisLimiter(store, "gcra", [LimitSpec("a", 1e9, 1, 1e9)], key_prefix=prefix)
    await lim.decide("warm", 1)
    print(f"redis limiter at {url}:")
    t0 = time.perf_counter()
    for _ in range(n):
        await lim.decide("one", 1)
    dt = time.perf_counter() - t0
    print(f"  sequential, one key:       {n / dt:8.0f} decisions/s ({dt / n * 1e6:.0f} µs each)")
    for keys, label in ((1, "one key"), (10_000, "10k keys")):
        done = 0

        async def worker(w: int, keys: int = keys) -> None:
            nonlocal done
            for i in range(n // 64):
                await lim.decide(f"k{(w * 7919 + i) % keys}", 1)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(64)))
        dt = time.perf_counter() - t0
        print(f"  64 concurrent, {label:9s}: {done / dt:8.0f} decisions/s")
    cursor = 0
    while True:
        cursor, found = await store.client.scan(cursor, match=prefix + "*", count=1000)
        if found:
            await store.client.delete(*found)
        if cursor == 0:
            break
    await store.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("-n", type=int, default=20_000)
    args = ap.parse_args()
    await bench_local(args.n)
    await bench_redis(args.redis, 20_000)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
