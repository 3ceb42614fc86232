"""A config applied through the admin API (served by worker 0) reaches every worker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from portway.http.client import simple_request
from tests.helpers import free_port, run_upstream
from tests.helpers import wait_port as _wait


def _cfg(port: int, admin: int, up: str, paths: list[str]) -> str:
    routes = ", ".join(
        f'{{name: r{i}, match: {{paths: ["{p}"]}}, upstream: u}}' for i, p in enumerate(paths)
    )
    return f"""
listeners: [{{name: public, address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin}", token: "s3cret"}}
upstreams: {{u: {{targets: [{{url: "{up}"}}]}}}}
routes: [{routes}]
"""


async def test_put_config_reaches_all_workers(tmp_path: Path) -> None:
    async with run_upstream() as up:
        port, admin = free_port(), free_port()
        cfg = tmp_path / "c.yaml"
        cfg.write_text(_cfg(port, admin, up.url, ["/a"]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _wait(port)
            await _wait(admin)
            r = await simple_request(
                "PUT",
                f"http://127.0.0.1:{admin}/config",
                headers=[("authorization", "Bearer s3cret"), ("content-type", "application/yaml")],
                body=_cfg(port, admin, up.url, ["/a", "/b"]).encode(),
            )
            assert r.status == 200, r.body
            ok = False
            for _ in range(50):
                # fresh connections: the kernel spreads them over both workers
                codes = [
                    (await simple_request("GET", f"http://127.0.0.1:{port}/b")).status
                    for _ in range(12)
                ]
                if all(c == 200 for c in codes):
                    ok = True
                    break
                await asyncio.sleep(0.1)
            assert ok, codes
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 15)
