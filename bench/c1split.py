#!/usr/bin/env python3
"""Where a c1 request's CPU goes: user and system µs per request of each proxy and the upstream.

Starts bench/run.py's default set-up (nginx upstream, nginx proxy, Portway, the
bench/proto_proxy.py floor) and runs ``wrk -t1 -c1`` against each in turn, interleaved, reading
each process's user and system time from ``/proc/PID/stat`` around the run. Comparing a run
with ``--pin CPU`` (everything on one CPU: no cross-CPU wake-ups), one without, and one with
``--no-halt`` (a SCHED_IDLE spinner per CPU: no vCPU ever halts) tells the proxies' own work
from what the host adds to it per wake-up (docs/performance.md, "session 13: c1 and halted
vCPUs").

    PYTHONPATH=<build> python bench/c1split.py [--rounds 3] [--secs 3] [--pin CPU] [--no-halt]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V
from c1trace import children
from run import no_halt


def times(pid: int) -> tuple[float, float]:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tck, int(f[12]) / tck


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--pin", type=int, default=None, help="run everything on this one CPU")
    ap.add_argument("--no-halt", action="store_true", help="a SCHED_IDLE spinner on every CPU")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="c1split-")
    os.chmod(d, 0o755)
    up_port = V.free_port()
    upstream = V.nginx(d, "upstream", up_port, V.upstream_body(d))
    spinners = no_halt() if args.no_halt else []
    try:
        setup = V.setup_default(d, up_port, True)
        serving = {"direct": (up_port, None)}
        for t in setup.targets:
            serving[t.name] = (t.ports[0], (children(t.pids[0]) or [t.pids[0]])[0])
        up_worker = children(upstream.pid)[0]
        if args.pin is not None:
            for pid in [up_worker, *(p for _, p in serving.values() if p)]:
                os.sched_setaffinity(pid, {args.pin})
        for port, _ in serving.values():  # warm up: pools, caches
            subprocess.run(
                ["wrk", "-t1", "-c4", "-d1s", f"http://127.0.0.1:{port}/"],
                stdout=subprocess.DEVNULL,
                check=True,
            )
        rows: dict[str, list[tuple[float, ...]]] = {}
        names = list(serving)
        for rnd in range(args.rounds):
            k = rnd % len(names)
            for name in names[k:] + names[:k]:
                port, pid = serving[name]
                p0 = times(pid) if pid else (0.0, 0.0)
                u0 = times(up_worker)
                cmd = ["wrk", "-t1", "-c1", f"-d{args.secs}s", "--latency"]
                if args.pin is not None:
                    cmd = ["taskset", "-c", str(args.pin), *cmd]
                out = subprocess.run(
                    [*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True
                ).stdout
                p1 = times(pid) if pid else (0.0, 0.0)
                u1 = times(up_worker)
                rps_m = re.search(r"Requests/sec:\s*([\d.]+)", out)
                p50_m = re.search(r"50%\s+([\d.]+)(us|ms)", out)
                assert rps_m and p50_m, out
                n = float(rps_m.group(1)) * args.secs
                p50 = float(p50_m.group(1)) * (1000 if p50_m.group(2) == "ms" else 1)
                row = (
                    p50,
                    (p1[0] - p0[0]) / n * 1e6,
                    (p1[1] - p0[1]) / n * 1e6,
                    (u1[0] - u0[0]) / n * 1e6,
                    (u1[1] - u0[1]) / n * 1e6,
                )
                rows.setdefault(name, []).append(row)
                print(
                    f"round {rnd + 1} {name:8s} p50 {row[0]:5.0f} µs  proxy user {row[1]:5.1f} "
                    f"sys {row[2]:5.1f}  upstream user {row[3]:5.1f} sys {row[4]:5.1f} µs/req",
                    file=sys.stderr,
                    flush=True,
                )
        print(
            f"\nmedians of {args.rounds} rounds, c1, {args.secs}s each"
            + (f", pinned to CPU {args.pin}" if args.pin is not None else "")
            + (", no vCPU halts" if args.no_halt else "")
            + "\n\n| target | p50 µs | added p50 µs | proxy user µs/req | proxy sys µs/req "
            "| upstream user | upstream sys |\n|---|---|---|---|---|---|---|"
        )
        direct = statistics.median(r[0] for r in rows["direct"])
        for name, rs in rows.items():
            m = [statistics.median(r[i] for r in rs) for i in range(5)]
            proxy = f"{m[1]:.1f} | {m[2]:.1f}" if name != "direct" else "- | -"
            print(
                f"| {name} | {m[0]:.0f} | {m[0] - direct:.0f} | {proxy} | {m[3]:.1f} | {m[4]:.1f} |"
            )
    finally:
        for proc in [*V.STARTED, upstream, *spinners]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*V.STARTED, upstream, *spinners]:
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
