#!/usr/bin/env python3
"""Side-by-side proxy benchmark: Portway (1 worker) vs nginx (1 worker), same machine.

Needs nginx and wrk (``apt-get install nginx wrk``); installs nothing itself. Starts an nginx
upstream returning 200 with a 1 KiB body, nginx as a 1-worker reverse proxy with upstream
keepalive, and Portway with one worker; runs wrk at each concurrency for each proxy,
interleaved over several rounds, and prints req/s, p50, p99, CPU µs per request, peak RSS and
the ratio to nginx measured in the same round, plus the added p50 latency at c1 over a direct
call to the upstream. Medians across rounds are the numbers to quote.

    python bench/run.py [--rounds 3] [--duration 5] [--conns 1,64,256] [--floor]
    python bench/run.py --policy | --full | --jwt | --redis-rl | --cache  [--conns 64,256]
    python bench/run.py --workers 2 [--prioritise]
    python bench/run.py --idle-conns 10000
    python bench/run.py --conns 1 --floor --pin-c1 0

Variants (each starts its own comparison; see bench/variants.py): ``--policy`` key_auth
(header ``apikey``) + rate_limit per consumer against nginx ``map`` + ``limit_req`` and
HAProxy; ``--full`` adds request_id and a JSON access log to a file (nginx: ``log_format``);
``--jwt`` HS256 and RS256/JWKS + rate_limit against Portway's own pass-through;
``--redis-rl`` three gateways on one Redis against three on the local store; ``--cache``
cache hits against pass-through and nginx ``proxy_cache`` hits; ``--workers N`` against
nginx ``worker_processes N``; ``--idle-conns N`` memory per idle keep-alive connection and
latency while they are held (bench/idle.py).

Every round also counts the CPU the whole benchmark spent per request: the proxy's processes,
the upstream's, wrk's and a watched Redis's (``pipeline µs/req``; times req/s it is the
cores the benchmark got), and the load average. A round at c64 or c256 is CPU-bound (the
proxies' workers are never idle: bench/workers_probe.py counts ≤ 0.06 voluntary context
switches per request), so req/s = cores got / pipeline µs/req. On a machine others
share (each session is its own autogroup, sharing the CPU as a group), the cores got move
with what the other tenants run from one 3-second run to the next, and the req/s ratio with
them; the *CPU ratio* (nginx's pipeline µs/req / Portway's, per round) leaves them out: it is
the req/s ratio of two runs that got the same cores (not at c1: one request in flight is
bound by latency, not CPU). ``--prioritise`` runs the benchmark in
its own autogroup at nice -15 (as root; others then run in the gaps), which approximates the
quiet machine for the wall-clock numbers too.

At c1 on a 2-vCPU VM a run's p50 is set mostly by where the scheduler places wrk, the proxy
and the upstream: a wake-up on the other vCPU costs ~20 µs more than one on the same vCPU,
and a request makes 0, 2 or 4 such hops, in phases that last seconds
(``bench/c1trace.py``; docs/performance.md, s11-c1sys). ``--pin-c1 CPU`` runs the c1 rounds
with wrk, the upstream and the measured proxy all on that one CPU: no hops, every process's
work serialised — a steadier reading (3-round medians within ~3 µs here, against ~25 µs
unpinned) of what the proxies cost rather than of the placement.

On a VM whose idle vCPUs halt at once (Firecracker here: ``haltpoll.guest_halt_poll_ns=0``)
each cross-vCPU wake-up also resumes a halted vCPU, and the woken process runs its user code
2.5 to 4 times slower than on a busy vCPU (cold caches): Python's larger per-request footprint pays
more of that than nginx's. ``--no-halt`` (measurement only) keeps every vCPU busy with a
SCHED_IDLE spinner, which separates that host cost from the proxies' own
(docs/performance.md, "session 13: c1 and halted vCPUs").
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import variants as V
from variants import Target


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


def pinned(cpu: int | None) -> list[str]:
    """The command prefix that runs a command on ``cpu`` only (none for None)."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Every thread of every process of the trees of ``pids`` may run on ``cpus`` only."""
    for pid in pids:
        for p in proc_tree(pid):
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass  # a thread that ended


def wrk_one(
    port: int, conns: int, duration: int, t: Target, cpu: int | None = None
) -> dict[str, float]:
    threads = 1 if conns < 16 else 2
    cmd = pinned(cpu)
    cmd += ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency"]
    for h in t.headers:
        cmd += ["-H", h]
    cmd.append(f"http://127.0.0.1:{port}{t.path}")
    return _parse(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def _parse(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": parse_latency(out, "50"),
        "p99": parse_latency(out, "99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def wrk(t: Target, conns: int, duration: int, cpu: int | None = None) -> dict[str, float]:
    """One wrk per port of ``t`` at once, connections split between them; req/s summed,
    latency percentiles the worst of the ports'. ``cpu``: wrk runs on that CPU only."""
    if len(t.ports) == 1:
        return wrk_one(t.ports[0], conns, duration, t, cpu)
    each = max(1, conns // len(t.ports))
    procs = []
    for port in t.ports:
        cmd = pinned(cpu)
        cmd += ["wrk", "-t", "1", "-c", str(each), "-d", f"{duration}s", "--latency"]
        for h in t.headers:
            cmd += ["-H", h]
        cmd.append(f"http://127.0.0.1:{port}{t.path}")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    rs = [_parse(p.communicate()[0]) for p in procs]
    return {
        "rps": sum(r["rps"] for r in rs),
        "p50": max(r["p50"] for r in rs),
        "p99": max(r["p99"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
    }


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for pid in pids for p in proc_tree(pid))


def proc_io(pids: list[int]) -> dict[int, tuple[float, int]]:
    """CPU seconds and bytes written (``wchar``) of every process of the targets' trees.

    A proxy writes each request to the upstream and each response to the client, so its
    processes' shares of the bytes written are their shares of the requests (for nginx and
    Portway alike, whatever their write batching)."""
    out = {}
    for pid in pids:
        for p in proc_tree(pid):
            try:
                io = Path(f"/proc/{p}/io").read_text()
                out[p] = (cpu_seconds(p), int(io.split("wchar: ", 1)[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
    return out


def split_of(
    before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]], n: float
) -> list[tuple[float, float]]:
    """(share of the requests, CPU µs per request it served) of each process that served
    any, busiest first; the processes that served none (a supervisor, nginx's master) are
    not listed (their CPU is in the target's total)."""
    d = {p: (after[p][0] - before[p][0], after[p][1] - before[p][1]) for p in after if p in before}
    total = sum(w for _, w in d.values()) or 1
    rows = []
    for cpu, w in d.values():
        share = w / total
        if share > 0.01:
            rows.append((share, cpu / (n * share) * 1e6))
    return sorted(rows, reverse=True)


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
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--policy", action="store_true", help="key_auth + rate_limit per consumer")
    g.add_argument("--full", action="store_true", help="--policy + request_id + JSON access log")
    g.add_argument("--jwt", action="store_true", help="jwt HS256 / RS256+JWKS + rate_limit")
    g.add_argument("--redis-rl", action="store_true", help="rate_limit on Redis, 3 gateways")
    g.add_argument("--cache", action="store_true", help="cache hits")
    g.add_argument("--workers", type=int, default=0, help="N workers vs nginx worker_processes N")
    g.add_argument(
        "--idle-conns", type=int, default=0, help="memory per idle keep-alive connection"
    )
    ap.add_argument(
        "--prioritise",
        action="store_true",
        help="run in an own autogroup at nice -15 (a shared machine: others run in the gaps)",
    )
    ap.add_argument(
        "--pin-c1",
        type=int,
        default=None,
        metavar="CPU",
        help="c1 rounds: wrk, the upstream and the measured proxy on this one CPU (no "
        "cross-CPU wake-ups; see the docstring)",
    )
    ap.add_argument(
        "--no-halt",
        action="store_true",
        help="measurement only: keep every vCPU busy with a SCHED_IDLE spinner, so an idle "
        "vCPU never halts (a wake-up then costs no VM exit; see the docstring)",
    )
    args = ap.parse_args()
    if args.prioritise and not os.environ.get("PORTWAY_BENCH_PRIORITISED"):
        return prioritise()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(
                f"bench: {tool} not found; install with: apt-get install nginx wrk", file=sys.stderr
            )
            return 2
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
    raise_nofile()
    # a timeout's SIGTERM still stops the servers this run started (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    d = tempfile.mkdtemp(prefix="portway-bench-")
    os.chmod(d, 0o755)  # nginx's workers (nobody) read files here (the JWKS, the cache)
    up_port = V.free_port()
    upstream = V.nginx(d, "upstream", up_port, V.upstream_body(d))
    setup: V.Setup | None = None
    spinners = no_halt() if args.no_halt else []
    try:
        if args.idle_conns:
            from idle import run_idle

            return run_idle(d, up_port, args.idle_conns, args.duration)
        if args.policy or args.full:
            setup = V.setup_policy(d, up_port, full=args.full)
        elif args.jwt:
            setup = V.setup_jwt(d, up_port)
        elif args.redis_rl:
            setup = V.setup_redis_rl(d, up_port)
        elif args.cache:
            setup = V.setup_cache(d, up_port)
        elif args.workers:
            setup = V.setup_workers(d, up_port, args.workers)
        else:
            setup = V.setup_default(d, up_port, args.floor)
            setup.targets.insert(0, V.Target("direct", [up_port], [upstream.pid]))
        return measure(setup, args, upstream.pid)
    finally:
        # everything started, including what a set-up that failed half-way had started
        procs = list({id(p): p for p in [*V.STARTED, upstream, *spinners]}.values())
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)


def no_halt() -> list[subprocess.Popen[bytes]]:
    """One busy loop per CPU at SCHED_IDLE: it runs only when nothing else wants the CPU and
    any wake-up preempts it at once, so no vCPU ever halts. What a c1 run measures then is
    the proxies' work and their wake-ups without the hypervisor's halt and resume."""
    return [
        subprocess.Popen(
            ["taskset", "-c", str(cpu), "chrt", "-i", "0", sys.executable, "-c", "while 1: pass"]
        )
        for cpu in sorted(os.sched_getaffinity(0))
    ]


def prioritise() -> int:
    """Run this command again in a new session (so a new autogroup) at autogroup nice -15
    and process nice -15: CFS then gives the benchmark's processes — wrk, the upstream, the
    proxies — the CPU whenever they are runnable, and other work only the gaps."""
    inner = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    env = dict(os.environ, PORTWAY_BENCH_PRIORITISED="1")
    script = (
        "echo -15 > /proc/self/autogroup || echo 'bench: autogroup not reniced' >&2; "
        f"exec nice -n -15 {inner}"
    )
    return subprocess.run(["sh", "-c", script], env=env, start_new_session=True).returncode


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (each finished wrk run)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(setup: V.Setup, args: argparse.Namespace, upstream: int) -> int:
    conns = [int(c) for c in args.conns.split(",")]
    loaded = [t for t in setup.targets if t.ports]
    watched = [t for t in setup.targets if not t.ports]  # CPU/memory only (a Redis)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    splits: dict[tuple[str, int], list[list[tuple[float, float]]]] = {}
    all_cpus = os.sched_getaffinity(0)
    for t in loaded:  # warm up (and fill caches)
        wrk(t, 16, 1)
    for rnd in range(args.rounds):
        for c in conns:
            round_res: dict[str, dict[str, float]] = {}
            order = [t for t in loaded if t.name != "direct"]
            k = rnd % len(order)
            order = order[k:] + order[:k]  # interleave: each target leads a round in turn
            if c == 1:
                order = [t for t in loaded if t.name == "direct"] + order
            for t in order:
                side0 = {w.name: tree_cpu(w.pids) for w in watched}
                io0 = proc_io(t.pids)
                cpu0 = tree_cpu(t.pids)
                # (the "direct" target is the upstream: counted once)
                up = [] if upstream in t.pids else [upstream]
                rest0 = tree_cpu(up) + children_cpu()
                load = float(Path("/proc/loadavg").read_text().split()[0])
                pin = args.pin_c1 if c == 1 else None
                if pin is not None:
                    set_affinity([*t.pids, upstream], {pin})
                try:
                    r = wrk(t, c, args.duration, pin)
                finally:
                    if pin is not None:
                        set_affinity([*t.pids, upstream], all_cpus)
                cpu1 = tree_cpu(t.pids)
                n = max(1.0, r["rps"] * args.duration)
                r["cpu_us"] = (cpu1 - cpu0) / n * 1e6
                # + the upstream's and wrk's: what the whole benchmark spent per request
                rest = tree_cpu(up) + children_cpu() - rest0
                r["pipeline_us"] = r["cpu_us"] + rest / n * 1e6
                r["load"] = load
                rows = split_of(io0, proc_io(t.pids), n)
                if len(rows) > 1:  # several workers: how the load and the CPU were split
                    splits.setdefault((t.name, c), []).append(rows)
                r["rss_mb"] = sum(rss_kb(p) for p in t.pids) / 1024
                for w in watched:
                    r[f"{w.name}_cpu_us"] = (tree_cpu(w.pids) - side0[w.name]) / n * 1e6
                    r["pipeline_us"] += r[f"{w.name}_cpu_us"]
                round_res[t.name] = r
            for t in order:
                r = round_res[t.name]
                if "direct" in round_res:
                    r["added_p50_us"] = (r["p50"] - round_res["direct"]["p50"]) * 1000
                results.setdefault((t.name, c), []).append(r)
            for a, b in setup.ratios:
                results.setdefault((f"{a} / {b}", c), []).append(
                    {
                        "ratio": round_res[a]["rps"] / round_res[b]["rps"],
                        # the tail target is per round too: p99 against the other's p99
                        "p99_ratio": round_res[a]["p99"] / round_res[b]["p99"],
                        "cpu_ratio": round_res[b]["pipeline_us"] / round_res[a]["pipeline_us"],
                    }
                )
            print(
                f"round {rnd + 1}/{args.rounds} c{c}: "
                + ", ".join(
                    f"{n} {r['rps']:.0f} req/s (p50 {r['p50'] * 1000:.0f} µs, "
                    f"pipeline {r['pipeline_us']:.1f} µs/req, "
                    f"{r['rps'] * r['pipeline_us'] / 1e6:.2f} cores, load {r['load']:.1f})"
                    for n, r in round_res.items()
                ),
                file=sys.stderr,
            )
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.duration}s each, 1 KiB body\n")
    print(
        "| proxy | conns | req/s | p50 ms | p99 ms | CPU µs/req | pipeline µs/req | peak RSS MB "
        "| added p50 µs (c1) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, c), rs in sorted(results.items(), key=lambda x: (x[0][1], x[0][0])):
        if "rps" not in rs[0]:
            continue

        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs if k in r)

        added = f"{med('added_p50_us'):.0f}" if c == 1 and "added_p50_us" in rs[0] else ""
        side = "".join(f" (+{w.name} {med(w.name + '_cpu_us'):.1f})" for w in watched)
        errs = f" ({med('errors'):.0f} non-2xx)" if med("errors") else ""
        print(
            f"| {name}{errs} | {c} | {med('rps'):.0f} | {med('p50'):.3f} | "
            f"{med('p99'):.3f} | {med('cpu_us'):.1f}{side} | {med('pipeline_us'):.1f} | "
            f"{med('rss_mb'):.0f} | {added} | " + " ".join(f"{r['load']:.1f}" for r in rs) + " |"
        )
    print(
        "\n| ratio (median of per-round ratios) | conns | req/s median | rounds "
        "| p99 median | rounds | CPU ratio median | rounds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, c), rs in sorted(results.items(), key=lambda x: (x[0][1], x[0][0])):
        if "rps" in rs[0]:
            continue
        vals = [r["ratio"] for r in rs]
        p99s = [r["p99_ratio"] for r in rs]
        cpus = [r["cpu_ratio"] for r in rs]
        print(
            f"| {name} | {c} | {statistics.median(vals):.2f} | "
            + " ".join(f"{v:.2f}" for v in vals)
            + f" | {statistics.median(p99s):.2f} | "
            + " ".join(f"{v:.2f}" for v in p99s)
            + f" | {statistics.median(cpus):.2f} | "
            + " ".join(f"{v:.2f}" for v in cpus)
            + " |"
        )
    if splits:
        print(
            "\n| workers: request split, CPU µs/req of each worker (busiest first), per round "
            "| conns | rounds |"
        )
        print("|---|---|---|")
        for (name, c), per_round in sorted(splits.items(), key=lambda x: (x[0][1], x[0][0])):
            cells = [
                " / ".join(f"{share * 100:.0f}%" for share, _ in rows)
                + " ("
                + " / ".join(f"{us:.1f}" for _, us in rows)
                + ")"
                for rows in per_round
            ]
            print(f"| {name} | {c} | " + ", ".join(cells) + " |")
    return 0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


if __name__ == "__main__":
    sys.exit(main())
