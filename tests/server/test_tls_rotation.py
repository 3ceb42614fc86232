"""Certificate rotation in a real ``portway run`` process: SIGHUP and ``--watch``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port, run_upstream, wait_port
from tests.server.test_watch import Stderr, _until
from tests.server.tls_kit import Pki, handshake


def _yaml(port: int, up_url: str, cert: str, key: str) -> str:
    return (
        f'listeners: [{{name: public-tls, address: "127.0.0.1:{port}",'
        f" tls: {{certificates: [{{cert: {cert}, key: {key}}}]}}}}]\n"
        "admin: {enabled: false}\n"
        "server: {shutdown_timeout: 2s}\n"
        f'upstreams: {{u: {{targets: [{{url: "{up_url}"}}]}}}}\n'
        "routes: [{name: r, match: {paths: [/]}, upstream: u}]\n"
    )


def _rotate(pki: Pki, tmp: Path, *names: str) -> None:
    """New files written aside, then renamed over the served ones (as cert managers do)."""
    cert, key = pki.leaf(*names, file="next")
    os.replace(key, tmp / "served-key.pem")
    os.replace(cert, tmp / "served.pem")


async def _served(port: int, pki: Pki) -> list[str]:
    ctx = pki.client_context()
    ctx.check_hostname = False
    try:
        sans, _ = await handshake(port, "a.example.com", ctx)
    except OSError:
        return []
    return sans


async def _run(tmp_path: Path, watch: bool) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com", file="served")
    port = free_port()
    async with run_upstream() as up:
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(_yaml(port, up.url, cert, key))
        args = [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "1"]
        proc = subprocess.Popen([*args, *(["--watch"] if watch else [])], stderr=subprocess.PIPE)
        err = Stderr(proc)
        try:
            await wait_port(port, 30)
            assert await _served(port, pki) == ["a.example.com"]
            _rotate(pki, tmp_path, "a.example.com", "b.example.com")
            if not watch:
                proc.send_signal(signal.SIGHUP)

            async def rotated() -> bool:
                return await _served(port, pki) == ["a.example.com", "b.example.com"]

            await _until(rotated, 20)
            assert proc.poll() is None, err.text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def test_sighup_reloads_certificates(tmp_path: Path) -> None:
    await _run(tmp_path, watch=False)


async def test_watch_reloads_rotated_certificates(tmp_path: Path) -> None:
    await _run(tmp_path, watch=True)
