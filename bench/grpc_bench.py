#!/usr/bin/env python3
"""Unary gRPC: direct vs through Portway (1 worker, h2c upstream) vs nginx ``grpc_pass``
(1 worker, when nginx is installed), interleaved in one run, as ratios to direct.

The upstream is the test Echo service (``tests/proxy/grpc/echo.proto``, grpcio, its own
process); the client is grpcio keeping ``--conc`` calls in flight on one channel for
``--duration`` seconds per measurement. Medians over ``--rounds`` are printed.

    python bench/grpc_bench.py [--rounds 3] [--duration 3] [--conc 1,16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from tests.proxy.grpc.grpc_support import SERVICE, echo_pb2  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


def measure(port: int, conc: int, duration: float) -> tuple[float, float]:
    """(calls/s, p50 latency in ms) with ``conc`` calls in flight."""
    pb = echo_pb2()
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = ch.unary_unary(f"/{SERVICE}/Unary", pb.Msg.SerializeToString, pb.Msg.FromString)
    req = pb.Msg(text="bench", data=b"x" * 100)
    for _ in range(50):  # warm up: connection, HPACK tables
        call(req, timeout=10)
    lat: list[float] = []
    done = threading.Event()
    lock = threading.Lock()
    end = time.perf_counter() + duration
    inflight = [0]

    def start() -> None:
        t0 = time.perf_counter()
        f = call.future(req, timeout=10)

        def finished(_: Any) -> None:
            now = time.perf_counter()
            with lock:
                lat.append(now - t0)
                inflight[0] -= 1
                again = now < end
                if again:
                    inflight[0] += 1
                elif inflight[0] == 0:
                    done.set()
            if again:
                start()

        f.add_done_callback(finished)

    with lock:
        inflight[0] = conc
    for _ in range(conc):
        start()
    done.wait(duration + 30)
    ch.close()
    return len(lat) / duration, statistics.median(lat) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--conc", default="1,16")
    args = ap.parse_args()
    concs = [int(c) for c in args.conc.split(",")]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="portway-grpc-bench-"))
    try:
        up_port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.proxy.grpc.echo_server_main", str(up_port)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        wait_port(up_port)
        targets = {"direct": up_port}
        pw_port = free_port()
        (tmp / "portway.yaml").write_text(
            f"""listeners: [{{name: public, address: "127.0.0.1:{pw_port}"}}]
admin: {{enabled: false}}
upstreams:
  echo: {{protocol: h2c, targets: [{{url: "http://127.0.0.1:{up_port}"}}]}}
routes:
  - {{name: grpc, match: {{paths: ["/{SERVICE}/"]}}, upstream: echo}}
"""
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "portway",
                    "run",
                    "-c",
                    str(tmp / "portway.yaml"),
                    "--workers",
                    "1",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(pw_port)
        targets["portway"] = pw_port
        nginx = shutil.which("nginx")
        if nginx:
            ng_port = free_port()
            (tmp / "nginx.conf").write_text(
                f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream echo {{ server 127.0.0.1:{up_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{ng_port} http2;
    location / {{ grpc_pass grpc://echo; }}
  }}
}}
"""
            )
            procs.append(
                subprocess.Popen(
                    [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_port(ng_port)
            targets["nginx"] = ng_port
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for conc in concs:
                for name, port in targets.items():  # interleaved: same load conditions
                    results.setdefault((name, conc), []).append(measure(port, conc, args.duration))
        print(f"unary gRPC, 100-byte message, medians of {args.rounds} rounds")
        print(f"{'via':<8} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'÷ direct':>9}")
        for conc in concs:
            base = statistics.median(r[0] for r in results[("direct", conc)])
            for name in targets:
                rs = results[(name, conc)]
                rate = statistics.median(r[0] for r in rs)
                p50 = statistics.median(r[1] for r in rs)
                print(f"{name:<8} {conc:>4} {rate:>9.0f} {p50:>8.2f} {rate / base:>9.2f}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
