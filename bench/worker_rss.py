#!/usr/bin/env python3
"""RSS of a worker at each step of its start and the heavy packages it has imported: what an
idle worker's memory is made of.

    python bench/worker_rss.py                          # minimal pass-through config, no admin
    python bench/worker_rss.py --config examples/portway.yaml [--admin]
    python bench/worker_rss.py --modules                # also list the imported top-level packages

The steps mirror ``run_worker``: load the config, import the worker, start it, then the
post-start housekeeping (``settle_after_start``: collect, freeze, give freed heap back).
"""

from __future__ import annotations

import argparse
import gc
import sys

import uvloop

MINIMAL = (
    "listeners: [{name: public, address: '127.0.0.1:0'}]\nadmin: {enabled: false}\n"
    "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
    "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n"
)

HEAVY = [
    "opentelemetry",
    "cryptography",
    "argon2",
    "bcrypt",
    "dns",
    "prometheus_client",
    "redis",
    "jwt",
    "joserfc",
    "h2",
    "brotli",
    "zstandard",
    "jsonschema_rs",
    "jsonschema",
    "grpc",
    "google.protobuf",
    "websockets",
    "yaml",
    "pydantic",
    "ssl",
    "certifi",
    "importlib.metadata",  # s8-mem: none of these three in a minimal worker
    "email",
    "_hashlib",
]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", help="a portway.yaml (default: a minimal pass-through config)")
    ap.add_argument("--admin", action="store_true", help="start the admin API as worker 0 does")
    ap.add_argument("--modules", action="store_true", help="list the imported top-level packages")
    args = ap.parse_args()
    before = set(sys.modules)
    print(f"interpreter + uvloop: {rss_mb():.1f} MB")
    from portway.config.loader import load_config, load_config_text

    print(f"after importing the config loader: {rss_mb():.1f} MB")
    cfg = load_config(args.config) if args.config else load_config_text(MINIMAL, "bench.yaml")
    print(f"after loading the config: {rss_mb():.1f} MB")
    from portway.server.worker import Worker

    try:
        from portway.server.worker import settle_after_start
    except ImportError:  # an older build (before/after comparisons): what run_worker did

        def settle_after_start() -> None:
            gc.collect()
            gc.freeze()

    print(f"after importing the worker: {rss_mb():.1f} MB")

    async def start() -> None:
        w = Worker(cfg_holder.pop(), admin=args.admin)
        await w.start()
        print(f"after the worker's start: {rss_mb():.1f} MB")
        settle_after_start()
        print(f"after settle_after_start (what an idle worker holds): {rss_mb():.1f} MB")
        loaded = [h for h in HEAVY if h in sys.modules]
        print("heavy packages imported:", ", ".join(loaded) or "none")
        print(f"modules imported by Portway: {len(set(sys.modules) - before)}")
        if args.modules:
            tops: dict[str, int] = {}
            for m in set(sys.modules) - before:
                top = m.split(".")[0]
                tops[top] = tops.get(top, 0) + 1
            print(" ".join(f"{k}:{v}" for k, v in sorted(tops.items(), key=lambda kv: -kv[1])))
        await w.shutdown()

    cfg_holder = [cfg]
    del cfg
    uvloop.run(start())


if __name__ == "__main__":
    main()
