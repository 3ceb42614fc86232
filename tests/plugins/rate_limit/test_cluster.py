"""Three gateway processes (`python -m portway run`) sharing one real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.helpers import free_port, run_upstream


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    if length:
        await reader.readexactly(length)
    return status


@asynccontextmanager
async def gateways(
    tmp: Path, upstream: str, routes: list[dict[str, Any]], n: int = 3
) -> AsyncIterator[list[int]]:
    ports = [free_port() for _ in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    all_routes = [{"name": "health", "match": {"paths": ["=/health"]}, "upstream": "u"}, *routes]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[3] / "src"))
    try:
        for i, port in enumerate(ports):
            cfg = {
                "listeners": [{"address": f"127.0.0.1:{port}"}],
                "admin": {"enabled": False},
                "server": {"workers": 1, "log_level": "error"},
                "upstreams": {"u": {"targets": [{"url": upstream}]}},
                "routes": all_routes,
            }
            path = tmp / f"gw{i}.yaml"
            path.write_text(json.dumps(cfg))
            log = (tmp / f"gw{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "portway", "run", "-c", str(path), "-w", "1"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        # three interpreters importing the gateway at once: on a loaded machine that takes
        # far longer than on a quiet one (20 s was seen to run out); the wait ends as soon as
        # every /health answers
        deadline = time.monotonic() + 120
        for i, port in enumerate(ports):
            while True:
                assert procs[i].poll() is None, (tmp / f"gw{i}.log").read_text()
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    ok = await _get(r, w, "/health") == 200
                    w.close()
                    if ok:
                        break
                except (OSError, asyncio.IncompleteReadError):
                    pass
                assert time.monotonic() < deadline, "gateway did not start"
                await asyncio.sleep(0.05)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def load(
    ports: list[int],
    path: str,
    seconds: float,
    per_gateway: int = 3,
    sent: list[float] | None = None,
) -> Counter[int]:
    """Keep-alive clients hammering ``path`` on every gateway; status counts. ``sent`` gets
    the time each client sent its first and its last request (the window the limiter saw,
    which starts later than ``seconds`` counts from when connecting is slow)."""
    counts: Counter[int] = Counter()
    end = time.monotonic() + seconds
    slowest = 0.0

    async def client(port: int) -> None:
        nonlocal slowest
        r, w = await asyncio.open_connection("127.0.0.1", port)
        first = last = 0.0
        try:
            while (now := time.monotonic()) < end:
                first = first or now
                last = now
                counts[await _get(r, w, path)] += 1
                slowest = max(slowest, time.monotonic() - now)
        finally:
            w.close()
            if sent is not None and first:
                sent.extend((first, last))

    await asyncio.gather(*(client(p) for p in ports for _ in range(per_gateway)))
    if sent is not None:
        # the limiter's window is the clients' shifted by a request's latency at each end:
        # the slowest round trip bounds that shift (appended last: read it with ``window``)
        sent.append(slowest)
    return counts


def window(sent: list[float]) -> tuple[float, float]:
    """(seconds the clients sent in, the slowest round trip) of a ``load(sent=...)``."""
    times, slowest = sent[:-1], sent[-1]
    return max(times) - min(times), slowest


def limited(
    name: str, path: str, redis: dict[str, Any], rate: int, burst: int, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"paths": [path]},
        "upstream": "u",
        "plugins": [
            {
                "name": "rate_limit",
                "config": {
                    "limits": [{"rate": rate, "per": "1s", "burst": burst}],
                    "key": ["global"],
                    "store": "redis",
                    "redis": redis,
                    "headers": "none",
                    **extra,
                },
            }
        ],
    }


async def test_three_gateways_admit_rate_times_time_plus_burst(tmp_path, redis_url, redis_prefix):
    rate, burst, seconds = 50, 20, 10.0
    # a reply timeout no loaded machine reaches, and deny on store errors: a decision that
    # fell back to the local limiter would blur the count silently, a 503 shows
    redis = {"url": redis_url, "key_prefix": redis_prefix, "timeout": "10s"}
    routes = [limited("limited", "/", redis, rate, burst, on_store_error="deny")]
    async with run_upstream() as up, gateways(tmp_path, up.url, routes) as ports:
        sent: list[float] = []
        counts = await load(ports, "/x", seconds, sent=sent)
    # the bucket refills over the time requests were actually arriving; the server saw
    # that window shifted by at most one round trip at either end
    span, slowest = window(sent)
    expected = rate * span + burst
    assert set(counts) <= {200, 429}, counts
    assert counts[429] > counts[200]  # the clients really oversubscribed the limit
    slack = 0.01 * expected + rate * slowest
    assert abs(counts[200] - expected) <= slack, (counts, expected, slowest)


async def test_redis_outage_allow_and_deny_then_exact_again(tmp_path, private_redis):
    rate, burst = 20, 5
    # a stopped Redis refuses connections at once, so a long reply timeout costs the outage
    # phase nothing; it keeps a slow reply on a loaded machine from counting as an outage
    # (a local fallback) during the exact phases
    redis = {
        "url": private_redis.url,
        "backoff": "100ms",
        "max_backoff": "300ms",
        "timeout": "5s",
    }
    routes = [
        limited("allow", "/allow", redis, rate, burst, instances=3),
        limited("deny", "/deny", redis, rate, burst, on_store_error="deny"),
    ]
    async with run_upstream() as up, gateways(tmp_path, up.url, routes) as ports:
        up_allow, up_deny = await asyncio.gather(
            load(ports, "/allow", 2.0, 2), load(ports, "/deny", 2.0, 2)
        )
        assert set(up_allow) <= {200, 429} and set(up_deny) <= {200, 429}
        private_redis.stop()
        down_allow, down_deny = await asyncio.gather(
            load(ports, "/allow", 3.0, 2), load(ports, "/deny", 3.0, 2)
        )
        # allow: traffic continues, limited locally at limit/3 per gateway, never an error
        assert set(down_allow) <= {200, 429}, down_allow
        local_bound = 3 * (max(1.0, burst / 3) + rate / 3 * 3.0)
        assert 0.5 * local_bound <= down_allow[200] <= local_bound + 3, down_allow
        # deny: 503 while the store is down
        assert set(down_deny) == {503}, down_deny
        private_redis.start()
        # every gateway's store is back (both routes share it) before the exact window
        # starts: 'deny' answers 503 until its gateway reconnected. Waiting on that, not on
        # a sleep longer than the backoff, keeps a slow reconnect on a loaded machine out
        # of the count
        for port in ports:
            deadline = time.monotonic() + 30
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                while await _get(r, w, "/deny") == 503:
                    assert time.monotonic() < deadline, f"gateway {port} never reconnected"
                    await asyncio.sleep(0.05)
            finally:
                w.close()
        sent: list[float] = []
        after = await load(ports, "/allow", 3.0, 2, sent=sent)
        after_deny = await load(ports, "/deny", 0.5, 1)
    assert set(after) <= {200, 429} and set(after_deny) <= {200, 429}, (after, after_deny)
    # the restarted Redis starts empty: exact limiting resumes at burst + rate * t, t the
    # window the clients really sent in
    span, slowest = window(sent)
    expected = burst + rate * span
    assert abs(after[200] - expected) <= 3 + rate * slowest, (after, expected, slowest)
