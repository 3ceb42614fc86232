"""Shared pieces of the route-vs-pass-through benches (``compression_bench.py``,
``policies_bench.py``): an upstream answering one fixed body in a child process, a one-worker
``portway run`` in another, an asyncio keep-alive client, and a table of medians as ratios to
the ``pass`` route measured in the same interleaved rounds."""

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
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def _upstream(port: int, body: bytes, content_type: str) -> None:
    import uvloop

    from portway.http.headers import Headers
    from portway.http.models import Request, Response
    from portway.http.server import serve_simple

    async def handler(req: Request) -> Response:
        if req.body is not None:
            await req.body.read_all(1 << 20)
        return Response(200, Headers.from_pairs([("content-type", content_type)]), body)

    async def main() -> None:
        await serve_simple(handler, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def read_response(reader: asyncio.StreamReader) -> int:
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


async def drive(port: int, request: bytes, seconds: float, conns: int) -> tuple[int, int]:
    """Send ``request`` back to back on ``conns`` keep-alive connections for ``seconds``;
    return (responses, size of the last body)."""
    done = 0
    size = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done, size
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            size = await read_response(reader)
            done += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return done, size


async def compare(
    title: str,
    body: bytes,
    routes: list[dict[str, Any]],
    requests: dict[str, bytes],
    seconds: int,
    conns: int,
    rounds: int,
    content_type: str = "application/json",
) -> None:
    """Serve ``body`` upstream, run the gateway with ``routes`` (one named ``pass``), drive
    each route with its request in interleaved rounds and print medians and ratios."""
    import orjson

    names = list(requests)
    up_port, gw_port = free_port(), free_port()
    proc = multiprocessing.Process(
        target=_upstream, args=(up_port, body, content_type), daemon=True
    )
    proc.start()
    wait_port(up_port)
    conf = {
        "listeners": [{"name": "public", "address": f"127.0.0.1:{gw_port}"}],
        "admin": {"enabled": False},
        "upstreams": {"u": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}},
        "routes": routes,
    }
    path = Path(tempfile.mkdtemp(prefix="portway-bench-")) / "portway.yaml"
    path.write_bytes(orjson.dumps(conf))  # JSON is YAML
    gw = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(path), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[tuple[float, float, int]]] = {r: [] for r in names}
    try:
        wait_port(gw_port)
        for r in names:  # warm up
            await drive(gw_port, requests[r], 0.5, 4)
        for rnd in range(rounds):
            for r in names if rnd % 2 == 0 else list(reversed(names)):
                cpu0 = cpu_seconds(gw.pid)
                t0 = time.perf_counter()
                n, size = await drive(gw_port, requests[r], seconds, conns)
                elapsed = time.perf_counter() - t0
                cpu_us = (cpu_seconds(gw.pid) - cpu0) / max(n, 1) * 1e6
                results[r].append((n / elapsed, cpu_us, size))
    finally:
        gw.terminate()
        gw.wait(10)
        proc.terminate()
    print(f"{title}: {rounds} interleaved rounds of {seconds}s, c={conns} (compare ratios)\n")
    print("| route | req/s | ratio | gateway CPU µs/req | ratio | body bytes | ratio |")
    print("|---|---|---|---|---|---|---|")
    base_rps = statistics.median(x[0] for x in results["pass"])
    base_cpu = statistics.median(x[1] for x in results["pass"])
    base_size = results["pass"][0][2]
    for r in names:
        rps = statistics.median(x[0] for x in results[r])
        cpu = statistics.median(x[1] for x in results[r])
        size = results[r][0][2]
        print(
            f"| {r} | {rps:.0f} | {rps / base_rps:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | "
            f"{size} | {size / base_size:.3f} |"
        )


def main(run: Any) -> None:
    """``run(seconds, conns, rounds)`` with the command line's ``[seconds] [conns] [rounds]``."""
    import uvloop

    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    uvloop.run(run(seconds, conns, rounds))
