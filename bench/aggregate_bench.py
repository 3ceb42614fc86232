"""An aggregate of three calls against the same three calls made one after another by a client.

Run: ``PYTHONPATH=src python bench/aggregate_bench.py [delay_ms] [requests]`` (defaults 20, 200).

Starts three upstreams in a child process (each answers a small JSON document after
``delay_ms``, the service time of a real backend), a one-worker gateway (``portway run
--workers 1``) in another, with one aggregate route (``/page/{id}``: three independent calls)
and three plain routes (``/a``, ``/b``, ``/c``). The client (this process, one keep-alive
connection) alternates: one aggregate request, then the three plain requests in sequence.
Reported: median and p90 latency of each, and their ratio (aggregate / sequential). With the
calls in parallel the ratio tends to 1/3 as ``delay_ms`` grows; the gap to 1/3 is the
gateway's fan-out and merge cost.
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upstreams(ports: list[int], delay: float) -> None:
    import uvloop

    from portway.http.models import Request, Response
    from portway.http.server import serve_simple

    async def main() -> None:
        servers = []
        for i, port in enumerate(ports):

            async def h(req: Request, i: int = i) -> Response:
                await asyncio.sleep(delay)
                return Response.json(200, {"service": i, "items": list(range(20))})

            servers.append(await serve_simple(h, "127.0.0.1", port))
        await asyncio.Event().wait()

    uvloop.run(main())


async def _wait(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


class Client:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    async def get(self, path: str) -> int:
        self.w.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.r.readexactly(length)
        return status


def _config(gw: int, ports: list[int]) -> str:
    ups = "\n".join(
        f"  s{i}: {{targets: [{{url: http://127.0.0.1:{p}}}]}}" for i, p in enumerate(ports)
    )
    calls = "\n".join(
        f'        - {{name: s{i}, upstream: s{i}, path: "/x/{{params.id}}", required: true}}'
        for i in range(3)
    )
    plain = "\n".join(
        f"  - {{name: {n}, match: {{paths: ['=/{n}']}}, upstream: s{i}}}"
        for i, n in enumerate("abc")
    )
    return f"""
listeners: [{{name: public, address: "127.0.0.1:{gw}"}}]
admin: {{enabled: false}}
upstreams:
{ups}
routes:
  - name: page
    match: {{paths: ["/page/{{id}}"]}}
    aggregate:
      timeout: 5s
      calls:
{calls}
{plain}
"""


async def run(delay_ms: float, n: int) -> None:
    ports = [_free_port() for _ in range(3)]
    gw = _free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_upstreams, args=(ports, delay_ms / 1000), daemon=True
    )
    proc.start()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "portway.yaml"
        cfg.write_text(_config(gw, ports))
        env = dict(os.environ)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "portway.cli", "run", "-c", str(cfg), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for p in (*ports, gw):
                await _wait(p)
            c = Client(*await asyncio.open_connection("127.0.0.1", gw))
            agg: list[float] = []
            seq: list[float] = []
            for i in range(n + 20):
                t0 = time.perf_counter()
                assert await c.get(f"/page/{i}") == 200
                t1 = time.perf_counter()
                for name in "abc":
                    assert await c.get(f"/{name}") == 200
                t2 = time.perf_counter()
                if i >= 20:  # warm-up: pools filled, code paths hot
                    agg.append(t1 - t0)
                    seq.append(t2 - t1)
        finally:
            gateway.terminate()
            gateway.wait(10)
            proc.terminate()

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[int(p * (len(xs) - 1))] * 1000

    ma, ms = statistics.median(agg) * 1000, statistics.median(seq) * 1000
    print(f"upstream delay {delay_ms:g} ms, {n} requests each")
    print(f"aggregate of 3 calls : median {ma:7.2f} ms   p90 {q(agg, 0.9):7.2f} ms")
    print(f"3 sequential calls   : median {ms:7.2f} ms   p90 {q(seq, 0.9):7.2f} ms")
    print(f"ratio aggregate/sequential (median): {ma / ms:.3f}")


if __name__ == "__main__":
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    asyncio.run(run(delay, count))
