"""``portway run --workers 2 --watch``: a file edit and an admin drain reach every worker.

Each check uses fresh connections (the kernel spreads them over both workers with
SO_REUSEPORT) and starts only once the gateway says the change was applied by all workers
(the admin call returns after the siblings acknowledged it; the watcher logs it).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from portway.http.client import simple_request
from tests.helpers import free_port, run_upstream, wait_port
from tests.server.test_watch import Stderr


def _config(port: int, admin: int, ups: list[str], paths: list[str]) -> str:
    targets = ", ".join(f'{{url: "{u}"}}' for u in ups)
    routes = "\n".join(
        f'  - {{name: r{i}, match: {{paths: ["={p}"]}}, upstream: u}}' for i, p in enumerate(paths)
    )
    return (
        f'listeners: [{{name: public, address: "127.0.0.1:{port}"}}]\n'
        f'admin: {{address: "127.0.0.1:{admin}", token: "s3cret"}}\n'
        "server: {shutdown_timeout: 2s}\n"
        f"upstreams: {{u: {{balancing: round_robin, targets: [{targets}]}}}}\n"
        f"routes:\n{routes}\n"
    )


async def _statuses(port: int, path: str, n: int) -> list[int]:
    out = []
    for _ in range(n):
        # a new connection per request: both workers get a share
        r = await simple_request("GET", f"http://127.0.0.1:{port}{path}")
        out.append(r.status)
    return out


async def _wait_text(err: Stderr, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while err.text.count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count}x:\n{err.text}")
        await asyncio.sleep(0.05)


async def test_watch_and_drain_reach_every_worker(tmp_path: Path) -> None:
    async with run_upstream() as a, run_upstream() as b:
        port, admin = free_port(), free_port()
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(_config(port, admin, [a.url, b.url], ["/old"]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "2", "--watch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = Stderr(proc)
        try:
            await wait_port(port)
            await wait_port(admin)
            await _wait_text(err, "portway: ready:")  # both workers are serving
            assert await _statuses(port, "/old", 8) == [200] * 8

            # 1. a file edit: once applied everywhere, every request sees the new route
            cfg.write_text(_config(port, admin, [a.url, b.url], ["/old", "/orders"]))
            await _wait_text(err, "change reload applied by all 2 workers")
            assert await _statuses(port, "/orders", 16) == [200] * 16

            # 2. an admin drain: once answered, no request reaches the target via any worker
            r = await simple_request(
                "POST",
                f"http://127.0.0.1:{admin}/upstreams/u/targets/127.0.0.1:{a.port}/drain",
                headers=[("authorization", "Bearer s3cret")],
            )
            assert r.status == 200, r.body
            assert b'"lagging":[]' in r.body
            before = len(a.requests)
            assert await _statuses(port, "/orders", 16) == [200] * 16
            assert len(a.requests) == before
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert rc == 0, err.text
        assert "Traceback" not in err.text
