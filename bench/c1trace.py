#!/usr/bin/env python3
"""Where a c1 request's wall time goes: each proxy's segments and CPU hops from kernel tracepoints.

Starts bench/run.py's default set-up (nginx upstream, nginx proxy, Portway, the
bench/proto_proxy.py floor), runs ``wrk -t1 -c1`` against each in turn and records, with
``perf record -a``, the syscall enter/exit and scheduler tracepoints of wrk's thread, the
proxy's serving process and the upstream's worker. Each request is then the chain

    wrk write → proxy poll returns → proxy write (upstream) → upstream write →
    proxy poll returns → proxy write (client) → wrk read returns

and the printed segments are the medians of the gaps between those events (µs, under
tracing: every traced syscall costs ~1 µs more than untraced):

- ``req_wake``/``resp_wake``: the peer's send until the proxy's poll returns (the wake-up,
  or the rest of what the proxy was still doing),
- ``req_cpu``/``resp_cpu``: the proxy's poll return until its write starts (its own
  critical work: read, parse, build, the write call),
- ``upstream``: the proxy's write until the upstream's write (the upstream's wake-up and work),
- ``to_wrk``: the proxy's client write until wrk's read returns,
- ``hops``: how many of the four wake-ups crossed to another CPU, with the median chain
  length of the requests that made that many. On a 2-vCPU VM a wake-up on the other vCPU
  costs far more than a switch on the same one, so the hop mix sets a run's p50.

Needs root, ``perf`` (with tracepoints) and wrk; Linux x86-64 (syscall numbers).

    PYTHONPATH=<build> python bench/c1trace.py [--rounds 2] [--secs 1] [--pin CPU]

``--pin CPU`` runs wrk, the upstream and the proxies on that one CPU (no hops: the chain's
CPU work serialised, what a run costs without the placement's luck).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V

# x86-64 syscall numbers
WRITES = {1, 20, 44, 46}  # write, writev, sendto, sendmsg
READS = {0, 19, 45, 47}  # read, readv, recvfrom, recvmsg
POLLS = {232, 281}  # epoll_wait, epoll_pwait
SEGMENTS = ("req_wake", "req_cpu", "upstream", "resp_wake", "resp_cpu", "to_wrk")
EVENT = re.compile(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pin(pids: list[int], cpus: set[int]) -> None:
    """Set the affinity of every thread of ``pids``."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)


Event = tuple[float, str, str, int]  # (µs, who: w/p/u, kind: W write, E poll returned, R read)


def record(port: int, proxy: int, upstream: int, secs: float, cpu: int | None) -> list[Event]:
    prefix = ["taskset", "-c", str(cpu)] if cpu is not None else []
    wrk = subprocess.Popen(
        [*prefix, "wrk", "-t1", "-c1", f"-d{int(secs) + 2}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.7)  # past wrk's connect and first requests
    wrk_tids = {int(t) for t in os.listdir(f"/proc/{wrk.pid}/task")}
    data = tempfile.mktemp(prefix="c1trace-", suffix=".data")
    tps = "raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch,sched:sched_wakeup"
    subprocess.run(
        ["perf", "record", "-q", "-a", "-o", data, "-e", tps, "--", "sleep", str(secs)],
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wrk.wait()
    text = subprocess.run(
        ["perf", "script", "-i", data, "-F", "tid,cpu,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(data)
    events: list[Event] = []
    for line in text.splitlines():
        m = EVENT.match(line)
        if m is None:
            continue
        tid, where, t, name, rest = int(m[1]), int(m[2]), float(m[3]) * 1e6, m[4], m[5]
        who = "p" if tid == proxy else "u" if tid == upstream else "w" if tid in wrk_tids else ""
        if not who or not name.startswith("raw_syscalls"):
            continue
        nr = int(re.search(r"NR (\d+)", rest)[1])  # type: ignore[index]
        if name.endswith("sys_enter"):
            if nr in WRITES:
                events.append((t, who, "W", where))
        elif nr in POLLS:
            events.append((t, who, "E", where))
        elif nr in READS and int(re.search(r"= (-?\d+)", rest)[1]) > 0:  # type: ignore[index]
            events.append((t, who, "R", where))
    events.sort()
    return events


def analyse(events: list[Event]) -> tuple[dict[str, list[float]], dict[int, list[float]]]:
    def nxt(i: int, who: str, kind: str) -> int:
        while i < len(events) and not (events[i][1] == who and events[i][2] == kind):
            i += 1
        return i

    segs: dict[str, list[float]] = {k: [] for k in (*SEGMENTS, "total")}
    by_hops: dict[int, list[float]] = {}
    i = 0
    while True:
        chain = [nxt(i, "w", "W")]
        for who, kind in (("p", "E"), ("p", "W"), ("u", "W"), ("p", "E"), ("p", "W"), ("w", "R")):
            chain.append(nxt(chain[-1], who, kind))
        if chain[-1] >= len(events):
            break
        t = [events[k][0] for k in chain]
        for k, key in enumerate(SEGMENTS):
            segs[key].append(t[k + 1] - t[k])
        segs["total"].append(t[6] - t[0])
        c = [events[k][3] for k in chain]
        hops = (c[0] != c[1]) + (c[2] != c[3]) + (c[3] != c[4]) + (c[5] != c[6])
        by_hops.setdefault(hops, []).append(t[6] - t[0])
        i = chain[-1]
    return segs, by_hops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--secs", type=float, default=1.0, help="seconds traced per run")
    ap.add_argument("--pin", type=int, default=None, help="run everything on this one CPU")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="c1trace-")
    os.chmod(d, 0o755)
    up_port = V.free_port()
    upstream = V.nginx(d, "upstream", up_port, V.upstream_body(d))
    try:
        setup = V.setup_default(d, up_port, True)
        serving = {}
        for t in setup.targets:
            main_pid = t.pids[0]
            serving[t.name] = (t.ports[0], (children(main_pid) or [main_pid])[0])  # nginx: worker
        up_worker = children(upstream.pid)[0]
        if args.pin is not None:
            pin([up_worker, *(pid for _, pid in serving.values())], {args.pin})
        for port, _ in serving.values():  # warm up: pools, caches
            subprocess.run(
                ["wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{port}/"],
                stdout=subprocess.DEVNULL,
                check=True,
            )
        for rnd in range(args.rounds):
            for name, (port, pid) in serving.items():
                segs, by_hops = analyse(record(port, pid, up_worker, args.secs, args.pin))
                if not segs["total"]:
                    print(f"round {rnd + 1} {name}: no complete request traced")
                    continue
                n = len(segs["total"])
                print(
                    f"round {rnd + 1} {name:8s} n={n} "
                    + " ".join(f"{k}={statistics.median(v):.0f}" for k, v in segs.items())
                )
                print(
                    "    hops: "
                    + ", ".join(
                        f"{h}: {len(v) / n * 100:.0f}% (total {statistics.median(v):.0f})"
                        for h, v in sorted(by_hops.items())
                    ),
                    flush=True,
                )
    finally:
        for proc in [*V.STARTED, upstream]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*V.STARTED, upstream]:
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
