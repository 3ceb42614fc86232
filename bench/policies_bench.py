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

import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUTES = ("pass", "edge")
BODY = b'{"name": "widget", "qty": 3, "tags": ["a", "b"], "note": "bench"}'


def _doc() -> bytes:
    import orjson

    items = [{"id": i, "name": f"item {i}", "secret": "x" * 8, "created": i} for i in range(14)]
    return orjson.dumps({"items": items})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def _upstream(port: int) -> None:
    import uvloop

    from portway.http.headers import Headers
    from portway.http.models import Request, Response
    from portway.http.server import serve_simple

    body = _doc()

    async def handler(req: Request) -> Response:
        if req.body is not None:
            await req.body.read_all(1 << 20)
        return Response(200, Headers.from_pairs([("content-type", "application/json")]), body)

    async def main() -> None:
        await serve_simple(handler, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its body's size on the wire (after de-chunking)."""
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    i = low.find(b"content-length:")
    if i >= 0:
        n = int(low[i + 15 : low.index(b"\r\n", i)])
        await reader.readexactly(n)
        return n
    total = 0
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return total
        total += size


async def _drive(port: int, path: str, seconds: float, conns: int) -> tuple[int, int]:
    req = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nOrigin: https://app.example.com\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    done = 0
    size = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done, size
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(req)
            size = await _read_response(reader)
            done += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return done, size


async def _bench(seconds: int, conns: int, rounds: int) -> None:
    up_port, gw_port = _free_port(), _free_port()
    proc = multiprocessing.Process(target=_upstream, args=(up_port,), daemon=True)
    proc.start()
    _wait_port(up_port)
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
    import orjson

    conf = {
        "listeners": [{"name": "public", "address": f"127.0.0.1:{gw_port}"}],
        "admin": {"enabled": False},
        "upstreams": {"u": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}},
        "routes": routes,
    }
    d = tempfile.mkdtemp(prefix="portway-pbench-")
    path = Path(d) / "portway.yaml"
    path.write_bytes(orjson.dumps(conf))  # JSON is YAML
    gw = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(path), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[tuple[float, float, int]]] = {r: [] for r in ROUTES}
    try:
        _wait_port(gw_port)
        for r in ROUTES:  # warm up
            await _drive(gw_port, f"/{r}", 0.5, 4)
        for rnd in range(rounds):
            order = ROUTES if rnd % 2 == 0 else tuple(reversed(ROUTES))
            for r in order:
                cpu0 = _cpu_seconds(gw.pid)
                t0 = time.perf_counter()
                n, size = await _drive(gw_port, f"/{r}", seconds, conns)
                elapsed = time.perf_counter() - t0
                cpu_us = (_cpu_seconds(gw.pid) - cpu0) / max(n, 1) * 1e6
                results[r].append((n / elapsed, cpu_us, size))
    finally:
        gw.terminate()
        gw.wait(10)
        proc.terminate()
    print(
        f"edge-policy bench: {rounds} interleaved rounds of {seconds}s, c={conns}, "
        f"POST 60 B JSON -> 1 KiB JSON, python keep-alive client (compare ratios)\n"
    )
    print("| route | req/s | ratio | gateway CPU µs/req | ratio | body bytes | ratio |")
    print("|---|---|---|---|---|---|---|")  # body bytes: the response as the client got it
    base_rps = statistics.median(x[0] for x in results["pass"])
    base_cpu = statistics.median(x[1] for x in results["pass"])
    base_size = results["pass"][0][2]
    for r in ROUTES:
        rps = statistics.median(x[0] for x in results[r])
        cpu = statistics.median(x[1] for x in results[r])
        size = results[r][0][2]
        print(
            f"| {r} | {rps:.0f} | {rps / base_rps:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | "
            f"{size} | {size / base_size:.3f} |"
        )


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    import uvloop

    uvloop.run(_bench(seconds, conns, rounds))


if __name__ == "__main__":
    main()
