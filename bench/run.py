#!/usr/bin/env python3
"""Side-by-side proxy benchmark: Portway (1 worker) vs nginx (1 worker), same machine.

Needs nginx and wrk (``apt-get install nginx wrk``); installs nothing itself. Starts an nginx
upstream returning 200 with a 1 KiB body, nginx as a 1-worker reverse proxy with upstream
keepalive, and Portway with one worker; runs wrk at each concurrency for each proxy,
interleaved over several rounds, and prints req/s, p50, p99, CPU µs per request, peak RSS and
the ratio to nginx measured in the same round, plus the added p50 latency at c1 over a direct
call to the upstream. Medians across rounds are the numbers to quote.

    python bench/run.py [--rounds 3] [--duration 5] [--conns 1,64,256]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    {body}
  }}
}}
"""


def nginx(dirname: str, name: str, port: int, body: str, up: int = 0) -> subprocess.Popen[bytes]:
    conf = Path(dirname) / f"{name}.conf"
    conf.write_text(NGINX_CONF.format(dir=dirname, name=name, port=port, body=body, up=up or port))
    p = subprocess.Popen(["nginx", "-c", str(conf), "-p", dirname], stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(stat[11]) + int(stat[12])) / tck


def proc_tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += proc_tree(int(c))
    except OSError:
        pass
    return out


def rss_kb(pid: int) -> int:
    total = 0
    for p in proc_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                total += int(line.split()[1])
    return total


def parse_latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", text, re.M)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(port: int, conns: int, duration: int) -> dict[str, float]:
    threads = 1 if conns == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(conns),
            "-d",
            f"{duration}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": parse_latency(out, "50"),
        "p99": parse_latency(out, "99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--conns", default="1,64,256")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/proto_proxy.py --batch, the bare callback proxy (what Python "
        "can do at best)",
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(
                f"bench: {tool} not found; install with: apt-get install nginx wrk", file=sys.stderr
            )
            return 2
    conns = [int(c) for c in args.conns.split(",")]
    import portway.http.server as _srv

    if not str(_srv.__file__).endswith(".so"):
        # a failed mypyc build falls back to pure Python silently (an install must not fail);
        # numbers from that build are not the product's
        print(
            "bench: portway is installed as pure Python (editable, PORTWAY_PURE=1, or the mypyc "
            "build failed: see `pip install -v .`); the numbers below are not the compiled "
            "build's",
            file=sys.stderr,
        )
    d = tempfile.mkdtemp(prefix="portway-bench-")
    up_port, ngx_port, pw_port = free_port(), free_port(), free_port()
    body = "x" * 1024
    procs = [nginx(d, "upstream", up_port, f'location / {{ return 200 "{body}"; }}')]
    procs.append(
        nginx(
            d,
            "proxy",
            ngx_port,
            "location / { proxy_pass http://up; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; }',
            up=up_port,
        )
    )
    cfg = Path(d) / "portway.yaml"
    cfg.write_text(
        f"listeners: [{{name: public, address: '127.0.0.1:{pw_port}'}}]\n"
        "admin: {enabled: false}\n"
        f"upstreams: {{u: {{targets: [{{url: 'http://127.0.0.1:{up_port}'}}]}}}}\n"
        "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n"
    )
    pw = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    procs.append(pw)
    wait_port(pw_port)
    targets = {
        "direct": (up_port, procs[0].pid),
        "nginx": (ngx_port, procs[1].pid),
        "portway": (pw_port, pw.pid),
    }
    if args.floor:
        floor_port = free_port()
        floor = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("proto_proxy.py")),
                str(floor_port),
                str(up_port),
                "--batch",
            ],
            stderr=subprocess.DEVNULL,
        )
        procs.append(floor)
        wait_port(floor_port)
        targets["floor"] = (floor_port, floor.pid)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for port, _ in targets.values():  # warm up
            wrk(port, 16, 1)
        for rnd in range(args.rounds):
            for c in conns:
                round_res: dict[str, dict[str, float]] = {}
                order = ["nginx", "portway"] if rnd % 2 == 0 else ["portway", "nginx"]
                if args.floor:
                    order.append("floor")
                if c == 1:
                    order = ["direct", *order]
                for name in order:
                    port, pid = targets[name]
                    pid = targets[name][1]
                    cpu0 = sum(cpu_seconds(p) for p in proc_tree(pid))
                    r = wrk(port, c, args.duration)
                    cpu1 = sum(cpu_seconds(p) for p in proc_tree(pid))
                    r["cpu_us"] = (cpu1 - cpu0) / max(1.0, r["rps"] * args.duration) * 1e6
                    r["rss_mb"] = rss_kb(pid) / 1024
                    round_res[name] = r
                for name, r in round_res.items():
                    r["ratio"] = r["rps"] / round_res["nginx"]["rps"]
                    if "direct" in round_res:
                        r["added_p50_us"] = (r["p50"] - round_res["direct"]["p50"]) * 1000
                    results.setdefault((name, c), []).append(r)
                print(
                    f"round {rnd + 1}/{args.rounds} c{c}: "
                    + ", ".join(f"{n} {r['rps']:.0f} req/s" for n, r in round_res.items()),
                    file=sys.stderr,
                )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.duration}s each, 1 KiB body\n")
    print(
        "| proxy | conns | req/s | ratio vs nginx | p50 ms | p99 ms | CPU µs/req | peak RSS MB | added p50 µs (c1) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, c), rs in sorted(results.items(), key=lambda x: (x[0][1], x[0][0])):

        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs if k in r)

        added = f"{med('added_p50_us'):.0f}" if c == 1 and name != "direct" else ""
        print(
            f"| {name} | {c} | {med('rps'):.0f} | {med('ratio'):.2f} | {med('p50'):.3f} | "
            f"{med('p99'):.3f} | {med('cpu_us'):.1f} | {med('rss_mb'):.0f} | {added} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
