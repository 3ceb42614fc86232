#!/usr/bin/env python3
"""RSS of a worker at each step of its start (pass-through config, no admin) and the heavy
packages it has imported: what an idle worker's memory is made of.

    python bench/worker_rss.py
"""

from __future__ import annotations

import sys

import uvloop


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    print(f"interpreter + uvloop: {rss_mb():.1f} MB")
    from portway.config.loader import load_config_text

    print(f"after importing the config loader: {rss_mb():.1f} MB")
    cfg = load_config_text(
        "listeners: [{name: public, address: '127.0.0.1:0'}]\nadmin: {enabled: false}\n"
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n",
        "bench.yaml",
    )
    from portway.server.worker import Worker

    print(f"after importing the worker: {rss_mb():.1f} MB")

    async def start() -> None:
        w = Worker(cfg, admin=False)
        await w.start()
        print(f"after the worker's start: {rss_mb():.1f} MB")

    uvloop.run(start())
    heavy = [
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
        "websockets",
        "yaml",
        "pydantic",
        "ssl",
    ]
    loaded = [h for h in heavy if h in sys.modules]
    print("heavy packages imported:", ", ".join(loaded) or "none")


if __name__ == "__main__":
    main()
