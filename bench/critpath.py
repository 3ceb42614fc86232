#!/usr/bin/env python3
"""Instructions per request on the c1 critical path, by segment (callgrind, deterministic).

Runs ``bench/hotpath_bench.py`` under callgrind with a dump at the entry of the client
connection's ``data_received``, of the upstream connection's ``data_received`` and of
``WriteFlow.write_soon`` (the upstream request head, then the client response), and prints
the median cost of each segment of a request's cycle:

- client read → upstream write: the gateway's work before the upstream can start (critical);
- upstream write → upstream read: the rest of the client's parse callback, the harness;
- upstream read → client write: the response relay before the client can go on (critical);
- client write → next client read: the exchange's end (pool, metrics, frees) and the harness,
  which at c1 overlaps with the client's turn-around.

Needs a compiled build (the triggers are mypyc's C function names) and valgrind::

    PYTHONPATH=<build> python bench/critpath.py [--requests 40]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

TRIGGERS = {
    "CPyDef_server___ServerConnection___data_received": "client read",
    "CPyDef_client___UpstreamConnection___data_received": "upstream read",
    "CPyDef_flow___WriteFlow___write_soon": "write",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--plugins", default="", help="as hotpath_bench.py's --plugins")
    ap.add_argument("--consumers", type=int, default=0, help="as hotpath_bench.py's")
    ap.add_argument(
        "--keep",
        default="",
        help="copy the per-segment dumps to this directory (for callgrind_annotate); the "
        "last dump of each segment is named after it",
    )
    args = ap.parse_args()
    bench = Path(__file__).with_name("hotpath_bench.py")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg"]
        cmd += [f"--dump-before={t}" for t in TRIGGERS]
        cmd += [sys.executable, str(bench), "--no-dashboard", "--requests", str(args.requests)]
        if args.plugins:
            cmd += ["--plugins", args.plugins]
        if args.consumers:
            cmd += ["--consumers", str(args.consumers)]
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        parts = []
        for f in glob.glob(f"{tmp}/cg.*"):
            trigger, total = "", 0
            with open(f) as fh:
                for line in fh:
                    if line.startswith("desc: Trigger:"):
                        trigger = TRIGGERS.get(line.split("=")[-1].strip(), "?")
                    elif line.startswith("summary:"):
                        total = int(line.split()[1])
                        break
            parts.append((int(f.rsplit(".", 1)[1]), trigger, total))
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in glob.glob(f"{tmp}/cg.*"):
                shutil.copy(f, args.keep)
    parts.sort()
    # dump i holds the cost from trigger i-1 to trigger i; a write is the upstream head
    # when the segment before it started at the client's read
    names = []
    for i in range(1, len(parts)):
        start, end = parts[i - 1][1], parts[i][1]
        names.append([start, end, parts[i][2], parts[i][0]])
    for i, row in enumerate(names):
        for j in (0, 1):
            if row[j] == "write":
                k = i if j == 1 else i - 1
                src = names[k][0] if k >= 0 else "?"
                row[j] = "upstream write" if src == "client read" else "client write"
    seen: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    order: list[tuple[str, str]] = []
    for start, end, cost, dump in names[-4 * (args.requests - 15) : -4]:
        key = (str(start), str(end))
        if key not in seen:
            order.append(key)
        seen[key].append((int(cost), int(dump)))
    cycle = 0
    for key in order:
        v = sorted(seen[key])
        cycle += v[len(v) // 2][0]
        where = f", median dump {args.keep}/cg.{v[len(v) // 2][1]}" if args.keep else ""
        print(
            f"{v[len(v) // 2][0]:8d}  {key[0]} -> {key[1]}  "
            f"(n={len(v)}, min {v[0][0]}, max {v[-1][0]}{where})"
        )
    print(f"{cycle:8d}  one request's cycle")


if __name__ == "__main__":
    main()
