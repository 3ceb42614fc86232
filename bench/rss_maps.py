#!/usr/bin/env python3
"""Resident memory of processes by mapping (``/proc/PID/smaps``), side by side.

    python bench/rss_maps.py PID [PID ...]     # e.g. a single process and one worker

Rss per mapped file (``[anon]``, ``[heap]`` for anonymous memory), largest difference between
the first and the last PID first, and each process's ``RssAnon``/``RssFile``. Pages of a
library that a process has not touched since it was forked are not counted in its Rss: that
is what a worker of ``--workers N`` does not carry of its supervisor's start-up.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_RANGE = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def by_mapping(pid: str) -> Counter[str]:
    out: Counter[str] = Counter()
    name = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if _RANGE.match(line):
                parts = line.split(None, 5)
                name = parts[5].strip().rsplit("/", 1)[-1] if len(parts) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                out[name] += int(line.split()[1])
    return out


def totals(pid: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        kv = dict(line.split(":", 1) for line in f if ":" in line)
    return " ".join(
        f"{k} {int(kv[k].split()[0]) / 1024:.1f} MB" for k in ("VmRSS", "RssAnon", "RssFile")
    )


def main() -> None:
    pids = sys.argv[1:]
    if not pids:
        sys.exit(__doc__)
    maps = [by_mapping(p) for p in pids]
    for p in pids:
        print(f"{p}: {totals(p)}")
    names = set().union(*maps)
    for n in sorted(names, key=lambda n: (-(maps[0][n] - maps[-1][n]), n)):
        row = [m[n] for m in maps]
        if max(row) >= 64:
            diff = f"{row[0] - row[-1]:+7d}" if len(row) > 1 else ""
            print(f"{n[:48]:48s}", " ".join(f"{v:7d}" for v in row), diff, "KB")


if __name__ == "__main__":
    main()
