#!/usr/bin/env python3
"""Where a c256 tail comes from: one Portway worker under ``wrk``, instrumented from inside.

    python bench/tail_probe.py [--conns 256] [--duration 3] [--runs 3] [--default-gc]
    python bench/tail_probe.py --spread [--conns 64]      # --workers 2: SO_REUSEPORT spread

Per wrk run it prints wrk's latency percentiles and, from the worker: cyclic-GC collections
during the run (``gc.callbacks``: count and pause per generation), event-loop stalls (a 1 ms
timer that came late by more than 2 ms; split into the first 0.3 s of the run — the
connection storm — and the rest), the run-queue wait the scheduler added to the worker and
to wrk (``/proc/PID/schedstat``: on a loaded machine this, not the gateway, makes the
tail), and at the end how many upstream connections the pool opened in all (more than the
concurrency means churn). ``--default-gc`` skips ``settle_after_start`` (GC as Python ships
it), for comparison. ``--spread`` starts ``portway run --workers 2`` and nginx
``worker_processes 2`` and prints the connections each worker holds mid-run (``ss -tnp``)
and the CPU each used. Needs nginx and wrk, like ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V

WORKER = r"""
import asyncio, gc, json, os, signal, sys, time
import uvloop
from portway.config.loader import load_config
import portway.server.worker as W

pauses, lags, held, start = [], [], [], {}

def on_gc(phase, info):
    if phase == "start":
        start["t"] = time.perf_counter()
    else:
        pauses.append((start["t"], time.perf_counter() - start["t"], info["generation"]))

gc.callbacks.append(on_gc)
if os.environ.get("PROBE_DEFAULT_GC"):
    W.settle_after_start = lambda: None
    W.gc.freeze = lambda: None

async def lagmon():
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.001)
        lag = loop.time() - t - 0.001
        if lag > 0.002:
            lags.append((time.perf_counter(), lag))

def dump():
    pools = [
        (str(t.id), t.pool.opened, t.pool.idle_count)
        for up in held[0].gateway.graph.upstreams.values()
        for t in up.targets
    ]
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump({"pauses": pauses, "lags": lags, "pools": pools}, f)
    os._exit(0)

async def main():
    cfg = load_config(sys.argv[1])
    loop = asyncio.get_running_loop()
    loop.create_task(lagmon())
    loop.add_signal_handler(signal.SIGUSR2, dump)
    await W.run_worker(cfg, config_path=None, watch=False, on_ready=held.append)

uvloop.run(main())
"""


def schedstat(pid: int) -> list[int]:
    """(ns on CPU, ns waiting on a run queue, time slices), summed over the threads."""
    tot = [0, 0, 0]
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            v = [int(x) for x in (t / "schedstat").read_text().split()]
        except OSError:
            continue
        tot = [a + b for a, b in zip(tot, v, strict=False)]
    return tot


def pct(out: str, p: str) -> str:
    m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
    return m.group(1) if m else "?"


def probe(d: str, up: int, args: argparse.Namespace) -> None:
    port = V.free_port()
    cfg = Path(d) / "probe.yaml"
    cfg.write_text(
        f"listeners: [{{name: public, address: '127.0.0.1:{port}'}}]\n"
        "admin: {enabled: false}\n" + V.upstream_yaml(up) + V.route()
    )
    out = Path(d) / "probe.json"
    env = dict(os.environ, PROBE_OUT=str(out))
    if args.default_gc:
        env["PROBE_DEFAULT_GC"] = "1"
    err = open(Path(d) / "probe.err", "wb")  # noqa: SIM115 (lives with the process)
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(cfg)], env=env, stderr=err)
    V.STARTED.append(p)
    V.wait_port(port)
    time.sleep(0.5)
    starts = []
    for r in range(args.runs):
        t0 = time.perf_counter()
        starts.append(t0)
        s0 = schedstat(p.pid)
        w = subprocess.Popen(
            [
                "wrk",
                "-t2",
                f"-c{args.conns}",
                f"-d{args.duration}s",
                "--latency",
                f"http://127.0.0.1:{port}/",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)
        w0 = schedstat(w.pid)
        time.sleep(args.duration - 0.6)
        w1, s1 = schedstat(w.pid), schedstat(p.pid)
        res = w.communicate()[0]
        rps = re.search(r"Requests/sec:\s+([\d.]+)", res)
        print(
            f"run {r}: {float(rps.group(1)) if rps else 0:.0f} req/s, p50 {pct(res, '50')}, "
            f"p90 {pct(res, '90')}, p99 {pct(res, '99')}; run-queue wait: worker "
            f"{(s1[1] - s0[1]) / 1e6:.0f} ms, wrk {(w1[1] - w0[1]) / 1e6:.0f} ms "
            f"(of {args.duration - 0.6:.1f} s)",
            flush=True,
        )
    p.send_signal(signal.SIGUSR2)
    p.wait(10)
    data = json.loads(out.read_text())
    for i, t0 in enumerate(starts):
        end = t0 + args.duration
        gcs = collections.Counter(g for s, _, g in data["pauses"] if t0 <= s <= end)
        worst = max((dur for s, dur, _ in data["pauses"] if t0 <= s <= end), default=0.0)
        first = [lag for t, lag in data["lags"] if 0 <= t - t0 < 0.3]
        rest = [lag for t, lag in data["lags"] if 0.3 <= t - t0 <= args.duration]
        print(
            f"run {i}: GC collections {dict(gcs) or 'none'} (worst {worst * 1e3:.2f} ms); "
            f"loop stalls > 2 ms: first 0.3 s {len(first)} (max "
            f"{max(first, default=0) * 1e3:.0f} ms), rest {len(rest)} (max "
            f"{max(rest, default=0) * 1e3:.0f} ms)"
        )
    print("upstream pools (target, connections opened, idle now):", data["pools"])


def nstat() -> dict[str, int]:
    """The kernel's TCP counters (absolute, ``nstat -az``), the ones a tail could come from."""
    try:
        out = subprocess.run(["nstat", "-az"], capture_output=True, text=True).stdout
    except OSError:
        return {}
    keep = (
        "TcpExtListenOverflows",
        "TcpExtListenDrops",
        "TcpRetransSegs",
        "TcpExtTCPTimeouts",
        "TcpExtTCPLossProbes",
        "TcpExtTCPSynRetrans",
        "TcpExtTCPBacklogDrop",
        "TcpExtTCPToZeroWindowAdv",
        "TcpExtTCPAbortOnData",
        "TcpActiveOpens",
        "TcpPassiveOpens",
    )
    vals = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in keep:
            vals[f[0]] = int(f[1])
    return vals


def latency_max(out: str) -> str:
    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    return m.group(1) if m else "?"


def sequence(d: str, up: int, args: argparse.Namespace) -> None:
    """``bench/run.py``'s order (a 1 s warm-up at 16 connections, then per round c1, c64,
    c256, nginx and Portway taking turns to lead), with the instrumented worker as Portway:
    prints every run's wrk percentiles and kernel TCP counters, and for Portway's runs the
    GC collections and loop stalls inside it, to tell which of the history's parts makes
    a tail."""
    port = V.free_port()
    cfg = Path(d) / "probe.yaml"
    cfg.write_text(
        f"listeners: [{{name: public, address: '127.0.0.1:{port}'}}]\n"
        "admin: {enabled: false}\n" + V.upstream_yaml(up) + V.route()
    )
    out = Path(d) / "probe.json"
    env = dict(os.environ, PROBE_OUT=str(out))
    err = open(Path(d) / "probe.err", "wb")  # noqa: SIM115 (lives with the process)
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(cfg)], env=env, stderr=err)
    V.STARTED.append(p)
    V.wait_port(port)
    ng = V.free_port()
    V.nginx(d, "ngx", ng, f"location / {{ {V.PROXY} }}", up=up)
    targets = [("nginx", ng), ("portway", port)]
    conns = [int(c) for c in args.seq_conns.split(",")]
    windows = []
    for _name, prt in targets:
        subprocess.run(
            ["wrk", "-t1", "-c16", "-d1s", f"http://127.0.0.1:{prt}/"], capture_output=True
        )
    for rnd in range(args.runs):
        for c in conns:
            k = rnd % len(targets)
            for name, prt in targets[k:] + targets[:k]:
                threads = 1 if c < 16 else args.threads
                n0 = nstat()
                t0 = time.perf_counter()
                res = subprocess.run(
                    [
                        "wrk",
                        f"-t{threads}",
                        f"-c{c}",
                        f"-d{args.duration}s",
                        "--latency",
                        f"http://127.0.0.1:{prt}/",
                    ],
                    capture_output=True,
                    text=True,
                ).stdout
                t1 = time.perf_counter()
                n1 = nstat()
                rps = re.search(r"Requests/sec:\s+([\d.]+)", res)
                delta = {k2.replace("TcpExt", ""): n1[k2] - n0.get(k2, 0) for k2 in n1}
                delta = {k2: v for k2, v in delta.items() if v}
                print(
                    f"r{rnd} c{c} {name:7s} {float(rps.group(1)) if rps else 0:7.0f} req/s "
                    f"p50 {pct(res, '50'):>8s} p90 {pct(res, '90'):>8s} p99 {pct(res, '99'):>8s} "
                    f"max {latency_max(res):>8s}"
                    f"  tcp {delta}",
                    flush=True,
                )
                if name == "portway":
                    windows.append((f"r{rnd} c{c}", t0, t1))
    p.send_signal(signal.SIGUSR2)
    p.wait(10)
    data = json.loads(out.read_text())
    for label, t0, t1 in windows:
        gcs = collections.Counter(g for s, _, g in data["pauses"] if t0 <= s <= t1)
        worst = max((dur for s, dur, _ in data["pauses"] if t0 <= s <= t1), default=0.0)
        first = [lag for t, lag in data["lags"] if 0 <= t - t0 < 0.3]
        rest = [lag for t, lag in data["lags"] if 0.3 <= t - t0 <= t1 - t0]
        print(
            f"{label} portway: GC {dict(gcs) or 'none'} (worst {worst * 1e3:.1f} ms); stalls "
            f"> 2 ms: first 0.3 s {len(first)} (max {max(first, default=0) * 1e3:.0f} ms), "
            f"rest {len(rest)} (max {max(rest, default=0) * 1e3:.0f} ms)"
        )
    print("upstream pools (target, connections opened, idle now):", data["pools"])


def spread(d: str, up: int, args: argparse.Namespace) -> None:
    from run import cpu_seconds, proc_tree

    p, port = V.portway(d, "pw2", V.upstream_yaml(up) + V.route(), workers=2)
    ng = V.free_port()
    n = V.nginx(d, "ngx2", ng, f"location / {{ {V.PROXY} }}", up=up, workers=2)
    time.sleep(1.0)
    for name, root, prt in (("portway", p.pid, port), ("nginx", n.pid, ng)):
        kids = [q for q in proc_tree(root) if q != root]
        for t in range(args.runs):
            c0 = {k: cpu_seconds(k) for k in kids}
            w = subprocess.Popen(
                [
                    "wrk",
                    "-t2",
                    f"-c{args.conns}",
                    f"-d{args.duration}s",
                    f"http://127.0.0.1:{prt}/",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(args.duration / 2)
            ss = subprocess.run(
                ["ss", "-tnpH", "state", "established", f"( sport = :{prt} )"],
                capture_output=True,
                text=True,
            ).stdout
            w.communicate()
            per = collections.Counter(re.findall(r"pid=(\d+)", ss))
            cpu = {k: round(cpu_seconds(k) - c0[k], 2) for k in kids}
            print(f"{name} c{args.conns} run {t}: connections per worker {dict(per)}, CPU s {cpu}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--conns", type=int, default=256)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--default-gc", action="store_true", help="Python's GC settings")
    ap.add_argument("--spread", action="store_true", help="--workers 2 connection spread")
    ap.add_argument(
        "--sequence",
        action="store_true",
        help="bench/run.py's order (c1, c64, c256; nginx and Portway in turn), --runs rounds",
    )
    ap.add_argument("--seq-conns", default="1,64,256", help="with --sequence")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads from 16 connections")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="portway-tail-")
    os.chmod(d, 0o755)
    up = V.free_port()
    V.nginx(d, "upstream", up, V.upstream_body(d))
    try:
        (spread if args.spread else sequence if args.sequence else probe)(d, up, args)
    finally:
        for q in V.STARTED:
            if q.poll() is None:
                q.terminate()
        for q in V.STARTED:
            q.wait(10)


if __name__ == "__main__":
    main()
