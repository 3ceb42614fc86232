#!/usr/bin/env python3
"""Where the CPU of ``--workers N`` goes: each worker of Portway and of nginx, under wrk.

    python bench/workers_probe.py [--workers 2] [--conns 64,256] [--duration 3] [--rounds 1]
                                  [--only portway,portway-w1,nginx] [--no-perf]
                                  [--upstream-keepalive-requests N] [--nginx-shared]

Starts the nginx upstream of ``bench/run.py``, Portway with ``--workers N`` and with one
worker, and nginx ``worker_processes N`` (``reuseport``, as ``bench/run.py``), then per wrk run
prints for every process of each proxy: the client connections it holds mid-run (``ss -tnp``),
its share of the requests (its share of the bytes written: ``/proc/PID/io`` ``wchar``), its
CPU (user/system) per request it served, and per request from ``perf stat`` tracepoints:
``epoll_(p)wait`` calls (loop passes), wake-ups it made (``sched:sched_waking``: a send to a
sleeping peer), IPIs it sent (``ipi:ipi_send_cpu``: that peer's CPU had to be interrupted; on
a VM whose idle vCPUs halt this is the expensive kind), context switches; and the time it
waited on a run queue (``/proc/PID/schedstat``). Without ``perf`` (or permission for
tracepoints, or with ``--no-perf``) those columns are left out. Per run also: the upstream
connections each process holds mid-run (``ss``), the connections the upstream accepted during
the run (its ``stub_status``: the proxy's connects, reconnects included) and the load average.
Targets take turns leading a round, as in ``bench/run.py``. Needs nginx and wrk, like
``bench/run.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V
from run import proc_tree, tree_cpu

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
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        "vcs": int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0]),
        "ivcs": int(status.split("nonvoluntary_ctxt_switches:", 1)[1].split()[0]),
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


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (the finished wrk runs: perf's and
    ``ss``'s are negligible)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def perf_counts(path: Path) -> dict[str, float]:
    raw: dict[str, float] = {}
    for line in path.read_text().splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            raw[f[2]] = float(f[0])
    return {k: sum(raw.get(e, 0.0) for e in ev.split(",")) for k, ev in EVENTS.items()}


def held_by_pid(flt: str) -> dict[int, int]:
    """Established TCP connections matching the ``ss`` filter ``flt``, per owning process."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", flt], capture_output=True, text=True
    ).stdout
    held: dict[int, int] = {}
    for m in re.finditer(r"pid=(\d+)", out):
        held[int(m.group(1))] = held.get(int(m.group(1)), 0) + 1
    return held


def upstream_accepts(up: int) -> int:
    """Connections the upstream nginx accepted so far (its ``stub_status``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{up}/_status") as r:
        return int(r.read().decode().split("\n")[2].split()[0])


def measure(
    d: str,
    name: str,
    root: int,
    port: int,
    conns: int,
    duration: int,
    up: tuple[int, int],
    use_perf: bool,
) -> None:
    up, up_pid = up
    pids = proc_tree(root)
    before = {p: snap(p) for p in pids}
    up_cpu0 = tree_cpu([up_pid])
    wrk_cpu0 = children_cpu()
    held: dict[int, int] = {}
    up_held: dict[int, int] = {}

    def count_conns() -> None:
        time.sleep(duration / 2)
        held.update(held_by_pid(f"( sport = :{port} )"))
        up_held.update(held_by_pid(f"( dport = :{up} )"))

    th = threading.Thread(target=count_conns)
    th.start()
    perfs = {}
    acc0 = upstream_accepts(up)
    load = Path("/proc/loadavg").read_text().split()[0]
    if use_perf and shutil.which("perf"):
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
    connects = upstream_accepts(up) - acc0 - 1  # (minus our own status request)
    up_us = (tree_cpu([up_pid]) - up_cpu0) / n * 1e6
    wrk_us = (children_cpu() - wrk_cpu0) / n * 1e6
    after = {p: snap(p) for p in pids}
    delta = {p: {k: after[p][k] - before[p][k] for k in after[p]} for p in pids}
    written = sum(x["wchar"] for x in delta.values()) or 1
    total_cpu = sum(x["user"] + x["sys"] for x in delta.values())
    print(
        f"{name} c{conns}: {rps:.0f} req/s, {total_cpu / n * 1e6:.1f} µs CPU/req in all, "
        f"{connects} upstream connects, load {load}; pipeline CPU/req "
        f"{total_cpu / n * 1e6 + up_us + wrk_us:.1f} µs (+ upstream {up_us:.1f}, wrk {wrk_us:.1f})"
    )
    for p in pids:
        x = delta[p]
        share = x["wchar"] / written
        req = n * share
        if req < 1:
            print(f"  pid {p}: no requests, CPU {x['user'] + x['sys']:.2f} s")
            continue
        line = (
            f"  pid {p}: {held.get(p, 0)} conns ({up_held.get(p, 0)} upstream), "
            f"{share * 100:.0f}% of requests, "
            f"CPU/req {(x['user'] + x['sys']) / req * 1e6:.1f} µs "
            f"(user {x['user'] / req * 1e6:.1f}, sys {x['sys'] / req * 1e6:.1f}), "
            f"run-queue wait {x['waited']:.2f} s, switches per req: voluntary "
            f"{x['vcs'] / req:.3f}, preempted {x['ivcs'] / req:.3f}"
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
    ap.add_argument("--no-perf", action="store_true", help="no perf stat tracepoints")
    ap.add_argument(
        "--nginx-shared",
        action="store_true",
        help="nginx without reuseport: one listening socket shared by its workers (nginx's "
        "default; EPOLLEXCLUSIVE)",
    )
    ap.add_argument(
        "--upstream-keepalive-requests",
        type=int,
        default=0,
        help="the upstream's keepalive_requests (default: nginx's, 1000: every upstream "
        "connection is closed after 1000 requests and the proxy connects again)",
    )
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portway-workers-")
    os.chmod(d, 0o755)
    up = V.free_port()
    status = "\n    location = /_status { stub_status; }"
    kr = args.upstream_keepalive_requests
    http = f"keepalive_requests {kr};" if kr else ""
    upstream = V.nginx(d, "upstream", up, V.upstream_body(d) + status, http=http)
    targets = []
    only = args.only.split(",")
    try:
        if "nginx" in only:
            if args.nginx_shared:
                V.NGINX_CONF = V.NGINX_CONF.replace(" reuseport", "")
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
        for rnd in range(args.rounds):
            k = rnd % len(targets)
            for c in (int(x) for x in args.conns.split(",")):
                for name, pid, port in targets[k:] + targets[:k]:
                    measure(
                        d, name, pid, port, c, args.duration, (up, upstream.pid), not args.no_perf
                    )
    finally:
        for q in V.STARTED:
            q.send_signal(signal.SIGTERM)
        for q in V.STARTED:
            q.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
