"""Cache hit throughput next to pass-through, measured in the same run.

Run: ``PYTHONPATH=src python bench/cache_bench.py [seconds] [connections]``.

Starts a 1 KiB upstream in a child process, a one-worker gateway (uvloop) in this process with
two routes — ``/cached`` (cache plugin, ``max-age=3600``) and ``/pass`` (no plugin) — and
drives each with ``wrk`` (interleaved rounds, medians). Without ``wrk`` it falls back to a
small asyncio keep-alive client, whose numbers only compare the two routes with each other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

BODY = b"x" * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upstream(port: int) -> None:
    import uvloop

    from portway.http.headers import Headers
    from portway.http.models import Request, Response
    from portway.http.server import serve_simple

    async def handler(req: Request) -> Response:
        h = Headers.from_pairs([("cache-control", "max-age=3600"), ("content-type", "text/plain")])
        return Response(200, h, BODY)

    async def main() -> None:
        await serve_simple(handler, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def _wrk(url: str, seconds: int, conns: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


async def _py_client(port: int, path: str, seconds: float, conns: int) -> float:
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"content-length: (\d+)", head, re.I)
            await reader.readexactly(int(m.group(1)) if m else 0)
            done += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    return done / (time.perf_counter() - t0)


async def _bench(seconds: int, conns: int) -> None:
    from portway.config.schema import GatewayConfig
    from portway.server.worker import Worker

    up_port, gw_port = _free_port(), _free_port()
    proc = multiprocessing.Process(target=_upstream, args=(up_port,), daemon=True)
    proc.start()
    await asyncio.sleep(0.5)
    cfg = GatewayConfig.model_validate(
        {
            "listeners": [{"address": f"127.0.0.1:{gw_port}"}],
            "admin": {"enabled": False},
            "upstreams": {"u": {"targets": [{"url": f"http://127.0.0.1:{up_port}"}]}},
            "routes": [
                {
                    "name": "cached",
                    "match": {"paths": ["/cached"]},
                    "upstream": "u",
                    "plugins": [{"name": "cache", "config": {}}],
                },
                {"name": "pass", "match": {"paths": ["/pass"]}, "upstream": "u"},
            ],
        }
    )
    worker = Worker(cfg, admin=False)
    await worker.start()
    base = f"http://127.0.0.1:{gw_port}"
    use_wrk = shutil.which("wrk") is not None
    results: dict[str, list[float]] = {"cached": [], "pass": []}
    try:
        for _ in range(3):
            for name in ("cached", "pass"):
                if use_wrk:
                    rps = await asyncio.to_thread(_wrk, f"{base}/{name}", seconds, conns)
                else:
                    rps = await _py_client(gw_port, f"/{name}", seconds, min(conns, 16))
                results[name].append(rps)
    finally:
        await worker.shutdown()
        proc.terminate()
    tool = "wrk" if use_wrk else "python client (relative numbers only)"
    print(f"cache bench ({tool}, {seconds}s x 3 rounds, c={conns}, 1 KiB body)")
    cached, passthru = statistics.median(results["cached"]), statistics.median(results["pass"])
    print(f"  cache hit     {cached:10.0f} req/s")
    print(f"  pass-through  {passthru:10.0f} req/s")
    if passthru:
        print(f"  ratio         {cached / passthru:10.2f}x")


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    try:
        import uvloop

        uvloop.run(_bench(seconds, conns))
    except ImportError:
        asyncio.run(_bench(seconds, conns))


if __name__ == "__main__":
    main()
