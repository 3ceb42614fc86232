"""Large bodies stream both ways with bounded gateway memory; framing variants."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from tests.helpers import (
    WARM_ANSWER,
    ServingPath,
    free_port,
    is_warm_request,
    raw_request,
    run_gateway,
    run_upstream,
    simple_config,
    wait_port,
)
from tests.http.adv_helpers import exchange

GIB = 1 << 30
CHUNK = b"x" * (1 << 20)


async def _stream_server(port: int) -> asyncio.Server:
    """GET /download → 1 GiB (Content-Length); POST /upload → counts the body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # keep-alive, so that a warm-up leaves a pooled connection: the download then takes
        # the task-free path (proxy/fast.py), the upload the general one
        try:
            while True:
                await one(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /warm"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        elif head.startswith(b"GET /download"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
            for _ in range(GIB // len(CHUNK)):
                writer.write(CHUNK)
                await writer.drain()
        else:
            cl = int(
                next(
                    ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            got = 0
            while got < cl:
                data = await reader.read(1 << 20)
                if not data:
                    break
                got += len(data)
            body = str(got).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


async def test_1gib_upload_and_download_bounded_rss() -> None:
    up_port, gw_port = free_port(), free_port()
    server = await _stream_server(up_port)
    cfg = f"""
listeners: [{{name: public, address: "127.0.0.1:{gw_port}"}}]
admin: {{enabled: false}}
upstreams: {{u: {{targets: [{{url: "http://127.0.0.1:{up_port}"}}]}}}}
routes: [{{name: r, match: {{paths: ["/"]}}, upstream: u}}]
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", f.name, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_port(gw_port)
        warm = await raw_request(gw_port, b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n", read_all=False)
        assert warm.startswith(b"HTTP/1.1 200")
        base = _rss_kb(proc.pid)
        # download
        reader, writer = await asyncio.open_connection("127.0.0.1", gw_port)
        writer.write(b"GET /download HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < GIB:
            data = await reader.read(1 << 20)
            assert data
            got += len(data)
        writer.close()
        # upload
        reader, writer = await asyncio.open_connection("127.0.0.1", gw_port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % GIB)
        for _ in range(GIB // len(CHUNK)):
            writer.write(CHUNK)
            await writer.drain()
        resp = await reader.read(1000)
        assert resp.endswith(str(GIB).encode()), resp
        writer.close()
        peak = _rss_kb(proc.pid, "VmHWM")
        growth_mb = (peak - base) / 1024
        assert got == GIB
        assert growth_mb < 50, f"gateway RSS grew {growth_mb:.1f} MB"
    finally:
        proc.terminate()
        proc.wait(10)
        server.close()
        os.unlink(f.name)


async def _raw_upstream(port: int, response: bytes) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"transfer-encoding: chunked" in head.lower():
                    while not (await reader.readuntil(b"\r\n")).startswith(b"0\r\n"):
                        pass
                    await reader.readuntil(b"\r\n")
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_chunked_response_with_trailers_passes_through(path: ServingPath) -> None:
    port = free_port()
    srv = await _raw_upstream(
        port,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
    )
    async with run_gateway(path.config(simple_config(f"http://127.0.0.1:{port}"))) as gw:
        await path.prepare(gw)
        out = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        path.assert_served(1)
        head, body = out.split(b"\r\n\r\n", 1)
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"trailer:" not in head.lower()  # hop-by-hop
        assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n", body
    srv.close()


async def test_head_response_has_no_body_and_keeps_the_connection(path: ServingPath) -> None:
    port = free_port()
    srv = await _raw_upstream(port, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    async with run_gateway(path.config(simple_config(f"http://127.0.0.1:{port}"))) as gw:
        await path.prepare(gw)
        out = await raw_request(
            gw.port,
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        path.assert_served(2)
        assert out.count(b"HTTP/1.1 200") == 2
        assert out.count(b"hello world") == 1
        assert out.lower().count(b"content-length: 11") == 2
    srv.close()


def _one_then_close(response: bytes) -> Any:
    """A raw upstream answering warm-ups (kept alive), then ``response``, then closing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while is_warm_request(head := await reader.readuntil(b"\r\n\r\n")):
                writer.write(WARM_ANSWER)
                await writer.drain()
            assert head
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return handle


async def test_close_delimited_response_is_rechunked(path: ServingPath) -> None:
    port = free_port()
    srv = await asyncio.start_server(
        _one_then_close(b"HTTP/1.1 200 OK\r\n\r\nuntil close"), "127.0.0.1", port
    )
    async with run_gateway(path.config(simple_config(f"http://127.0.0.1:{port}"))) as gw:
        await path.prepare(gw)
        out = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        path.assert_served(1)
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == b"b\r\nuntil close\r\n0\r\n\r\n", out
    srv.close()


async def test_chunked_request_rechunked_and_expect_continue() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
        out = await raw_request(
            gw.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        assert b'"body":"abcde"' in out


async def test_upstream_lies_about_content_length_aborts_client(path: ServingPath) -> None:
    port = free_port()
    srv = await asyncio.start_server(
        _one_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"), "127.0.0.1", port
    )
    async with run_gateway(path.config(simple_config(f"http://127.0.0.1:{port}"))) as gw:
        await path.prepare(gw)
        # keep-alive: only the gateway's abort ends this read before its timeout
        out, closed = await exchange(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=30)
        assert closed
        path.assert_served(1)
        assert out.startswith(b"HTTP/1.1 200")
        assert out.split(b"\r\n\r\n", 1)[1] == b"short"  # truncated, connection aborted
    srv.close()


@pytest.mark.parametrize("n", [3])
async def test_websocket_echo_through_tunnel(n: int) -> None:
    import websockets

    port = free_port()

    async def echo(ws: websockets.ServerConnection) -> None:
        async for msg in ws:
            await ws.send(msg)

    async with websockets.serve(echo, "127.0.0.1", port):
        async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
            async with websockets.connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
                for i in range(n):
                    await ws.send(f"hello {i}")
                    assert await ws.recv() == f"hello {i}"
                big = "x" * 300_000
                await ws.send(big)
                assert await ws.recv() == big


async def test_tunnel_passes_half_close_both_ways() -> None:
    """After a 101, a client that shuts its write side still receives the upstream's reply."""
    port = free_port()

    async def upgrader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        data = await reader.read()  # until the client's half-close arrives
        writer.write(b"got " + data + b", bye")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(upgrader, "127.0.0.1", port)
    async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        # (WebSocket: the only upgrade tunnelled, http/upgrade.py)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 101")
        writer.write(b"ping")
        await writer.drain()
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 3)
        assert rest == b"got ping, bye"
        writer.close()
    srv.close()
