"""Tracing without a collector: the OpenTelemetry SDK's complaints come out as rate-limited
JSON log lines, and SIGTERM is not held up by its export retries."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port, http_get, run_upstream, wait_port
from tests.server.test_watch import Stderr


async def test_sdk_noise_is_json_and_shutdown_is_bounded(tmp_path: Path) -> None:
    async with run_upstream() as up:
        port, nowhere = free_port(), free_port()
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(
            f'listeners: [{{name: public, address: "127.0.0.1:{port}"}}]\n'
            "admin: {enabled: false}\n"
            f'upstreams: {{u: {{targets: [{{url: "{up.url}"}}]}}}}\n'
            "routes: [{name: r, match: {paths: [/]}, upstream: u}]\n"
            # the SDK would retry a failed export for up to 30 s
            f'tracing: {{enabled: true, endpoint: "http://127.0.0.1:{nowhere}/v1/traces",'
            " schedule_delay: 100ms, timeout: 30s, shutdown_timeout: 1s}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "-w", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = Stderr(proc)
        try:
            await wait_port(port)
            for _ in range(3):
                assert (await http_get(f"http://127.0.0.1:{port}/"))[0] == 200
            deadline = time.monotonic() + 20
            while "Transient error" not in err.text:  # the exporter is now retrying
                assert time.monotonic() < deadline, err.text
                await asyncio.sleep(0.05)
            # more spans while it retries: their failures are not logged again
            for _ in range(3):
                assert (await http_get(f"http://127.0.0.1:{port}/"))[0] == 200
        finally:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            took = time.monotonic() - t0
        assert rc == 0, err.text
        # bounded by shutdown_timeout plus the ordinary shutdown, far below the SDK's 30 s
        assert took < 8.0, (took, err.text)
        lines = [ln for ln in err.text.splitlines() if ln.strip()]
        # the operator's lines (starting, ready, draining) and JSON records, nothing else
        operator = ("portway ", "portway: ")
        records = [json.loads(ln) for ln in lines if not ln.startswith(operator)]
        assert all(ln.startswith((*operator, "{")) for ln in lines), err.text
        transient = [r for r in records if "Transient error" in r["message"]]
        assert len(transient) == 1, err.text
        assert transient[0]["logger"].startswith("opentelemetry")
