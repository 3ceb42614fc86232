"""An edge-policy route (cors + request_validation + response_transformer) next to
pass-through, measured in the same run.

Run: ``PYTHONPATH=src python bench/policies_bench.py [seconds] [connections] [rounds]``.

Starts an upstream answering a 1 KiB JSON document in a child process, a one-worker gateway
(``portway run --workers 1``) in another, with two routes — ``/pass`` (no plugin) and
``/edge`` (``cors`` for one origin, ``request_validation`` of the JSON body against a small
schema, ``response_transformer`` removing a nested field and renaming another) — and drives
both from this process with an asyncio keep-alive client sending a credentialed-CORS-style
``POST`` with a 60-byte JSON body, in interleaved rounds. Reported per route (medians): req/s,
the gateway's CPU µs per request (from /proc) and both as a ratio to pass-through.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidebyside import compare, main

BODY = b'{"name": "widget", "qty": 3, "tags": ["a", "b"], "note": "bench"}'


def _doc() -> bytes:
    import orjson

    items = [{"id": i, "name": f"item {i}", "secret": "x" * 8, "created": i} for i in range(14)]
    return orjson.dumps({"items": items})


async def _bench(seconds: int, conns: int, rounds: int) -> None:
    schema = {
        "type": "object",
        "required": ["name", "qty"],
        "properties": {
            "name": {"type": "string", "maxLength": 64},
            "qty": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    routes = [
        {"name": "pass", "match": {"paths": ["/pass"]}, "upstream": "u"},
        {
            "name": "edge",
            "match": {"paths": ["/edge"]},
            "upstream": "u",
            "plugins": [
                {
                    "name": "cors",
                    "config": {
                        "allow_origins": ["https://app.example.com"],
                        "allow_credentials": True,
                    },
                },
                {"name": "request_validation", "config": {"body_schema": schema}},
                {
                    "name": "response_transformer",
                    "config": {
                        "json": {"remove": ["items[*].secret"], "rename": {"items": "data"}}
                    },
                },
            ],
        },
    ]
    requests = {
        name: (
            f"POST /{name} HTTP/1.1\r\nHost: bench\r\nOrigin: https://app.example.com\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode()
        + BODY
        for name in ("pass", "edge")
    }
    await compare(
        "edge-policy bench (POST 60 B JSON -> 1 KiB JSON)",
        _doc(),
        routes,
        requests,
        seconds,
        conns,
        rounds,
    )


if __name__ == "__main__":
    main(_bench)
