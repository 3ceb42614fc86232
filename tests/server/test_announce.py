"""``portway run`` says when it is ready (every listener, http or https) and when it drains."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, run_upstream
from tests.http.test_h2 import _self_signed
from tests.server.test_watch import Stderr


@pytest.mark.parametrize("workers", [1, 2])
async def test_ready_and_draining_lines(tmp_path: Path, workers: int) -> None:
    cert, key = _self_signed(tmp_path)
    async with run_upstream() as up:
        plain, tls = free_port(), free_port()
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(
            "listeners:\n"
            f'  - {{name: public, address: "127.0.0.1:{plain}"}}\n'
            f'  - {{name: secure, address: "127.0.0.1:{tls}", tls: {{cert: {cert}, key: {key}}}}}\n'
            "admin: {enabled: false}\n"
            "server: {shutdown_timeout: 3s}\n"
            f'upstreams: {{u: {{targets: [{{url: "{up.url}"}}]}}}}\n'
            "routes: [{name: r, match: {paths: [/]}, upstream: u}]\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "-w", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = Stderr(proc)
        try:
            deadline = time.monotonic() + 60  # a loaded CI machine starts workers slowly
            while "portway: ready:" not in err.text:
                assert proc.poll() is None and time.monotonic() < deadline, err.text
                await asyncio.sleep(0.05)
            # ready means serving: both listeners accept now
            for port in (plain, tls):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert rc == 0, err.text
        ready = [ln for ln in err.text.splitlines() if ln.startswith("portway: ready:")]
        word = "worker" if workers == 1 else "workers"
        assert ready == [
            f"portway: ready: public http://127.0.0.1:{plain}, "
            f"secure https://127.0.0.1:{tls} ({workers} {word})"
        ], err.text
        assert err.text.count("portway: draining (shutdown_timeout 3s)") == 1, err.text
