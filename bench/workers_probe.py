#!/usr/bin/env python3
"""Where the CPU of ``--workers N`` goes: each worker of Portway and of nginx, under wrk.

    python bench/workers_probe.py [--workers 2] [--conns 64,256] [--duration 3] [--rounds 1]
                                  [--only portway,portway-w1,nginx]

Starts the nginx upstream of ``bench/run.py``, Portway with ``--workers N`` and with one
worker, and nginx ``worker_processes N`` (``reuseport``, as ``bench/run.py``), then per wrk run
prints for every process of each proxy: the client connections it holds mid-run (``ss -tnp``),
its share of the requests (its share of the bytes written: ``/proc/PID/io`` ``wchar``), its
CPU (user/system) per request it served, and per request from ``perf stat`` tracepoints:
``epoll_(p)wait`` calls (loop passes), wake-ups it made (``sched:sched_waking``: a send to a
sleeping peer), IPIs it sent (``ipi:ipi_send_cpu``: that peer's CPU had to be interrupted; on
a VM whose idle vCPUs halt this is the expensive kind), context switches; and the time it
waited on a run queue (``/proc/PID/schedstat``). Without ``perf`` (or permission for
tracepoints) those columns are left out. Needs nginx and wrk, like ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V
from run import proc_tree

TCK = os.sysconf("SC_CLK_TCK")
EVENTS = {
    "epoll": "syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait",
    "wakes": "sched:sched_waking",
    "ipis": "ipi:ipi_send_cpu",
    "cs": "context-switches",
}


def snap(pid: int) -> dict[str, float]:
    st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    io = Path(f"/proc/{pid}/io").read_text()
    sched = Path(f"/proc/{pid}/schedstat").read_text().split()
    return {
        "user": int(st[11]) / TCK,
        "sys": int(st[12]) / TCK,
        "wchar": int(io.split("wchar: ", 1)[1].split()[0]),
        "waited": int(sched[1]) / 1e9,
    }


def wrk(port: int, conns: int, duration: int) -> tuple[int, float]:
    threads = "1" if conns < 16 else "2"  # as bench/run.py
    out = subprocess.run(
        ["wrk", "-t", threads, "-c", str(conns), "-d", f"{duration}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return n, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def perf_counts(path: Path) -> dict[str, float]:
    raw: dict[str, float] = {}
    for line in path.read_text().splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            raw[f[2]] = float(f[0])
    return {k: sum(raw.get(e, 0.0) for e in ev.split(",")) for k, ev in EVENTS.items()}


def measure(d: str, name: str, root: int, port: int, conns: int, duration: int) -> None:
    pids = proc_tree(root)
    before = {p: snap(p) for p in pids}
    held: dict[int, int] = {}

    def count_conns() -> None:
        time.sleep(duration / 2)
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
        ).stdout
        for m in re.finditer(r"pid=(\d+)", out):
            held[int(m.group(1))] = held.get(int(m.group(1)), 0) + 1

    th = threading.Thread(target=count_conns)
    th.start()
    perfs = {}
    if shutil.which("perf"):
        ev = ",".join(EVENTS.values())
        for p in pids:
            out = Path(d) / f"perf-{p}.txt"
            cmd = ["perf", "stat", "-x,", "-e", ev, "-p", str(p), "-o", str(out)]
            perfs[p] = (subprocess.Popen(cmd, stderr=subprocess.DEVNULL), out)
    n, rps = wrk(port, conns, duration)
    for proc, _ in perfs.values():
        proc.send_signal(signal.SIGINT)
    for proc, _ in perfs.values():
        proc.wait()
    th.join()
    after = {p: snap(p) for p in pids}
    delta = {p: {k: after[p][k] - before[p][k] for k in after[p]} for p in pids}
    written = sum(x["wchar"] for x in delta.values()) or 1
    total_cpu = sum(x["user"] + x["sys"] for x in delta.values())
    print(f"{name} c{conns}: {rps:.0f} req/s, {total_cpu / n * 1e6:.1f} µs CPU/req in all")
    for p in pids:
        x = delta[p]
        share = x["wchar"] / written
        req = n * share
        if req < 1:
            print(f"  pid {p}: no requests, CPU {x['user'] + x['sys']:.2f} s")
            continue
        line = (
            f"  pid {p}: {held.get(p, 0)} conns, {share * 100:.0f}% of requests, "
            f"CPU/req {(x['user'] + x['sys']) / req * 1e6:.1f} µs "
            f"(user {x['user'] / req * 1e6:.1f}, sys {x['sys'] / req * 1e6:.1f}), "
            f"run-queue wait {x['waited']:.2f} s"
        )
        if p in perfs:
            c = perf_counts(perfs[p][1])
            line += "; per req: " + ", ".join(f"{k} {v / req:.3f}" for k, v in c.items())
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--conns", default="64,256")
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default="portway,portway-w1,nginx")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portway-workers-")
    os.chmod(d, 0o755)
    up = V.free_port()
    V.nginx(d, "upstream", up, V.upstream_body(d))
    targets = []
    only = args.only.split(",")
    try:
        if "nginx" in only:
            port = V.free_port()
            body = f"location / {{ {V.PROXY} }}"
            p = V.nginx(d, "nginx", port, body, up=up, workers=args.workers)
            targets.append((f"nginx-w{args.workers}", p.pid, port))
        if "portway" in only:
            p, port = V.portway(d, "portway", V.upstream_yaml(up) + V.route(), args.workers)
            targets.append((f"portway-w{args.workers}", p.pid, port))
        if "portway-w1" in only:
            p, port = V.portway(d, "portway-w1", V.upstream_yaml(up) + V.route(), 1)
            targets.append(("portway-w1", p.pid, port))
        time.sleep(1)  # every worker listening
        for _, _, port in targets:
            wrk(port, 16, 1)  # warm up
        for _ in range(args.rounds):
            for c in (int(x) for x in args.conns.split(",")):
                for name, pid, port in targets:
                    measure(d, name, pid, port, c, args.duration)
    finally:
        for q in V.STARTED:
            q.send_signal(signal.SIGTERM)
        for q in V.STARTED:
            q.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
