"""Two gateway processes share one Redis cache tier."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import free_port, http_get, run_upstream
from tests.helpers import wait_port as _wait


async def test_two_gateway_processes_share_the_redis_tier(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async def handler(req: Request) -> Response:
        h = Headers.from_pairs([("cache-control", "max-age=60")])
        return Response(200, h, b"from-upstream")

    async with run_upstream(handler) as up:
        procs = []
        ports = []
        try:
            for i in range(2):
                port = free_port()
                cfg = tmp_path / f"gw{i}.yaml"
                cfg.write_text(
                    f"""
listeners: [{{name: public, address: "127.0.0.1:{port}"}}]
admin: {{enabled: false}}
upstreams: {{u: {{targets: [{{url: "{up.url}"}}]}}}}
routes:
  - name: cached
    match: {{paths: ["/"]}}
    upstream: u
    plugins:
      - name: cache
        config: {{store: redis, redis_url: "{redis_url}", redis_prefix: "{redis_prefix}cache:",
                  redis_timeout: 10s}}
"""
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "portway", "run", "-c", str(cfg), "-w", "1"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                ports.append(port)
            # generous: two interpreters starting on a loaded machine (10 s ran out); the
            # wait ends when the port accepts
            for p in ports:
                await _wait(p, timeout=120)
            s, h, body = await http_get(f"http://127.0.0.1:{ports[0]}/item")
            assert (s, h.get("x-cache"), body) == (200, "MISS", b"from-upstream")
            # stored before the first response completed: the other process hits at once
            s, h, body = await http_get(f"http://127.0.0.1:{ports[1]}/item")
            assert (s, h.get("x-cache"), body) == (200, "HIT", b"from-upstream")
            assert len(up.requests) == 1
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                await asyncio.to_thread(p.wait, 10)
