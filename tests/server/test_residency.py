"""Start-up's resident file pages are given back, and nothing else is (server/residency.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portway.server.residency import droppable_runs, read_only_file_maps
from tests.helpers import free_port, run_upstream
from tests.http.test_h2 import _self_signed
from tests.server.test_watch import Stderr

P, S, F = 1 << 63, 1 << 62, 1 << 61


def test_runs_keep_anonymous_and_swapped_pages() -> None:
    anon = P  # present, not a file page: a written private page (e.g. relocated RELRO)
    filep = P | F
    absent = 0
    assert droppable_runs([filep, filep, anon, absent, filep, S, filep]) == [
        (0, 2),
        (3, 2),
        (6, 1),
    ]
    # a run of absent pages alone is not worth a call
    assert droppable_runs([absent, absent, anon, absent]) == []
    assert droppable_runs([]) == []
    assert droppable_runs([anon, anon]) == []
    assert droppable_runs([absent, filep, absent]) == [(0, 3)]


def test_only_read_only_file_mappings() -> None:
    maps = (
        "55d0a000-55d0b000 r--p 00000000 08:01 1234 /usr/bin/python3.11\n"
        "55d0b000-55d0c000 r-xp 00001000 08:01 1234 /usr/bin/python3.11\n"
        "55d0c000-55d0d000 rw-p 00002000 08:01 1234 /usr/bin/python3.11\n"
        "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
        "7f0000001000-7f0000002000 r--p 00000000 00:00 0 [vvar]\n"
        "7f0000002000-7f0000003000 r-xs 00000000 00:05 99 /dev/shm/x\n"
        "7fff0000-7fff1000 rw-p 00000000 00:00 0 [stack]\n"
    )
    assert read_only_file_maps(maps) == [
        (0x55D0A000, 0x55D0B000),
        (0x55D0B000, 0x55D0C000),
        (0x7F0000002000, 0x7F0000003000),
    ]


_PROBE = """
import hashlib, json, ssl, sys
from portway.server.residency import drop_startup_pages

def work():
    ctx = ssl.create_default_context()
    return (hashlib.sha256(b"x" * 100000).hexdigest(), json.dumps({"a": [1, 2.5, None]}),
            ctx.verify_mode.name, sorted(set(range(50)))[-1])

def rss_file():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])

first = work()
before = rss_file()
dropped = drop_startup_pages()
after = rss_file()
again = work()
print(json.dumps({"before": before, "after": after, "dropped": dropped, "same": first == again}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc only")
def test_drop_in_a_real_process_keeps_it_working() -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout)
    assert got["same"] is True
    assert got["dropped"] > 1024 * 1024  # the interpreter and libraries touched MBs at start
    assert got["after"] < got["before"]


def _config(plain: int, tls: int, cert: Path, key: Path, up_url: str, paths: str) -> str:
    return (
        "listeners:\n"
        f'  - {{name: public, address: "127.0.0.1:{plain}"}}\n'
        f"  - {{name: secure, address: '127.0.0.1:{tls}', tls: {{cert: {cert}, key: {key}}}}}\n"
        "admin: {enabled: false}\n"
        f'upstreams: {{u: {{targets: [{{url: "{up_url}"}}]}}}}\n'
        f"routes: [{{name: r, match: {{paths: [{paths}]}}, upstream: u}}]\n"
    )


async def _status(port: int, path: str, tls: bool = False) -> int:
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    writer.close()
    return int(head.split(None, 2)[1])


def _rss_file_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc only")
async def test_gateway_serves_after_trim_and_reload(tmp_path: Path) -> None:
    """Two single-process gateways, one keeping its start-up pages: the trimmed one holds
    fewer file pages, and both answer over HTTP and TLS, before and after a reload."""
    cert, key = _self_signed(tmp_path)
    async with run_upstream() as up:
        procs: list[tuple[subprocess.Popen[bytes], Stderr, int, int]] = []
        try:
            for keep in ("0", "1"):
                plain, tls = free_port(), free_port()
                cfg = tmp_path / f"portway-{keep}.yaml"
                cfg.write_text(_config(plain, tls, cert, key, up.url, "/a, /b"))
                env = {**os.environ, "PORTWAY_KEEP_STARTUP_PAGES": keep}
                proc = subprocess.Popen(
                    [sys.executable, "-m", "portway", "run", "-c", str(cfg), "-w", "1"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                err = Stderr(proc)
                procs.append((proc, err, plain, tls))
                deadline = time.monotonic() + 60
                while "portway: ready:" not in err.text:
                    assert proc.poll() is None and time.monotonic() < deadline, err.text
                    await asyncio.sleep(0.05)

            async def serve_both() -> None:
                for _, err, plain, tls in procs:
                    assert await _status(plain, "/a") == 200, err.text
                    assert await _status(tls, "/b", tls=True) == 200, err.text

            await serve_both()
            trimmed, kept = (_rss_file_kb(p.pid) for p, _, _, _ in procs)
            assert trimmed < kept, (trimmed, kept)
            for keep, (proc, err, plain, tls) in zip(("0", "1"), procs, strict=True):
                cfg = tmp_path / f"portway-{keep}.yaml"
                cfg.write_text(_config(plain, tls, cert, key, up.url, "/a, /b, /c"))
                proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 60
                while await _status(plain, "/c") != 200:
                    assert proc.poll() is None and time.monotonic() < deadline, err.text
                    await asyncio.sleep(0.05)
            await serve_both()
        finally:
            for proc, _, _, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, err, _, _ in procs:
                try:
                    rc = await asyncio.to_thread(proc.wait, 20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
                assert rc == 0, err.text
