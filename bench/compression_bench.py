"""Compressed routes next to pass-through, measured in the same run.

Run: ``PYTHONPATH=src python bench/compression_bench.py [seconds] [connections] [rounds]``.

Starts an upstream answering a 15 KiB JSON document in a child process, a one-worker gateway
(``portway run --workers 1``) in another, with four routes — ``/pass`` (no plugin) and
``/gzip``, ``/br``, ``/zstd`` (``compression`` offering only that algorithm, level
``default``) — and drives each from this process with an asyncio keep-alive client sending
``Accept-Encoding: gzip, br, zstd``, in interleaved rounds. Reported per route (medians):
req/s, the gateway's CPU µs per request (from /proc, so the client's own CPU is not counted),
bytes on the wire per response, and both as a ratio to pass-through in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidebyside import compare, main

ROUTES = ("pass", "gzip", "br", "zstd")


def _doc() -> bytes:
    import orjson

    items = [
        {"id": i, "name": f"item {i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(260)
    ]
    return orjson.dumps({"items": items})


async def _bench(seconds: int, conns: int, rounds: int) -> None:
    routes: list[dict[str, object]] = [
        {"name": "pass", "match": {"paths": ["/pass"]}, "upstream": "u"}
    ]
    for algo in ROUTES[1:]:
        cfg = {"algorithms": [algo], "level": "default"}
        routes.append(
            {
                "name": algo,
                "match": {"paths": [f"/{algo}"]},
                "upstream": "u",
                "plugins": [{"name": "compression", "config": cfg}],
            }
        )
    requests = {
        r: f"GET /{r} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip, br, zstd\r\n\r\n".encode()
        for r in ROUTES
    }
    await compare(
        "compression bench (15 KiB JSON, python keep-alive client)",
        _doc(),
        routes,
        requests,
        seconds,
        conns,
        rounds,
    )


if __name__ == "__main__":
    main(_bench)
