"""Requests/s of the Redis (and local) rate limiter through one gateway process, next to the
pass-through figure of the same run.

Run: ``PYTHONPATH=src python bench/ratelimit_gateway_bench.py [seconds] [connections]``
(needs wrk and a Redis; ``REDIS_URL`` defaults to ``redis://127.0.0.1:6379/0``). Keys are
written under a unique ``bench:<random>:`` prefix and expire on their own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cache_bench import _free_port, _upstream, _wrk


async def _bench(seconds: int, conns: int) -> None:
    from portway.config.schema import GatewayConfig
    from portway.server.worker import Worker

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    up_port, gw_port = _free_port(), _free_port()
    proc = multiprocessing.Process(target=_upstream, args=(up_port,), daemon=True)
    proc.start()
    await asyncio.sleep(0.5)
    limit = {"algorithm": "gcra", "limits": [{"rate": 10_000_000, "per": "1s"}], "key": ["global"]}

    def route(name: str, store: str | None) -> dict[str, object]:
        r: dict[str, object] = {"name": name, "match": {"paths": [f"/{name}"]}, "upstream": "u"}
        if store is not None:
            conf = dict(limit, store=store, redis={"url": redis_url, "key_prefix": prefix})
            r["plugins"] = [{"name": "rate_limit", "config": conf}]
        return r

    cfg = GatewayConfig.model_validate(
        {
            "listeners": [{"address": f"127.0.0.1:{gw_port}"}],
            "admin": {"enabled": False},
            "upstreams": {"u": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}},
            "routes": [route("redis", "redis"), route("local", "local"), route("pass", None)],
        }
    )
    worker = Worker(cfg, admin=False)
    await worker.start()
    base = f"http://127.0.0.1:{gw_port}"
    results: dict[str, list[float]] = {"redis": [], "local": [], "pass": []}
    try:
        for rnd in range(3):
            order = ["redis", "local", "pass"] if rnd % 2 == 0 else ["pass", "local", "redis"]
            for name in order:
                results[name].append(
                    await asyncio.to_thread(_wrk, f"{base}/{name}", seconds, conns)
                )
    finally:
        await worker.shutdown()
        proc.terminate()
    print(f"rate limit through one gateway (wrk, {seconds}s x 3 interleaved rounds, c={conns})")
    passthru = statistics.median(results["pass"])
    for name in ("redis", "local", "pass"):
        rps = statistics.median(results[name])
        print(f"  {name:6s} {rps:9.0f} req/s  ({rps / passthru:.2f}x pass-through)")


if __name__ == "__main__":
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    import uvloop

    uvloop.run(_bench(secs, c))
