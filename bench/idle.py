"""``bench/run.py --idle-conns N``: memory per idle keep-alive connection, latency while held.

For Portway (1 worker, pass-through) and nginx (1 worker, proxy), one at a time: the idle
RSS of the serving process tree; a wrk c64 run's latency; N client connections that each
make one request and then stay open, idle; the RSS again ((after - before) / N is the cost
of one idle connection); the same wrk run while the N are held; how many of the N are still
open at the end. Connections are made from this process (its file limit is raised first).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import time
from pathlib import Path

import variants as V

REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_now_kb(pid: int) -> int:
    from run import proc_tree

    total = 0
    for p in proc_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                total += int(line.split()[1])
    return total


async def _open(port: int, n: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    sem = asyncio.Semaphore(200)

    async def one() -> None:
        async with sem:
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, REQ)
            got = b""
            while b"\r\n\r\n" not in got or len(got) < 1024:
                chunk = await loop.sock_recv(s, 4096)
                if not chunk:
                    raise ConnectionError("closed during the first request")
                got += chunk
            socks.append(s)

    await asyncio.gather(*(one() for _ in range(n)))
    return socks


def still_open(socks: list[socket.socket]) -> int:
    alive = 0
    for s in socks:
        try:
            alive += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def run_idle(d: str, up: int, n: int, duration: int) -> int:
    from run import wrk

    port_n = V.free_port()
    ngx = V.nginx(d, "nginx", port_n, f"location / {{ {V.PROXY} }}", up=up)
    pw, port_p = V.portway(d, "portway", V.upstream_yaml(up) + V.route())
    rows = []
    try:
        time.sleep(1.0)
        for name, proc, port in (("portway", pw, port_p), ("nginx", ngx, port_n)):
            t = V.Target(name, [port], [proc.pid])
            wrk(t, 16, 1)  # warm: imports done, pools filled
            time.sleep(0.5)
            rss0 = rss_now_kb(proc.pid)
            base = [wrk(t, 64, duration) for _ in range(3)]
            rss1 = rss_now_kb(proc.pid)
            t0 = time.monotonic()
            socks = asyncio.run(_open(port, n))
            opened_s = time.monotonic() - t0
            time.sleep(0.5)
            rss2 = rss_now_kb(proc.pid)
            held = [wrk(t, 64, duration) for _ in range(3)]
            alive = still_open(socks)
            for s in socks:
                s.close()
            rows.append(
                (
                    name,
                    rss0 / 1024,
                    rss1 / 1024,
                    (rss2 - rss1) / n,
                    opened_s,
                    statistics.median(r["rps"] for r in base),
                    statistics.median(r["p50"] for r in base),
                    statistics.median(r["p99"] for r in base),
                    statistics.median(r["rps"] for r in held),
                    statistics.median(r["p50"] for r in held),
                    statistics.median(r["p99"] for r in held),
                    alive,
                )
            )
            time.sleep(1.0)
    finally:
        for p in (pw, ngx):
            p.terminate()
        for p in (pw, ngx):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"\n{n} idle keep-alive connections, wrk -c64 {duration}s x3 (medians)\n")
    print(
        "| proxy | idle RSS MB | RSS after load MB | KB per idle conn | open s | "
        "req/s | p50 ms | p99 ms | req/s held | p50 ms held | p99 ms held | still open |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.1f} | {r[5]:.0f} | "
            f"{r[6]:.3f} | {r[7]:.3f} | {r[8]:.0f} | {r[9]:.3f} | {r[10]:.3f} | {r[11]} |"
        )
    return 0
