"""The CLI and process model, driven as a user would: real processes and signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from portway.http.models import Request, Response
from tests.helpers import free_port, http_get, run_upstream, wait_port


def _write(path: Path, gw_port: int, up_url: str, route: str = "/") -> None:
    path.write_text(
        f"""
listeners: [{{name: public, address: "127.0.0.1:{gw_port}"}}]
admin: {{enabled: false}}
server: {{shutdown_timeout: 5s}}
upstreams: {{u: {{targets: [{{url: "{up_url}"}}]}}}}
routes: [{{name: r, match: {{paths: ["{route}"]}}, upstream: u}}]
"""
    )


def _run(cfg: Path, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_validate_reports_path_and_line_and_exits_nonzero(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes:\n  - name: r\n    match: {paths: [users]}\n    upstream: nope\n")
    r = subprocess.run(
        [sys.executable, "-m", "portway", "validate", str(cfg)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "routes[0].match.paths[0]" in r.stderr and "line 3" in r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "portway", "run", "-c", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_graceful_shutdown_finishes_in_flight(tmp_path: Path) -> None:
    async def slow(req: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response(200, body=b"done")

    async with run_upstream(slow) as up:
        port = free_port()
        cfg = tmp_path / "c.yaml"
        _write(cfg, port, up.url)
        proc = _run(cfg, 1)
        try:
            await wait_port(port)
            pending = asyncio.create_task(http_get(f"http://127.0.0.1:{port}/x"))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            status, _, body = await pending
            assert status == 200 and body == b"done"
            assert await asyncio.to_thread(proc.wait, 10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_sighup_reload_and_crashed_worker_restart(tmp_path: Path) -> None:
    async with run_upstream() as up:
        port = free_port()
        cfg = tmp_path / "c.yaml"
        _write(cfg, port, up.url, "/old")
        proc = _run(cfg, 2)
        try:
            await wait_port(port)
            assert (await http_get(f"http://127.0.0.1:{port}/old"))[0] == 200
            _write(cfg, port, up.url, "/new")
            proc.send_signal(signal.SIGHUP)
            # (a condition polled, not a pause: 30 s only bounds a loaded CI machine)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                results = [(await http_get(f"http://127.0.0.1:{port}/new"))[0] for _ in range(8)]
                if all(s == 200 for s in results):
                    break
                await asyncio.sleep(0.2)
            assert all(s == 200 for s in results)
            # kill one worker; the supervisor restarts it and traffic keeps flowing
            children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            for _ in range(100):
                children = [int(p) for p in children_file.read_text().split()]
                if len(children) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(children) == 2
            os.kill(children[0], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                now = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                if (len(now) == 2 and int(now[0]) not in children) or (
                    children[0] not in map(int, now) and len(now) == 2
                ):
                    break
                await asyncio.sleep(0.1)
            assert len(now) == 2 and children[0] not in map(int, now)
            for _ in range(10):
                assert (await http_get(f"http://127.0.0.1:{port}/new"))[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
